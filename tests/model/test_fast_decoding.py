"""The fast decoder (static KV cache, CUDA graph on a GPU) gives exactly the eager loop's tokens (issue 9).

On the tiny random model in float32, on the CPU (static cache without a graph):

* greedy tokens equal the eager loop's (:mod:`omnizip_cli.generation.eager`) and stock
  ``generate``, for the full prefill (stock run on the processor's inputs) and for a pruned one
  (every other video token dropped, original positions kept; stock run with ``inputs_embeds`` +
  ``position_ids``), with and without streaming;
* ``max_new_tokens`` is respected, decoding stops at (and includes) an end token, the repetition
  penalty sees the same history, and seeded sampling makes the same draws;
* the policy and the per-process reuse of the static cache.

A GPU test (skipped without CUDA) checks the CUDA-graph path against the eager loop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from omnizip_cli.generation import GenerationOptions, static_graph
from omnizip_cli.generation.eager import forward_tokens, new_cache
from omnizip_cli.generation.static_graph import StaticGraphDecoder, choose_decoder
from omnizip_cli.generation.stream import Prefilled, stream_generate
from omnizip_cli.measure import StageTimer
from omnizip_cli.models import ModelSpec, load_model
from omnizip_cli.models.base import PrefillInputs
from omnizip_cli.models.qwen2_5_omni import ADAPTER

from tests.helpers.model_paths import full_prompt
from tests.helpers.synthetic import synthetic_media


def _decode(model, prefill, options, decoder, *, prompt_ids=None, on_token=None, use_cuda_graph=None, sync=None,
            next_position=None):
    """One answer below the Session: prefill onto an empty cache, then the chosen decoder."""
    text = ADAPTER.text_model(model)
    cache = new_cache(text)
    with torch.no_grad():
        logits = forward_tokens(text, prefill.embeds, prefill.attention_mask, prefill.position_ids, cache)
    prompt = Prefilled(cache=cache, logits=logits, attention_mask=prefill.attention_mask,
                       next_position=prefill.position_ids[0, 0, -1] + 1 if next_position is None
                       else torch.tensor(next_position), prefilled=prefill.length)
    stats = None
    for chunk in stream_generate(text, prompt, prompt_ids=prompt_ids, options=options, decoder=decoder,
                                 use_cuda_graph=use_cuda_graph):
        if chunk.token is not None and on_token is not None:
            on_token(chunk.token)
        stats = chunk.stats or stats
    return _Decoded(stats, cache_capacity=getattr(static_graph._DECODERS.get(model), "capacity", 0),
                    cache_length=prefill.length)


class _Decoded:
    """An answer's stats with what the decoder's cache held (stats are frozen: wrapped, not patched)."""

    def __init__(self, stats, *, cache_capacity: int, cache_length: int) -> None:
        self.stats, self.cache_capacity, self.cache_length = stats, cache_capacity, cache_length

    def __getattr__(self, name):
        return getattr(self.stats, name)


def decode_eager(model, prefill, options, **kwargs):
    return _decode(model, prefill, options, "eager", **kwargs)


def decode_fast(model, prefill, options, **kwargs):
    return _decode(model, prefill, options, "fast", **kwargs)


def encode(model, prepared):
    return ADAPTER.encode(model, prepared, record_saliency=False, timer=StageTimer())


def full_prefill(encoded) -> PrefillInputs:
    """The uncompressed prefill: every token of the prompt."""
    return ADAPTER.prefill_inputs(encoded, None)


NEW_TOKENS = 16


@pytest.fixture(scope="module")
def av_inputs(tiny_cpu_model):
    return full_prompt(tiny_cpu_model, synthetic_media(6.0, 6.0), "What is said?")


@pytest.fixture(scope="module")
def encoded(tiny_cpu_model, av_inputs):
    return encode(tiny_cpu_model.model, av_inputs)


def prune_every_other_video_token(model, encoded) -> PrefillInputs:
    """A compressed-like prefill: half the video tokens dropped, the kept ones at their original positions."""
    keep = torch.ones(encoded.length, dtype=torch.bool, device=encoded.input_ids.device)
    video = (encoded.input_ids[0] == model.config.video_token_id).nonzero()[:, 0]
    keep[video[::2]] = False
    return PrefillInputs(
        embeds=encoded.embeds[:, keep],
        attention_mask=encoded.attention_mask[:, keep],
        position_ids=encoded.position_ids[:, :, keep],
        kept=keep,
    )


def stock_tokens(model, inputs, new_tokens: int) -> list[int]:
    out = model.generate(**inputs.tensors, use_audio_in_video=inputs.use_audio_in_video, max_new_tokens=new_tokens,
                         do_sample=False)
    return out[0, inputs.input_ids.shape[1] :].tolist()


def stock_tokens_from_embeds(model, prefill: PrefillInputs, new_tokens: int) -> list[int]:
    out = model.generate(
        inputs_embeds=prefill.embeds,
        attention_mask=prefill.attention_mask,
        position_ids=prefill.position_ids,
        max_new_tokens=new_tokens,
        do_sample=False,
    )
    return out[0].tolist()


@pytest.fixture
def generation_config_copy(tiny_cpu_model) -> Iterator:
    """The model's generation config, replaced by a copy the test may edit (restored afterwards)."""
    model = tiny_cpu_model.model
    original = model.generation_config
    model.generation_config = copy.deepcopy(original)
    try:
        yield model.generation_config
    finally:
        model.generation_config = original


