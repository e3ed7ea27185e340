"""What both Qwen omni families share in transformers 5.23 (Qwen2.5-Omni and Qwen3-Omni): the whole
adapter, less what a family names or does its own way.

Their thinkers hold ``.model.audio_tower``, ``.model.visual`` and ``.model.language_model`` with
``.lm_head`` beside; their configs name the placeholder ids and the vision geometry the same way;
their stock processors wrap the Qwen2-VL image and video processors and a Whisper feature extractor;
and their ``...ThinkerModel.forward`` runs the same steps. :class:`QwenOmniThinkerLayout` therefore
does each adapter job once:

* **loading**: the family's processor, then its thinker, from one location;
* **prompt**: the stock processor on the question-independent prefix (:meth:`~QwenOmniThinkerLayout.prepare`);
* **encoding**: ``forward`` step by step, outside the model: token embeddings; audio features
  (``get_audio_features``) scattered at the audio placeholders while the family's saliency recorder
  observes the last audio-encoder layer; video features (``get_video_features``) scattered at the
  video placeholders; the M-RoPE ids of ``get_rope_index`` on the uncompressed sequence;
* **prefill**: the keep plan applied to embeddings, attention mask and positions together (merged
  anchors written in); kept tokens keep their original positions;
* **configs**: one thinker-config builder (:meth:`~QwenOmniThinkerLayout.thinker_config`) for the tiny
  checkpoint and the benchmarks' full-size architectures, and the tiny checkpoint itself.

A family (:mod:`.qwen2_5_omni`, :mod:`.qwen3_omni`) names its classes and gives only what is its own:
special tokens and chat template, config constants, its saliency recorder and token scores, extra
processor arguments, and the hooks :meth:`~QwenOmniThinkerLayout.video_extras` /
:meth:`~QwenOmniThinkerLayout.prefill_kwargs` (Qwen3-Omni's deepstack features) and
:meth:`~QwenOmniThinkerLayout.checkpoint_problem`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import AudioEncoding, EncodedMedia, MediaTokenIds, PreparedPrompt, PrefillInputs, TextModel, VisionGeometry

if TYPE_CHECKING:
    import torch

    from ..compression import KeepPlan
    from ..measure import StageTimer
    from ..media import DecodedMedia
    from .saliency import AudioSaliencyRecorder

#: Seconds per audio/video chunk of both families' checkpoints (``seconds_per_chunk``).
SECONDS_PER_CHUNK = 2
#: The keys of a thinker config's special token ids (:meth:`QwenOmniThinkerLayout.thinker_config`),
#: the same for every family whatever its tokens are called.
TOKEN_ID_KEYS = ("pad", "im_start", "im_end", "audio", "audio_start", "audio_end", "vision_start", "vision_end",
                 "image", "video", "user")


@dataclass(frozen=True)
class ThinkerDims:
    """A thinker's size: keyword arguments of its text, audio and vision sub-configs, token ids excluded."""

    text: dict[str, Any]
    audio: dict[str, Any]
    vision: dict[str, Any]


@dataclass(frozen=True)
class FamilyClasses:
    """The transformers classes of one family (imported when asked for: :meth:`QwenOmniThinkerLayout.classes`)."""

    thinker: Any  # ...ThinkerForConditionalGeneration
    thinker_config: Any  # ...ThinkerConfig
    processor: Any  # the stock processor
    checkpoint: Any  # the full model (thinker, talker...): the hub layout the tiny checkpoint is saved in
    checkpoint_config: Any


