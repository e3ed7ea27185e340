"""The model-adapter protocol, and the data that crosses it.

An adapter is the only code that names a model family's classes and submodules. Everything else
(the Session, the decoders, compression, reports) works on the types below:

``PreparedPrompt``
    The processor's question-independent output: the prompt up to the end of the media block
    (system prompt, user-turn header, media tokens) and the text templates that come after it.
``EncodedMedia``
    That prompt in LLM space: embeddings with the encoders' features scattered in, M-RoPE positions
    from the model's own ``get_rope_index``, the audio saliency, and family extras (Qwen3-Omni's
    deepstack features travel in ``extras``).
``PrefillInputs``
    What the language model is prefilled with: possibly pruned by a keep plan, original positions
    kept, plus keyword arguments the family's language model needs (``lm_kwargs``).
``TextModel``
    The decoder-only language model, its head and embeddings, as the decoders drive it.

Adding a family = one module implementing :class:`ModelAdapter` + one line in
:mod:`omnizip_cli.models.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from ..compression import KeepPlan
    from ..measure import StageTimer
    from ..media import DecodedMedia


@dataclass(frozen=True)
class MediaTokenIds:
    """The placeholder token ids of one family."""

    audio: int
    video: int
    image: int | None = None


@dataclass(frozen=True)
class VisionGeometry:
    """How video tokens map to pixels: one LLM token covers ``spatial_merge * patch`` pixels square and
    ``temporal_patch`` frames."""

    patch_size: int
    spatial_merge: int
    temporal_patch: int

    @property
    def token_pixels(self) -> int:
        return self.patch_size * self.spatial_merge


@dataclass
class PromptTemplates:
    """Text around the user's question, cut from the family's chat template with sentinels.

    ``question_suffix``: what follows the question in its user turn up to the assistant header
    (``"<|im_end|>\\n<|im_start|>assistant\\n"`` for Qwen chat templates).
    ``next_turn``: what separates an assistant answer from the next user question
    (``"<|im_end|>\\n<|im_start|>user\\n"``); an answer that ended with the end token already spoken
    loses the part of this text that token stands for.
    """

    question_suffix: str
    next_turn: str


@dataclass
class PreparedPrompt:
    """The processor's output for the question-independent prompt prefix (batch size 1).

    ``tensors``: input_ids ``[1, P]``, attention_mask ``[1, P]`` and the modality tensors
    (pixel values, grids, audio features and masks) as the processor returns them.
    """

    tensors: dict[str, Any]
    kind: str  # "video+audio" | "video" | "audio"
    use_audio_in_video: bool
    templates: PromptTemplates
    system: str | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tensors["input_ids"]

    @property
    def length(self) -> int:
        return int(self.tensors["input_ids"].shape[1])

    @property
    def video_grid(self) -> tuple[int, int, int] | None:
        """The single video's ``(T, H, W)`` grid in patches (T counts temporal patches), or None."""
        grid = self.tensors.get("video_grid_thw")
        if grid is None:
            return None
        t, h, w = (int(v) for v in grid.reshape(-1)[:3].tolist())
        return t, h, w

    @property
    def audio_features(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The audio encoder's input: ``(input_features [1, mel, frames], feature_attention_mask [1, frames])``, or None."""
        features = self.tensors.get("input_features")
        mask = self.tensors.get("feature_attention_mask")
        if features is None or mask is None:
            return None
        return features, mask


@dataclass
class AudioEncoding:
    """The audio encoder's output for one prompt's audio (batch size 1).

    features: ``[N_a, D]`` the audio tokens' features, as scattered at the audio placeholders.
    scores: ``[N_a]`` float32 saliency per audio token, when recorded (else None).
    """

    features: torch.Tensor
    scores: torch.Tensor | None


@dataclass
class EncodedMedia:
    """The prompt prefix in LLM space, uncompressed (batch size 1).

    input_ids: ``[1, P]`` long.
    embeds: ``[1, P, D]`` the model's dtype, encoder features scattered in.
    attention_mask: ``[1, P]``.
    position_ids: ``[3, 1, P]`` M-RoPE ids (temporal, height, width); long for Qwen2.5-Omni, float
        for Qwen3-Omni.
    video_grid_thw: the single video's grid in patches, or None.
    audio_scores: ``[N_a]`` float32 saliency per audio token, when recorded.
    extras: family data the prefill needs (e.g. Qwen3-Omni's deepstack features).
    """

    input_ids: torch.Tensor
    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    video_grid_thw: tuple[int, int, int] | None
    audio_scores: torch.Tensor | None
    kind: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass
class PrefillInputs:
    """What the language model is prefilled with: possibly pruned, original positions kept.

    embeds ``[1, L', D]``, attention_mask ``[1, L']``, position_ids ``[3, 1, L']``;
    kept: ``[L]`` bool keep mask over the original sequence (None: everything kept);
    lm_kwargs: extra keyword arguments of the family's language model for this prefill.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    kept: torch.Tensor | None = None
    lm_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])


@dataclass
class TextModel:
    """The language model as the decoders drive it.

    ``language_model(inputs_embeds=, attention_mask=, position_ids=, past_key_values=, use_cache=,
    **lm_kwargs)`` returns hidden states; ``lm_head`` maps them to logits; ``embed_tokens`` maps ids
    to embeddings; ``config`` is the text config (for caches); ``generation_config`` the
    checkpoint's generation defaults.
    """

    language_model: Any
    lm_head: Any
    embed_tokens: Any
    config: Any
    generation_config: Any
    owner: Any  # the thinker: static decoders are kept per owner

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype


class ModelAdapter(Protocol):
    """Everything omnizip needs to know about one model family."""

    family: str  # e.g. "qwen2_5_omni"
    display_name: str  # e.g. "Qwen2.5-Omni"
    model_types: tuple[str, ...]  # config.json model_type values this adapter loads
    tiny_name: str  # the --model name of this family's tiny random checkpoint
    audio_tokens_per_second: float  # nominal, for ratio solving without a clip
    geometry: VisionGeometry  # its released checkpoints' vision geometry, known before a model is loaded

    def load(self, location: str, *, dtype: Any, attn_implementation: str, device: str,
             from_pretrained_kwargs: dict[str, Any], weight_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The thinker (eval mode, on ``device``) and its stock processor.

        ``from_pretrained_kwargs`` go to both; ``weight_kwargs`` (``use_safetensors``,
        ``weights_only``) to the model's ``from_pretrained`` only.
        """
        ...

    def token_ids(self, model: Any) -> MediaTokenIds: ...

    def spatial_merge_size(self, model: Any) -> int: ...

    def vision_geometry(self, model: Any) -> VisionGeometry: ...

    def text_model(self, model: Any) -> TextModel: ...

    def encoder_modules(self, model: Any) -> dict[str, Any]:
        """``{"vision": module, "audio": module}``: the encoders whose attention may be switched."""
        ...

    def prepare(self, processor: Any, media: DecodedMedia, system: str | None = None, *,
                question: str | None = None, device: str | None = None) -> PreparedPrompt:
        """Run the stock processor on the question-independent prompt prefix.

        ``question`` given: on the whole one-turn prompt instead (the stock path, for comparisons).
        ``device`` given: the video processor's pixel work runs there
        (:mod:`~omnizip_cli.models.device_preprocess`); None: the stock CPU path.
        """
        ...

    def encode_audio(self, model: Any, tensors: dict[str, Any], *, record_saliency: bool,
                     timer: StageTimer) -> AudioEncoding:
        """The audio encoder (and its saliency) on the processor's ``input_features`` and
        ``feature_attention_mask`` in ``tensors``, timed as "audio_encoder" and "saliency"."""
        ...

    def encode(self, model: Any, prepared: PreparedPrompt, *, record_saliency: bool,
               timer: StageTimer, audio: AudioEncoding | None = None) -> EncodedMedia:
        """Encoders, saliency and positions, timed as "audio_encoder", "saliency", "vision_encoder".

        ``audio``: this prompt's audio already encoded by :meth:`encode_audio` on the same processor
        output (e.g. while the video decoded), used instead of running the audio encoder again.
        """
        ...

    def prefill_inputs(self, encoded: EncodedMedia, plan: KeepPlan | None) -> PrefillInputs:
        """The prefix prefill: everything (plan None) or the plan applied to every per-token tensor."""
        ...

    # Optional (looked up with getattr by the Session):
    #   def time_groups(self, encoded: EncodedMedia, config: OmniZipConfig) -> torch.Tensor | None
    # ``[P]`` long time-group index per token for the keep plan (see
    # ``omnizip_cli.compression.groups.derive_layout``); absent or None: runs of consecutive positions.

    def build_tiny(self, path: Path) -> None:
        """Write this family's tiny random checkpoint (full hub layout, processor included) into ``path``."""
        ...
