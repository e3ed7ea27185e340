"""From processor outputs to a (compressed) prefill, with the model's own functions.

This mirrors ``Qwen2_5OmniThinkerModel.forward`` step by step, outside the model, so the OmniZip
keep plan can be applied between the encoders and the language model without forking or patching
transformers:

1. ``embed_tokens(input_ids)``;
2. audio features (``get_audio_features``) scattered at the ``<|AUDIO|>`` positions, while an
   :class:`~omnizip_cli.saliency.AudioSaliencyRecorder` observes the last audio-encoder layer;
3. video features (``get_video_features``) scattered at the ``<|VIDEO|>`` positions;
4. the 3-D M-RoPE position ids from ``get_rope_index`` on the **uncompressed** sequence;
5. the keep plan: merged audio anchors written in, then embeddings, attention mask and position ids
   sliced together. Kept tokens keep their original positions (gaps allowed), and decoding continues
   at ``max(position) + 1``, exactly as in the uncompressed model.

The plan depends only on the media, never on the question text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .stats import ModalityCount, StageTimer, TokenCounts

if TYPE_CHECKING:
    from .compression import KeepPlan, OmniZipConfig
    from .inputs import ModelInputs


@dataclass
class EncodedPrompt:
    """The uncompressed multimodal prompt in LLM space (batch size 1)."""

    input_ids: torch.Tensor  # [1, L]
    embeds: torch.Tensor  # [1, L, D]
    attention_mask: torch.Tensor  # [1, L]
    position_ids: torch.Tensor  # [3, 1, L] M-RoPE ids (temporal, height, width)
    video_grid_thw: tuple[int, int, int] | None  # of the single video, in patches
    audio_scores: torch.Tensor | None  # [N_a] float32 saliency per audio token, when recorded

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass
class PrefillInputs:
    """What the language model is prefilled with: possibly pruned, original positions kept."""

    embeds: torch.Tensor  # [1, L', D]
    attention_mask: torch.Tensor  # [1, L']
    position_ids: torch.Tensor  # [3, 1, L']
    next_position: int  # position id of the first generated token (max original position + 1)
    kept: torch.Tensor | None = None  # [L] bool keep mask over the original sequence (None: all kept)

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])


def _model_device(model: Any) -> torch.device:
    return model.model.language_model.embed_tokens.weight.device


def move_inputs(inputs: ModelInputs, model: Any) -> dict[str, Any]:
    """The processor tensors on the model's device (the encoders cast their inputs to their own dtype)."""
    device = _model_device(model)
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.tensors.items()}


