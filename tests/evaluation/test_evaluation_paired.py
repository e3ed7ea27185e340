"""Paired statistics against full, on hand-computed cases (issue 26)."""

from __future__ import annotations

import pytest

from omnizip_cli.evaluation.paired import (
    accuracy_delta,
    bootstrap_ci,
    count_flips,
    mcnemar_exact_p,
    paired_summary,
)

AGREE_RIGHT = (True, True)
AGREE_WRONG = (False, False)
LOST = (False, True)  # full right, here wrong
GAINED = (True, False)


def test_all_agree_gives_no_delta_a_point_interval_and_p_one() -> None:
    pairs = [AGREE_RIGHT] * 7 + [AGREE_WRONG] * 3
    assert accuracy_delta(pairs) == 0.0
    assert bootstrap_ci(pairs) == (0.0, 0.0)
    assert mcnemar_exact_p(0, 0) == 1.0
    summary = paired_summary(pairs)
    assert summary == {"paired_items": 10, "delta_vs_full": 0.0, "delta_ci95": [0.0, 0.0], "mcnemar_p": 1.0,
                       "flips": {"right_to_wrong": 0, "wrong_to_right": 0}}


def test_one_flip_alone() -> None:
    assert paired_summary([LOST]) == {"paired_items": 1, "delta_vs_full": -1.0, "delta_ci95": [-1.0, -1.0],
                                      "mcnemar_p": 1.0, "flips": {"right_to_wrong": 1, "wrong_to_right": 0}}


def test_one_flip_in_ten() -> None:
    """The resampled flip count is Binomial(10, 0.1): P(0) = 0.349 > 2.5 % (upper end 0);
    P(>= 3) = 0.070 > 2.5 % > P(>= 4) = 0.013 (lower end -0.3)."""
    pairs = [LOST] + [AGREE_RIGHT] * 9
    assert accuracy_delta(pairs) == pytest.approx(-0.1)
    low, high = bootstrap_ci(pairs)
    assert (low, high) == (pytest.approx(-0.3), 0.0)
    assert mcnemar_exact_p(1, 0) == 1.0  # 2 * P(X <= 0), X ~ Bin(1, 1/2) = 2 * 0.5


def test_mcnemar_exact_p_by_hand() -> None:
    assert mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)  # 0.0625: five flips one way are not enough
    assert mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)  # 0.03125
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact_p(5, 5) == 1.0  # capped
    assert mcnemar_exact_p(3, 4) == mcnemar_exact_p(4, 3)


def test_flips_and_delta_count_only_discordant_pairs() -> None:
    pairs = [LOST, LOST, GAINED, AGREE_RIGHT, AGREE_WRONG]
    flips = count_flips(pairs)
    assert (flips.right_to_wrong, flips.wrong_to_right) == (2, 1)
    assert accuracy_delta(pairs) == pytest.approx(-1 / 5)


def test_interval_is_seeded_and_holds_the_delta() -> None:
    pairs = [LOST] * 4 + [GAINED] * 2 + [AGREE_RIGHT] * 30 + [AGREE_WRONG] * 14
    first, again = bootstrap_ci(pairs), bootstrap_ci(pairs)
    assert first == again
    assert first[0] < accuracy_delta(pairs) < first[1]


def test_no_pairs() -> None:
    assert paired_summary([]) == {"paired_items": 0, "delta_vs_full": None, "delta_ci95": None, "mcnemar_p": None,
                                  "flips": {"right_to_wrong": 0, "wrong_to_right": 0}}
