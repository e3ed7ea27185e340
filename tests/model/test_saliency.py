"""Audio saliency (issue 5): the attention each audio token receives in the last audio-encoder layer.

On the tiny random thinker (CPU, float32), for ``sdpa`` and ``eager``:

* the recorder's frame scores equal a naive float64 computation (full ``[H, T, T]`` softmax from the
  last layer's captured input) within 1e-6 relative, and the token scores are its per-audio pairs;
* one score per ``<|AUDIO|>`` token the processor writes, for odd and even frame counts and for two
  audios in one prompt (paired like the encoder's own pooling indices);
* the model's output is bitwise identical with and without the recorder; the hook is removed after
  the block, also on an exception.

Memory: :func:`frame_attention_received` on a 300 s input (T = 15,000 frames, 2 heads of the real
head size 64 to keep CPU time short; the bound scales with the head group, not with H) stays within
:func:`attention_received_peak_bytes`, measured op by op (every tensor storage created) and, where
Linux allows resetting the peak, by the process's peak RSS; chunked equals unchunked.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from omnizip_cli.models.saliency import (
    AudioSaliencyRecorder,
    attention_received_peak_bytes,
    default_head_chunk,
    frame_attention_received,
    pair_frames_to_tokens,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
RTOL = 1e-6


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("saliency_memory_bench", ROOT / "benchmarks" / "saliency_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_tiny(attn_implementation: str):
    from omnizip_cli.models import ModelSpec, load_model

    loaded = load_model(ModelSpec(model="tiny", device="cpu", dtype="float32", attn_implementation=attn_implementation))
    assert loaded.model.config.audio_config._attn_implementation == attn_implementation
    return loaded


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    """The tiny random thinker with the default ``sdpa`` attention."""
    return _load_tiny("sdpa")


@pytest.fixture(scope="module")
def tiny_eager(tiny_cache):
    return _load_tiny("eager")


@pytest.fixture(params=["sdpa", "eager"])
def tiny_any(request):
    """The tiny thinker under each attention implementation (the hook recomputes q/k itself)."""
    return request.getfixturevalue("tiny" if request.param == "sdpa" else "tiny_eager")


def wav(seconds: float, seed: int = 0) -> np.ndarray:
    """A 440 Hz tone with a little noise (so the frames differ), float32 at 16 kHz."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def features(processor, audio: np.ndarray, pad: int = 37) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features and ``feature_attention_mask``, with ``pad`` masked-out frames at the end.

    (``padding="max_length"`` would compute 300 s of mel frames per call: too slow for the suite.)
    """
    out = processor.feature_extractor(
        audio, sampling_rate=SAMPLE_RATE, return_attention_mask=True, padding="longest", return_tensors="pt"
    )
    input_features = torch.nn.functional.pad(out["input_features"], (0, pad))
    mask = torch.nn.functional.pad(out["attention_mask"], (0, pad))
    return input_features, mask


def frame_lengths(model, feature_mask: torch.Tensor) -> list[int]:
    after_cnn, _ = model.model.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
    return [int(x) for x in after_cnn.tolist()]


def last_attention(model):
    return model.model.audio_tower.layers[-1].self_attn


def capture_last_layer_input(model, input_features, feature_mask):
    """The hidden states the last audio layer's attention receives (a separate plain hook)."""
    store = {}

    def hook(module, args, kwargs):
        store["hidden"] = kwargs["hidden_states"].detach().clone()

    handle = last_attention(model).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model.model.get_audio_features(input_features, feature_mask).last_hidden_state
    finally:
        handle.remove()
    return store["hidden"], out


