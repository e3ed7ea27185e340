"""The Qwen3-Omni adapter: the only module that names Qwen3-Omni (``Qwen3OmniMoe*``) classes.

Spec: ``shared/docs/method-qwen3.md`` (transformers 5.23 layout, verified on a tiny random model).

Everything both Qwen omni families do alike (loading, the processor call, encoding, the prefill,
the thinker config and the tiny checkpoint) is
:class:`~omnizip_cli.models.qwen_omni_thinker.QwenOmniThinkerLayout`'s; this module gives what is
Qwen3-Omni's own.

* **Loading**: the thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``: audio tower, vision
  encoder with deepstack, MoE language model, ``lm_head``) from a full checkpoint
  (``model_type`` ``qwen3_omni_moe``, weights ``thinker.*``; transformers' conversion mapping strips
  the prefix, the ``talker.*`` and ``code2wav.*`` weights are ignored) and the stock
  ``Qwen3OmniMoeProcessor``, checked against each other (:func:`config_mismatch`). Works for the
  Instruct and the Thinking checkpoints (thinker only).
* **Prompt**: the processor on the question-independent prefix, with pre-decoded audio
  (``load_audio_from_video=True, audio_from_video_indices=[0]``; the feature extractor pads to the
  longest audio only, nothing is cut) and ``videos_kwargs`` with the sampling ``fps`` (without it the
  processor silently assumes 1 fps, spec §8.3) and a ``size`` window of exactly the frame's own pixel
  count (the processor's default window, 128..768 x 32 x 32, would upscale small clips), without
  the processor's second per-frame cap (``cap_pixels_per_frame=False``: the media layer already
  applied the whole-clip pixel budget). **Frame sizing**: Qwen3-Omni's token is 32 px (patch 16,
  merge 2, :attr:`Qwen3OmniAdapter.geometry`). Frames the media layer sized to multiples of 32
  (``token_pixels`` of :func:`~omnizip_cli.media.load_media`, which every opening passes from the
  model's geometry: :mod:`omnizip_cli.generation.opening`) pass unchanged; frames sized for
  another factor (the media layer's default is 28, Qwen2.5-Omni's token) are rounded by the
  processor's ``smart_resize`` to multiples of 32 at about the same pixel count: a 168 x 252 frame
  becomes 192 x 256.
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

from typing import TYPE_CHECKING, Any

from .base import EncodedMedia, VisionGeometry
from .qwen_omni_thinker import FamilyClasses, QwenOmniThinkerLayout, ThinkerDims

if TYPE_CHECKING:
    import torch

    from ..compression import OmniZipConfig
    from ..media import DecodedMedia
    from .saliency import AudioSaliencyRecorder

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
#: Real Qwen3-Omni thinker value the config-class default gets wrong (spec §1, §8.1).
POSITION_ID_PER_SECONDS = 13
#: Grid steps per OmniZip time group (the authors' port: 1; see the module docstring).
STEPS_PER_GROUP = 2


#: The tiny random checkpoint's size (spec §7; ``vocab_size`` is the tiny tokenizer's): MoE text
#: model (4 experts, top 2), deepstack after both vision layers, interleaved M-RoPE.
TINY_DIMS = ThinkerDims(
    text=dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=32768,
              rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3],
                               "interleaved": True},
              tie_word_embeddings=False),
    audio=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
               n_window=50, n_window_infer=800, downsample_hidden_size=8, output_dim=64),
    vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64,
                deepstack_visual_indexes=[0, 1]),
)


class Qwen3OmniAdapter(QwenOmniThinkerLayout):
    """:class:`~omnizip_cli.models.base.ModelAdapter` for Qwen3-Omni (30B-A3B Instruct / Thinking)."""

    family = "qwen3_omni_moe"
    display_name = "Qwen3-Omni"
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    tiny_name = "tiny-qwen3"
    audio_tokens_per_second = 13.0
    geometry = VisionGeometry(patch_size=16, spatial_merge=2, temporal_patch=2)
    position_id_per_seconds = POSITION_ID_PER_SECONDS
    special_tokens = tuple(SPECIAL_TOKENS)
    named_special_tokens = NAMED_SPECIAL_TOKENS
    chat_template = CHAT_TEMPLATE
    tiny_dims = TINY_DIMS

    def classes(self) -> FamilyClasses:
        from transformers import Qwen3OmniMoeProcessor
        from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as config
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as modeling

        return FamilyClasses(thinker=modeling.Qwen3OmniMoeThinkerForConditionalGeneration,
                             thinker_config=config.Qwen3OmniMoeThinkerConfig, processor=Qwen3OmniMoeProcessor,
                             checkpoint=modeling.Qwen3OmniMoeForConditionalGeneration,
                             checkpoint_config=config.Qwen3OmniMoeConfig)

    def checkpoint_problem(self, config: Any, processor: Any) -> str | None:
        return config_mismatch(config, processor) or super().checkpoint_problem(config, processor)

    def processor_kwargs(self, processor: Any, media: DecodedMedia) -> tuple[dict[str, Any], dict[str, Any]]:
        """No second per-frame pixel cap (the media layer applied the whole-clip budget); audio is
        padded to the longest audio only, the feature extractor's own ``padding=True``."""
        return {}, {"cap_pixels_per_frame": False}

    # ------------------------------------------------------------------------------ saliency
    def saliency_recorder(self, audio_tower: Any) -> AudioSaliencyRecorder:
        """global_max_frames=0: always the per-window softmax over the call's cu_seqlens (spec §4)."""
        from .saliency import AudioSaliencyRecorder

        return AudioSaliencyRecorder(audio_tower, global_max_frames=0)

    def audio_token_scores(self, model: Any, recorder: AudioSaliencyRecorder, feature_mask: torch.Tensor,
                           num_tokens: int) -> torch.Tensor:
        """The windowed saliency: one score per post-CNN frame, which is one per audio token."""
        return windowed_token_scores(recorder.frame_scores, num_tokens)

    # ------------------------------------------------------------------------------ deepstack
    def video_extras(self, model: Any, output: Any, video_mask: torch.Tensor, tensors: dict[str, Any],
                     dtype: torch.dtype) -> dict[str, Any]:
        """``deepstack``: one ``[N_v, D]`` tensor per ``deepstack_visual_indexes`` entry (in ``dtype``);
        ``video_mask`` ``[1, P]`` bool; and for :meth:`time_groups` the audio placeholder id, the
        seconds per grid step and the time ids per second."""
        import torch

        extras: dict[str, Any] = {
            "audio_token_id": int(model.config.audio_token_id),
            "video_mask": video_mask,
            "deepstack": [torch.cat(tuple(layer), dim=0).to(dtype) for layer in output.deepstack_features],
            "position_id_per_seconds": float(model.config.position_id_per_seconds),
        }
        seconds = tensors.get("video_second_per_grid")
        if seconds is not None:
            extras["second_per_grid"] = float(torch.as_tensor(seconds).reshape(-1)[0])
        return extras

    def prefill_kwargs(self, encoded: EncodedMedia, keep: torch.Tensor | None) -> dict[str, Any]:
        """``visual_pos_masks`` and the deepstack rows of the kept video tokens (:func:`deepstack_kwargs`)."""
        return deepstack_kwargs(encoded.extras.get("video_mask"), encoded.extras.get("deepstack"), keep)

    # ------------------------------------------------------------------------------ time groups
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



ADAPTER = Qwen3OmniAdapter()
