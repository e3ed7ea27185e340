"""The Qwen2.5-Omni thinker architectures the benchmarks build with random weights (no download).

The dimensions are here; the configuration itself is built by the adapter
(:meth:`~omnizip_cli.models.qwen_omni_thinker.QwenOmniThinkerLayout.thinker_config`, as the tiny
checkpoint's). Shared by ``model_stages.py``, ``decode_speed.py`` and ``session.py``, with the few
model operations they time below the :class:`~omnizip_cli.generation.session.Session` (building the
random thinker, prefill onto a fresh cache, one decode step, the keep plan), written on the API of
the model's adapter (found from the model's ``model_type``: the same helpers drive the Qwen3-Omni
thinker of ``qwen3_configs.py``). The 7B and 3B dimensions are those of the hub checkpoints'
``thinker_config`` (7B: 8.93 B parameters, 3B: 4.70 B; the smoke test checks them on the meta
device).
"""

from __future__ import annotations

from typing import Any

# The thinker dimensions of the hub checkpoints (see the module docstring).
SIZES: dict[str, dict[str, Any]] = {
    "7b": dict(
        text=dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4,
        ),
        out_dim=3584,
    ),
    "3b": dict(
        text=dict(
            vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
            num_attention_heads=16, num_key_value_heads=2,
        ),
        out_dim=2048,
    ),
}
# Not a Qwen2.5-Omni size: a 0.5B-class language model (Qwen2.5-0.5B's dimensions) under the tiny
# encoders, so that a CPU run of session.py is bound by the language model as the 7B on a GPU is.
CPU_SIZES: dict[str, dict[str, Any]] = {
    "0.5b-llm": dict(
        text=dict(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2,
        ),
        out_dim=896,
        mrope_section=[8, 12, 12],  # head_dim 64
    ),
}
# Qwen2.5-Omni's special token ids (the hub checkpoints' thinker_config and tokenizer), under the keys
# of omnizip_cli.models.qwen_omni_thinker.TOKEN_ID_KEYS.
QWEN_OMNI_TOKEN_IDS = dict(
    pad=151643, im_start=151644, im_end=151645, audio=151646, audio_start=151647, audio_end=151648,
    vision_start=151652, vision_end=151653, image=151655, video=151656, user=872,
)


def full_thinker_config(size: str, *, tiny_encoders: bool = False, token_ids: dict[str, int] | None = None) -> Any:
    """``Qwen2_5OmniThinkerConfig`` with the real 7B or 3B dimensions (built by the adapter).

    ``tiny_encoders=True`` keeps the language model full-size but shrinks the vision and audio
    encoders to one small layer each, for benchmarks that time only the language model.
    ``token_ids`` replaces the hub checkpoints' special token ids (same keys as
    :data:`QWEN_OMNI_TOKEN_IDS`), e.g. with the tiny tokenizer's
    (:func:`~omnizip_cli.models.qwen_omni_thinker.token_ids_of`) so that the stock processor around
    that tokenizer feeds the full-size model.
    """
    from omnizip_cli.models.qwen2_5_omni import ADAPTER
    from omnizip_cli.models.qwen_omni_thinker import ThinkerDims

    spec = SIZES[size] if size in SIZES else CPU_SIZES[size]
    text = dict(
        spec["text"],
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": spec.get("mrope_section", [16, 24, 24])},
        use_sliding_window=False,
        tie_word_embeddings=False,
    )
    vision = dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, hidden_act="silu", in_channels=3,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], out_hidden_size=spec["out_dim"],
    )
    audio = dict(
        num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, d_model=1280,
        n_window=100, max_source_positions=1500, output_dim=spec["out_dim"],
    )
    if tiny_encoders:
        vision = dict(
            depth=1, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112, fullatt_block_indexes=[0], out_hidden_size=spec["out_dim"],
        )
        audio = dict(
            num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
            n_window=100, max_source_positions=1500, output_dim=spec["out_dim"],
        )
    return ADAPTER.thinker_config({**QWEN_OMNI_TOKEN_IDS, **(token_ids or {})}, ThinkerDims(text, audio, vision))


def build_model(config: Any, device: str, dtype: Any) -> Any:
    """Random-weight thinker of ``config``'s family (Qwen2.5-Omni or Qwen3-Omni), built directly on
    ``device`` in ``dtype`` (``device="meta"``: no memory), seeded, ``sdpa`` attention, in eval mode,
    with the generation config's end and pad ids from the text config (never changes the default dtype)."""
    import torch
    from transformers.utils import logging as hf_logging

    from omnizip_cli.models.registry import adapter_for_model_type

    thinker_class = adapter_for_model_type(config.model_type).classes().thinker
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # Qwen3-Omni: "unrecognized keys" in rope_parameters
    try:
        if device != "meta":
            torch.manual_seed(0)
        with torch.device(device):
            model = thinker_class._from_config(config, dtype=dtype, attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)
    text = config.text_config
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id
    return model.eval()


# ------------------------------------------------------------------------------------------ model operations


def adapter(model: Any = None) -> Any:
    """The model adapter of ``model``'s family (by ``model.config.model_type``, the thinker's own for
    a thinker built from its configuration, e.g. ``qwen3_omni_moe_thinker``); no model: Qwen2.5-Omni's."""
    if model is None:
        from omnizip_cli.models.qwen2_5_omni import ADAPTER

        return ADAPTER
    from omnizip_cli.models.registry import adapter_for_model_type

    model_type = str(getattr(model.config, "model_type", ""))
    found = adapter_for_model_type(model_type)
    if found is None:
        raise ValueError(f"no omnizip model adapter for model_type {model_type!r}")
    return found