# ---------------------------------------------------------------------------------------- policy


def test_policy_fast_only_on_cuda_with_sdpa_or_eager() -> None:
    assert choose_decoder("cuda:0", "sdpa") == ("fast", None)
    assert choose_decoder("cuda", "eager") == ("fast", None)
    decoder, reason = choose_decoder("cpu", "sdpa")
    assert decoder == "eager" and reason is not None and "cpu" in reason.lower()
    decoder, reason = choose_decoder("cuda:0", "flash_attention_2")
    assert decoder == "eager" and reason is not None and "flash_attention_2" in reason


def test_cuda_graph_on_a_cpu_model_is_refused(tiny_cpu_model, encoded) -> None:
    text = ADAPTER.text_model(tiny_cpu_model.model)
    cache = new_cache(text)
    with pytest.raises(ValueError, match="CUDA"):
        StaticGraphDecoder(text, cache, encoded.attention_mask, encoded.position_ids[0, 0, -1] + 1, 2,
                           use_cuda_graph=True)


def test_cpu_default_is_the_static_path_without_graph(tiny_cpu_model, encoded) -> None:
    result = decode_fast(tiny_cpu_model.model, full_prefill(encoded), GenerationOptions(max_new_tokens=3))
    assert result.decoder == "static"
    assert result.cache_capacity >= encoded.length + 3
    assert any("static KV cache" in note for note in result.notes)


