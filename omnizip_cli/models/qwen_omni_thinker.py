"""The thinker layout both Qwen omni families share in transformers 5.23 (Qwen2.5-Omni and Qwen3-Omni).

Their thinkers hold ``.model.audio_tower``, ``.model.visual`` and ``.model.language_model`` with
``.lm_head`` beside, and their configs name the placeholder ids and the vision geometry the same way.
The adapters (:mod:`.qwen2_5_omni`, :mod:`.qwen3_omni`) inherit this part and add what differs; both
call their processor through :func:`prepare_media_prompt`, and both encode audio through
:meth:`QwenOmniThinkerLayout.encode_audio` (each family says how its saliency is recorded and scored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AudioEncoding, MediaTokenIds, PreparedPrompt, TextModel, VisionGeometry

if TYPE_CHECKING:
    import torch

    from ..measure import StageTimer
    from .saliency import AudioSaliencyRecorder


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

    # ------------------------------------------------------------------------------ audio
    def saliency_recorder(self, audio_tower: Any) -> AudioSaliencyRecorder:
        """The recorder that observes this family's last audio-encoder layer (a family overrides it)."""
        from .saliency import AudioSaliencyRecorder

        return AudioSaliencyRecorder(audio_tower)

    def audio_token_scores(self, model: Any, recorder: AudioSaliencyRecorder, feature_mask: torch.Tensor,
                           num_tokens: int) -> torch.Tensor:
        """``[num_tokens]`` saliency per audio token from what ``recorder`` saw (each family its own)."""
        raise NotImplementedError

    def encode_audio(self, model: Any, tensors: dict[str, Any], *, record_saliency: bool,
                     timer: StageTimer) -> AudioEncoding:
        """``get_audio_features`` ``[N_a, D]`` of the processor's ``input_features`` and
        ``feature_attention_mask``; with ``record_saliency`` also the ``[N_a]`` scores of
        :meth:`audio_token_scores`. Timed as "audio_encoder" and "saliency"."""
        import torch

        thinker = model.model
        device = thinker.language_model.embed_tokens.weight.device
        features = tensors["input_features"].to(device)
        feature_mask = tensors["feature_attention_mask"].to(device)
        scores = None
        with torch.no_grad(), timer.stage("audio_encoder"):
            if record_saliency:
                with self.saliency_recorder(thinker.audio_tower) as recorder:
                    audio = thinker.get_audio_features(features, feature_mask)
            else:
                audio = thinker.get_audio_features(features, feature_mask)
            audio = audio.last_hidden_state
        if record_saliency:
            with torch.no_grad(), timer.stage("saliency"):
                scores = self.audio_token_scores(model, recorder, feature_mask, int(audio.shape[0]))
        return AudioEncoding(features=audio, scores=scores)

    def embed_audio(self, model: Any, tensors: dict[str, Any], embeds: torch.Tensor, *, record_saliency: bool,
                    timer: StageTimer, audio: AudioEncoding | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``embeds`` ``[1, P, D]`` with the audio features scattered at the audio placeholders of
        ``tensors["input_ids"]``, and the ``[N_a]`` saliency when recorded (else None). ``audio``:
        already encoded (see :meth:`~omnizip_cli.models.base.ModelAdapter.encode`); None: encoded here."""
        if audio is None:
            audio = self.encode_audio(model, tensors, record_saliency=record_saliency, timer=timer)
        audio_mask = (tensors["input_ids"] == model.config.audio_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(audio_mask, audio.features.to(embeds.device, embeds.dtype))
        return embeds, audio.scores if record_saliency else None


def prepare_media_prompt(
    processor: Any,
    media: Any,
    system: str | None,
    question: str | None,
    device: str | None,
    *,
    audio_kwargs: dict[str, Any] | None = None,
    videos_kwargs: dict[str, Any] | None = None,
) -> PreparedPrompt:
    """The stock processor on the question-independent prefix (or, with ``question``, the whole
    one-turn prompt), as both Qwen omni processors take it.

    The frames are already sized by the media layer: a size window around their own pixel count
    keeps the video processor from choosing another size of its own. ``audio_kwargs`` and
    ``videos_kwargs`` add a family's own processor arguments. With ``device`` the video processor's
    pixel work runs there (:mod:`.device_preprocess`); otherwise it runs over bounded chunks of
    frames after a host-memory check (:mod:`.preprocess`; the same tensors, bitwise).
    """
    from .preprocess import bounded_processor
    from .device_preprocess import finish_pixel_values, video_kwargs
    from .prompts import cut_templates, media_messages, render

    has_video = media.frames is not None
    has_audio = media.audio is not None
    if not has_video and not has_audio:
        raise ValueError("media holds neither video frames nor audio")
    kind = "video+audio" if has_video and has_audio else ("video" if has_video else "audio")
    prefix_text, templates = cut_templates(processor, kind, system)
    if question is not None:  # the whole one-turn prompt, as the stock path builds it
        prefix_text = render(processor, media_messages(kind, question, system))
    kwargs: dict[str, Any] = {"text": [prefix_text], "return_tensors": "pt"}
    if has_audio:
        kwargs["audio"] = [media.audio]
        if audio_kwargs:
            kwargs["audio_kwargs"] = dict(audio_kwargs)
    if has_video:
        frames = media.frames
        pixels = int(frames.shape[1]) * int(frames.shape[2])
        kwargs["videos"] = [frames]
        kwargs["videos_kwargs"] = {
            "size": {"shortest_edge": pixels, "longest_edge": pixels},
            "fps": float(media.summary.fps_used),
            "do_sample_frames": False,
            **(videos_kwargs or {}),
        }
        if has_audio:
            kwargs["load_audio_from_video"] = True
            kwargs["audio_from_video_indices"] = [0]
    if device is not None and has_video:
        kwargs["videos_kwargs"].update(video_kwargs(device))
        tensors = dict(processor(**kwargs))
        finish_pixel_values(tensors, processor.video_processor, device)
    else:
        tensors = dict(bounded_processor(processor, media.frames)(**kwargs))
    tensors.pop("num_audio_tokens", None)
    return PreparedPrompt(tensors=tensors, kind=kind, use_audio_in_video=has_video and has_audio,
                          templates=templates, system=system)
