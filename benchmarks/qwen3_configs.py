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

#: Real Qwen3-Omni thinker token ids (spec §1), under the keys of
#: ``omnizip_cli.models.qwen_omni_thinker.TOKEN_ID_KEYS``.
QWEN3_OMNI_TOKEN_IDS = dict(
    pad=151643, im_start=151644, im_end=151645, audio=151675, audio_start=151669, audio_end=151670,
    vision_start=151652, vision_end=151653, image=151655, video=151656, user=872,
)


def qwen3_omni_30b_a3b_thinker_config(*, tiny_encoders: bool = False) -> Any:
    """``Qwen3OmniMoeThinkerConfig`` with the dimensions of the 30B-A3B hub checkpoints (built by the adapter)."""
    from omnizip_cli.models.qwen3_omni import ADAPTER
    from omnizip_cli.models.qwen_omni_thinker import ThinkerDims

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
    return ADAPTER.thinker_config(QWEN3_OMNI_TOKEN_IDS, ThinkerDims(text, audio, vision))


def parameter_count(config: Any) -> dict[str, int]:
    """Parameters per part of the thinker, counted on the meta device."""
    import torch

    from benchmarks.thinker_configs import build_model

    model = build_model(config, "meta", torch.bfloat16)
    inner = model.model
    parts = {"language_model": inner.language_model, "audio": inner.audio_tower, "vision": inner.visual,
             "lm_head": model.lm_head}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    counts["total"] = sum(counts.values())
    return counts


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(parameter_count(qwen3_omni_30b_a3b_thinker_config()))
