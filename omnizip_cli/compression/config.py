"""OmniZip settings: the validated config dataclass, the paper's presets, and retention targets.

Ratios follow the paper and the reference code: ``rho_*`` is the fraction of tokens **dropped**.
Every value is checked when a config is built; a bad value raises
:class:`omnizip_cli.errors.UsageError` (exit code 2) with a message naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from omnizip_cli.errors import UsageError

__all__ = ["PRESETS", "OmniZipConfig", "config_for_retention", "expected_retention"]


# ------------------------------------------------------------------------------- validation


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError.of_field(name, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UsageError.of_field(name, f"must be finite, got {value}")
    return value


def _fraction(name: str, value: Any) -> float:
    value = _finite(name, value)
    if not 0.0 <= value < 1.0:
        raise UsageError.of_field(name, f"must be in [0, 1), got {value}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise UsageError.of_field(name, f"must be a whole number, got {value!r}")
    if value < 0:
        raise UsageError.of_field(name, f"must be >= 0, got {value}")
    return value


# ---------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class OmniZipConfig:
    """How hard OmniZip compresses, and its few hyper-parameters (method §3).

    Attributes
    ----------
    rho_audio:
        Fraction of audio tokens **not** chosen as dominant by saliency, in [0, 1). The dominant
        tokens are ``round((1 - rho_audio) * N_a)``; contextual anchors are kept on top of them.
    rho_video:
        Target fraction of video tokens dropped over the audio-guided groups, in [0, 1). Groups
        without audio drop exactly this fraction (up to the per-frame floor). 0 turns video
        pruning off (see "Deviations" in :mod:`omnizip_cli.compression.plan`).
    anchor_ratio:
        Contextual anchors, as a fraction of **all** audio tokens, in [0, 1).
    merge_g:
        G: at most this many pooled audio tokens are merged into each anchor, >= 0. With 0 there are
        no anchors at all (as in the reference core), so the audio keeps only its dominant tokens.
    rho_min, rho_max:
        The window of the dynamic per-group video drop ratio, 0 <= rho_min <= rho_max < 1.
    knn_k:
        k of DPC-KNN's local density, >= 1 (capped at tokens-per-frame - 1).
    reference_quirks:
        Reproduce the reference's behaviour where this package deviates from it on inputs the
        reference handles without crashing: no budget normalisation with one or two guided
        groups, the double-counted fixed group when all base ratios are equal, video pruning
        at ``rho_video == 0``, and dropping the tokens of a partial trailing frame. Off by default;
        see "Deviations from the reference" in :mod:`omnizip_cli.compression.plan`.
    """

    rho_audio: float = 0.3
    rho_video: float = 0.6
    anchor_ratio: float = 0.05
    merge_g: int = 3
    rho_min: float = 0.35
    rho_max: float = 0.75
    knn_k: int = 5
    reference_quirks: bool = False

    def __post_init__(self) -> None:
        for name in ("rho_audio", "rho_video", "anchor_ratio", "rho_min", "rho_max"):
            object.__setattr__(self, name, _fraction(name, getattr(self, name)))
        for name in ("merge_g", "knn_k"):
            object.__setattr__(self, name, _count(name, getattr(self, name)))
        if not isinstance(self.reference_quirks, bool):
            raise UsageError(f"reference_quirks must be true or false, got {self.reference_quirks!r}")
        if self.knn_k < 1:
            raise UsageError(f"knn_k must be at least 1, got {self.knn_k}")
        if self.rho_min > self.rho_max:
            raise UsageError(f"rho_min ({self.rho_min}) must not exceed rho_max ({self.rho_max})")

    @property
    def is_identity(self) -> bool:
        """True when the plan keeps every token and changes no embedding.

        That is exactly ``rho_audio == 0 and rho_video == 0`` (without ``reference_quirks``): with
        ``rho_audio == 0`` every audio token is dominant, so there are no anchors and no pool
        (nothing merges); with ``rho_video == 0`` video pruning is off. The other fields then have
        no effect. (With ``reference_quirks`` guided video groups are pruned even at 0.)
        """
        return self.rho_audio == 0.0 and self.rho_video == 0.0 and not self.reference_quirks

    def to_dict(self) -> dict[str, float | int | bool]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, OmniZipConfig] = {
    # The paper's two settings; about 45 % and 35 % of audio+video tokens kept at 144 video and
    # 25 audio tokens per second: (0.75*25 + 0.40*144) / 169 = 45.2 %, (0.65*25 + 0.30*144) / 169 = 35.2 %.
    "45": OmniZipConfig(rho_audio=0.3, rho_video=0.6),
    "35": OmniZipConfig(rho_audio=0.4, rho_video=0.7),
}

# The presets lie on the line rho_video = rho_audio + _PRESET_OFFSET; config_for_retention walks along it.
_PRESET_OFFSET = 0.3
_MAX_RATIO_ON_LINE = 0.99  # the line stops where rho_video would reach 0.99
_DERIVED_DECIMALS = 4


def expected_retention(
    config: OmniZipConfig,
    audio_tokens_per_second: float = 25,
    video_tokens_per_second: float = 144,
) -> float:
    """Nominal fraction of audio+video tokens kept, ignoring rounding and per-frame floors.

    Audio keeps ``min(1, 1 - rho_audio + anchor_ratio)`` (no anchors when ``merge_g == 0``),
    video keeps ``1 - rho_video``; the two are weighted by their token rates.
    """
    anchors = config.anchor_ratio if config.merge_g > 0 else 0.0
    audio_keep = min(1.0, 1.0 - config.rho_audio + anchors)
    video_keep = 1.0 - config.rho_video
    total = audio_tokens_per_second + video_tokens_per_second
    return (audio_keep * audio_tokens_per_second + video_keep * video_tokens_per_second) / total


def config_for_retention(
    retention: float,
    audio_tokens_per_second: float = 25,
    video_tokens_per_second: float = 144,
    **overrides: Any,
) -> OmniZipConfig:
    """Ratios that keep about ``retention`` of the audio+video tokens.

    The rule keeps the paper's relation between the two ratios: both presets satisfy
    ``rho_video = rho_audio + 0.3``, so the ratios move along that line, and ``rho_audio`` is
    solved so that :func:`expected_retention` equals ``retention`` for the given token rates.
    With the defaults (25 audio, 144 video tokens/s, anchors 5 %) 0.45 gives 0.3018 / 0.6018 and
    0.35 gives 0.4018 / 0.7018, i.e. the presets to within 0.002.
    Above the line's top (``rho_audio`` = 0: about 73 % kept) audio is kept whole and
    ``rho_video`` alone falls to 0 at retention 1.0 (the identity). Below the line's bottom
    (``rho_video`` = 0.99: about 6 % kept) a :class:`UsageError` says what can be reached.
    Derived ratios are rounded to 4 decimals. Unless given in ``overrides``, the dynamic window
    ``[rho_min, rho_max]`` is widened to contain ``rho_video`` so the budget stays reachable.

    ``overrides`` may set ``anchor_ratio``, ``merge_g``, ``rho_min``, ``rho_max`` and ``knn_k``
    (``anchor_ratio`` and ``merge_g`` enter the solve); ``rho_audio``/``rho_video`` may not be
    overridden (build an :class:`OmniZipConfig` directly for that).
    """
    retention = _finite("retention", retention)
    if not 0.0 < retention <= 1.0:
        raise UsageError.of_field("retention", f"must be in (0, 1], got {retention}")
    audio_rate = _finite("audio_tokens_per_second", audio_tokens_per_second)
    video_rate = _finite("video_tokens_per_second", video_tokens_per_second)
    if audio_rate < 0 or video_rate < 0 or audio_rate + video_rate <= 0:
        raise UsageError("token rates must be >= 0 and not both 0")
    fixed = {"rho_audio", "rho_video"} & overrides.keys()
    if fixed:
        raise UsageError(f"config_for_retention derives {', '.join(sorted(fixed))}; do not pass it")
    allowed = {f.name for f in dataclasses.fields(OmniZipConfig)} - {"rho_audio", "rho_video"}
    unknown = set(overrides) - allowed
    if unknown:
        raise UsageError(f"unknown config field(s): {', '.join(sorted(unknown))}")

    template = OmniZipConfig(**overrides)  # validates the overrides
    rho_audio, rho_video = _ratios_on_preset_line(retention, audio_rate, video_rate, template)
    window = {
        "rho_min": min(template.rho_min, rho_video) if "rho_min" not in overrides else template.rho_min,
        "rho_max": max(template.rho_max, rho_video) if "rho_max" not in overrides else template.rho_max,
    }
    return dataclasses.replace(template, rho_audio=rho_audio, rho_video=rho_video, **window)


def _ratios_on_preset_line(
    retention: float, audio_rate: float, video_rate: float, template: OmniZipConfig
) -> tuple[float, float]:
    """Solve expected_retention(rho_audio = x, rho_video = x + 0.3) = retention (piecewise linear)."""
    anchors = template.anchor_ratio if template.merge_g > 0 else 0.0
    total = audio_rate + video_rate

    def retention_at(x: float) -> float:
        audio_keep = min(1.0, 1.0 - x + anchors)
        return (audio_keep * audio_rate + (1.0 - _PRESET_OFFSET - x) * video_rate) / total

    x_top, x_bottom = 0.0, _MAX_RATIO_ON_LINE - _PRESET_OFFSET
    if retention >= retention_at(x_top):
        # Above the line: audio whole, video alone carries the budget.
        rho_video = (1.0 - retention) * total / video_rate if video_rate > 0 else 0.0
        return 0.0, _rounded(max(0.0, rho_video))
    if retention < retention_at(x_bottom):
        raise UsageError.of_field(
            "retention",
            f"{retention} is below what OmniZip reaches at these token rates (about {retention_at(x_bottom):.3f})",
        )
    # retention_at is continuous and linear on [0, anchors] and on [anchors, x_bottom].
    knee = min(anchors, x_bottom)
    if retention >= retention_at(knee):  # audio still whole: only the video term moves
        x = (1.0 - _PRESET_OFFSET) - (retention * total - audio_rate) / video_rate
    else:
        x = ((1.0 + anchors) * audio_rate + (1.0 - _PRESET_OFFSET) * video_rate) / total - retention
    x = min(max(x, x_top), x_bottom)
    return _rounded(x), _rounded(x + _PRESET_OFFSET)


def _rounded(value: float) -> float:
    return round(value, _DERIVED_DECIMALS)
