"""Audio token selection and anchor merge (method §3, steps 1-2), vectorized.

1. Dominant tokens: the ``round((1 - rho_audio) * N)`` highest saliency scores (ties: lowest index).
2. Contextual anchors: ``C = round(anchor_ratio * N)`` tokens evenly spaced over the non-dominant
   tokens of the whole clip (every ``step = R // C``-th, starting with the first); none when
   ``merge_g == 0``. The rest is the pool; it is dropped.
3. Each pool token goes to its most similar anchor (cosine, ties: lowest anchor); its score is
   its largest cosine to any video token (to its anchor when there is no video).
4. Each anchor absorbs its top-G pool tokens by score (ties: lowest position):
   ``new = (anchor + sum_i w_i a_i) / (1 + sum_i w_i)`` with ``w = softmax(scores)``.

Step 4 is a segment operation: pool tokens sorted by (anchor, -score, position) give each token
its slot in its anchor's top-G list; a dense ``[C, G]`` slot table then lets the softmax and the
weighted sum run over all anchors at once, slot by slot (G iterations: G is a small
hyper-parameter, and a fixed slot order keeps the sums bit-identical to a per-anchor loop and
deterministic on GPUs, where scatter-add is not). Merging is done in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from omnizip_cli.compression.config import OmniZipConfig
from omnizip_cli.compression.video import (
    chunk_slices,
    descending_ranks,
    exact_cosine,
    gather_grid_units,
    true_indices,
)

__all__ = [
    "AudioCounts",
    "AudioSelection",
    "assign_to_anchors",
    "audio_counts",
    "max_cosine_to_video",
    "merge_into_anchors",
    "select_audio",
]


@dataclass(frozen=True)
class AudioCounts:
    """Sizes of the audio selection, known on the host from N and the config alone."""

    total: int
    dominant: int
    anchors: int
    step: int
    pool: int

    @property
    def kept(self) -> int:
        return self.dominant + self.anchors


def audio_counts(total: int, config: OmniZipConfig) -> AudioCounts:
    """Dominant, anchor and pool counts for ``total`` audio tokens (Python rounding, as the spec)."""
    dominant = int(max(0, min(total, round((1 - config.rho_audio) * total))))
    remaining = total - dominant
    anchors = round(config.anchor_ratio * total)
    if remaining > 0 and anchors > 0 and config.merge_g > 0:
        anchors = min(anchors, remaining)
        step = max(1, remaining // anchors)
    else:
        anchors, step = 0, 1
    return AudioCounts(total=total, dominant=dominant, anchors=anchors, step=step, pool=remaining - anchors)


@dataclass
class AudioSelection:
    """Result of the audio step.

    keep: ``[N_a]`` bool, dominant tokens and anchors.
    anchor_index: ``[C]`` long, audio-token indices of the anchors, ascending.
    merged: ``[C, D]`` float32 new anchor embeddings (rows of anchors that absorbed nothing equal
        the input row), or None when nothing merges (no pool).
    """

    keep: Tensor
    anchor_index: Tensor
    merged: Tensor | None


def select_audio(
    scores: Tensor,
    embeds: Tensor,
    audio_positions: Tensor,
    video_positions: Tensor | None,
    counts: AudioCounts,
    merge_g: int,
) -> AudioSelection:
    """Dominant + contextual selection and anchor merge.

    ``scores: [N_a]``; ``embeds: [L, D]``; ``audio_positions: [N_a]`` and ``video_positions: [N_v]``
    (or None: no video) long sequence positions.
    """
    dominant = descending_ranks(scores) < counts.dominant
    anchor = _contextual_anchor_mask(dominant, counts)
    anchor_index = true_indices(anchor, counts.anchors)
    keep = dominant | anchor
    if counts.pool == 0 or counts.anchors == 0:
        return AudioSelection(keep=keep, anchor_index=anchor_index, merged=None)
    pool_index = true_indices(~keep, counts.pool)
    units = gather_grid_units(embeds, audio_positions, plus_eps=True)
    pool_units = units[pool_index]
    assignment, to_own_anchor = assign_to_anchors(pool_units, units[anchor_index])
    if video_positions is None or video_positions.numel() == 0:
        pool_scores = to_own_anchor
    else:
        pool_scores = max_cosine_to_video(pool_units, embeds, video_positions)
    merged = merge_into_anchors(
        embeds[audio_positions[anchor_index]].float(),
        embeds[audio_positions[pool_index]].float(),
        assignment,
        pool_scores,
        min(merge_g, counts.pool),  # slots beyond the pool size would always be empty
    )
    return AudioSelection(keep=keep, anchor_index=anchor_index, merged=merged)


def _contextual_anchor_mask(dominant: Tensor, counts: AudioCounts) -> Tensor:
    """Anchors at ranks 0, step, ..., (C-1)*step among the non-dominant tokens. ``[N] -> [N]`` bool."""
    if counts.anchors == 0:
        return torch.zeros_like(dominant)
    remaining = ~dominant
    rank_among_remaining = torch.cumsum(remaining.long(), 0) - 1
    on_grid = (rank_among_remaining % counts.step == 0) & (rank_among_remaining < counts.anchors * counts.step)
    return remaining & on_grid


def assign_to_anchors(pool_units: Tensor, anchor_units: Tensor) -> tuple[Tensor, Tensor]:
    """Most similar anchor of each pool token (first on ties) and that cosine, over chunks of pool rows.

    ``pool_units: [P, D]``, ``anchor_units: [C, D]`` grid units -> ``([P] long, [P] float32)``.
    """
    count = pool_units.shape[0]
    assignment = torch.empty(count, dtype=torch.long, device=pool_units.device)
    best = torch.empty(count, device=pool_units.device)
    for part in chunk_slices(count, anchor_units.shape[0], pool_units.device):
        similarity = exact_cosine(pool_units[part], anchor_units)
        assignment[part] = torch.argmax(similarity, dim=-1)  # argmax (unlike max) promises the first
        best[part] = similarity.amax(dim=-1)
    return assignment, best


def max_cosine_to_video(pool_units: Tensor, embeds: Tensor, video_positions: Tensor) -> Tensor:
    """Largest cosine of each pool token to any video token, over chunks of video tokens.

    ``pool_units: [P, D]`` grid units; ``embeds: [L, D]``; ``video_positions: [N_v]`` -> ``[P]``
    float32. Memory: one ``[P, chunk]`` block and one chunk of video units at a time.
    """
    count, dim = pool_units.shape
    best = torch.full((count,), float("-inf"), device=pool_units.device)
    for part in chunk_slices(video_positions.numel(), count + dim, embeds.device):
        video_units = gather_grid_units(embeds, video_positions[part], plus_eps=True)
        best = torch.maximum(best, exact_cosine(pool_units, video_units).amax(dim=-1))
    return best


def merge_into_anchors(
    anchors: Tensor,
    pool: Tensor,
    assignment: Tensor,
    pool_scores: Tensor,
    merge_g: int,
) -> Tensor:
    """New anchor embeddings: each anchor absorbs its top-G assigned pool tokens.

    ``anchors: [C, D]``, ``pool: [P, D]`` float32 embeddings; ``assignment, pool_scores: [P]`` ->
    ``[C, D]`` float32. Softmax and sums run slot by slot in score order (fixed summation order).
    """
    slots = _top_g_slots(assignment, pool_scores, anchors.shape[0], merge_g)  # [C, G] pool idx or P
    occupied = slots < pool.shape[0]
    padded_scores = torch.cat([pool_scores, pool_scores.new_full((1,), float("-inf"))])
    slot_scores = padded_scores[slots]
    top = torch.where(occupied[:, 0], slot_scores[:, 0], torch.zeros_like(slot_scores[:, 0]))
    exps = torch.where(occupied, torch.exp(slot_scores - top.unsqueeze(1)), torch.zeros_like(slot_scores))
    weights = torch.where(occupied, exps / _sum_over_slots(exps).unsqueeze(1), torch.zeros_like(exps))
    padded_pool = torch.cat([pool, pool.new_zeros((1, pool.shape[1]))])
    weighted = weights[:, :1] * padded_pool[slots[:, 0]]
    for j in range(1, slots.shape[1]):
        weighted = weighted + weights[:, j : j + 1] * padded_pool[slots[:, j]]
    return (anchors + weighted) / (1 + _sum_over_slots(weights)).unsqueeze(1)


def _sum_over_slots(values: Tensor) -> Tensor:
    """``values[:, 0] + values[:, 1] + ...`` in slot order. ``[C, G] -> [C]``."""
    total = values[:, 0]
    for j in range(1, values.shape[1]):
        total = total + values[:, j]
    return total


def _top_g_slots(assignment: Tensor, pool_scores: Tensor, num_anchors: int, merge_g: int) -> Tensor:
    """Slot table ``[C, G]``: pool indices chosen by each anchor, best score first; P marks empty.

    Pool tokens are sorted by (anchor, -score, position) with two stable sorts; a token's slot is
    its rank inside its anchor's segment; tokens with slot >= G are not merged.
    """
    count = assignment.numel()
    by_score = torch.sort(pool_scores, descending=True, stable=True).indices
    order = by_score[torch.sort(assignment[by_score], stable=True).indices]
    sorted_anchor = assignment[order]
    members = torch.zeros(num_anchors, dtype=torch.long, device=assignment.device)
    members.scatter_add_(0, assignment, torch.ones_like(assignment))
    segment_start = torch.cumsum(members, 0) - members
    slot = torch.arange(count, device=assignment.device) - segment_start[sorted_anchor]
    spare = num_anchors * merge_g  # one extra cell collects the tokens that are not merged
    cell = torch.where(slot < merge_g, sorted_anchor * merge_g + slot, torch.full_like(slot, spare))
    table = torch.full((spare + 1,), count, dtype=torch.long, device=assignment.device)
    table[cell] = order
    return table[:spare].view(num_anchors, merge_g)