# ------------------------------------------------------------------------------------ greedy tokens


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_full_prefill_greedy_equals_eager_loop_and_stock_generate(tiny_cpu_model, av_inputs, encoded,
                                                                  streaming) -> None:
    model = tiny_cpu_model.model
    expected = stock_tokens(model, av_inputs, NEW_TOKENS)
    prefill = full_prefill(encoded)
    eager = decode_eager(model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS), prompt_ids=encoded.input_ids)
    streamed: list[int] = []
    fast = decode_fast(
        model,
        prefill,
        GenerationOptions(max_new_tokens=NEW_TOKENS),
        prompt_ids=encoded.input_ids,
        on_token=streamed.append if streaming else None,
        use_cuda_graph=False,
    )
    assert eager.token_ids == expected
    assert fast.token_ids == expected
    if streaming:
        assert streamed == fast.token_ids
    assert torch.equal(fast.prefill_logits, eager.prefill_logits)  # the same prefill, bit for bit
    assert fast.cache_length == eager.cache_length == encoded.length
    assert fast.stop_reason == eager.stop_reason


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_pruned_prefill_greedy_equals_eager_loop_and_stock_generate(tiny_cpu_model, encoded, streaming) -> None:
    model = tiny_cpu_model.model
    pruned = prune_every_other_video_token(model, encoded)
    assert pruned.length < encoded.length
    # Slots and positions differ: the first new token goes to KV slot L' but to rope position max_pos + 1.
    assert int(pruned.position_ids[0, 0, -1]) + 1 != pruned.length
    expected = stock_tokens_from_embeds(model, pruned, NEW_TOKENS)
    eager = decode_eager(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS))
    streamed: list[int] = []
    fast = decode_fast(
        model,
        pruned,
        GenerationOptions(max_new_tokens=NEW_TOKENS),
        on_token=streamed.append if streaming else None,
        use_cuda_graph=False,
    )
    assert eager.token_ids == expected
    assert fast.token_ids == expected
    if streaming:
        assert streamed == fast.token_ids
    assert fast.cache_length == pruned.length


def test_wrong_rope_positions_would_change_the_tokens(tiny_cpu_model, encoded) -> None:
    """The comparison above has teeth: decoding at slot indices instead of positions gives other tokens."""
    model = tiny_cpu_model.model
    pruned = prune_every_other_video_token(model, encoded)
    right = decode_fast(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False)
    wrong = decode_fast(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False,
                        next_position=pruned.length)
    assert right.token_ids != wrong.token_ids


def test_masked_prefill_slots_stay_masked_while_decoding(tiny_cpu_model, encoded) -> None:
    """Slots the prefill's attention mask excludes are excluded at every step, as in the eager loop."""
    model = tiny_cpu_model.model
    full = full_prefill(encoded)
    mask = full.attention_mask.clone()
    mask[:, 20:60] = 0
    masked = PrefillInputs(full.embeds, mask, full.position_ids)
    eager = decode_eager(model, masked, GenerationOptions(max_new_tokens=NEW_TOKENS))
    fast = decode_fast(model, masked, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False)
    assert fast.token_ids == eager.token_ids
    unmasked = decode_fast(model, full, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False)
    assert unmasked.token_ids != fast.token_ids  # the mask mattered


def test_zero_new_tokens_is_a_usage_error() -> None:
    from omnizip_cli.errors import UsageError

    with pytest.raises(UsageError, match="max-new-tokens"):
        GenerationOptions(max_new_tokens=0)


@pytest.mark.parametrize("max_new_tokens", [1, 5])
def test_max_new_tokens_is_respected(tiny_cpu_model, encoded, max_new_tokens) -> None:
    model = tiny_cpu_model.model
    prefill = full_prefill(encoded)
    eager = decode_eager(model, prefill, GenerationOptions(max_new_tokens=max_new_tokens))
    fast = decode_fast(model, prefill, GenerationOptions(max_new_tokens=max_new_tokens), use_cuda_graph=False)
    assert len(fast.token_ids) == max_new_tokens
    assert fast.token_ids == eager.token_ids
    assert fast.stop_reason == "max_new_tokens"


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_stops_at_an_end_token_like_generate(tiny_cpu_model, av_inputs, encoded, generation_config_copy,
                                             streaming) -> None:
    model = tiny_cpu_model.model
    prefill = full_prefill(encoded)
    free_run = decode_eager(model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS)).token_ids
    # Make the first token that has not appeared before (after the first few) an end token.
    index = next(i for i in range(3, len(free_run)) if free_run[i] not in free_run[:i])
    generation_config_copy.eos_token_id = [free_run[index]]
    expected = free_run[: index + 1]  # the end token is part of the answer's ids, as in generate

    assert stock_tokens(model, av_inputs, NEW_TOKENS) == expected
    eager = decode_eager(model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS))
    streamed: list[int] = []
    fast = decode_fast(
        model,
        prefill,
        GenerationOptions(max_new_tokens=NEW_TOKENS),
        on_token=streamed.append if streaming else None,
        use_cuda_graph=False,
    )
    assert eager.token_ids == fast.token_ids == expected
    assert eager.stop_reason == fast.stop_reason == "eos"
    if streaming:
        assert streamed == expected


