"""The Qwen2.5-Omni adapter: the only module that names Qwen2.5-Omni classes and submodules.

* **Loading**: the thinker (``Qwen2_5OmniThinkerForConditionalGeneration``) from a full hub
  checkpoint (``thinker.*`` weights; talker and token2wav weights skipped) and the stock
  ``Qwen2_5OmniProcessor``.
* **Prompt**: the processor on the question-independent prefix. Three input kinds, decided by what
  the media holds: video with an audio track (audio-in-video: the processor interleaves 2-s chunks
  of video and audio tokens, ``load_audio_from_video=True``, and positions need
  ``use_audio_in_video=True``), video without audio, audio only. The processor pads audio to the
  Whisper feature extractor's ``max_length`` (300 s) and silently cuts anything longer; we set
  ``max_length`` to the audio's own length plus one FFT window instead: nothing is cut, and the
  valid feature frames are bitwise identical to the stock 300-s padding (a test checks it).
* **Encoding**: ``Qwen2_5OmniThinkerModel.forward`` step by step, outside the model:
  ``embed_tokens``; audio features (``get_audio_features``) scattered at ``<|AUDIO|>`` while an
  :class:`~omnizip_cli.models.saliency.AudioSaliencyRecorder` observes the last audio-encoder layer's
  attention; video features (``get_video_features``) scattered at ``<|VIDEO|>``; the 3-D M-RoPE ids
  from ``get_rope_index`` on the uncompressed sequence.
* **Prefill**: the keep plan applied to embeddings, attention mask and positions together (merged
  anchors written in); kept tokens keep their original positions.
* **Tiny**: the configuration of the tiny random checkpoint used by tests and demos.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import AudioEncoding, EncodedMedia, PreparedPrompt, PrefillInputs
from .qwen_omni_thinker import QwenOmniThinkerLayout, prepare_media_prompt

if TYPE_CHECKING:
    import torch

    from ..compression import KeepPlan
    from ..measure import StageTimer
    from ..media import DecodedMedia
    from .saliency import AudioSaliencyRecorder

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
]
NAMED_SPECIAL_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
# Qwen2.5-Omni's chat template (as shipped with the hub checkpoints' processor).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen25OmniAdapter(QwenOmniThinkerLayout):
    """:class:`~omnizip_cli.models.base.ModelAdapter` for Qwen2.5-Omni (3B, 7B)."""

    family = "qwen2_5_omni"
    display_name = "Qwen2.5-Omni"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    tiny_name = "tiny"
    audio_tokens_per_second = 25.0

    # ------------------------------------------------------------------------------ loading
    def load(self, location: str, *, dtype: Any, attn_implementation: str, device: str,
             from_pretrained_kwargs: dict[str, Any], weight_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import Qwen2_5OmniProcessor
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniThinkerForConditionalGeneration,
        )

        processor = Qwen2_5OmniProcessor.from_pretrained(location, **from_pretrained_kwargs)
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            location,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device if device != "cpu" else None,
            **weight_kwargs,
            **from_pretrained_kwargs,
        )
        return model.eval(), processor

    # structure (token ids, vision geometry, text model, encoders): QwenOmniThinkerLayout

    # ------------------------------------------------------------------------------ prompt
    def prepare(self, processor: Any, media: DecodedMedia, system: str | None = None, *,
                question: str | None = None, device: str | None = None) -> PreparedPrompt:
        # Audio padded to its own length + one FFT window, not the processor's 300 s (nothing is cut).
        audio = {"max_length": int(len(media.audio)) + int(processor.feature_extractor.n_fft)} \
            if media.audio is not None else None
        return prepare_media_prompt(processor, media, system, question, device, audio_kwargs=audio)

    # ------------------------------------------------------------------------------ encoding
    def audio_token_scores(self, model: Any, recorder: AudioSaliencyRecorder, feature_mask: torch.Tensor,
                           num_tokens: int) -> torch.Tensor:
        """One softmax over the whole clip; scores per audio token over the post-CNN frame lengths."""
        after_cnn, _ = model.model.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
        return recorder.token_scores([int(x) for x in after_cnn.tolist()])

    def encode(self, model: Any, prepared: PreparedPrompt, *, record_saliency: bool,
               timer: StageTimer, audio: AudioEncoding | None = None) -> EncodedMedia:
        import torch

        thinker = model.model
        config = model.config
        device = thinker.language_model.embed_tokens.weight.device
        tensors = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in prepared.tensors.items()}
        input_ids = tensors["input_ids"]
        attention_mask = tensors["attention_mask"]
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
                    video = thinker.get_video_features(tensors["pixel_values_videos"], video_grid).pooler_output
                    video = torch.cat(video, dim=0)
                video_mask = (input_ids == config.video_token_id).unsqueeze(-1)
                embeds = embeds.masked_scatter(video_mask, video.to(embeds.device, embeds.dtype))

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
        )

    def prefill_inputs(self, encoded: EncodedMedia, plan: KeepPlan | None) -> PrefillInputs:
        if plan is None:
            return PrefillInputs(embeds=encoded.embeds, attention_mask=encoded.attention_mask,
                                 position_ids=encoded.position_ids)
        from ..compression import apply_keep_plan

        keep = plan.keep.to(encoded.embeds.device)
        return PrefillInputs(
            embeds=apply_keep_plan(encoded.embeds[0], plan).unsqueeze(0),
            attention_mask=encoded.attention_mask[:, keep],
            position_ids=encoded.position_ids[:, :, keep],
            kept=keep,
        )

    # ------------------------------------------------------------------------------ tiny
    def build_tiny(self, path: Path) -> None:
        """A tiny random Qwen2.5-Omni in the full hub layout (``thinker.*`` weights), processor included."""
        import torch
        from transformers import GenerationConfig
        from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniConfig
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniForConditionalGeneration
        from transformers.utils import logging as hf_logging

        from .tiny import build_tokenizer, seeded

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused talker defaults warn about ids outside the tiny vocab
        try:
            tokenizer = build_tokenizer(SPECIAL_TOKENS, NAMED_SPECIAL_TOKENS, CHAT_TEMPLATE)
            processor = build_processor(tokenizer)
            thinker_config = tiny_thinker_config(tokenizer)
            config = Qwen2_5OmniConfig(thinker_config=thinker_config.to_dict(), enable_audio_output=False)
        finally:
            hf_logging.set_verbosity(verbosity)
        with seeded(0):
            model = Qwen2_5OmniForConditionalGeneration(config).to(torch.float32)
        text = thinker_config.text_config
        model.generation_config = GenerationConfig(
            eos_token_id=[text.eos_token_id, text.pad_token_id], pad_token_id=text.pad_token_id
        )
        model.save_pretrained(path)
        processor.save_pretrained(path)


def build_processor(tokenizer: Any) -> Any:
    """The stock ``Qwen2_5OmniProcessor`` around a tokenizer and the real Omni preprocessing values."""
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
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
    pixels = {"min_pixels": 3136, "max_pixels": 12845056}
    image_processor = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
    )
    return Qwen2_5OmniProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_thinker_config(tokenizer: Any, hidden: int = 64, init: float = 0.2) -> Any:
    """A ``Qwen2_5OmniThinkerConfig`` small enough for CPU tests that runs every real code path.

    ``initializer_range=0.2`` so the tiny model is position-sensitive (at 0.02 wrong M-RoPE ids
    would not change its output), and ``vocab_size == len(tokenizer)`` so every id decodes to text.
    """
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # head_dim 16: the M-RoPE sections sum to 8
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
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
        n_window=100,
        output_dim=hidden,
        max_source_positions=1500,
        initializer_range=init,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        out_hidden_size=hidden,
        fullatt_block_indexes=[1],
        initializer_range=init,
    )
    return Qwen2_5OmniThinkerConfig(
        audio_config=audio,
        vision_config=vision,
        text_config=text,
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
        user_token_id=tokenizer.convert_tokens_to_ids("user") if "user" in tokenizer.get_vocab() else 0,
        position_id_per_seconds=25,
        seconds_per_chunk=2,
        initializer_range=init,
    )


def thinker_config_class() -> Any:
    """``Qwen2_5OmniThinkerConfig`` (for benchmarks that build full-size architectures)."""
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

    return Qwen2_5OmniThinkerConfig


def thinker_class() -> Any:
    """``Qwen2_5OmniThinkerForConditionalGeneration`` (for benchmarks)."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration


ADAPTER = Qwen25OmniAdapter()