@torch.no_grad()
def naive_frame_scores(attention, hidden: torch.Tensor) -> torch.Tensor:
    """Full [H, T, T] softmax in float64 over all frames, averaged over heads and queries."""
    num_frames = hidden.shape[0]
    heads = attention.num_heads
    q = attention.q_proj(hidden).double().reshape(num_frames, heads, -1).transpose(0, 1)
    k = attention.k_proj(hidden).double().reshape(num_frames, heads, -1).transpose(0, 1)
    probs = torch.softmax(q @ k.transpose(1, 2) * attention.scaling, dim=-1)
    return probs.sum(dim=(0, 1)) / (heads * num_frames)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == torch.float32
    err = ((actual.double() - expected.double()).abs() / expected.double().abs().clamp_min(1e-300)).max()
    assert float(err) <= rtol, f"max relative error {float(err):.3g} > {rtol}"


# ------------------------------------------------------------------------------- on the tiny model


@pytest.mark.parametrize("seconds,parity", [(1.0, "even"), (2.37, "odd"), (6.0, "even")])
def test_scores_match_naive_float64(tiny_any, seconds: float, parity: str) -> None:
    model = tiny_any.model
    input_features, mask = features(tiny_any.processor, wav(seconds))
    hidden, _ = capture_last_layer_input(model, input_features, mask)
    num_frames = hidden.shape[0]
    assert num_frames == sum(frame_lengths(model, mask))
    assert num_frames % 2 == (parity == "odd")

    with torch.no_grad(), AudioSaliencyRecorder(model.model.audio_tower, query_chunk=32) as recorder:
        audio = model.model.get_audio_features(input_features, mask).last_hidden_state
    expected = naive_frame_scores(last_attention(model), hidden)
    assert_rel_close(recorder.frame_scores, expected)
    assert math.isclose(float(recorder.frame_scores.sum()), 1.0, rel_tol=1e-5)

    tokens = recorder.token_scores(frame_lengths(model, mask))
    even = num_frames - num_frames % 2
    assert_rel_close(tokens, expected[:even].view(-1, 2).mean(-1))
    assert tokens.shape[0] == audio.shape[0] == num_frames // 2
    assert torch.equal(tokens, recorder.token_scores())  # one audio: the lengths are optional


@pytest.mark.parametrize("seconds", [0.5, 1.0, 2.37, 6.0])
def test_one_score_per_audio_token_of_the_processor(tiny, seconds: float) -> None:
    model, processor = tiny.model, tiny.processor
    content = [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "What?"}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = processor(text=[prompt], audio=[wav(seconds)], return_tensors="pt")
    audio_tokens = int((inputs["input_ids"] == model.config.audio_token_id).sum())

    with torch.no_grad(), AudioSaliencyRecorder(model.model.audio_tower) as recorder:
        model.model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
    lengths = frame_lengths(model, inputs["feature_attention_mask"])
    assert recorder.frame_scores.shape[0] == sum(lengths)
    assert recorder.token_scores(lengths).shape == (audio_tokens,)


