"""The Qwen3-Omni 30B-A3B thinker architecture, for benchmarks with random weights (no download).

Dimensions of ``Qwen/Qwen3-Omni-30B-A3B-Instruct``'s ``thinker_config`` (shared with the -Thinking
checkpoint; ``shared/docs/method-qwen3.md`` §1): a 48-layer MoE language model (hidden 2048, 32
query / 4 key-value heads of 128, 128 experts of 768, 8 active per token, interleaved M-RoPE
sections [24, 20, 20]), a 32-layer audio encoder (d_model 1280, 20 heads, 8-s attention windows)
and a 27-layer vision encoder (patch 16, merge 2, deepstack after layers 8, 16 and 24). The token
ids are the real ones (the config-class defaults are wrong, spec §8.1).

``tiny_encoders=True`` keeps the language model full size and shrinks both encoders to one small
layer, for benchmarks that time only the language model. Build on the meta device to count
parameters without memory (:func:`parameter_count`: 31.72 B with the full encoders, of which the
language model with its embeddings and head 30.53 B, the audio encoder 0.65 B, the vision encoder
0.54 B; about 3.3 B active per token).
"""

from __future__ import annotations

from typing import Any

#: Real Qwen3-Omni thinker token ids (spec §1).
QWEN3_OMNI_TOKEN_IDS = dict(
    pad=151643, im_start=151644, im_end=151645, audio=151675, audio_start=151669, audio_end=151670,
    vision_start=151652, vision_end=151653, image=151655, video=151656, user=872,
)


def qwen3_omni_30b_a3b_thinker_config(*, tiny_encoders: bool = False) -> Any:
    """``Qwen3OmniMoeThinkerConfig`` with the dimensions of the 30B-A3B hub checkpoints."""
    from omnizip_cli.models.qwen3_omni import thinker_config_class

    ids = QWEN3_OMNI_TOKEN_IDS
    text = dict(
        vocab_size=152064,
        hidden_size=2048,
        intermediate_size=768,  # unused: every layer is a MoE block (decoder_sparse_step 1, no mlp_only_layers)
        moe_intermediate_size=768,
        num_experts=128,
        num_experts_per_tok=8,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        num_hidden_layers=48,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=128,
        max_position_embeddings=65536,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [24, 20, 20],
                         "interleaved": True},
        tie_word_embeddings=False,
        pad_token_id=ids["pad"],
        eos_token_id=ids["im_end"],
        bos_token_id=ids["im_start"],
    )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=1 if tiny_encoders else 32,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
        d_model=1280,
        n_window=50,
        n_window_infer=800,
        conv_chunksize=500,
        downsample_hidden_size=480,
        max_source_positions=1500,
        output_dim=2048,
    )
    vision = dict(
        depth=1 if tiny_encoders else 27,
        hidden_size=1152,
        intermediate_size=4304,
        num_heads=16,
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=2048,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[0] if tiny_encoders else [8, 16, 24],
    )
    return thinker_config_class()(
        audio_config=audio,
        vision_config=vision,
        text_config=text,
        audio_token_id=ids["audio"],
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        audio_start_token_id=ids["audio_start"],
        audio_end_token_id=ids["audio_end"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        user_token_id=ids["user"],
        position_id_per_seconds=13,
        seconds_per_chunk=2,
    )


def build_thinker(config: Any, device: str, dtype: Any) -> Any:
    """A random-weight ``Qwen3OmniMoeThinkerForConditionalGeneration`` of ``config`` (``device="meta"``: no memory).

    Built directly on ``device`` in ``dtype`` (seeded, ``sdpa`` attention, the default dtype never
    changed), in eval mode, with the generation config's end and pad ids from the text config.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from omnizip_cli.models.qwen3_omni import thinker_class

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "unrecognized keys" in rope_parameters
    try:
        if device != "meta":
            torch.manual_seed(0)
        with torch.device(device):
            model = thinker_class()._from_config(config, dtype=dtype, attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)
    text = config.text_config
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id
    return model.eval()


def tiny_config() -> Any:
    """The tiny thinker configuration of ``--model tiny-qwen3`` (same special tokens as its tokenizer)."""
    from omnizip_cli.models.qwen3_omni import CHAT_TEMPLATE, NAMED_SPECIAL_TOKENS, SPECIAL_TOKENS, tiny_thinker_config
    from omnizip_cli.models.tiny import build_tokenizer

    return tiny_thinker_config(build_tokenizer(SPECIAL_TOKENS, NAMED_SPECIAL_TOKENS, CHAT_TEMPLATE))


def parameter_count(config: Any) -> dict[str, int]:
    """Parameters per part of the thinker, counted on the meta device."""
    import torch

    model = build_thinker(config, "meta", torch.bfloat16)
    inner = model.model
    parts = {"language_model": inner.language_model, "audio": inner.audio_tower, "vision": inner.visual,
             "lm_head": model.lm_head}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    counts["total"] = sum(counts.values())
    return counts


if __name__ == "__main__":
    print(parameter_count(qwen3_omni_30b_a3b_thinker_config()))
