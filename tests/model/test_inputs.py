"""The processor inputs: identical to the stock processor call, and long audio is never cut."""

from __future__ import annotations

import torch

from omnizip_cli.models.prompts import media_messages
from tests.helpers.synthetic import synthetic_media


def build_inputs(loaded, media, question):
    return loaded.adapter.prepare(loaded.processor, media, question=question)


def stock_processor_call(processor, media, question: str):
    """The processor as its documentation calls it: default audio padding (300 s), audio from the video."""
    kind = "video+audio" if media.frames is not None and media.audio is not None else ("video" if media.frames is not None else "audio")
    text = processor.apply_chat_template(media_messages(kind, question, None), add_generation_prompt=True, tokenize=False)
    kwargs = {"text": [text], "return_tensors": "pt"}
    if media.audio is not None:
        kwargs["audio"] = [media.audio]
    if media.frames is not None:
        pixels = media.frames.shape[1] * media.frames.shape[2]
        kwargs["videos"] = [media.frames]
        kwargs["videos_kwargs"] = {"size": {"shortest_edge": pixels, "longest_edge": pixels}, "fps": 2.0}
        if media.audio is not None:
            kwargs["load_audio_from_video"] = True
            kwargs["audio_from_video_indices"] = [0]
    return processor(**kwargs)


def test_inputs_equal_the_stock_processor_output(tiny_model) -> None:
    for video_seconds, audio_seconds in ((6.0, 6.0), (None, 3.3), (4.0, None)):
        media = synthetic_media(video_seconds, audio_seconds, seed=1)
        ours = build_inputs(tiny_model, media, "What is said?").tensors
        stock = stock_processor_call(tiny_model.processor, media, "What is said?")
        for name in ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
            if name in stock:
                assert torch.equal(ours[name], stock[name]), name
        if audio_seconds is not None:
            valid = int(stock["feature_attention_mask"].sum())
            assert int(ours["feature_attention_mask"].sum()) == valid
            assert torch.equal(ours["input_features"][..., :valid], stock["input_features"][..., :valid])
            # and ours does not compute 300 s of mel frames for a few seconds of audio
            assert ours["input_features"].shape[-1] < stock["input_features"].shape[-1]


def test_audio_longer_than_300_seconds_is_not_truncated(tiny_model) -> None:
    media = synthetic_media(None, 301.0)
    inputs = build_inputs(tiny_model, media, "What is said?")
    mel_frames = int(inputs.tensors["feature_attention_mask"].sum())
    assert mel_frames == 30100
    expected_tokens = ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1
    audio_tokens = int((inputs.input_ids == tiny_model.model.config.audio_token_id).sum())
    assert audio_tokens == expected_tokens == 7525


def test_prefix_is_the_prompt_up_to_the_media_block(tiny_model) -> None:
    """The question-independent prefix: the stock prompt's ids up to the media block's end, for each kind."""
    for video_seconds, audio_seconds in ((6.0, 6.0), (None, 3.3), (4.0, None)):
        media = synthetic_media(video_seconds, audio_seconds, seed=2)
        prefix = tiny_model.adapter.prepare(tiny_model.processor, media)
        full = build_inputs(tiny_model, media, "What is said?")
        length = prefix.length
        assert torch.equal(full.input_ids[:, :length], prefix.input_ids)
        tail = tiny_model.processor.tokenizer.decode(full.input_ids[0, length:].tolist())
        assert tail == "What is said?" + prefix.templates.question_suffix


def test_frames_sized_to_the_models_token_reach_the_encoder_unchanged() -> None:
    """Frames whose sides are multiples of the adapter's ``geometry.token_pixels`` (what the media
    layer gives with that ``token_pixels``): the processor's size window resizes nothing, so the pixel
    values are those of the processor with resizing switched off, bitwise, for both families."""
    from omnizip_cli.models.qwen2_5_omni import ADAPTER as QWEN25
    from omnizip_cli.models.qwen3_omni import ADAPTER as QWEN3

    for adapter in (QWEN25, QWEN3):
        token = adapter.geometry.token_pixels
        processor = adapter.tiny_processor()
        media = synthetic_media(4.0, None, height=6 * token, width=9 * token, seed=3)
        ours = adapter.prepare(processor, media).tensors
        pixels = media.frames.shape[1] * media.frames.shape[2]
        _, family_kwargs = adapter.processor_kwargs(processor, media)
        text = processor.apply_chat_template(media_messages("video", "Why?", None), add_generation_prompt=True,
                                             tokenize=False)
        plain = processor(text=[text], videos=[media.frames], return_tensors="pt",
                          videos_kwargs={"size": {"shortest_edge": pixels, "longest_edge": pixels}, "fps": 2.0,
                                         "do_sample_frames": False, "do_resize": False, **family_kwargs})
        assert ours["video_grid_thw"].tolist() == [[4, 6 * 2, 9 * 2]], adapter.family  # 8 frames
        assert torch.equal(ours["pixel_values_videos"], plain["pixel_values_videos"]), adapter.family
