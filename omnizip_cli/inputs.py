"""Turn decoded media and a question into the thinker's inputs with the stock processor.

Three input kinds, decided by what the media holds:

* video with an audio track: audio-in-video, the processor interleaves 2-s chunks of video and audio
  tokens (``load_audio_from_video=True``) and the model must be called with ``use_audio_in_video=True``;
* video without audio: video tokens only;
* audio only: audio tokens only.

The processor always pads audio to the Whisper feature extractor's ``max_length`` (300 s by default)
and cuts anything longer, silently. We set ``max_length`` to the audio's own length plus one FFT
window instead: nothing is cut, and a 6-s clip no longer pays for 300 s of mel frames (0.3 s of CPU
per call). The valid feature frames and the feature mask are bitwise identical to the stock 300-s
padding (the padded zeros never raise the log-mel maximum the normalisation uses), which a test checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omnizip_cli.preprocess import bounded_processor

if TYPE_CHECKING:
    from .media import DecodedMedia

SAMPLE_RATE = 16000


@dataclass
class ModelInputs:
    """The processor's tensors and what they describe."""

    tensors: dict[str, Any]  # input_ids, attention_mask, and the modality tensors, batch size 1
    use_audio_in_video: bool
    kind: str  # "video+audio" | "video" | "audio"
    prompt_text: str

    @property
    def input_ids(self) -> Any:
        return self.tensors["input_ids"]

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for stock ``generate``/``forward`` (``use_audio_in_video`` included)."""
        return {**self.tensors, "use_audio_in_video": self.use_audio_in_video}


def build_messages(question: str, kind: str, system: str | None = None) -> list[dict[str, Any]]:
    """A chat with one user turn: the media placeholder first, then the question."""
    content: list[dict[str, Any]] = []
    if kind.startswith("video"):
        content.append({"type": "video", "video": "input"})
    else:
        content.append({"type": "audio", "audio": "input"})
    content.append({"type": "text", "text": question})
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    return messages


def build_inputs(processor: Any, media: DecodedMedia, question: str, system: str | None = None) -> ModelInputs:
    """Run the stock processor on decoded media and a question (batch size 1, PyTorch tensors)."""
    has_video = media.frames is not None
    has_audio = media.audio is not None
    if not has_video and not has_audio:
        raise ValueError("media holds neither video frames nor audio")
    kind = "video+audio" if has_video and has_audio else ("video" if has_video else "audio")
    prompt = processor.apply_chat_template(
        build_messages(question, kind, system), add_generation_prompt=True, tokenize=False
    )
    kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
    if has_audio:
        feature_extractor = processor.feature_extractor
        kwargs["audio"] = [media.audio]
        kwargs["audio_kwargs"] = {"max_length": int(len(media.audio)) + int(feature_extractor.n_fft)}
    if has_video:
        frames = media.frames
        height, width = int(frames.shape[1]), int(frames.shape[2])
        pixels = height * width
        kwargs["videos"] = [frames]
        kwargs["videos_kwargs"] = {
            # The frames are already sized (multiples of 28) by the media layer: a size window around
            # their own pixel count keeps the video processor from resizing them again.
            "size": {"shortest_edge": pixels, "longest_edge": pixels},
            "fps": float(media.summary.fps_used),
            "do_sample_frames": False,
        }
        if has_audio:
            kwargs["load_audio_from_video"] = True
            kwargs["audio_from_video_indices"] = [0]
    tensors = dict(bounded_processor(processor, media.frames)(**kwargs))  # video in chunks, memory checked
    tensors.pop("num_audio_tokens", None)
    return ModelInputs(tensors=tensors, use_audio_in_video=has_video and has_audio, kind=kind, prompt_text=prompt)