def test_repetition_penalty_sees_the_prompt_and_answer_like_generate(
    tiny_cpu_model, av_inputs, encoded, generation_config_copy
) -> None:
    model = tiny_cpu_model.model
    generation_config_copy.repetition_penalty = 1.5
    expected = stock_tokens(model, av_inputs, NEW_TOKENS)
    prefill = full_prefill(encoded)
    options = GenerationOptions(max_new_tokens=NEW_TOKENS)
    eager = decode_eager(model, prefill, options, prompt_ids=encoded.input_ids)
    fast = decode_fast(model, prefill, options, prompt_ids=encoded.input_ids, use_cuda_graph=False)
    assert eager.token_ids == fast.token_ids == expected


@pytest.mark.parametrize("seed", [0, 7])
def test_seeded_sampling_makes_the_same_draws_as_the_eager_loop(tiny_cpu_model, encoded, seed) -> None:
    model = tiny_cpu_model.model
    pruned = prune_every_other_video_token(model, encoded)
    options = GenerationOptions(max_new_tokens=NEW_TOKENS, temperature=0.9, top_k=50, top_p=0.95, seed=seed)
    eager = decode_eager(model, pruned, options)
    fast = decode_fast(model, pruned, options, use_cuda_graph=False)
    assert fast.token_ids == eager.token_ids
    greedy = decode_fast(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False)
    assert fast.token_ids != greedy.token_ids  # it did sample


def test_pipelined_loop_of_the_gpu_path_gives_the_same_tokens(
    tiny_cpu_model, encoded, generation_config_copy, monkeypatch
) -> None:
    """The GPU loop queues step t+1 before reading token t; run that logic on the CPU."""
    monkeypatch.setattr(static_graph, "_PIPELINED_DEVICES", ("cuda", "cpu"))
    model = tiny_cpu_model.model
    pruned = prune_every_other_video_token(model, encoded)
    for options in (
        GenerationOptions(max_new_tokens=NEW_TOKENS),
        GenerationOptions(max_new_tokens=1),
        GenerationOptions(max_new_tokens=2),
        GenerationOptions(max_new_tokens=NEW_TOKENS, temperature=0.9, top_k=50, top_p=0.95, seed=5),
    ):
        eager = decode_eager(model, pruned, options)
        streamed: list[int] = []
        fast = decode_fast(model, pruned, options, on_token=streamed.append, use_cuda_graph=False)
        assert fast.token_ids == eager.token_ids == streamed
        assert fast.stop_reason == eager.stop_reason

    free_run = decode_eager(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS)).token_ids
    index = next(i for i in range(3, len(free_run)) if free_run[i] not in free_run[:i])
    generation_config_copy.eos_token_id = [free_run[index]]
    stopped = decode_fast(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False)
    assert stopped.token_ids == free_run[: index + 1] and stopped.stop_reason == "eos"
    # the step queued after the end token was discarded: the next answer is unaffected
    generation_config_copy.eos_token_id = []
    assert decode_fast(model, pruned, GenerationOptions(max_new_tokens=NEW_TOKENS)).token_ids == free_run


def test_eager_attention_gets_the_same_tokens() -> None:
    eager_loaded = load_model(ModelSpec(model="tiny", device="cpu", dtype="float32", attn_implementation="eager"))
    model = eager_loaded.model
    inputs = full_prompt(eager_loaded, synthetic_media(4.0, 4.0, seed=1), "Describe it.")
    prefill = prune_every_other_video_token(model, encode(model, inputs))
    eager = decode_eager(model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS))
    fast = decode_fast(model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS), use_cuda_graph=False)
    assert fast.token_ids == eager.token_ids


