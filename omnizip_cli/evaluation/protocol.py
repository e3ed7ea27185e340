"""What an evaluation run needs from the model side: settings, a prediction, and the answerer protocol.

The loop in :mod:`omnizip_cli.evaluation.runner` never touches torch or transformers. It talks to a
:class:`VideoAnswerer` (one per worker process, holding the loaded model) through two calls:

* :meth:`VideoAnswerer.open` decodes, processes and encodes one video **once**, and returns an
  :class:`OpenVideo`;
* :meth:`OpenVideo.answer` answers one prompt under one :class:`Setting` (keep plan + prefill +
  greedy decode); the runner calls it for every question of the video and every setting, then
  :meth:`OpenVideo.close`.

Workers build their answerer from an :data:`AnswererFactory`: a picklable, argument-less callable
(a top-level function, a ``functools.partial`` of one, or a dataclass instance with ``__call__``), so
that Ray can ship it to each worker process, which then loads its own model.

This module imports nothing heavy; :meth:`Setting.compression` imports the compression package
(torch) only when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from omnizip_cli.errors import UsageError

if TYPE_CHECKING:
    from omnizip_cli.compression import OmniZipConfig

__all__ = [
    "AnswererFactory",
    "OpenVideo",
    "Prediction",
    "Setting",
    "VideoAnswerer",
    "METHODS",
    "method_setting",
    "parse_methods",
    "parse_settings",
]

SettingSource = Literal["full", "preset", "retention"]
#: The ways of reaching a retention: OmniZip's plan, or a baseline at the same token budget
#: (:mod:`omnizip_cli.evaluation.baselines`).
METHODS = ("omnizip", "frames", "pixels", "random")


@dataclass(frozen=True)
class Setting:
    """One way of answering: the full model, a paper preset, or a target retention.

    Attributes
    ----------
    key:
        Unique and stable: ``"full"``, ``"preset-45"``, ``"retention-0.4"``. Predictions are stored
        under it, so resuming a run matches on it.
    label:
        Column title in tables and charts: ``"full"``, ``"45 %"``, ``"40 %"``.
    source:
        ``"full"`` (no compression), ``"preset"`` (:data:`omnizip_cli.compression.PRESETS`) or
        ``"retention"`` (ratios solved for the clip's own audio/video token mix).
    preset:
        The preset name for ``source == "preset"``.
    target_retention:
        Fraction of audio+video tokens the setting aims to keep (None for full).
    method:
        How a ``METHOD@R`` setting reaches ``target_retention``: ``"omnizip"`` (the keep plan),
        ``"frames"`` (fewer frames sampled), ``"pixels"`` (smaller frames) or ``"random"`` (a seeded
        random drop to OmniZip's per-modality kept counts). None for ``full``, presets and plain
        retentions (all OmniZip).
    """

    key: str
    label: str
    source: SettingSource
    preset: str | None = None
    target_retention: float | None = None
    method: str | None = None

    @property
    def is_full(self) -> bool:
        return self.source == "full"

    @property
    def family(self) -> str:
        """The line this setting belongs to in the chart: ``full``, ``omnizip``, ``frames``, ``pixels``, ``random``."""
        return "full" if self.is_full else (self.method or "omnizip")

    @property
    def reopens(self) -> bool:
        """Whether the video must be decoded and encoded again for it (``frames@R``, ``pixels@R``)."""
        return self.method in ("frames", "pixels")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["method"] is None:  # config.json of runs from before methods stays equal (they resume)
            del data["method"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Setting:
        return cls(**data)

    def compression(self, audio_tokens: int, video_tokens: int) -> OmniZipConfig | None:
        """The OmniZip config for a clip (None for full); imports the compression package (torch).

        Solved where every command solves it (:class:`omnizip_cli.compression.CompressionSetting`):
        a retention target for this clip's own audio/video token mix.
        """
        return self.compression_setting().resolve(audio_tokens, video_tokens)

    def compression_setting(self) -> Any:
        """This setting as a :class:`omnizip_cli.compression.CompressionSetting` (imports torch)."""
        from omnizip_cli.compression import CompressionSetting

        if self.is_full or self.reopens:
            return CompressionSetting.off()
        if self.source == "preset":
            return CompressionSetting(source="preset", preset=self.preset)
        return CompressionSetting(source="retention", preset=None, retention=self.target_retention)


def _percent(value: float) -> str:
    return f"{value * 100:g} %"


def _preset_names() -> Collection[str]:
    from omnizip_cli.compression import PRESETS  # torch: only when a preset name must be checked

    return PRESETS.keys()


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    """``--methods omnizip,frames,pixels,random`` as a list (commas or repeats); an unknown name is a
    :class:`UsageError`."""
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    names = [name.strip().lower() for part in parts for name in part.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r} (choose from {', '.join(METHODS)})")
    return list(dict.fromkeys(names))


def method_setting(method: str, retention: float) -> Setting:
    """The ``METHOD@R`` setting (see :attr:`Setting.method`)."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r} in --setting (choose from {', '.join(METHODS)})")
    _check_retention(retention)
    return Setting(key=f"{method}@{retention:g}", label=f"{method} {_percent(retention)}", source="retention",
                   target_retention=float(retention), method=method)


def _check_retention(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 < value <= 1.0:
        raise UsageError(f"a retention must be in (0, 1], got {value!r}")


def parse_settings(
    settings: Sequence[str] = (),
    retentions: Sequence[float] = (),
    presets: Collection[str] | None = None,
    methods: Sequence[str] = (),
) -> list[Setting]:
    """The settings of ``--setting``, ``--retention`` and ``--methods``, in the order given.

    ``--setting`` takes ``full``, a preset name (``45``, ``35``), a retention fraction in (0, 1]
    (``0.4``) or ``METHOD@R`` (``frames@0.45``, ``pixels@0.45``, ``random@0.45``, ``omnizip@0.45``);
    ``--retention R`` adds a retention setting, or with ``methods`` one ``METHOD@R`` per method
    (the grid, retentions outer). With neither, the paper's comparison: ``full``, ``45``, ``35``.
    ``presets`` defaults to the preset names of :mod:`omnizip_cli.compression`. A duplicate, an
    unknown name, ``methods`` without a retention or a retention outside (0, 1] is a
    :class:`UsageError`.
    """
    values: list[str | float] = list(settings)
    if methods:
        if not retentions:
            raise UsageError("--methods needs at least one --retention")
        values += [f"{method}@{float(r)!r}" for r in retentions for method in methods]
    else:
        values += list(retentions)
    if not values:
        values = ["full", "45", "35"]
    names: Collection[str] | None = presets
    out: list[Setting] = []
    for value in values:
        if isinstance(value, str) and value.strip().lower() == "full":
            out.append(Setting(key="full", label="full", source="full"))
            continue
        if isinstance(value, str) and "@" in value:
            method, _, fraction = value.strip().partition("@")
            try:
                retention = float(fraction)
            except ValueError:
                raise UsageError(f"bad --setting {value.strip()!r}: write METHOD@R, e.g. frames@0.45") from None
            out.append(method_setting(method.strip().lower(), retention))
            continue
        if isinstance(value, str):
            text = value.strip()
            if names is None and not _looks_fractional(text):
                names = _preset_names()
            if names is not None and text in names:
                target = int(text) / 100 if text.isdigit() else None
                out.append(Setting(key=f"preset-{text}", label=_percent(target) if target else text,
                                   source="preset", preset=text, target_retention=target))
                continue
            try:
                value = float(text)
            except ValueError:
                choices = ", ".join(["full", *sorted(names or ())])
                raise UsageError(f"unknown --setting {text!r} (choose from {choices}, a retention like 0.4, or METHOD@R like frames@0.45)") from None
        _check_retention(value)
        out.append(Setting(key=f"retention-{float(value):g}", label=_percent(float(value)), source="retention",
                           target_retention=float(value)))
    keys = [s.key for s in out]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise UsageError(f"the same setting is asked for twice: {', '.join(duplicates)}")
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):  # "45" and "0.45": tell the columns apart
        out = [Setting(s.key, f"{s.label} (r)", s.source, s.preset, s.target_retention, s.method)
               if s.source == "retention" and s.method is None else s for s in out]
    return out


def _looks_fractional(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return 0.0 < value <= 1.0 and not text.isdigit()


@dataclass(frozen=True)
class Prediction:
    """One answer and its figures, as :meth:`OpenVideo.answer` returns it.

    Attributes
    ----------
    text:
        The decoded answer (special tokens removed).
    token_ids:
        The generated token ids (greedy), end token excluded.
    tokens_before, tokens_after:
        Audio+video tokens of the prompt before and after compression (equal for full).
    prompt_tokens:
        Tokens actually prefilled (whole prompt, after compression).
    ttft_seconds:
        Time to first token of this answer: what this setting and question cost after the video
        was opened (keep plan, prefill, first token; the shared decode/encode is not included).
    decode_tokens_per_second:
        Tokens after the first divided by the time after the first (None with fewer than 2 tokens).
    peak_memory_bytes:
        Peak device memory during the answer (CUDA max allocated; peak RSS on the CPU).
    media:
        For ``frames@R`` / ``pixels@R``: the matched media (frames, frame size, the options), else None.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    tokens_before: int | None = None
    tokens_after: int | None = None
    prompt_tokens: int | None = None
    ttft_seconds: float | None = None
    decode_tokens_per_second: float | None = None
    peak_memory_bytes: int | None = None
    media: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["token_ids"] = list(self.token_ids)
        return data


@runtime_checkable
class OpenVideo(Protocol):
    """A video decoded, processed and encoded once, ready to answer under any setting."""

    def answer(self, prompt: str, setting: Setting) -> Prediction:
        """Answer ``prompt`` (the question text, options included) greedily under ``setting``.

        Raises an :class:`omnizip_cli.errors.OmnizipError` subclass (e.g. ``OutOfMemory``) for a
        failure of this answer only; the runner records it and goes on.
        """
        ...

    def close(self) -> None:
        """Free what the video holds (features, caches). Called once, also after a failure."""
        ...


@runtime_checkable
class VideoAnswerer(Protocol):
    """The model side of an evaluation, one per worker process (it holds the loaded model)."""

    def open(self, video: Path) -> OpenVideo:
        """Decode, process and encode ``video`` once for all its questions and settings.

        Raises :class:`omnizip_cli.errors.MediaError` (or another ``OmnizipError``) for a missing,
        unreadable or unusable video; the runner records it for each of the video's items.
        """
        ...


#: Builds a worker's answerer (loads the model). Must be picklable for Ray and take no argument.
AnswererFactory = Callable[[], VideoAnswerer]
