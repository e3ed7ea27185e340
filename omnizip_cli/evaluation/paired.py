"""Paired statistics of a setting against ``full`` on the items both answered: pure functions.

Each item answered by both arms is a pair ``(here, full)`` of booleans (correct or not). Items
that failed in either arm (an error, out of memory) are not pairs: they are counted apart by the
caller and left out of both arms, never scored wrong. An unparsed answer is a wrong answer here.

* :func:`accuracy_delta`: accuracy here minus accuracy of full over the pairs.
* :func:`bootstrap_ci`: the 95 % paired bootstrap interval of that delta: the pairs are resampled
  with replacement :data:`BOOTSTRAP_RESAMPLES` times (numpy's ``default_rng`` seeded with
  :data:`BOOTSTRAP_SEED`), and the 2.5th and 97.5th percentiles of the resampled deltas are taken
  (numpy's default linear interpolation). A pair's contribution to the delta is ``-1`` (right to
  wrong), ``0`` (agree) or ``+1`` (wrong to right), so a resample is a multinomial draw of the three
  counts, which is what is drawn (the same distribution as resampling the items, and fast).
* :func:`mcnemar_exact_p`: McNemar's exact test, two-sided: with ``b`` right-to-wrong and ``c``
  wrong-to-right flips, ``p = min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``;
  1.0 when nothing flipped.
* :func:`paired_summary`: all of them as the ``metrics.json`` fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "Flips", "accuracy_delta", "bootstrap_ci", "count_flips",
           "mcnemar_exact_p", "paired_summary"]

#: Resamples of the paired bootstrap (the interval's ends move by well under a point between seeds).
BOOTSTRAP_RESAMPLES = 10_000
#: The bootstrap's seed: the same pairs always give the same interval.
BOOTSTRAP_SEED = 0

Pair = tuple[bool, bool]  # (correct here, correct under full)


@dataclass(frozen=True)
class Flips:
    """Discordant pairs: ``right_to_wrong`` (full right, here wrong) and ``wrong_to_right``."""

    right_to_wrong: int
    wrong_to_right: int

    def to_dict(self) -> dict[str, int]:
        return {"right_to_wrong": self.right_to_wrong, "wrong_to_right": self.wrong_to_right}


def count_flips(pairs: Sequence[Pair]) -> Flips:
    """The discordant pairs of ``pairs``."""
    return Flips(right_to_wrong=sum(1 for here, full in pairs if full and not here),
                 wrong_to_right=sum(1 for here, full in pairs if here and not full))


def accuracy_delta(pairs: Sequence[Pair]) -> float | None:
    """Accuracy here minus accuracy under full over ``pairs`` (None without pairs)."""
    if not pairs:
        return None
    flips = count_flips(pairs)
    return (flips.wrong_to_right - flips.right_to_wrong) / len(pairs)


def bootstrap_ci(pairs: Sequence[Pair], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` paired bootstrap interval of :func:`accuracy_delta` (None without pairs)."""
    import numpy as np

    n = len(pairs)
    if n == 0:
        return None
    flips = count_flips(pairs)
    probabilities = [flips.right_to_wrong / n, (n - flips.right_to_wrong - flips.wrong_to_right) / n,
                     flips.wrong_to_right / n]
    draws = np.random.default_rng(seed).multinomial(n, probabilities, size=resamples)  # [B, 3]
    deltas = (draws[:, 2] - draws[:, 0]) / n
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact_p(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value from the two flip counts (1.0 when there is none)."""
    n = right_to_wrong + wrong_to_right
    if n == 0:
        return 1.0
    smaller = min(right_to_wrong, wrong_to_right)
    tail = sum(comb(n, k) for k in range(smaller + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_summary(pairs: Sequence[Pair]) -> dict[str, Any]:
    """``paired_items``, ``delta_vs_full``, ``delta_ci95`` (``[low, high]``), ``mcnemar_p`` and
    ``flips`` of ``pairs`` (figures None without pairs)."""
    flips = count_flips(pairs)
    interval = bootstrap_ci(pairs)
    return {
        "paired_items": len(pairs),
        "delta_vs_full": accuracy_delta(pairs),
        "delta_ci95": list(interval) if interval is not None else None,
        "mcnemar_p": mcnemar_exact_p(flips.right_to_wrong, flips.wrong_to_right) if pairs else None,
        "flips": flips.to_dict(),
    }
