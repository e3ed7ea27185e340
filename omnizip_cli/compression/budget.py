"""Fitting a prompt into the model's context: the retention that fits, or a clear refusal.

``--max-prompt-tokens`` (default: the model's context minus ``--max-new-tokens``) bounds the prompt.
When the uncompressed prompt fits, the asked setting stands. When it does not, OmniZip is what makes
it fit: the setting becomes a retention target solved so that the kept audio + video tokens, the
text and a reserve for the question fit the budget (the report says so). When even the strongest
compression cannot fit, :class:`ContextTooLong` says which part is too long and what to lower:
the text (system prompt, question), the audio (``--max-audio-seconds``) or the video (``--fps``,
``--max-frames``, ``--max-pixels``).

With compression the model can see more frames for the same context: :attr:`ContextFit.frames_fit_uncompressed`
is how many frames would have fitted without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from omnizip_cli.compression.config import config_for_retention
from omnizip_cli.compression.setting import CompressionSetting
from omnizip_cli.errors import OmnizipError, UsageError

__all__ = ["ContextFit", "ContextTooLong", "PromptCounts", "fit_budget", "fit_to_context", "retention_below"]

# The strongest retention OmniZip reaches is found by config_for_retention; we aim a little under
# the exact fit, because per-frame floors and the normalisation keep slightly more than nominal.
SAFETY = 0.97


class ContextTooLong(OmnizipError):
    """Even the strongest compression cannot fit the prompt into the token budget (exit code 1)."""


@dataclass(frozen=True)
class ContextFit:
    """What fitting decided.

    budget: tokens the prompt may have (``--max-prompt-tokens``).
    prompt_before: the uncompressed prompt (prefix + question reserve).
    setting: the setting to use (the asked one, or a retention target that fits).
    reason: why the setting changed (None when it did not).
    frames_sampled / frames_fit_uncompressed: frames the model sees, and how many would fit without compression.
    """

    budget: int
    prompt_before: int
    setting: CompressionSetting
    reason: str | None
    frames_sampled: int
    frames_fit_uncompressed: int

    @property
    def changed(self) -> bool:
        return self.reason is not None

    def to_dict(self) -> dict[str, object]:
        return {"max_prompt_tokens": self.budget, "prompt_tokens_uncompressed": self.prompt_before,
                "setting_changed": self.changed, "reason": self.reason, "frames_sampled": self.frames_sampled,
                "frames_fit_uncompressed": self.frames_fit_uncompressed}


def fit_to_context(
    setting: CompressionSetting,
    *,
    audio: int,
    video: int,
    text: int,
    budget: int,
    frames: int = 0,
) -> ContextFit:
    """Decide the setting for a prompt of ``audio`` + ``video`` + ``text`` tokens under ``budget``.

    ``text`` includes the reserve for the question. Raises :class:`ContextTooLong` when nothing fits
    and :class:`UsageError` for a budget below 1.
    """
    if budget < 1:
        raise UsageError(f"--max-prompt-tokens must be at least 1, got {budget}")
    before = audio + video + text
    per_frame = video / frames if frames else 0.0
    fit_frames = frames if before <= budget else (
        max(0, math.floor((budget - text - audio) / per_frame)) if per_frame else 0)
    if before <= budget:
        return ContextFit(budget, before, setting, None, frames, min(frames, fit_frames))
    room = budget - text
    media = audio + video
    if room <= 0:
        raise ContextTooLong(
            f"the prompt's text alone ({text} tokens: system prompt, template and question) exceeds "
            f"--max-prompt-tokens {budget}",
            hint="shorten the question or the --system prompt, or raise --max-prompt-tokens",
        )
    if not setting.enabled:
        raise ContextTooLong(
            f"the prompt has {before} tokens, more than --max-prompt-tokens {budget}, and --no-compress keeps them all",
            hint=f"drop --no-compress (OmniZip would keep about {room / media:.0%} of the audio and video), "
                 f"or {_what_to_lower(audio, video, room)}",
        )
    target = room / media * SAFETY
    asked = setting.resolve(audio, video)
    from omnizip_cli.compression.config import expected_retention

    if asked is not None and expected_retention(asked, audio, video) <= target:
        return ContextFit(budget, before, setting, None, frames, fit_frames)  # the asked setting fits already
    try:
        config_for_retention(target, audio, video)
    except UsageError as exc:
        raise ContextTooLong(
            f"the prompt has {before} tokens; even the strongest compression cannot fit it into "
            f"--max-prompt-tokens {budget} (it would have to keep {target:.1%} of the audio and video)",
            hint=_what_to_lower(audio, video, room),
        ) from exc
    reason = (f"the uncompressed prompt has {before} tokens, more than --max-prompt-tokens {budget}: "
              f"retention {target:.3f} of the audio+video tokens chosen to fit")
    chosen = CompressionSetting(source="retention", preset=None, retention=round(target, 4),
                                overrides=tuple((k, v) for k, v in setting.overrides
                                                if k in ("anchor_ratio", "merge_g")))
    return ContextFit(budget, before, chosen, reason, frames, fit_frames)


def retention_below(setting: CompressionSetting, kept_media: int, media: int, room: int) -> CompressionSetting:
    """A stronger retention target when ``setting`` kept ``kept_media`` of ``media`` tokens but only ``room`` fit.

    The plan keeps more than a target on short clips (per-frame floors, few groups to normalise
    over), so the target is scaled by the overshoot: ``target * room / kept``.
    """
    current = setting.target_retention or (kept_media / media if media else 1.0)
    target = current * (room / kept_media) * SAFETY if kept_media else current
    return CompressionSetting(source="retention", preset=None, retention=round(max(target, 1e-4), 4),
                              overrides=tuple((k, v) for k, v in setting.overrides if k in ("anchor_ratio", "merge_g")))


def _what_to_lower(audio: int, video: int, room: int) -> str:
    """The hint that matches the cause: whichever modality is too long."""
    if audio > room:
        return "the audio alone is too long: lower --max-audio-seconds"
    if video and audio <= video:
        return "lower --fps, --max-frames or --max-pixels (fewer video tokens), or raise --max-prompt-tokens"
    return "lower --max-audio-seconds, or --fps/--max-frames/--max-pixels, or raise --max-prompt-tokens"


@dataclass(frozen=True)
class PromptCounts:
    """The uncompressed prompt prefix of one video, as the budget rule sees it.

    ``audio``/``video``: placeholder tokens; ``text``: every other prefix token (system prompt,
    template), the question reserve excluded; ``frames``: frames sampled (0 without video).
    """

    audio: int
    video: int
    text: int
    frames: int = 0


def fit_budget(
    setting: CompressionSetting | None,
    counts: PromptCounts,
    *,
    budget: int,
    reserve: int,
    kept_length: Callable[[CompressionSetting | None], int],
    max_replans: int = 6,
) -> ContextFit | None:
    """The whole prompt-budget rule: a setting chosen before planning, then stronger re-plans while
    the kept prefix plus ``reserve`` question tokens exceeds ``budget``.

    ``setting``: the asked setting, or None for a fixed :class:`OmniZipConfig` (only checked).
    ``kept_length(setting)``: the prefix length after planning with ``setting`` (None: the fixed
    config); the fresh path plans, the prefix cache looks up what the entry's build planned. Returns
    the fit (its ``setting`` is the one to use; None for a fixed config) or raises
    :class:`ContextTooLong`. Pure apart from ``kept_length``: the same inputs give the same fit.
    """
    fit = None
    if setting is not None:
        fit = fit_to_context(setting, audio=counts.audio, video=counts.video, text=counts.text + reserve,
                             budget=budget, frames=counts.frames)
    media = counts.audio + counts.video
    room = budget - reserve - counts.text
    reason = fit.reason if fit is not None else None
    for _ in range(max_replans):
        length = kept_length(fit.setting if fit is not None else None)
        if length + reserve <= budget:
            return fit
        if fit is None or not fit.setting.enabled:
            raise ContextTooLong(
                f"the prompt has {length + reserve} tokens after compression, more than --max-prompt-tokens {budget}",
                hint="compress harder (a lower --retention), or lower --fps, --max-frames or --max-pixels",
            )
        kept_media = length - counts.text
        stronger = retention_below(fit.setting, kept_media, media, room)
        fit = replace(fit, setting=stronger, reason=(reason or "the asked setting kept too many tokens")
                      + f" (planned at retention target {stronger.retention:g}: plans of short clips keep "
                        "more than their target)")
    length = kept_length(fit.setting if fit is not None else None)
    if length + reserve > budget:
        raise ContextTooLong(
            f"the prompt still has {length + reserve} tokens after compression, more than --max-prompt-tokens {budget}",
            hint="lower --fps, --max-frames or --max-pixels, or --max-audio-seconds",
        )
    return fit
