"""Fitting the prompt into the context (issue 14): the retention that fits, or the refusal whose hint
matches the cause."""

from __future__ import annotations

from typing import Any

import pytest

from omnizip_cli.compression import CompressionSetting, ContextTooLong, PromptCounts, fit_budget, fit_to_context
from omnizip_cli.compression.config import expected_retention

PRESET = CompressionSetting.from_options()


def test_a_prompt_that_fits_keeps_the_asked_setting() -> None:
    fit = fit_to_context(PRESET, audio=1000, video=5000, text=100, budget=32000, frames=100)
    assert fit.setting == PRESET and not fit.changed
    assert fit.frames_fit_uncompressed == 100


def test_a_prompt_too_long_gets_a_retention_that_fits() -> None:
    fit = fit_to_context(PRESET, audio=7500, video=90000, text=200, budget=32000, frames=1800)
    assert fit.changed and fit.setting.source == "retention"
    config = fit.setting.resolve(7500, 90000)
    assert expected_retention(config, 7500, 90000) * 97500 + 200 <= 32000
    assert "more than --max-prompt-tokens 32000" in fit.reason
    # what fits uncompressed: (32000 - 200 - 7500) / 50 video tokens per frame
    assert fit.frames_fit_uncompressed == (32000 - 200 - 7500) // 50


def test_a_setting_that_already_fits_stays() -> None:
    strong = CompressionSetting.from_options(preset="35")
    fit = fit_to_context(strong, audio=1500, video=8640, text=100, budget=5000)
    assert fit.setting == strong and not fit.changed


@pytest.mark.parametrize(("audio", "video", "text", "budget", "hint"), [
    (100, 1000, 600, 500, "shorten the question or the --system prompt"),
    (90000, 1000, 50, 2000, "lower --max-audio-seconds"),
    (500, 90000, 50, 600, "lower --fps, --max-frames or --max-pixels"),
])
def test_nothing_fits_says_what_to_lower(audio: int, video: int, text: int, budget: int, hint: str) -> None:
    with pytest.raises(ContextTooLong) as info:
        fit_to_context(PRESET, audio=audio, video=video, text=text, budget=budget)
    assert hint in info.value.one_line() and "\n" not in info.value.one_line()


def test_no_compress_refuses_with_the_compression_that_would_fit() -> None:
    with pytest.raises(ContextTooLong, match="--no-compress keeps them all") as info:
        fit_to_context(CompressionSetting.off(), audio=1000, video=9000, text=100, budget=5000)
    assert "drop --no-compress" in info.value.one_line()


# ------------------------------------------------------------------------------------- the whole rule
def _planner(kept_by_retention: dict[float | None, int], text: int, calls: list) -> Any:
    """A fake planner: the kept prefix length per setting (by its retention target; None: the preset)."""
    def kept_length(setting: CompressionSetting | None) -> int:
        calls.append(setting)
        key = None if setting is None or setting.source != "retention" else setting.retention
        if key in kept_by_retention:
            return kept_by_retention[key]
        retention = setting.retention if setting is not None and setting.retention is not None else 0.45
        return text + int(retention * 1000 * 1.2)  # short clips keep more than their target
    return kept_length


def test_fit_budget_keeps_the_asked_setting_when_its_plan_fits() -> None:
    counts = PromptCounts(audio=200, video=800, text=50, frames=16)
    calls: list = []
    fit = fit_budget(PRESET, counts, budget=32000, reserve=20, kept_length=_planner({None: 500}, 50, calls))
    assert fit is not None and fit.setting == PRESET and not fit.changed
    assert calls == [PRESET]  # planned once


def test_fit_budget_replans_stronger_while_the_kept_prompt_is_over() -> None:
    """The plan of a short clip keeps more than its target: the rule re-plans with a lower one."""
    counts = PromptCounts(audio=200, video=800, text=50, frames=16)
    calls: list = []
    fit = fit_budget(PRESET, counts, budget=600, reserve=20, kept_length=_planner({}, 50, calls))
    assert fit is not None and fit.changed and fit.setting.source == "retention"
    assert len(calls) >= 2 and calls[-1] == fit.setting
    assert 50 + int(fit.setting.retention * 1000 * 1.2) + 20 <= 600
    assert "planned at retention target" in fit.reason


def test_fit_budget_refuses_a_fixed_config_over_the_budget() -> None:
    counts = PromptCounts(audio=200, video=800, text=50)
    with pytest.raises(ContextTooLong, match="after compression, more than --max-prompt-tokens 400"):
        fit_budget(None, counts, budget=400, reserve=0, kept_length=lambda setting: 700)
    assert fit_budget(None, counts, budget=800, reserve=0, kept_length=lambda setting: 700) is None


def test_fit_budget_gives_up_after_its_replans() -> None:
    counts = PromptCounts(audio=200, video=800, text=50)
    with pytest.raises(ContextTooLong, match="still has"):
        fit_budget(PRESET, counts, budget=500, reserve=0, kept_length=lambda setting: 900, max_replans=3)