def token_ids_of(tokenizer: Any) -> dict[str, int]:
    """The special token ids of a Qwen omni tokenizer under :data:`TOKEN_ID_KEYS`.

    Read through the tokenizer's named tokens (``audio_token``, ``vision_bos_token``...), so one
    function serves every family; ``user`` is the id of the word "user" (0 when not a single token).
    """
    def id_of(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    named = {"audio": "audio_token", "audio_start": "audio_bos_token", "audio_end": "audio_eos_token",
             "vision_start": "vision_bos_token", "vision_end": "vision_eos_token", "image": "image_token",
             "video": "video_token"}
    ids = {"pad": id_of(tokenizer.pad_token), "im_start": id_of("<|im_start|>"), "im_end": id_of(tokenizer.eos_token)}
    ids.update({key: id_of(getattr(tokenizer, name)) for key, name in named.items()})
    ids["user"] = id_of("user") if "user" in tokenizer.get_vocab() else 0
    return ids


class QwenOmniThinkerLayout:
    """:class:`~omnizip_cli.models.base.ModelAdapter` of a Qwen omni thinker (``...ThinkerForConditionalGeneration``).

    A family sets the class attributes below, names its classes (:meth:`classes`) and overrides
    :meth:`audio_token_scores` (and, where it differs, the other hooks).
    """

    family: str
    display_name: str
    model_types: tuple[str, ...]
    tiny_name: str
    audio_tokens_per_second: float
    #: The vision geometry of the family's released checkpoints (its processor's patching), known
    #: without a model: the tiny processor, frame sizing before a model is loaded. A loaded
    #: model's own is :meth:`vision_geometry`.
    geometry: VisionGeometry
    #: ``position_id_per_seconds`` of the family's checkpoints (M-RoPE time ids per second).
    position_id_per_seconds: int
    #: The tiny checkpoint: its special tokens (in id order), the named ones, its chat template, its size.
    special_tokens: tuple[str, ...]
    named_special_tokens: dict[str, str]
    chat_template: str
    tiny_dims: ThinkerDims

    def classes(self) -> FamilyClasses:
        """The family's transformers classes (a family imports them here, on first use)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ structure
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

    # ------------------------------------------------------------------------------ loading
    def load(self, location: str, *, dtype: Any, attn_implementation: str, device: str,
             from_pretrained_kwargs: dict[str, Any], weight_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The thinker alone from a full hub checkpoint (``thinker.*`` weights; the talker's skipped)
        and the stock processor. Raises ValueError when :meth:`checkpoint_problem` finds one."""
        classes = self.classes()
        processor = classes.processor.from_pretrained(location, **from_pretrained_kwargs)
        weight_kwargs = dict(weight_kwargs)  # a --device-map (and its offload folder) replaces the device
        device_map = weight_kwargs.pop("device_map", device if device != "cpu" else None)
        model = classes.thinker.from_pretrained(
            location,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            **weight_kwargs,
            **from_pretrained_kwargs,
        )
        problem = self.checkpoint_problem(model.config, processor)
        if problem is not None:
            raise ValueError(f"inconsistent {self.display_name} checkpoint: {problem}")
        return model.eval(), processor

    def checkpoint_problem(self, config: Any, processor: Any) -> str | None:
        """Why the thinker config and the processor would silently disagree, or None: by default, a
        text model whose KV cache would not be a full one (:func:`sliding_window_problem`)."""
        return sliding_window_problem(config.get_text_config())

    # ------------------------------------------------------------------------------ prompt
    def processor_kwargs(self, processor: Any, media: DecodedMedia) -> tuple[dict[str, Any], dict[str, Any]]:
        """The family's own ``audio_kwargs`` and ``videos_kwargs`` of the processor call (default none)."""
        return {}, {}

    def prepare(self, processor: Any, media: DecodedMedia, system: str | None = None, *,
                question: str | None = None, device: str | None = None) -> PreparedPrompt:
        """The stock processor on the question-independent prefix (or, with ``question``, the whole
        one-turn prompt).

        Tensors: ``input_ids``/``attention_mask`` ``[1, P]``; with video ``pixel_values_videos``
        ``[t*h*w, 3*temporal_patch*patch**2]``, ``video_grid_thw`` ``[1, 3]``, ``video_second_per_grid``
        ``[1]``; with audio ``input_features`` ``[1, 128, L_mel]`` and ``feature_attention_mask``
        ``[1, L_mel]``.

        The frames are already sized by the media layer: a size window of exactly their own pixel
        count keeps the video processor from choosing a size of its own (its smart resize then only
        rounds height and width to multiples of the family's token, ``geometry.token_pixels``, at
        about that pixel count: a no-op on frames already sized to it). With ``device`` the video
        processor's pixel work runs there (:mod:`.device_preprocess`); otherwise it runs over bounded
        chunks of frames after a host-memory check (:mod:`.preprocess`; the same tensors, bitwise).
        """
        from .device_preprocess import finish_pixel_values, video_kwargs
        from .preprocess import bounded_processor
        from .prompts import cut_templates, media_messages, render

        has_video = media.frames is not None
        has_audio = media.audio is not None
        if not has_video and not has_audio:
            raise ValueError("media holds neither video frames nor audio")
        kind = "video+audio" if has_video and has_audio else ("video" if has_video else "audio")
        prefix_text, templates = cut_templates(processor, kind, system)
        if question is not None:  # the whole one-turn prompt, as the stock path builds it
            prefix_text = render(processor, media_messages(kind, question, system))
        audio_kwargs, videos_kwargs = self.processor_kwargs(processor, media)
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
                **videos_kwargs,
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

    # ------------------------------------------------------------------------------ encoding
    def video_extras(self, model: Any, output: Any, video_mask: torch.Tensor, tensors: dict[str, Any],
                     dtype: torch.dtype) -> dict[str, Any]:
        """Family data for :attr:`EncodedMedia.extras` from the video encoder's ``output`` (run
        inside the "vision_encoder" stage; ``video_mask`` ``[1, P]`` bool). Default: none."""
        return {}

    def encode(self, model: Any, prepared: PreparedPrompt, *, record_saliency: bool,
               timer: StageTimer, audio: AudioEncoding | None = None) -> EncodedMedia:
        """Embeddings ``[1, P, D]`` with the audio and video features scattered in, the M-RoPE ids
        ``[3, 1, P]`` of ``get_rope_index`` (their dtype kept), the ``[N_a]`` audio saliency when
        recorded, and the family's :meth:`video_extras`. Timed as "audio_encoder", "saliency",
        "vision_encoder". ``audio``: already encoded by :meth:`encode_audio` (None: encoded here)."""
        import torch

        thinker = model.model
        config = model.config
        device = thinker.language_model.embed_tokens.weight.device
        tensors = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in prepared.tensors.items()}
        input_ids = tensors["input_ids"]
        attention_mask = tensors["attention_mask"]
        extras: dict[str, Any] = {}
        with torch.no_grad():
            embeds = thinker.get_input_embeddings()(input_ids)
            audio_scores = None
            feature_mask = tensors.get("feature_attention_mask")
            if tensors.get("input_features") is not None:
                if audio is None:
                    audio = self.encode_audio(model, tensors, record_saliency=record_saliency, timer=timer)
                audio_mask = (input_ids == config.audio_token_id).unsqueeze(-1)
                embeds = embeds.masked_scatter(audio_mask, audio.features.to(embeds.device, embeds.dtype))
                # (a split thinker: the audio tower's outputs come back on its own device)
                audio_scores = audio.scores.to(device) if record_saliency and audio.scores is not None else None

            video_grid = tensors.get("video_grid_thw")
            if tensors.get("pixel_values_videos") is not None:
                video_mask = input_ids == config.video_token_id
                with timer.stage("vision_encoder"):
                    output = thinker.get_video_features(tensors["pixel_values_videos"], video_grid)
                    video = torch.cat(output.pooler_output, dim=0)
                    extras.update(_to_device(self.video_extras(model, output, video_mask, tensors, embeds.dtype),
                                             device))
                embeds = embeds.masked_scatter(video_mask.unsqueeze(-1), video.to(embeds.device, embeds.dtype))

            position_ids, _ = thinker.get_rope_index(
                input_ids,
                tensors.get("image_grid_thw"),
                video_grid,
                attention_mask,
                prepared.use_audio_in_video,
                feature_mask.sum(-1) if feature_mask is not None else None,
                tensors.get("video_second_per_grid"),
            )
        return EncodedMedia(
            input_ids=input_ids,
            embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            video_grid_thw=prepared.video_grid,
            audio_scores=audio_scores,
            kind=prepared.kind,
            extras=extras,
        )

    # ------------------------------------------------------------------------------ prefill
    def prefill_kwargs(self, encoded: EncodedMedia, keep: torch.Tensor | None) -> dict[str, Any]:
        """The family language model's extra prefill arguments (``keep`` ``[P]`` bool, None: all kept)."""
        return {}

    def prefill_inputs(self, encoded: EncodedMedia, plan: KeepPlan | None) -> PrefillInputs:
        """Everything (plan None) or the plan applied to embeddings ``[1, L', D]``, mask ``[1, L']``,
        positions ``[3, 1, L']`` (original values) and the family's :meth:`prefill_kwargs`."""
        if plan is None:
            return PrefillInputs(embeds=encoded.embeds, attention_mask=encoded.attention_mask,
                                 position_ids=encoded.position_ids, lm_kwargs=self.prefill_kwargs(encoded, None))
        from ..compression import apply_keep_plan

        keep = plan.keep.to(encoded.embeds.device)
        return PrefillInputs(
            embeds=apply_keep_plan(encoded.embeds[0], plan).unsqueeze(0),
            attention_mask=encoded.attention_mask[:, keep],
            position_ids=encoded.position_ids[:, :, keep],
            kept=keep,
            lm_kwargs=self.prefill_kwargs(encoded, keep),
        )

    # ------------------------------------------------------------------------------ configs
    def thinker_config(self, token_ids: dict[str, int], dims: ThinkerDims, *,
                       initializer_range: float | None = None) -> Any:
        """The family's ``...ThinkerConfig`` of size ``dims`` with ``token_ids`` (keys :data:`TOKEN_ID_KEYS`).

        The one place a thinker config is built: the tiny checkpoint and the benchmarks' full-size
        architectures. The text config gets the pad, begin and end ids; ``get_rope_index`` reads
        ``vision_start_token_id``, which is not a declared field of the config classes (kept anyway).
        ``initializer_range`` (None: the classes' defaults) is set on every sub-config.
        """
        missing = [key for key in TOKEN_ID_KEYS if key not in token_ids]
        if missing:
            raise ValueError(f"token_ids lacks {', '.join(missing)}")
        ids = token_ids
        init = {} if initializer_range is None else {"initializer_range": initializer_range}
        text = {**copy.deepcopy(dims.text), "pad_token_id": ids["pad"], "eos_token_id": ids["im_end"],
                "bos_token_id": ids["im_start"], **init}
        return self.classes().thinker_config(
            audio_config={**copy.deepcopy(dims.audio), **init},
            vision_config={**copy.deepcopy(dims.vision), **init},
            text_config=text,
            audio_token_id=ids["audio"],
            image_token_id=ids["image"],
            video_token_id=ids["video"],
            audio_start_token_id=ids["audio_start"],
            audio_end_token_id=ids["audio_end"],
            vision_start_token_id=ids["vision_start"],
            vision_end_token_id=ids["vision_end"],
            user_token_id=ids["user"],
            position_id_per_seconds=self.position_id_per_seconds,
            seconds_per_chunk=SECONDS_PER_CHUNK,
            **init,
        )

    def tiny_tokenizer(self) -> Any:
        """The tiny checkpoint's tokenizer (a small BPE trained here, the family's special tokens)."""
        from .tiny import build_tokenizer

        return build_tokenizer(list(self.special_tokens), dict(self.named_special_tokens), self.chat_template)

    def tiny_thinker_config(self, tokenizer: Any = None) -> Any:
        """The tiny thinker config: :attr:`tiny_dims`, ``vocab_size == len(tokenizer)`` (so every id
        decodes to text) and ``initializer_range=0.2`` (at 0.02 the tiny model is almost
        position-blind: wrong M-RoPE ids would not change its output). ``tokenizer`` None: :meth:`tiny_tokenizer`."""
        tokenizer = tokenizer if tokenizer is not None else self.tiny_tokenizer()
        dims = ThinkerDims(text={**self.tiny_dims.text, "vocab_size": len(tokenizer)}, audio=self.tiny_dims.audio,
                           vision=self.tiny_dims.vision)
        return self.thinker_config(token_ids_of(tokenizer), dims, initializer_range=0.2)

    def build_processor(self, tokenizer: Any) -> Any:
        """The family's stock processor around ``tokenizer``, with the released checkpoints'
        preprocessing values: Whisper features (128 mel bins, 16 kHz), image and video processors
        patching as :attr:`geometry` (images 4 to 16384 tokens, videos 128 to 768 tokens per frame)."""
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

        feature_extractor = WhisperFeatureExtractor(
            feature_size=128,
            sampling_rate=16000,
            hop_length=160,
            n_fft=400,
            chunk_length=300,
            padding_value=0.0,
            return_attention_mask=True,
        )
        geometry = self.geometry
        token_area = geometry.token_pixels ** 2
        patching = {"patch_size": geometry.patch_size, "merge_size": geometry.spatial_merge,
                    "temporal_patch_size": geometry.temporal_patch}
        image_processor = Qwen2VLImageProcessor(**patching, min_pixels=4 * token_area, max_pixels=16384 * token_area)
        video_processor = Qwen2VLVideoProcessor(
            **patching, size={"shortest_edge": 128 * token_area, "longest_edge": 768 * token_area}
        )
        return self.classes().processor(
            image_processor=image_processor,
            video_processor=video_processor,
            feature_extractor=feature_extractor,
            tokenizer=tokenizer,
            chat_template=self.chat_template,
        )

    def tiny_processor(self) -> Any:
        """:meth:`build_processor` around :meth:`tiny_tokenizer` (no model, built in about a second)."""
        return self.build_processor(self.tiny_tokenizer())

    def build_tiny(self, path: Path) -> None:
        """A tiny random checkpoint of the family in the full hub layout (``thinker.*`` weights),
        processor included, written into ``path``."""
        import torch
        from transformers import GenerationConfig
        from transformers.utils import logging as hf_logging

        from .tiny import seeded

        classes = self.classes()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # unused talker defaults name ids outside the tiny vocabulary
        try:
            tokenizer = self.tiny_tokenizer()
            processor = self.build_processor(tokenizer)
            thinker_config = self.tiny_thinker_config(tokenizer)
            config = classes.checkpoint_config(thinker_config=thinker_config.to_dict(), enable_audio_output=False)
            with seeded(0):
                model = classes.checkpoint(config).to(torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        text = thinker_config.text_config
        model.generation_config = GenerationConfig(
            eos_token_id=[text.eos_token_id, text.pad_token_id], pad_token_id=text.pad_token_id
        )
        model.save_pretrained(path)
        processor.save_pretrained(path)


def _to_device(value: Any, device: Any) -> Any:
    """Tensors (in dicts, lists and tuples) moved to ``device``: a split thinker's encoders return
    them on their own device, the language model takes them on the embedding's."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def sliding_window_problem(text_config: Any) -> str | None:
    """Why a text config cannot run on omnizip's prefix cache, or None.

    ``DynamicCache(config=...)`` makes sliding-window layers from ``layer_types`` (or, without them,
    from ``sliding_window``). omnizip prefills the media prefix first and each question onto it, and
    cuts the cache back between questions: with a window the question would see only the last
    window of the prefix (stock ``generate`` prefills the whole prompt in one pass, with full
    attention where the family's attention ignores the window, as Qwen3-Omni's does), and the cut
    would fail. Such a checkpoint is refused rather than answered differently from stock.
    """
    layer_types = getattr(text_config, "layer_types", None)
    window = getattr(text_config, "sliding_window", None)
    if layer_types is not None:
        sliding = sorted({t for t in layer_types if t != "full_attention"})
        if sliding:
            return (f"its text layers include {', '.join(sliding)} layers, which omnizip's prefix cache does not "
                    "support (a full-attention text model is needed)")
        return None
    if window is not None:
        return (f"its text config sets sliding_window {window}: the cache would keep only a window of the prompt "
                "while the model attends to all of it (set sliding_window to null in config.json)")
    return None
