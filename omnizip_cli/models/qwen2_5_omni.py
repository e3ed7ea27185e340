"""The Qwen2.5-Omni adapter: the only module that names Qwen2.5-Omni classes.

Everything both Qwen omni families do alike (loading, the processor call, encoding, the prefill,
the thinker config and the tiny checkpoint) is :class:`~omnizip_cli.models.qwen_omni_thinker.QwenOmniThinkerLayout`'s.
What is Qwen2.5-Omni's own:

* **Classes**: the thinker ``Qwen2_5OmniThinkerForConditionalGeneration`` (loaded from a full hub
  checkpoint: ``thinker.*`` weights, talker and token2wav weights skipped), the stock
  ``Qwen2_5OmniProcessor``, and ``Qwen2_5OmniForConditionalGeneration`` for the tiny checkpoint.
* **Prompt**: with an audio track, the processor interleaves 2-s chunks of video and audio tokens
  (``load_audio_from_video=True``, positions need ``use_audio_in_video=True``). The processor pads
  audio to the Whisper feature extractor's ``max_length`` (300 s) and silently cuts anything longer;
  we set ``max_length`` to the audio's own length plus one FFT window instead: nothing is cut, and
  the valid feature frames are bitwise identical to the stock 300-s padding (a test checks it).
* **Saliency**: an :class:`~omnizip_cli.models.saliency.AudioSaliencyRecorder` with one softmax over
  the whole clip (long audio: per window), paired down to the audio tokens as the encoder pools them.
* **Tiny**: the special tokens, chat template and size of the tiny random checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import VisionGeometry
from .qwen_omni_thinker import FamilyClasses, QwenOmniThinkerLayout, ThinkerDims

if TYPE_CHECKING:
    import torch

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


#: The tiny random checkpoint's size (``vocab_size`` is the tiny tokenizer's; head_dim 16: the
#: M-RoPE sections sum to 8).
TINY_DIMS = ThinkerDims(
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=32768,
              rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
              tie_word_embeddings=False),
    audio=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
               n_window=100, output_dim=64, max_source_positions=1500),
    vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, window_size=112, out_hidden_size=64, fullatt_block_indexes=[1]),
)


class Qwen25OmniAdapter(QwenOmniThinkerLayout):
    """:class:`~omnizip_cli.models.base.ModelAdapter` for Qwen2.5-Omni (3B, 7B)."""

    family = "qwen2_5_omni"
    display_name = "Qwen2.5-Omni"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    tiny_name = "tiny"
    audio_tokens_per_second = 25.0
    geometry = VisionGeometry(patch_size=14, spatial_merge=2, temporal_patch=2)
    position_id_per_seconds = 25
    special_tokens = tuple(SPECIAL_TOKENS)
    named_special_tokens = NAMED_SPECIAL_TOKENS
    chat_template = CHAT_TEMPLATE
    tiny_dims = TINY_DIMS

    def classes(self) -> FamilyClasses:
        from transformers import Qwen2_5OmniProcessor
        from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as config
        from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as modeling

        return FamilyClasses(thinker=modeling.Qwen2_5OmniThinkerForConditionalGeneration,
                             thinker_config=config.Qwen2_5OmniThinkerConfig, processor=Qwen2_5OmniProcessor,
                             checkpoint=modeling.Qwen2_5OmniForConditionalGeneration,
                             checkpoint_config=config.Qwen2_5OmniConfig)

    def processor_kwargs(self, processor: Any, media: DecodedMedia) -> tuple[dict[str, Any], dict[str, Any]]:
        """Audio padded to its own length + one FFT window, not the processor's 300 s (nothing is cut)."""
        if media.audio is None:
            return {}, {}
        return {"max_length": int(len(media.audio)) + int(processor.feature_extractor.n_fft)}, {}

    def audio_token_scores(self, model: Any, recorder: AudioSaliencyRecorder, feature_mask: torch.Tensor,
                           num_tokens: int) -> torch.Tensor:
        """One softmax over the whole clip; scores per audio token over the post-CNN frame lengths."""
        after_cnn, _ = model.model.audio_tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
        return recorder.token_scores([int(x) for x in after_cnn.tolist()])


ADAPTER = Qwen25OmniAdapter()
