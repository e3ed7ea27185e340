"""The Qwen3-Omni adapter: the only module that names Qwen3-Omni (``Qwen3OmniMoe*``) classes.

Spec: ``shared/docs/method-qwen3.md`` (transformers 5.23 layout, verified on a tiny random model).

* **Loading**: the thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``: audio tower, vision
  encoder with deepstack, MoE language model, ``lm_head``) from a full checkpoint
  (``model_type`` ``qwen3_omni_moe``, weights ``thinker.*``; transformers' conversion mapping strips
  the prefix, the ``talker.*`` and ``code2wav.*`` weights are ignored) and the stock
  ``Qwen3OmniMoeProcessor``. Works for the Instruct and the Thinking checkpoints (thinker only).
* **Prompt**: the processor on the question-independent prefix, with pre-decoded audio
  (``load_audio_from_video=True, audio_from_video_indices=[0]``; the feature extractor pads to the
  longest audio only, nothing is cut) and ``videos_kwargs`` with the sampling ``fps`` (without it the
  processor silently assumes 1 fps, spec §8.3) and a ``size`` window. **Frame sizing**: the media
  layer sizes frames to multiples of 28 px (Qwen2.5's token); Qwen3-Omni's token is 32 px (patch 16,
  merge 2). We do not resize in the adapter: we pass the video processor a pixel window of exactly
  the frame's own pixel count, so its ``smart_resize`` rounds height and width to multiples of 32
  at (about) the same pixel count, within the media layer's pixel budget (the processor's default
  window, 128..768 x 32 x 32, would upscale small clips). A 168 x 252 frame becomes 192 x 256.
* **Encoding**: the thinker's forward step by step, outside the model: token embeddings; audio
  features (``get_audio_features``) scattered at ``<|audio_pad|>`` while an
  :class:`~omnizip_cli.models.saliency.AudioSaliencyRecorder` in **windowed** mode observes the last
  audio-encoder layer (spec §4); video features (``get_video_features``) scattered at
  ``<|video_pad|>``, their **deepstack features** (one ``[N_v, D]`` tensor per
  ``deepstack_visual_indexes`` entry) kept in ``EncodedMedia.extras``; the **float** M-RoPE ids
  from ``get_rope_index`` (fractional at 3 fps; never cast).
* **Prefill** (spec §3 route 1, "direct"): the keep plan applied to embeddings, attention mask and
  positions (original values kept); the language model gets ``visual_pos_masks`` (the kept video
  slots) and ``deepstack_visual_embeds`` (the deepstack rows of the kept video tokens, in order) as
  ``PrefillInputs.lm_kwargs``. Decoding runs without deepstack, as stock.
* **Tiny**: the spec's §7 recipe, full hub layout.

Deviations and decisions (spec §5, §6)
--------------------------------------
* **Saliency**: per ``cu_seqlens`` window softmax (the encoder's 8-s attention windows), mean over
  heads, summed over the window's queries, computed in **float32** (the authors: bf16); one score per
  post-CNN frame = per ``<|audio_pad|>`` token, **no pair pooling**. Scaled so that every window sums
  to its length, as the authors' values (ties are then broken by position in the plan).
* **Time groups: two grid steps per group** (spec §5's recommended deviation). Qwen3-Omni
  merge-sorts audio and video by time, so a run of consecutive positions is **one grid step** (1 s
  at 2 fps) with its 13 audio tokens, and the authors' port groups by those runs: each guided group
  then holds one frame and the temporal (odd-frame novelty) branch of ISTC never runs in guided
  groups. :meth:`Qwen3OmniAdapter.time_groups` instead gives the keep plan groups of
  :data:`STEPS_PER_GROUP` (2) grid steps and their audio, by time id:
  ``floor((t - t0) / (2 * second_per_grid * 13))`` (2 s and 26 audio tokens at 2 fps, the paper's
  four-frame unit and the checkpoint's ``seconds_per_chunk``); each group has an even frame
  (DPC-KNN) and an odd one (novelty against the even one). Audio past the video's end forms
  audio-only groups (not guided) instead of lengthening the last guided group; video past the
  audio's end forms unguided groups (``rho_video``). Switch: ``OmniZipConfig(reference_quirks=True)``
  restores the authors' one-step runs. Video only and audio only: the project's runs (no change).
  Side effect on short clips: half as many groups, and the budget normalisation holds the two
  extreme groups fixed, so with 3-4 guided groups it meets ``rho_video`` less closely
  (``samples/talking.mp4``, 6.4 s, preset 45: 44.9 % of the video kept with pairs, 39.6 % with
  one-step runs, target 40 %); on 12-s and 20-s synthetic clips the two keep the same share of the
  video within 1 point.
* **Video only**: unguided, ``rho_video`` over the whole clip (the project's 2.5 behaviour; the
  authors skip compression). **Audio only**: audio selection and merge alone (authors: skip).
* **Images**: not produced by omnizip's media layer; deepstack rows are indexed over video slots only.
* **Decoders**: the eager decoder and the static-cache decoder both drive the MoE text model
  (deepstack is a prefill-only argument). Fast encoder attention uses the same varlen branch
  (``cu_seq_lens_q/k``) as Qwen2.5-Omni's encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import AudioEncoding, EncodedMedia, PreparedPrompt, PrefillInputs
from .qwen_omni_thinker import QwenOmniThinkerLayout, prepare_media_prompt

if TYPE_CHECKING:
    import torch

    from ..compression import KeepPlan, OmniZipConfig
    from ..measure import StageTimer
    from .saliency import AudioSaliencyRecorder
    from ..media import DecodedMedia

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
]
NAMED_SPECIAL_TOKENS = {
    "image_token": "<|image_pad|>",
    "audio_token": "<|audio_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}
# A Qwen3-Omni style chat template for the tiny checkpoint: no default system prompt; media as
# <|vision_start|><|video_pad|><|vision_end|> and <|audio_start|><|audio_pad|><|audio_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Real Qwen3-Omni thinker values the config-class defaults get wrong (spec §1, §8.1).
POSITION_ID_PER_SECONDS = 13
SECONDS_PER_CHUNK = 2
#: Grid steps per OmniZip time group (the authors' port: 1; see the module docstring).
STEPS_PER_GROUP = 2


class Qwen3OmniAdapter(QwenOmniThinkerLayout):
    """:class:`~omnizip_cli.models.base.ModelAdapter` for Qwen3-Omni (30B-A3B Instruct / Thinking)."""

    family = "qwen3_omni_moe"
    display_name = "Qwen3-Omni"
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    tiny_name = "tiny-qwen3"
    audio_tokens_per_second = 13.0

    # ------------------------------------------------------------------------------ loading
    def load(self, location: str, *, dtype: Any, attn_implementation: str, device: str,
             from_pretrained_kwargs: dict[str, Any], weight_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import Qwen3OmniMoeProcessor
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
            Qwen3OmniMoeThinkerForConditionalGeneration,
        )

        processor = Qwen3OmniMoeProcessor.from_pretrained(location, **from_pretrained_kwargs)
        model = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(
            location,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device if device != "cpu" else None,
            **weight_kwargs,
            **from_pretrained_kwargs,
        )
        problem = config_mismatch(model.config, processor)
        if problem is not None:
            raise ValueError(f"inconsistent Qwen3-Omni checkpoint: {problem}")
        return model.eval(), processor

    # structure (token ids, vision geometry, text model, encoders): QwenOmniThinkerLayout

    # ------------------------------------------------------------------------------ prompt
    def prepare(self, processor: Any, media: DecodedMedia, system: str | None = None, *,
                question: str | None = None, device: str | None = None) -> PreparedPrompt:
        """The stock processor on the prefix (or, with ``question``, the whole one-turn prompt).

        Tensors: ``input_ids``/``attention_mask`` ``[1, P]``; with video ``pixel_values_videos``
        ``[t*h*w, 3*2*16*16]``, ``video_grid_thw`` ``[1, 3]``, ``video_second_per_grid`` ``[1]``;
        with audio ``input_features`` ``[1, 128, L_mel]`` and ``feature_attention_mask`` ``[1, L_mel]``.
        """
        # The size window lets the processor round H and W to multiples of 32 (Qwen3-Omni's token) at
        # about the frame's own pixel count (see the module docstring); the media layer already applied
        # the whole-clip pixel budget, so no second per-frame cap. Audio is not padded (``padding=True``).
        return prepare_media_prompt(processor, media, system, question, device,
                                    videos_kwargs={"cap_pixels_per_frame": False})

    # ------------------------------------------------------------------------------ encoding
    def saliency_recorder(self, audio_tower: Any) -> AudioSaliencyRecorder:
        """global_max_frames=0: always the per-window softmax over the call's cu_seqlens (spec §4)."""
        from .saliency import AudioSaliencyRecorder

        return AudioSaliencyRecorder(audio_tower, global_max_frames=0)

    def audio_token_scores(self, model: Any, recorder: AudioSaliencyRecorder, feature_mask: torch.Tensor,
                           num_tokens: int) -> torch.Tensor:
        """The windowed saliency: one score per post-CNN frame, which is one per audio token."""
        return windowed_token_scores(recorder.frame_scores, num_tokens)

    def encode(self, model: Any, prepared: PreparedPrompt, *, record_saliency: bool,
               timer: StageTimer, audio: AudioEncoding | None = None) -> EncodedMedia:
        """Embeddings ``[1, P, D]`` with audio/video scattered in, float positions ``[3, 1, P]``,
        windowed audio saliency ``[N_a]``, and ``extras``: ``video_mask`` ``[1, P]`` bool and
        ``deepstack`` (list of ``[N_v, D]``, one per deepstack layer) when there is video."""
        import torch

        thinker = model.model
        config = model.config
        device = thinker.language_model.embed_tokens.weight.device
        tensors = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in prepared.tensors.items()}
        input_ids = tensors["input_ids"]
        attention_mask = tensors["attention_mask"]
        extras: dict[str, Any] = {"audio_token_id": int(config.audio_token_id)}
        with torch.no_grad():
            embeds = thinker.get_input_embeddings()(input_ids)
            audio_scores = None
            feature_mask = tensors.get("feature_attention_mask")
            if tensors.get("input_features") is not None:
                embeds, audio_scores = self.embed_audio(model, tensors, embeds, record_saliency=record_saliency,
                                                        timer=timer, audio=audio)

            video_grid = tensors.get("video_grid_thw")
            if tensors.get("pixel_values_videos") is not None:
                with timer.stage("vision_encoder"):
                    out = thinker.get_video_features(tensors["pixel_values_videos"], video_grid)
                    video = torch.cat(out.pooler_output, dim=0)
                    deepstack = [torch.cat(tuple(layer), dim=0).to(embeds.dtype) for layer in out.deepstack_features]
                video_mask = input_ids == config.video_token_id
                embeds = embeds.masked_scatter(video_mask.unsqueeze(-1), video.to(embeds.device, embeds.dtype))
                extras["video_mask"] = video_mask
                extras["deepstack"] = deepstack
                seconds = tensors.get("video_second_per_grid")
                if seconds is not None:
                    extras["second_per_grid"] = float(torch.as_tensor(seconds).reshape(-1)[0])
                extras["position_id_per_seconds"] = float(config.position_id_per_seconds)

            position_ids, _ = thinker.get_rope_index(
                input_ids,
                tensors.get("image_grid_thw"),
                video_grid,
                attention_mask,
                prepared.use_audio_in_video,
                feature_mask.sum(-1) if feature_mask is not None else None,
                tensors.get("video_second_per_grid"),
            )
        grid = tuple(int(x) for x in video_grid[0].tolist()) if video_grid is not None else None
        return EncodedMedia(
            input_ids=input_ids,
            embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            video_grid_thw=grid,  # type: ignore[arg-type]
            audio_scores=audio_scores,
            kind=prepared.kind,
            extras=extras,
        )

    def time_groups(self, encoded: EncodedMedia, config: OmniZipConfig) -> torch.Tensor | None:
        """``[P]`` long time group of every token for the keep plan (None: the plan's own runs).

        Audio in video only (and not under ``reference_quirks``): group of a token with temporal
        M-RoPE id ``t`` is ``floor((t - t0) / (STEPS_PER_GROUP * second_per_grid * 13) + 1e-3)``,
        ``t0`` the first media token's id (a small tolerance: ids are float, fractional at 3 fps).
        Entries at text tokens are 0 and are not read.
        """
        import torch

        seconds = encoded.extras.get("second_per_grid")
        if config.reference_quirks or STEPS_PER_GROUP < 1 or encoded.kind != "video+audio" or seconds is None:
            return None
        width = STEPS_PER_GROUP * seconds * encoded.extras["position_id_per_seconds"]
        times = encoded.position_ids[0, 0].detach().to("cpu", torch.float64)  # [P] temporal ids
        audio = encoded.input_ids[0].to("cpu") == int(encoded.extras["audio_token_id"])
        media = encoded.extras["video_mask"][0].to("cpu") | audio
        start = times[media].min()
        groups = torch.floor((times - start) / width + 1e-3).long()
        return torch.where(media, groups, torch.zeros_like(groups))

    def prefill_inputs(self, encoded: EncodedMedia, plan: KeepPlan | None) -> PrefillInputs:
        """Everything (plan None) or the plan applied to embeddings ``[1, L', D]``, mask ``[1, L']``,
        positions ``[3, 1, L']`` (original float values) and the deepstack rows (``lm_kwargs``)."""
        video_mask = encoded.extras.get("video_mask")
        deepstack = encoded.extras.get("deepstack")
        if plan is None:
            lm_kwargs = deepstack_kwargs(video_mask, deepstack, None)
            return PrefillInputs(embeds=encoded.embeds, attention_mask=encoded.attention_mask,
                                 position_ids=encoded.position_ids, lm_kwargs=lm_kwargs)
        from ..compression import apply_keep_plan

        keep = plan.keep.to(encoded.embeds.device)
        return PrefillInputs(
            embeds=apply_keep_plan(encoded.embeds[0], plan).unsqueeze(0),
            attention_mask=encoded.attention_mask[:, keep],
            position_ids=encoded.position_ids[:, :, keep],
            kept=keep,
            lm_kwargs=deepstack_kwargs(video_mask, deepstack, keep),
        )

    # ------------------------------------------------------------------------------ tiny
    def build_tiny(self, path: Path) -> None:
        """A tiny random Qwen3-Omni in the full hub layout (``thinker.*`` weights), processor included."""
        import torch
        from transformers import GenerationConfig
        from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeConfig
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeForConditionalGeneration
        from transformers.utils import logging as hf_logging

        from .tiny import build_tokenizer, seeded

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "unrecognized keys" in rope_parameters, unused talker defaults
        try:
            tokenizer = build_tokenizer(SPECIAL_TOKENS, NAMED_SPECIAL_TOKENS, CHAT_TEMPLATE)
            processor = build_processor(tokenizer)
            thinker_config = tiny_thinker_config(tokenizer)
            config = Qwen3OmniMoeConfig(thinker_config=thinker_config.to_dict(), enable_audio_output=False)
            with seeded(0):
                model = Qwen3OmniMoeForConditionalGeneration(config).to(torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        text = thinker_config.text_config
        model.generation_config = GenerationConfig(
            eos_token_id=[text.eos_token_id, text.pad_token_id], pad_token_id=text.pad_token_id
        )
        model.save_pretrained(path)
        processor.save_pretrained(path)


def config_mismatch(config: Any, processor: Any) -> str | None:
    """Why the thinker config and the processor would silently disagree (spec §8), or None.

    * the thinker's ``position_id_per_seconds`` must equal the processor's (13): the processor
      places audio and video by it, ``get_rope_index`` numbers them by the model's value;
    * ``vision_start_token_id`` must be in the thinker config (``get_rope_index`` reads it; not a
      declared field of the config class);
    * the video processor's patch and merge sizes must be the vision encoder's (a patch-14 processor
      makes the encoder fail with a reshape error).
    """
    processor_rate = float(getattr(processor, "position_id_per_seconds", POSITION_ID_PER_SECONDS))
    model_rate = float(getattr(config, "position_id_per_seconds", -1))
    if model_rate != processor_rate:
        return (f"the thinker's position_id_per_seconds is {model_rate:g} but the processor places tokens at "
                f"{processor_rate:g} per second")
    if getattr(config, "vision_start_token_id", None) is None:
        return "the thinker config has no vision_start_token_id"
    video = getattr(processor, "video_processor", None)
    vision = config.vision_config
    if video is not None and (int(video.patch_size), int(video.merge_size)) != (
            int(vision.patch_size), int(vision.spatial_merge_size)):
        return (f"the video processor cuts {video.patch_size}-px patches merged {video.merge_size} x "
                f"{video.merge_size}, the vision encoder expects {vision.patch_size} and {vision.spatial_merge_size}")
    return None


def windowed_token_scores(frame_scores: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """``[T]`` windowed frame scores (normalised by ``1/(H*T)``) -> ``[N_a]`` float32 token scores.

    One post-CNN frame is one ``<|audio_pad|>`` token (no pairing). Rescaled by ``T`` so that every
    window sums to its length (the authors' values; a uniform factor, rankings unchanged).
    """
    import torch

    if int(frame_scores.numel()) != num_tokens:
        raise ValueError(f"audio saliency has {int(frame_scores.numel())} frames for {num_tokens} audio tokens")
    return frame_scores.reshape(-1).to(torch.float32) * float(num_tokens)


def deepstack_kwargs(video_mask: torch.Tensor | None, deepstack: list[torch.Tensor] | None,
                     keep: torch.Tensor | None) -> dict[str, Any]:
    """``visual_pos_masks`` ``[1, L']`` and ``deepstack_visual_embeds`` (each ``[N_v', D]``) for a prefill.

    ``keep`` ``[L]`` bool (None: nothing pruned): the deepstack rows of the kept video tokens, in
    order (``keep`` over the video slots), never truncated (spec §8.7).
    """
    if video_mask is None or not deepstack:
        return {}
    if keep is None:
        return {"visual_pos_masks": video_mask, "deepstack_visual_embeds": list(deepstack)}
    kept_video = keep[video_mask[0]]
    return {
        "visual_pos_masks": video_mask[:, keep],
        "deepstack_visual_embeds": [layer[kept_video] for layer in deepstack],
    }


def build_processor(tokenizer: Any) -> Any:
    """The stock ``Qwen3OmniMoeProcessor`` around a tokenizer, with Qwen3-Omni's preprocessing values
    (Whisper features; image/video processors at patch 16, merge 2, temporal patch 2)."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeProcessor,
        WhisperFeatureExtractor,
    )

    feature_extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        n_fft=400,
        chunk_length=300,
        padding_value=0.0,
        return_attention_mask=True,
    )
    image_processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                            min_pixels=4 * 32 * 32, max_pixels=16384 * 32 * 32)
    video_processor = Qwen2VLVideoProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 128 * 32 * 32, "longest_edge": 768 * 32 * 32},
    )
    return Qwen3OmniMoeProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_thinker_config(tokenizer: Any, hidden: int = 64, init: float = 0.2, n_window_infer: int = 800) -> Any:
    """A ``Qwen3OmniMoeThinkerConfig`` small enough for CPU tests that runs every real code path (spec §7).

    MoE text model (4 experts, top 2), deepstack after both text layers, real token-id fields set from
    the tokenizer (the class defaults are wrong, spec §8.1), ``position_id_per_seconds`` 13.
    ``n_window_infer`` (mel frames per audio attention window, /100 x 13 post-CNN frames) can be lowered
    to get several saliency windows on a short clip.
    """
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        moe_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3],
                         "interleaved": True},
        tie_word_embeddings=False,
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        bos_token_id=ids["<|im_start|>"],
        initializer_range=init,
    )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        d_model=32,
        n_window=50,
        n_window_infer=n_window_infer,
        downsample_hidden_size=8,
        output_dim=hidden,
        initializer_range=init,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=hidden,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
        initializer_range=init,
    )
    return Qwen3OmniMoeThinkerConfig(
        audio_config=audio,
        vision_config=vision,
        text_config=text,
        audio_token_id=ids["<|audio_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        audio_start_token_id=ids["<|audio_start|>"],
        audio_end_token_id=ids["<|audio_end|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        user_token_id=tokenizer.convert_tokens_to_ids("user") if "user" in tokenizer.get_vocab() else 0,
        position_id_per_seconds=POSITION_ID_PER_SECONDS,
        seconds_per_chunk=SECONDS_PER_CHUNK,
        initializer_range=init,
    )


def thinker_config_class() -> Any:
    """``Qwen3OmniMoeThinkerConfig`` (for benchmarks that build full-size architectures)."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig

    return Qwen3OmniMoeThinkerConfig


def thinker_class() -> Any:
    """``Qwen3OmniMoeThinkerForConditionalGeneration`` (for benchmarks)."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeThinkerForConditionalGeneration,
    )

    return Qwen3OmniMoeThinkerForConditionalGeneration


ADAPTER = Qwen3OmniAdapter()