@torch.no_grad()
def encode_prompt(
    model: Any,
    inputs: ModelInputs,
    *,
    record_saliency: bool = False,
    timer: StageTimer | None = None,
) -> EncodedPrompt:
    """Run the encoders and build the uncompressed embeddings and positions, as the thinker does.

    Args:
        model: a ``Qwen2_5OmniThinkerForConditionalGeneration``.
        inputs: the processor's outputs for one prompt.
        record_saliency: also record the audio saliency scores (last audio-encoder layer).
        timer: optional stage timer ("audio_encoder", "saliency" folded in, "vision_encoder").
    """
    timer = timer or StageTimer(device=str(_model_device(model)))
    thinker = model.model
    config = model.config
    tensors = move_inputs(inputs, model)
    input_ids = tensors["input_ids"]
    attention_mask = tensors["attention_mask"]
    embeds = thinker.get_input_embeddings()(input_ids)

    audio_scores = None
    feature_mask = tensors.get("feature_attention_mask")
    if tensors.get("input_features") is not None:
        with timer.stage("audio_encoder"):
            if record_saliency:
                from .saliency import AudioSaliencyRecorder

                with AudioSaliencyRecorder(thinker.audio_tower) as recorder:
                    audio = thinker.get_audio_features(tensors["input_features"], feature_mask).last_hidden_state
            else:
                audio = thinker.get_audio_features(tensors["input_features"], feature_mask).last_hidden_state
        if record_saliency:
            with timer.stage("saliency"):
                frame_lengths = _audio_frame_lengths(thinker.audio_tower, feature_mask)
                audio_scores = recorder.token_scores(frame_lengths)
        audio_mask = (input_ids == config.audio_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(audio_mask, audio.to(embeds.device, embeds.dtype))

    video_grid = tensors.get("video_grid_thw")
    if tensors.get("pixel_values_videos") is not None:
        with timer.stage("vision_encoder"):
            video = thinker.get_video_features(tensors["pixel_values_videos"], video_grid).pooler_output
            video = torch.cat(video, dim=0)
        video_mask = (input_ids == config.video_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(video_mask, video.to(embeds.device, embeds.dtype))

    position_ids, _ = thinker.get_rope_index(
        input_ids,
        tensors.get("image_grid_thw"),
        video_grid,
        attention_mask,
        inputs.use_audio_in_video,
        feature_mask.sum(-1) if feature_mask is not None else None,
        tensors.get("video_second_per_grid"),
    )
    grid = tuple(int(x) for x in video_grid[0].tolist()) if video_grid is not None else None
    return EncodedPrompt(
        input_ids=input_ids,
        embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        video_grid_thw=grid,  # type: ignore[arg-type]
        audio_scores=audio_scores,
    )


def _audio_frame_lengths(audio_tower: Any, feature_mask: torch.Tensor | None) -> list[int] | None:
    """Post-CNN frame count of each audio (what the last encoder layer sees)."""
    if feature_mask is None:
        return None
    after_cnn, _ = audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
    return [int(x) for x in after_cnn.tolist()]


def uncompressed_prefill(encoded: EncodedPrompt) -> PrefillInputs:
    """The prefill of the stock model: every token, positions as ``get_rope_index`` made them."""
    return PrefillInputs(
        embeds=encoded.embeds,
        attention_mask=encoded.attention_mask,
        position_ids=encoded.position_ids,
        next_position=int(encoded.position_ids.max()) + 1,
    )


def plan_compression(model: Any, encoded: EncodedPrompt, config: OmniZipConfig) -> KeepPlan:
    """The OmniZip keep plan for this prompt (batch size 1)."""
    from .compression import build_keep_plan

    return build_keep_plan(
        encoded.embeds[0],
        encoded.input_ids[0],
        encoded.audio_scores,
        encoded.video_grid_thw,
        audio_token_id=model.config.audio_token_id,
        video_token_id=model.config.video_token_id,
        spatial_merge_size=model.config.vision_config.spatial_merge_size,
        config=config,
    )


def compressed_prefill(encoded: EncodedPrompt, plan: KeepPlan) -> PrefillInputs:
    """Apply a keep plan: merged anchors written in, then embeddings, mask and positions sliced together."""
    from .compression import apply_keep_plan

    keep = plan.keep.to(encoded.embeds.device)
    embeds = apply_keep_plan(encoded.embeds[0], plan).unsqueeze(0)
    return PrefillInputs(
        embeds=embeds,
        attention_mask=encoded.attention_mask[:, keep],
        position_ids=encoded.position_ids[:, :, keep],
        next_position=int(encoded.position_ids.max()) + 1,
        kept=keep,
    )


def count_tokens(model: Any, encoded: EncodedPrompt, kept: torch.Tensor | None) -> TokenCounts:
    """Tokens per modality before and after compression."""
    ids = encoded.input_ids[0]
    is_video = ids == model.config.video_token_id
    is_audio = ids == model.config.audio_token_id
    is_text = ~(is_video | is_audio)
    keep = kept if kept is not None else torch.ones_like(ids, dtype=torch.bool)

    def count(mask: torch.Tensor) -> ModalityCount:
        return ModalityCount(int(mask.sum()), int((mask & keep).sum()))

    return TokenCounts(video=count(is_video), audio=count(is_audio), text=count(is_text))
