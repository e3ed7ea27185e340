"""Chunked video preprocessing: bitwise the stock processor's tensors, and a memory check up front."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from omnizip_cli.errors import OutOfMemory
from omnizip_cli.models.preprocess import (
    ChunkedVideoProcessor,
    bounded_processor,
    check_fits,
    chunk_frames_for,
    estimate_peak_bytes,
    process_video_in_chunks,
)
from tests.helpers.synthetic import synthetic_media
from tests.model.test_inputs import stock_processor_call

KWARGS = {
    "size": {"shortest_edge": 56 * 84, "longest_edge": 56 * 84},
    "do_sample_frames": False,
    "return_tensors": "pt",
}


@pytest.fixture(scope="module")
def processor() -> Any:
    from tests.helpers.processor import tiny_processor

    return tiny_processor()


def _frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 56, 84, 3), dtype=np.uint8)


@pytest.mark.parametrize("chunk", [2, 4, 6, 3, 100])
def test_chunks_give_bitwise_the_one_call_tensors(processor: Any, chunk: int) -> None:
    frames = _frames(10)
    whole = processor.video_processor([frames], **KWARGS)
    chunked = process_video_in_chunks(processor.video_processor, frames, chunk, **KWARGS)
    assert torch.equal(chunked["pixel_values_videos"], whole["pixel_values_videos"])
    assert torch.equal(chunked["video_grid_thw"], whole["video_grid_thw"])


def test_the_whole_processor_call_is_bitwise_the_stock_one(processor: Any) -> None:
    media = synthetic_media(12.0, 12.0, height=56, width=84, seed=2)  # 24 frames, audio in video
    stock = stock_processor_call(processor, media, "What happens?")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": "x"}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    bounded = bounded_processor(processor, media.frames, chunk_bytes=4 * 3 * 56 * 84 * 4, fused=False)  # 4 a chunk
    assert isinstance(bounded.video_processor, ChunkedVideoProcessor) and bounded.video_processor.chunk_frames == 4
    ours = bounded(
        text=[text],
        audio=[media.audio],
        videos=[media.frames],
        videos_kwargs={"size": KWARGS["size"], "fps": 2.0},
        load_audio_from_video=True,
        audio_from_video_indices=[0],
        return_tensors="pt",
    )
    for name in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        assert torch.equal(ours[name], stock[name]), name
    # the caller's processor is untouched
    assert not isinstance(processor.video_processor, ChunkedVideoProcessor)


def test_build_inputs_uses_the_bounded_path(processor: Any) -> None:
    from tests.helpers.processor import build_inputs

    media = synthetic_media(6.0, 6.0, height=56, width=84, seed=4)
    ours = build_inputs(processor, media, "What happens?").tensors
    stock = stock_processor_call(processor, media, "What happens?")
    for name in ("input_ids", "pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        assert torch.equal(ours[name], stock[name]), name


def test_chunk_sizes_and_estimate() -> None:
    assert chunk_frames_for(720, 1280) == 24
    assert chunk_frames_for(336, 644) == 102
    assert chunk_frames_for(10_000, 10_000) == 2  # never below one temporal patch
    # 768 frames of 336x644 (a 720p clip under the default pixel budget): 2.0 GB of output, 2.1 GB peak
    assert estimate_peak_bytes(768, 336, 644, 102) == 4 * 3 * 336 * 644 * (768 + 6 * 102)


def test_too_big_for_memory_is_a_one_line_error() -> None:
    with pytest.raises(OutOfMemory) as info:
        check_fits(768, 560, 1008, available=2 * 10**9)
    message = info.value.one_line()
    assert "\n" not in message and "768 frames of 1008x560" in message and "--max-frames" in message
    assert "2.0 GB is available" in message
    assert check_fits(768, 560, 1008, available=None).fits  # unknown: no refusal
    assert check_fits(4, 56, 84, available=10**9).fits
