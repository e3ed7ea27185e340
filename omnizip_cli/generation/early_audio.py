"""The audio track encoded while the video decodes: media decoding overlapped with model work.

A video's audio track decodes much faster than its frames (PyAV decodes it on its own thread,
:func:`~omnizip_cli.media.load_media`), and the audio side of the model needs nothing from the video:
the processor's log-mel features, the audio encoder and the OmniZip saliency. :class:`EarlyAudio`
runs that work on a worker thread as soon as both the audio (``load_media``'s ``on_audio``) and the
model (:meth:`EarlyAudio.attach`) are there, while the main thread is still decoding frames::

    early = EarlyAudio(record_saliency=True)
    early.attach(loaded)                                        # the model is loaded
    media = load_media(path, options, on_audio=early.submit)    # audio work starts mid-decode
    prepared = prepare(loaded, media, processor=early.processor(loaded.processor))
    audio = early.encoding_for(prepared)                        # None: not usable, encode as usual
    encoded = loaded.adapter.encode(loaded.model, prepared, ..., audio=audio)

Exactness: nothing is assumed. The early work runs the adapter's own processor call on an
audio-only prompt (so the feature extractor gets exactly the arguments it gets for the whole
prompt) and the adapter's :meth:`~omnizip_cli.models.base.ModelAdapter.encode_audio`. Its output is
used only when the whole prompt's processor output has bitwise the same ``input_features`` and
``feature_attention_mask`` (the audio encoder is then given the very same input); the feature
extractor's result is replayed only for a call with an equal audio array and equal arguments.
Anything else (the loader's prediction of the final audio missed, the early work failed) falls back
to the usual path; the session's answers are identical either way
(``tests/model/test_early_audio.py``).

When it pays: the audio features (20-80 ms for a minute of audio on the development CPU) and the
audio encoder with its saliency leave the critical path whenever the video takes longer to decode
than the audio, which is the rule for a video with sound, provided there are cores to spare: the
Session and the CLI use it from 4 usable cores on (:func:`~omnizip_cli.generation.session.overlap_enabled`;
on 2 cores decoding beside model work was measured slower). It costs one tokenisation of a short
audio-only prompt.
"""

from __future__ import annotations

import copy
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..measure import StageTimer
    from ..models.base import AudioEncoding, PreparedPrompt
    from ..models.registry import LoadedModel

logger = logging.getLogger(__name__)

__all__ = ["EarlyAudio", "ReplayingFeatureExtractor"]

#: The stages the early work records (charged to the session as overlapped with media decoding).
EARLY_STAGES = ("audio_encoder", "saliency")


@dataclass
class _FeatureCall:
    """One feature-extractor call: its audio, its keyword arguments and its output (a BatchFeature)."""

    audio: list[np.ndarray]
    kwargs: dict[str, Any]
    output: Any


def _same_audio(a: Any, b: list[np.ndarray]) -> bool:
    if not isinstance(a, (list, tuple)) or len(a) != len(b):
        return False
    return all(x is y or (isinstance(x, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y))
               for x, y in zip(a, b, strict=True))


def _same_kwargs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    try:
        return all(bool(a[k] == b[k]) for k in a)
    except (TypeError, ValueError):  # values without a plain truth value (arrays): not the same call
        return False