def test_static_cache_is_reused_then_regrown(tiny_cpu_model, encoded) -> None:
    model = tiny_cpu_model.model
    prefill = full_prefill(encoded)
    first = decode_fast(model, prefill, GenerationOptions(max_new_tokens=4), use_cuda_graph=False)
    again = decode_fast(model, prefill, GenerationOptions(max_new_tokens=4), use_cuda_graph=False)
    assert any("reused" in note for note in again.notes)
    assert again.warmup_seconds == 0.0 and again.cache_capacity == first.cache_capacity
    assert again.token_ids == first.token_ids
    beyond = first.cache_capacity - encoded.length + 1  # one token more than the cache holds
    longer = decode_fast(model, prefill, GenerationOptions(max_new_tokens=beyond), use_cuda_graph=False)
    assert longer.cache_capacity >= encoded.length + beyond
    assert any("allocated" in note for note in longer.notes)
    # the regrown cache still decodes the same answer
    assert longer.token_ids[:4] == first.token_ids


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_decode_step_never_reads_the_device_on_the_host(attn) -> None:
    """What CUDA-graph capture needs, checked on the CPU: the step runs on the meta device, where any
    host read of a tensor's value (``.item()``, ``bool()``, ``.tolist()``, ``.cpu()``) raises."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration

    from omnizip_cli.generation.static_graph import StaticDecoder
    config = ADAPTER.tiny_thinker_config()
    with torch.device("meta"):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, attn_implementation=attn)
    model.eval()
    decoder = StaticDecoder(ADAPTER.text_model(model), capacity=128)
    assert decoder.cache.layers[0].keys.device.type == "meta"
    with torch.no_grad():
        logits = decoder.replay(use_graph=False)
        logits = decoder.replay(use_graph=False)
    assert logits.shape == (1, config.text_config.vocab_size) and logits.device.type == "meta"
    with pytest.raises(RuntimeError, match="meta"):
        decoder.position.sum().item()  # the check has teeth


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_gives_the_eager_loops_tokens() -> None:
    gpu = load_model(ModelSpec(model="tiny", device="cuda", dtype="float32", attn_implementation="sdpa"))
    model = gpu.model
    inputs = full_prompt(gpu, synthetic_media(6.0, 6.0), "What is said?")
    encoded = encode(model, inputs)
    sync = torch.cuda.synchronize
    for prefill in (full_prefill(encoded), prune_every_other_video_token(model, encoded)):
        eager = decode_eager(model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS), sync=sync)
        streamed: list[int] = []
        fast = decode_fast(
            model, prefill, GenerationOptions(max_new_tokens=NEW_TOKENS), on_token=streamed.append, sync=sync
        )
        assert fast.decoder == "static+cuda_graph", fast.notes
        assert fast.token_ids == eager.token_ids
        assert streamed == fast.token_ids

    again = decode_fast(model, full_prefill(encoded), GenerationOptions(max_new_tokens=NEW_TOKENS), sync=sync)
    assert again.warmup_seconds == 0.0 and any("reused" in note for note in again.notes)

    # an end token in the middle: the step queued after it is discarded
    tokens = again.token_ids
    index = next(i for i in range(3, len(tokens)) if tokens[i] not in tokens[:i])
    original = model.generation_config
    model.generation_config = copy.deepcopy(original)
    model.generation_config.eos_token_id = [tokens[index]]
    try:
        stopped = decode_fast(model, full_prefill(encoded), GenerationOptions(max_new_tokens=NEW_TOKENS))
    finally:
        model.generation_config = original
    assert stopped.token_ids == tokens[: index + 1] and stopped.stop_reason == "eos"

    options = GenerationOptions(max_new_tokens=NEW_TOKENS, temperature=0.9, top_k=50, top_p=0.95, seed=3)
    assert decode_fast(model, full_prefill(encoded), options).token_ids == decode_eager(
        model, full_prefill(encoded), options
    ).token_ids