def prefill(model: Any, inputs: Any, *, head_on_all_positions: bool = False) -> tuple[Any, Any]:
    """Prefill ``inputs`` (:class:`~omnizip_cli.models.base.PrefillInputs`) onto a new cache.

    Returns the last position's logits ``[1, V]`` (head on the last position only) and the cache.
    """
    from omnizip_cli.generation.eager import forward_tokens, new_cache

    text = adapter(model).text_model(model)
    cache = new_cache(text)
    logits = forward_tokens(text, inputs.embeds, inputs.attention_mask, inputs.position_ids, cache,
                            lm_kwargs=inputs.lm_kwargs, head_on_all_positions=head_on_all_positions)
    return logits, cache


def next_position(inputs: Any) -> Any:
    """The position of the first generated token: the last prompt token's + 1 (as stock ``generate``).

    A 0-d tensor: integer-valued for Qwen2.5-Omni, float for Qwen3-Omni (its M-RoPE ids are float).
    """
    return inputs.position_ids[0, 0, -1] + 1


def decode_step(model: Any, token: Any, position: Any, attention_mask: Any, cache: Any) -> Any:
    """One token ``[1, 1]`` at ``position`` onto ``cache`` (mask covers cache + token); logits ``[1, V]``.

    All three M-RoPE rows get ``position`` (its dtype kept: float for Qwen3-Omni); no ``lm_kwargs``
    (Qwen3-Omni's deepstack rows are a prefill-only argument, as in the Session's decoders).
    """
    import torch

    from omnizip_cli.generation.eager import embed_ids, forward_tokens

    text = adapter(model).text_model(model)
    position_ids = torch.as_tensor(position, device=token.device).reshape(1, 1, 1).expand(3, 1, 1)
    return forward_tokens(text, embed_ids(text, token), attention_mask, position_ids, cache)


def keep_plan(model: Any, encoded: Any, config: Any) -> Any:
    """The OmniZip keep plan of an :class:`~omnizip_cli.models.base.EncodedMedia`, as the Session builds it."""
    from types import SimpleNamespace

    from omnizip_cli.generation.prefix import keep_plan as session_keep_plan

    return session_keep_plan(SimpleNamespace(adapter=adapter(model), model=model), encoded, config)


def prepared_prompt(tensors: dict[str, Any], kind: str = "video+audio") -> Any:
    """Wrap processor-shaped tensors (a whole one-turn prompt) as a :class:`~omnizip_cli.models.base.PreparedPrompt`."""
    from omnizip_cli.models.base import PreparedPrompt, PromptTemplates

    return PreparedPrompt(tensors=tensors, kind=kind, use_audio_in_video=kind == "video+audio",
                          templates=PromptTemplates(question_suffix="", next_turn=""))


def encode(model: Any, prepared: Any, *, record_saliency: bool = False) -> Any:
    """The adapter's encode (encoders, saliency, positions) with a throwaway stage timer."""
    from omnizip_cli.measure import StageTimer

    family = adapter(model)
    device = str(family.text_model(model).device)
    return family.encode(model, prepared, record_saliency=record_saliency, timer=StageTimer(device=device))


def encoders(model: Any) -> dict[str, Any]:
    """``{"vision": ..., "audio": ...}``: the encoders whose attention the fast path switches."""
    return adapter(model).encoder_modules(model)


def random_loaded_model(size: str, device: str, dtype: Any, *, fast_encoders: bool = True,
                        tiny_encoders: bool = False) -> Any:
    """A :class:`~omnizip_cli.models.registry.LoadedModel` of the full-size ``size`` thinker with random weights.

    Built directly on ``device`` in ``dtype`` (no download), with the tiny checkpoint's processor
    (its own tokenizer, the real Omni preprocessing values) and the model's special token ids set
    to that tokenizer's, so that ``Session.open`` runs the real file -> processor -> encoders ->
    keep plan -> prefill path on the full architecture. The encoders take the varlen fast path
    where ``omnizip`` itself would (same policy as ``load_model``). ``size``: a key of
    :data:`SIZES` or :data:`CPU_SIZES`; ``tiny_encoders``: one small layer per encoder.
    """
    import time

    from omnizip_cli.models import encoder_attention as ea
    from omnizip_cli.models.registry import LoadedModel

    from omnizip_cli.models.qwen2_5_omni import ADAPTER
    from omnizip_cli.models.qwen_omni_thinker import token_ids_of

    started = time.perf_counter()
    processor = ADAPTER.tiny_processor()
    config = full_thinker_config(size, tiny_encoders=tiny_encoders, token_ids=token_ids_of(processor.tokenizer))
    model = build_model(config, device, dtype)
    modules = encoders(model)
    decision = ea.fast_attention_decision(modules)
    enabled = ea.enable_fast_encoder_attention(modules) if fast_encoders else False
    return LoadedModel(
        model=model,
        processor=processor,
        adapter=adapter(model),
        name=f"qwen2.5-omni-{size}-thinker{' (tiny encoders)' if tiny_encoders else ''} (random weights)",
        path="(built in memory)",
        is_tiny=True,
        device=device,
        dtype=str(dtype).replace("torch.", ""),
        attn_implementation="sdpa",
        load_seconds=time.perf_counter() - started,
        fast_encoder_attention=enabled,
        encoder_attention_note=decision.reason if fast_encoders else "stock encoder attention",
    )