class _RecordingFeatureExtractor:
    """Wraps a feature extractor and remembers its (single) call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.call: _FeatureCall | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, raw_speech: Any, **kwargs: Any) -> Any:
        output = self._inner(raw_speech, **kwargs)
        audio = list(raw_speech) if isinstance(raw_speech, (list, tuple)) else [raw_speech]
        self.call = _FeatureCall(audio=audio, kwargs=dict(kwargs), output=copy.copy(output))
        return output


class ReplayingFeatureExtractor:
    """A feature extractor that returns a recorded result for an identical call, else computes.

    The processor renames keys of the feature extractor's output in place, so every replay hands
    out a fresh shallow copy (the tensors themselves are shared and never written).
    """

    def __init__(self, inner: Any, call: _FeatureCall) -> None:
        self._inner = inner
        self._call = call
        self.replayed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, raw_speech: Any, **kwargs: Any) -> Any:
        if _same_audio(raw_speech, self._call.audio) and _same_kwargs(kwargs, self._call.kwargs):
            self.replayed += 1
            return copy.copy(self._call.output)
        return self._inner(raw_speech, **kwargs)


@dataclass
class _Done:
    features: Any  # [1, 128, L] the processor's input_features for the audio-only prompt (CPU)
    feature_mask: Any  # [1, L]
    feature_call: _FeatureCall | None
    encoding: AudioEncoding
    timer: StageTimer


class EarlyAudio:
    """Encodes a video's audio track on a worker thread while the video decodes (module docstring).

    ``record_saliency``: record the OmniZip audio saliency too (needed when the session compresses).
    Use as a context manager, or call :meth:`close`, so that the worker is always joined.
    """

    def __init__(self, *, record_saliency: bool) -> None:
        self.record_saliency = record_saliency
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._audio: np.ndarray | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._job: Future[_Done] | None = None
        self.outcome = "not started"  # then "used", or why not

    # ------------------------------------------------------------------------------ inputs
    def attach(self, loaded: LoadedModel) -> None:
        """The model is ready (starts the work if the audio already is)."""
        with self._lock:
            self._loaded = loaded
            self._maybe_start()

    def submit(self, audio: np.ndarray) -> None:
        """``load_media``'s ``on_audio``: the (predicted) audio is ready; returns at once."""
        with self._lock:
            self._audio = audio
            self._maybe_start()

    def _maybe_start(self) -> None:
        if self._job is not None or self._loaded is None or self._audio is None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnizip-early-audio")
        self._job = self._pool.submit(self._run, self._loaded, self._audio)
        self.outcome = "running"

    def _run(self, loaded: LoadedModel, audio: np.ndarray) -> _Done:
        from ..measure import StageTimer
        from ..media import DecodedMedia

        recorder = _RecordingFeatureExtractor(loaded.processor.feature_extractor)
        processor = copy.copy(loaded.processor)
        processor.feature_extractor = recorder
        # The adapter's own processor call on an audio-only prompt: the features of the whole
        # prompt's call, computed the same way (checked before use, see encoding_for).
        prompt = loaded.adapter.prepare(processor, DecodedMedia(frames=None, frame_times=None, audio=audio,
                                                                summary=None))  # type: ignore[arg-type]
        timer = StageTimer(device=loaded.device)
        encoding = loaded.adapter.encode_audio(loaded.model, prompt.tensors, record_saliency=self.record_saliency,
                                               timer=timer)
        features, feature_mask = prompt.audio_features  # an audio-only prompt: never None
        return _Done(features=features, feature_mask=feature_mask, feature_call=recorder.call, encoding=encoding,
                     timer=timer)

    # ------------------------------------------------------------------------------ results
    def _result(self) -> _Done | None:
        """Wait for the work (None: it never started or it failed)."""
        if self._job is None:
            return None
        try:
            return self._job.result()
        except Exception as exc:  # noqa: BLE001 - the usual path takes over; say why in the outcome
            self.outcome = f"failed ({type(exc).__name__}: {exc})"
            logger.debug("early audio work failed", exc_info=True)
            return None

    def processor(self, processor: Any) -> Any:
        """``processor``, or a shallow copy whose feature extractor replays the early call when the
        whole prompt's call is identical (same audio, same arguments). Waits for the work."""
        done = self._result()
        if done is None or done.feature_call is None:
            return processor
        replaying = copy.copy(processor)
        replaying.feature_extractor = ReplayingFeatureExtractor(processor.feature_extractor, done.feature_call)
        return replaying

    def encoding_for(self, prepared: PreparedPrompt, *, record_saliency: bool | None = None,
                     timer: StageTimer | None = None) -> AudioEncoding | None:
        """The early encoding when ``prepared`` holds bitwise the same audio features, else None.

        ``record_saliency`` True needs scores (None: this object's own setting). ``timer`` gets the
        early stages, marked as overlapped with media decoding, when the encoding is used.
        """
        import torch

        done = self._result()
        if done is None:
            return None
        audio = prepared.audio_features
        need_scores = self.record_saliency if record_saliency is None else record_saliency
        if audio is None:
            self.outcome = "not used: the prompt has no audio"
            return None
        features, mask = audio
        if not (torch.equal(features.cpu(), done.features.cpu()) and torch.equal(mask.cpu(), done.feature_mask.cpu())):
            self.outcome = "not used: the final audio differs from the early one"
            return None
        if need_scores and done.encoding.scores is None:
            self.outcome = "not used: saliency was not recorded"
            return None
        if timer is not None:
            for name in EARLY_STAGES:
                record = done.timer.stages.get(name)
                if record is not None:
                    timer.add(name, record.seconds, record.peak_memory_bytes, record.memory_kind, overlapped=True)
        self.outcome = "used"
        return done.encoding

    def close(self) -> None:
        """Join the worker (the work is not interrupted; it is short)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> EarlyAudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
