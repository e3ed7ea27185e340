"""One-pass pixel work (issue 28): bitwise the stock processor's ``pixel_values_videos``, else the stock path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omnizip_cli.models.fused_preprocess import FusedVideoProcessor, fused_pixel_values, layout_of
from omnizip_cli.models.preprocess import ChunkedVideoProcessor, bounded_processor, fused_enabled
from tests.helpers.synthetic import synthetic_media
from tests.model.test_inputs import stock_processor_call


@pytest.fixture(scope="module")
def processor() -> Any:
    from tests.helpers.processor import tiny_processor

    return tiny_processor()


def _kwargs(height: int, width: int) -> dict[str, Any]:
    pixels = height * width
    return {"size": {"shortest_edge": pixels, "longest_edge": pixels}, "do_sample_frames": False,
            "return_tensors": "pt", "cap_pixels_per_frame": False}


def _frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("count", "height", "width"), [
    (10, 56, 84), (7, 56, 84), (1, 56, 56), (2, 112, 28 * 9), (9, 28 * 5, 28 * 3), (4, 588, 1036),
])
def test_fused_pass_is_bitwise_the_stock_video_processor(processor: Any, count: int, height: int, width: int) -> None:
    """Even and odd frame counts (the last frame repeated), one frame, odd numbers of merge blocks."""
    frames = _frames(count, height, width, seed=count)
    kwargs = _kwargs(height, width)
    stock = processor.video_processor([frames], **kwargs)
    fused = FusedVideoProcessor(processor.video_processor, processor.video_processor)
    ours = fused([frames], **kwargs)
    assert fused.last_path == "fused"
    assert ours["pixel_values_videos"].dtype == torch.float32
    assert torch.equal(ours["pixel_values_videos"], stock["pixel_values_videos"])
    assert torch.equal(ours["video_grid_thw"], stock["video_grid_thw"])


def test_extreme_pixel_values_are_bitwise_too(processor: Any) -> None:
    frames = np.zeros((4, 56, 84, 3), dtype=np.uint8)
    frames[1] = 255
    frames[2] = np.arange(56 * 84 * 3, dtype=np.int64).reshape(56, 84, 3) % 256
    layout = layout_of(processor.video_processor, _kwargs(56, 84))
    stock = processor.video_processor([frames], **_kwargs(56, 84))["pixel_values_videos"]
    assert torch.equal(fused_pixel_values(frames, layout), stock)


@pytest.mark.parametrize(("height", "width"), [(50, 90), (57, 84), (30, 30)])
def test_sizes_the_processor_resizes_go_to_the_stock_path(processor: Any, height: int, width: int) -> None:
    """Frames that are not whole merged patches: the processor resizes them; the stock call runs."""
    frames = _frames(4, height, width)
    kwargs = {**_kwargs(height, width), "size": {"shortest_edge": 56 * 56, "longest_edge": 56 * 84}}
    stock = processor.video_processor([frames], **kwargs)
    fused = FusedVideoProcessor(processor.video_processor, processor.video_processor)
    ours = fused([frames], **kwargs)
    assert fused.last_path == "stock"
    assert torch.equal(ours["pixel_values_videos"], stock["pixel_values_videos"])


def test_a_resize_to_other_whole_patches_goes_to_the_stock_path(processor: Any) -> None:
    """Frames of whole patches that the size window still changes: the first-pair check sees the grid."""
    frames = _frames(4, 112, 112)
    kwargs = {**_kwargs(56, 56)}
    stock = processor.video_processor([frames], **kwargs)
    fused = FusedVideoProcessor(processor.video_processor, processor.video_processor)
    assert torch.equal(fused([frames], **kwargs)["pixel_values_videos"], stock["pixel_values_videos"])
    assert fused.last_path == "stock" and stock["video_grid_thw"].tolist() == [[2, 4, 4]]


def test_calls_it_cannot_reproduce_go_to_the_stock_path(processor: Any) -> None:
    frames = _frames(4, 56, 84)
    fused = FusedVideoProcessor(processor.video_processor, processor.video_processor)
    for extra in ({"do_normalize": False}, {"cap_pixels_per_frame": True}, {"something_new": 1},
                  {"do_sample_frames": True}, {"device": "cpu"}, {"return_metadata": True}):
        assert layout_of(processor.video_processor, {**_kwargs(56, 84), **extra}) is None
    stock = processor.video_processor([frames], **{**_kwargs(56, 84), "do_normalize": False})
    ours = fused([frames], **{**_kwargs(56, 84), "do_normalize": False})
    assert fused.last_path == "stock" and torch.equal(ours["pixel_values_videos"], stock["pixel_values_videos"])
    two = fused([frames, frames], **_kwargs(56, 84))  # several videos in one call: stock
    assert fused.last_path == "stock" and two["video_grid_thw"].shape == (2, 3)


def test_bad_frames_are_a_one_line_error(processor: Any) -> None:
    layout = layout_of(processor.video_processor, _kwargs(56, 84))
    with pytest.raises(ValueError, match="uint8 \\[T, H, W, 3\\]"):
        fused_pixel_values(np.zeros((2, 56, 84, 3), dtype=np.float32), layout)
    with pytest.raises(ValueError, match="whole merged patches"):
        fused_pixel_values(np.zeros((2, 50, 84, 3), dtype=np.uint8), layout)


def test_the_whole_processor_call_is_bitwise_the_stock_one(processor: Any) -> None:
    media = synthetic_media(12.0, 12.0, height=56, width=84, seed=2)  # 24 frames, audio in video
    stock = stock_processor_call(processor, media, "What happens?")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": "x"}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    bounded = bounded_processor(processor, media.frames)
    assert isinstance(bounded.video_processor, FusedVideoProcessor)
    ours = bounded(text=[text], audio=[media.audio], videos=[media.frames],
                   videos_kwargs={"size": {"shortest_edge": 56 * 84, "longest_edge": 56 * 84}, "fps": 2.0},
                   load_audio_from_video=True, audio_from_video_indices=[0], return_tensors="pt")
    assert bounded.video_processor.last_path == "fused"
    for name in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        assert torch.equal(ours[name], stock[name]), name


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_sample_clip_through_the_adapter_is_bitwise_the_stock_processor(family: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A real H.264 + AAC file decoded by the media layer, then the adapter's ``prepare`` (the fused
    pass ran): the stock processor's tensors, bitwise, for both families (patch 14 and 16)."""
    import importlib

    from omnizip_cli.media import MediaOptions, load_media
    from omnizip_cli.models import fused_preprocess
    from tests.helpers.media_factory import AudioTrack, VideoSpec, has_encoder, write_media

    if not has_encoder("libx264") or not has_encoder("aac"):
        pytest.skip("no H.264/AAC encoder in this FFmpeg build")
    adapter = importlib.import_module(f"omnizip_cli.models.{family}").ADAPTER
    processor = adapter.tiny_processor()
    calls = []
    real = fused_preprocess.fused_pixel_values
    monkeypatch.setattr(fused_preprocess, "fused_pixel_values", lambda *a, **k: calls.append(1) or real(*a, **k))
    clip = write_media(tmp_path / "clip.mp4", video=VideoSpec(width=200, height=120, fps=10, seconds=3.0),
                       audio=[AudioTrack(seconds=3.0)])
    media = load_media(clip, MediaOptions(min_pixels=56 * 56, max_pixels=128 * 224),
                       token_pixels=adapter.geometry.token_pixels)
    ours = adapter.prepare(processor, media, question="What happens?").tensors
    assert calls, "the fused pass did not run"
    stock = stock_processor_call(processor, media, "What happens?")
    for name in ("input_ids", "pixel_values_videos", "video_grid_thw"):
        assert torch.equal(ours[name], stock[name]), name


def test_stock_setting_turns_it_off(processor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames(4, 56, 84)
    monkeypatch.setenv("OMNIZIP_PREPROCESS_DEVICE", "stock")
    assert not fused_enabled()
    assert isinstance(bounded_processor(processor, frames).video_processor, ChunkedVideoProcessor)
    monkeypatch.setenv("OMNIZIP_PREPROCESS_DEVICE", "auto")
    assert fused_enabled() and isinstance(bounded_processor(processor, frames).video_processor, FusedVideoProcessor)