def test_two_audios_are_paired_per_audio_like_the_encoder(tiny) -> None:
    """Odd first audio (119 frames): global pairing would shift every score of the second audio."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import get_pool_indices

    model, processor = tiny.model, tiny.processor
    content = [{"type": "audio", "audio": "a.wav"}, {"type": "audio", "audio": "b.wav"}, {"type": "text", "text": "?"}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = processor(text=[prompt], audio=[wav(2.37, seed=1), wav(1.0, seed=2)], return_tensors="pt")
    audio_tokens = int((inputs["input_ids"] == model.config.audio_token_id).sum())
    mask = inputs["feature_attention_mask"]
    lengths = frame_lengths(model, mask)
    assert lengths == [119, 50]

    hidden, _ = capture_last_layer_input(model, inputs["input_features"], mask)
    with torch.no_grad(), AudioSaliencyRecorder(model.model.audio_tower) as recorder:
        audio = model.model.get_audio_features(inputs["input_features"], mask).last_hidden_state
    tokens = recorder.token_scores(lengths)
    assert tokens.shape[0] == audio_tokens == audio.shape[0] == 59 + 25
    # The encoder pools frames (i, i + 1) at these indices; score j must pair the same frames.
    first = get_pool_indices(mask.sum(-1))
    expected_frames = naive_frame_scores(last_attention(model), hidden)  # global softmax over both audios
    assert_rel_close(tokens, (expected_frames[first] + expected_frames[first + 1]) / 2)
    with pytest.raises(ValueError, match="do not add up"):
        recorder.token_scores([119, 49])


def test_model_output_is_bitwise_unchanged(tiny_any) -> None:
    model = tiny_any.model
    input_features, mask = features(tiny_any.processor, wav(2.37))
    with torch.no_grad():
        plain = model.model.get_audio_features(input_features, mask).last_hidden_state
        with AudioSaliencyRecorder(model.model.audio_tower) as recorder:
            observed = model.model.get_audio_features(input_features, mask).last_hidden_state
    assert recorder.calls == 1
    assert torch.equal(plain, observed)


def test_hook_is_removed_after_the_block_and_on_exceptions(tiny) -> None:
    model = tiny.model
    attention = last_attention(model)
    before = dict(attention._forward_pre_hooks)
    recorder = AudioSaliencyRecorder(model.model.audio_tower)
    with recorder:
        assert recorder.active and len(attention._forward_pre_hooks) == len(before) + 1
    assert not recorder.active and dict(attention._forward_pre_hooks) == before

    input_features, mask = features(tiny.processor, wav(1.0))
    with pytest.raises(KeyError, match="boom"):
        with AudioSaliencyRecorder(model.model.audio_tower) as recorder:
            with torch.no_grad():
                model.model.get_audio_features(input_features, mask)
            raise KeyError("boom")
    assert dict(attention._forward_pre_hooks) == before
    assert recorder.frame_scores.shape[0] == 50  # what was recorded stays readable
    with torch.no_grad():  # and nothing is recorded any more
        model.model.get_audio_features(*features(tiny.processor, wav(2.37)))
    assert recorder.calls == 1 and recorder.frame_scores.shape[0] == 50


def test_nothing_recorded_is_an_error(tiny) -> None:
    with AudioSaliencyRecorder(tiny.model.model.audio_tower) as recorder:
        pass
    with pytest.raises(RuntimeError, match="no audio-encoder forward"):
        recorder.frame_scores
    with pytest.raises(ValueError):
        AudioSaliencyRecorder(tiny.model.model.audio_tower, query_chunk=0)


# ------------------------------------------------------------------------------- the pure function


def test_chunked_equals_unchunked() -> None:
    gen = torch.Generator().manual_seed(0)
    heads, frames, dim = 3, 1001, 64
    q = torch.randn(heads, frames, dim, generator=gen)
    k = torch.randn(heads, frames, dim, generator=gen)
    scaling = dim**-0.5
    reference = torch.softmax(q.double() @ k.double().transpose(1, 2) * scaling, -1).sum((0, 1)) / (heads * frames)
    one_block = frame_attention_received(q, k, scaling, query_chunk=frames, head_chunk=heads)
    assert_rel_close(one_block, reference)
    for query_chunk, head_chunk in [(37, 2), (256, 1), (256, 3), (1000, 5)]:
        chunked = frame_attention_received(q, k, scaling, query_chunk=query_chunk, head_chunk=head_chunk)
        assert_rel_close(chunked, reference)
        torch.testing.assert_close(chunked, one_block, rtol=2 * RTOL, atol=0)
    # One query per block: H*T float32 additions into the accumulator, whose rounding grows like
    # sqrt(blocks) * 6e-8 (3e-6 at 3,000 blocks); still far below anything that changes a ranking.
    small = frame_attention_received(q[:, :300], k[:, :300], scaling, query_chunk=1, head_chunk=1)
    small_ref = torch.softmax(q[:, :300].double() @ k[:, :300].double().transpose(1, 2) * scaling, -1).sum((0, 1))
    assert_rel_close(small, small_ref / (heads * 300), rtol=5 * RTOL)
    # bf16 inputs are upcast: float32 result equal to the float32 run on the same (rounded) values
    q16, k16 = q.bfloat16(), k.bfloat16()
    from_bf16 = frame_attention_received(q16, k16, scaling, query_chunk=128, head_chunk=2)
    assert from_bf16.dtype == torch.float32
    torch.testing.assert_close(
        from_bf16, frame_attention_received(q16.float(), k16.float(), scaling, query_chunk=128, head_chunk=2),
        rtol=0, atol=0,
    )


def test_pairing_and_validation() -> None:
    frames = torch.arange(7, dtype=torch.float32)
    assert pair_frames_to_tokens(frames).tolist() == [0.5, 2.5, 4.5]
    assert pair_frames_to_tokens(frames, [3, 4]).tolist() == [0.5, 3.5, 5.5]
    assert pair_frames_to_tokens(frames, torch.tensor([1, 6])).tolist() == [1.5, 3.5, 5.5]
    with pytest.raises(ValueError):
        pair_frames_to_tokens(frames, [3, 3])
    with pytest.raises(ValueError):
        frame_attention_received(torch.zeros(2, 5, 4), torch.zeros(2, 5, 4), 0.5, query_chunk=0, head_chunk=1)
    with pytest.raises(ValueError):
        frame_attention_received(torch.zeros(2, 5, 4), torch.zeros(2, 6, 4), 0.5, query_chunk=1, head_chunk=1)
    assert frame_attention_received(torch.zeros(2, 0, 4), torch.zeros(2, 0, 4), 0.5, query_chunk=4,
                                    head_chunk=1).shape == (0,)


def test_memory_bound_on_a_300_s_input() -> None:
    """T = 15,000 frames (300 s): peak extra memory within the stated bound, ~40x below [H, T, T]."""
    bench = _load_benchmark()
    heads, frames, dim, query_chunk = 2, 300 * 50, 64, 256
    # The recorder's automatic head group: 256 x 15000 x 4 B = 15.4 MB per head.
    assert default_head_chunk(20, frames, query_chunk, device="cpu") == 1  # 16 MiB budget on the CPU
    assert default_head_chunk(20, frames, query_chunk, device="cuda") == 4  # 64 MiB on a GPU
    head_chunk = 2  # a group of 2 heads, to see the bound scale with the group
    bound = attention_received_peak_bytes(heads, frames, dim, query_chunk=query_chunk, head_chunk=head_chunk)
    assert bound == 4 * (2 * 256 * 15000 + 2 * 2 * 15000 * 64 + 2 * 15000 + 4 * 2 * 256 + 3 * 15000)
    full_matrix = 4 * heads * frames * frames
    assert bound < full_matrix / 35

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(heads, frames, dim, generator=gen)
    k = torch.randn(heads, frames, dim, generator=gen)

    def call() -> torch.Tensor:
        return frame_attention_received(q, k, dim**-0.5, query_chunk=query_chunk, head_chunk=head_chunk)

    call_small = frame_attention_received(q[:, :64], k[:, :64], dim**-0.5, query_chunk=query_chunk,
                                          head_chunk=head_chunk)
    assert call_small.shape == (64,)
    # Measured first (later runs leave freed blocks resident). RSS is process-wide: in a long test
    # session other threads' allocations can land inside the window, so the smaller of two
    # measurements is taken.
    deltas = [bench.rss_peak_delta(call) for _ in range(2)]
    rss_delta = None if None in deltas else min(deltas)
    with bench.TensorPeakTracker() as tracker:
        scores = call()
    score_block = 4 * head_chunk * query_chunk * frames
    assert tracker.largest == score_block  # the block of scores is the largest thing allocated
    assert score_block <= tracker.peak <= bound, (tracker.peak, bound)
    if rss_delta is not None:  # + allocator / BLAS workspace, which the tensor bound does not count
        assert rss_delta <= bound + bench.RSS_SLACK_BYTES, (rss_delta, bound)
    assert scores.shape == (frames,) and scores.dtype == torch.float32
    assert math.isclose(float(scores.sum()), 1.0, rel_tol=1e-4)
