"""Audio saliency on long audio: windowed softmax past the threshold, global (unchanged) up to it."""

from __future__ import annotations

import pytest
import torch

from omnizip_cli.models.saliency import (
    GLOBAL_SALIENCY_MAX_FRAMES,
    AudioSaliencyRecorder,
    frame_attention_received,
    windowed_attention_received,
)
from tests.model.test_saliency import (  # noqa: F401 (fixtures)
    assert_rel_close,
    features,
    frame_lengths,
    last_attention,
    tiny,
    wav,
)


@torch.no_grad()
def naive_windowed(q: torch.Tensor, k: torch.Tensor, scaling: float, bounds: list[int]) -> torch.Tensor:
    """Float64 loop: a full softmax inside each window, summed over heads and queries, / (H*T)."""
    heads, frames, _ = q.shape
    out = torch.zeros(frames, dtype=torch.float64)
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qs, ks = q[:, start:end].double(), k[:, start:end].double()
        out[start:end] = torch.softmax(qs @ ks.transpose(1, 2) * scaling, dim=-1).sum(dim=(0, 1))
    return out / (heads * frames)


def test_windowed_equals_a_naive_float64_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(3, 257, 16, generator=generator)
    k = torch.randn(3, 257, 16, generator=generator)
    bounds = [0, 100, 100, 200, 237, 257]  # uneven, with an empty window
    ours = windowed_attention_received(q, k, 0.25, bounds, device_budget_bytes=3 * 100 * 100 * 4)  # one window a block
    assert_rel_close(ours, naive_windowed(q, k, 0.25, bounds))
    assert float(ours.sum()) == pytest.approx(1.0, rel=1e-5)
    # block size does not change the result beyond float32 rounding
    assert torch.allclose(windowed_attention_received(q, k, 0.25, torch.tensor(bounds)), ours, rtol=1e-6, atol=0)


def test_one_window_is_the_global_softmax() -> None:
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(2, 300, 8, generator=generator)
    k = torch.randn(2, 300, 8, generator=generator)
    windowed = windowed_attention_received(q, k, 0.3, [0, 300])
    global_ = frame_attention_received(q, k, 0.3, query_chunk=64, head_chunk=1)
    assert torch.allclose(windowed, global_, rtol=1e-5, atol=0)


@pytest.mark.parametrize("bounds", [[0, 5, 3, 10], [1, 10], [0, 9]])
def test_bad_windows_raise(bounds: list[int]) -> None:
    q = torch.zeros(1, 10, 4)
    with pytest.raises(ValueError, match="cu_seqlens"):
        windowed_attention_received(q, q, 1.0, bounds)


def _record(model, input_features, mask, **kwargs):
    captured = {}

    def grab(module, args, kw):
        captured["hidden"] = kw["hidden_states"].detach().clone()
        captured["cu_seqlens"] = kw["cu_seqlens"].detach().clone()

    handle = last_attention(model).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with AudioSaliencyRecorder(model.model.audio_tower, **kwargs) as recorder, torch.no_grad():
            model.model.get_audio_features(input_features, mask)
    finally:
        handle.remove()
    return recorder, captured


def test_short_audio_keeps_the_global_scores_exactly(tiny) -> None:
    model = tiny.model
    input_features, mask = features(tiny.processor, wav(6.0))
    default, _ = _record(model, input_features, mask)
    always_global, _ = _record(model, input_features, mask, global_max_frames=None)
    assert not default.windowed and not always_global.windowed
    assert torch.equal(default.frame_scores, always_global.frame_scores)
    assert GLOBAL_SALIENCY_MAX_FRAMES == 15_000  # 300 s of audio at 50 post-CNN frames per second


def test_past_the_threshold_the_encoder_windows_are_used(tiny) -> None:
    model = tiny.model
    input_features, mask = features(tiny.processor, wav(6.0))
    frames = frame_lengths(model, mask)[0]
    at, _ = _record(model, input_features, mask, global_max_frames=frames)  # T == threshold: global
    assert not at.windowed
    past, captured = _record(model, input_features, mask, global_max_frames=frames - 1)
    assert past.windowed
    bounds = [int(x) for x in captured["cu_seqlens"].tolist()]
    assert len(bounds) > 2  # the encoder splits 6 s into several windows
    attention = last_attention(model)
    hidden = captured["hidden"]
    q = attention.q_proj(hidden).reshape(frames, attention.num_heads, -1).transpose(0, 1)
    k = attention.k_proj(hidden).reshape(frames, attention.num_heads, -1).transpose(0, 1)
    assert_rel_close(past.frame_scores, naive_windowed(q, k, attention.scaling, bounds))
    assert past.token_scores([frames]).shape == (frames // 2,)
    assert not torch.allclose(past.frame_scores, at.frame_scores)


def test_recorder_rejects_a_negative_threshold(tiny) -> None:
    with pytest.raises(ValueError, match="global_max_frames"):
        AudioSaliencyRecorder(tiny.model.model.audio_tower, global_max_frames=-1)
