"""The thinker layout both Qwen omni families share in transformers 5.23 (Qwen2.5-Omni and Qwen3-Omni).

Their thinkers hold ``.model.audio_tower``, ``.model.visual`` and ``.model.language_model`` with
``.lm_head`` beside, and their configs name the placeholder ids and the vision geometry the same way.
The adapters (:mod:`.qwen2_5_omni`, :mod:`.qwen3_omni`) inherit this part and add what differs.
"""

from __future__ import annotations

from typing import Any

from .base import MediaTokenIds, TextModel, VisionGeometry


class QwenOmniThinkerLayout:
    """Structure accessors of a Qwen omni thinker (``...ThinkerForConditionalGeneration``)."""

    def token_ids(self, model: Any) -> MediaTokenIds:
        config = model.config
        return MediaTokenIds(audio=int(config.audio_token_id), video=int(config.video_token_id),
                             image=int(config.image_token_id))

    def spatial_merge_size(self, model: Any) -> int:
        return int(model.config.vision_config.spatial_merge_size)

    def vision_geometry(self, model: Any) -> VisionGeometry:
        vision = model.config.vision_config
        return VisionGeometry(patch_size=int(vision.patch_size), spatial_merge=int(vision.spatial_merge_size),
                              temporal_patch=int(vision.temporal_patch_size))

    def text_model(self, model: Any) -> TextModel:
        thinker = model.model
        language_model = thinker.language_model
        return TextModel(
            language_model=language_model,
            lm_head=model.lm_head,
            embed_tokens=language_model.embed_tokens,
            config=language_model.config,
            generation_config=model.generation_config,
            owner=model,
        )

    def encoder_modules(self, model: Any) -> dict[str, Any]:
        thinker = model.model
        return {name: getattr(thinker, attr) for name, attr in (("vision", "visual"), ("audio", "audio_tower"))
                if getattr(thinker, attr, None) is not None}
