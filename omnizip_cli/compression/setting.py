"""What a user asks for (off, a preset, a retention target, single-field overrides) and how it
becomes an :class:`~omnizip_cli.compression.config.OmniZipConfig` for one clip.

A retention target means a fraction of *this clip's* audio + video tokens: the ratios are solved
(:func:`~omnizip_cli.compression.config.config_for_retention`) for the clip's own token mix once the
processor has counted it, along the presets' line ``rho_video = rho_audio + 0.3``. ``ask``,
``profile`` and ``evaluate`` all resolve settings here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from omnizip_cli.compression.config import PRESETS, OmniZipConfig, config_for_retention
from omnizip_cli.errors import UsageError

__all__ = ["DEFAULT_PRESET", "CompressionSetting", "percent_label"]

DEFAULT_PRESET = "45"
_OVERRIDE_FIELDS = ("rho_audio", "rho_video", "anchor_ratio", "merge_g")
# The paper's token mix per second (25 audio : 144 video), used to check a setting before any clip is known.
_PAPER_MIX = (25.0, 144.0)


def percent_label(fraction: float) -> str:
    """``0.45`` -> ``"45 %"``, ``0.375`` -> ``"37.5 %"``."""
    text = f"{fraction * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text} %"


@dataclass(frozen=True)
class CompressionSetting:
    """One compression setting, before the clip is known.

    ``source``: ``"off"`` (every token reaches the model), ``"preset"`` (``preset`` names one of
    :data:`~omnizip_cli.compression.config.PRESETS`), ``"retention"`` (``retention`` in (0, 1]).
    ``overrides``: single fields set on top (``rho_audio``, ``rho_video``, ``anchor_ratio``,
    ``merge_g``); with a retention target, ``anchor_ratio``/``merge_g`` enter the solve and
    ``rho_audio``/``rho_video`` replace its result.
    """

    source: str = "preset"
    preset: str | None = DEFAULT_PRESET
    retention: float | None = None
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.source not in ("off", "preset", "retention"):
            raise ValueError(f"unknown compression source {self.source!r}")
        if self.source == "preset" and self.preset not in PRESETS:
            raise UsageError(f"unknown --preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        if self.source == "retention":
            value = self.retention
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0.0 < value <= 1.0:
                raise UsageError.of_field("retention", f"must be in (0, 1], got {value}")
        if self.source == "off" and self.overrides:
            raise UsageError("--no-compress cannot be combined with compression settings")
        unknown = [name for name, _ in self.overrides if name not in _OVERRIDE_FIELDS]
        if unknown:
            raise UsageError(f"unknown compression field(s): {', '.join(unknown)}")
        if self.source == "preset" or self.overrides:
            self.resolve(*_PAPER_MIX)  # the override values checked now, before any heavy work

    # ------------------------------------------------------------------------------ constructors
    @classmethod
    def off(cls) -> CompressionSetting:
        return cls(source="off", preset=None)

    @classmethod
    def from_options(
        cls,
        *,
        no_compress: bool = False,
        preset: str | None = None,
        retention: float | None = None,
        rho_audio: float | None = None,
        rho_video: float | None = None,
        anchor_ratio: float | None = None,
        merge_g: int | None = None,
    ) -> CompressionSetting:
        """The setting the CLI options ask for; default: the 45 % preset.

        ``--preset`` or ``--retention`` (not both) picks the base; the single-field options override.
        """
        given = {"rho_audio": rho_audio, "rho_video": rho_video, "anchor_ratio": anchor_ratio, "merge_g": merge_g}
        overrides = tuple((k, v) for k, v in given.items() if v is not None)
        if no_compress:
            if preset is not None or retention is not None or overrides:
                raise UsageError("--no-compress cannot be combined with compression settings")
            return cls.off()
        if preset is not None and retention is not None:
            raise UsageError("give either --preset or --retention, not both")
        if retention is not None:
            setting = cls(source="retention", preset=None, retention=float(retention), overrides=overrides)
            setting.resolve(*_PAPER_MIX)  # a target no clip of the usual mix can reach is refused up front
            return setting
        return cls(source="preset", preset=preset or DEFAULT_PRESET, overrides=overrides)

    # ------------------------------------------------------------------------------ resolution
    @property
    def enabled(self) -> bool:
        return self.source != "off"

    def resolve(self, audio_tokens: float, video_tokens: float) -> OmniZipConfig | None:
        """The config for a clip with this many audio and video tokens (or per-second rates); None when off."""
        if self.source == "off":
            return None
        overrides = dict(self.overrides)
        if self.source == "preset":
            base = PRESETS[self.preset or DEFAULT_PRESET]
            return dataclasses.replace(base, **overrides) if overrides else base
        assert self.retention is not None
        if audio_tokens + video_tokens <= 0:
            raise UsageError("--retention needs audio or video tokens, and this input has none")
        solve = {k: v for k, v in overrides.items() if k in ("anchor_ratio", "merge_g")}
        fixed = {k: v for k, v in overrides.items() if k in ("rho_audio", "rho_video")}
        base = config_for_retention(self.retention, float(audio_tokens), float(video_tokens), **solve)
        return dataclasses.replace(base, **fixed) if fixed else base

    @property
    def target_retention(self) -> float | None:
        """The fraction of audio+video tokens the setting aims to keep (None when off or unknown)."""
        if self.source == "retention":
            return self.retention
        if self.source == "preset" and self.preset is not None and self.preset.isdigit() and not self.overrides:
            return int(self.preset) / 100
        return None

    @property
    def key(self) -> str:
        """Unique and JSON-safe: ``full``, ``preset-45``, ``retention-0.4`` (overrides appended)."""
        if self.source == "off":
            return "full"
        base = f"preset-{self.preset}" if self.source == "preset" else f"retention-{self.retention:g}"
        return base + "".join(f"+{k}={v:g}" for k, v in self.overrides)

    @property
    def label(self) -> str:
        """A column title: ``full``, ``45 %``, ``40 %``."""
        if self.source == "off":
            return "full"
        target = self.target_retention
        base = percent_label(target) if target is not None else (self.preset or "custom")
        return base + (" (custom)" if self.overrides else "")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "source": self.source, "preset": self.preset,
                "retention": self.retention, "overrides": dict(self.overrides),
                "target_retention": self.target_retention}
