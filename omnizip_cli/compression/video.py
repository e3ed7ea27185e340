"""Interleaved spatio-temporal compression (ISTC) of video frames, batched; plus the exact
similarity and stable ranking primitives shared with :mod:`omnizip_cli.compression.audio`.

A "frame" is one temporal grid step: ``tokens_per_frame = (H // s) * (W // s)`` consecutive video
tokens. Inside a time group, even frames (local index 0, 2, ...) keep their ``n_keep`` best tokens
by DPC-KNN; odd frames keep the ``n_keep`` tokens least similar to the same position of the
previous (unpruned) frame. All even frames of the clip go through one batched computation, all odd
frames through another; per-frame keep counts are applied as rank masks.

Exact similarities
------------------
Cosine similarities are computed so that their value does not depend on batching, chunking,
BLAS kernel, thread count or summation order: the vectorized code and the loop reference agree
bit for bit, and repeated runs on one device are identical. A token ``x`` becomes integer grid
coordinates ``q = round(x * (S / denom))`` in float32, where ``denom`` is the spec's normaliser,
``max(||x||, 1e-12)`` (``F.normalize``; video frames) or ``||x|| + 1e-6`` (audio side), and
``S = floor(4096 - 0.51 * sqrt(D)) - 1`` (4064 for D = 3584) is chosen so that ``||q|| <= 2**12``.
A cosine is ``(q_a . q_b) / S**2``, the dot product taken in float32: every product is an integer
of magnitude <= 2**24 and, by Cauchy-Schwarz, so is every partial sum, so all of them are exact in
float32 whatever the order or the kernel; one final multiplication by ``1 / S**2`` rounds it.
The cosine's error against exact arithmetic is about 1e-4 (the snap of each component to 1/S),
well below the reference's bf16 similarities (2**-8 = 4e-3 near 1); its resolution is float32's.
Exactness needs full-precision float32 products (PyTorch's default: TF32 off).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "ascending_ranks",
    "chunk_slices",
    "descending_ranks",
    "dpc_knn_scores",
    "even_frame_keep",
    "exact_cosine",
    "exact_rowwise_cosine",
    "gather_grid_units",
    "grid_scale",
    "odd_frame_keep",
    "true_indices",
    "video_keep_mask",
]

# Elements of scratch per batched similarity call: frames and video tokens are processed in chunks
# of at most this size, so memory stays bounded on long clips. On accelerators a chunk holds a whole
# 60 s clip (256 MB of float32; a few chunks at 300 s); on the CPU chunks of 16 MB are faster, as
# the allocator reuses blocks of that size instead of mapping fresh pages for every temporary.
MAX_SCRATCH_ELEMENTS = 2**26
CPU_SCRATCH_ELEMENTS = 2**22
AUDIO_NORM_EPS = 1e-6
FRAME_NORM_EPS = 1e-12


# --------------------------------------------------------------------------- similarity primitives


def grid_scale(dim: int) -> float:
    """S: unit vectors of width ``dim`` snapped to multiples of 1/S have ``||q|| <= 2**12``."""
    return float(math.floor(2**12 - 0.51 * math.sqrt(dim)) - 1)


def gather_grid_units(embeds: Tensor, positions: Tensor, *, plus_eps: bool = False) -> Tensor:
    """Rows ``embeds[positions]`` as integer grid coordinates ``round(x * (S / denom))``, float32.

    ``embeds: [L, D]``, ``positions: [...]`` long -> ``[..., D]``. ``denom = ||x|| + 1e-6`` with
    ``plus_eps`` (audio side), else ``max(||x||, 1e-12)`` (ISTC). Works in place on the gathered copy.
    """
    rows = embeds[positions].float()  # a fresh copy: safe to modify
    norm = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    denom = norm + AUDIO_NORM_EPS if plus_eps else norm.clamp_min(FRAME_NORM_EPS)
    return rows.mul_(grid_scale(rows.shape[-1]) / denom).round_()


def exact_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosines of grid-unit rows: ``[..., M, D] x [..., N, D] -> [..., M, N]`` float32 (exact sums)."""
    scale = grid_scale(a.shape[-1])
    return torch.matmul(a, b.mT).mul_(1.0 / (scale * scale))


def exact_rowwise_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-by-row cosines of grid-unit rows: ``[..., D] x2 -> [...]`` float32. Overwrites ``a``."""
    scale = grid_scale(a.shape[-1])
    return a.mul_(b).sum(-1).mul_(1.0 / (scale * scale))


def chunk_slices(count: int, cost_per_item: int, device: torch.device) -> Iterator[slice]:
    """Slices covering ``range(count)`` with ``cost_per_item * len`` within the device's scratch budget.

    At least one item per slice; the budget is :data:`CPU_SCRATCH_ELEMENTS` on the CPU and
    :data:`MAX_SCRATCH_ELEMENTS` elsewhere.
    """
    budget = CPU_SCRATCH_ELEMENTS if device.type == "cpu" else MAX_SCRATCH_ELEMENTS
    step = max(1, budget // max(1, cost_per_item))
    for start in range(0, count, step):
        yield slice(start, min(count, start + step))


# ------------------------------------------------------------------------------ stable ranking


def descending_ranks(scores: Tensor) -> Tensor:
    """Rank of each entry along the last dim, highest first, ties by lowest index. Long, same shape."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return _inverse_permutation(order)


def ascending_ranks(scores: Tensor) -> Tensor:
    """Rank of each entry along the last dim, lowest first, ties by lowest index. Long, same shape."""
    order = torch.sort(scores, dim=-1, stable=True).indices
    return _inverse_permutation(order)


def _inverse_permutation(order: Tensor) -> Tensor:
    n = order.shape[-1]
    positions = torch.arange(n, device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def true_indices(mask: Tensor, count: int) -> Tensor:
    """Ascending indices of the ``count`` True entries of a 1-D mask, without a host sync. ``[count]``."""
    return torch.sort((~mask).to(torch.uint8), stable=True).indices[:count]


# ------------------------------------------------------------------------------------- DPC-KNN


def dpc_knn_scores(similarity: Tensor, knn_k: int) -> Tensor:
    """DPC-KNN score ``delta * rho`` of every token of every frame.

    ``similarity: [F, n, n]`` float32 cosine similarities within each frame -> ``[F, n]`` float32.
    ``dist = 1 - sim`` (diagonal excluded); ``rho = exp(-mean of the k smallest distances)`` with
    ``k = min(knn_k, n - 1)`` (summed in ascending order; ``rho = 1`` when ``k == 0``);
    ``delta`` = distance to the nearest strictly denser token, or, for a token with none, its
    largest distance (self counted as 0).
    """
    n = similarity.shape[-1]
    dist = 1.0 - similarity
    self_pair = torch.eye(n, dtype=torch.bool, device=similarity.device)
    dist_to_others = dist.masked_fill(self_pair, float("inf"))
    density = _knn_density(dist_to_others, min(knn_k, n - 1))
    denser = density.unsqueeze(-2) > density.unsqueeze(-1)  # [F, i, j]: rho_j > rho_i
    to_denser = dist_to_others.masked_fill(~denser, float("inf")).amin(-1)
    farthest = dist.masked_fill(self_pair, 0.0).amax(-1)
    delta = torch.where(denser.any(-1), to_denser, farthest)
    return delta * density


def _knn_density(dist_to_others: Tensor, k: int) -> Tensor:
    """``exp(-mean(k smallest))`` per row, the k values summed smallest first. ``[F, n, n] -> [F, n]``."""
    if k <= 0:
        return torch.ones(dist_to_others.shape[:-1], device=dist_to_others.device)
    smallest = torch.topk(dist_to_others, k, dim=-1, largest=False, sorted=True).values
    total = smallest[..., 0]
    for j in range(1, k):  # k <= knn_k (5 by default): a tiny loop that pins the summation order
        total = total + smallest[..., j]
    return torch.exp(-(total / k))


# ------------------------------------------------------------------------------- frame masks


def even_frame_keep(video: Tensor, frame_tokens: Tensor, n_keep: Tensor, knn_k: int) -> Tensor:
    """Keep mask of even frames by DPC-KNN rank.

    ``video: [L, D]`` embeddings; ``frame_tokens: [F, n]`` long positions of each even frame's
    tokens; ``n_keep: [F]`` long -> ``[F, n]`` bool (``rank < n_keep``: all kept when n_keep >= n).
    """
    frames, n = frame_tokens.shape
    scores = torch.empty((frames, n), device=video.device)
    for part in chunk_slices(frames, n * video.shape[-1] + 4 * n * n, video.device):
        units = gather_grid_units(video, frame_tokens[part])
        scores[part] = dpc_knn_scores(exact_cosine(units, units), knn_k)
    return descending_ranks(scores) < n_keep.unsqueeze(-1)


def odd_frame_keep(video: Tensor, frame_tokens: Tensor, previous_tokens: Tensor, n_keep: Tensor) -> Tensor:
    """Keep mask of odd frames: the ``n_keep`` positions least similar to the previous frame.

    ``frame_tokens, previous_tokens: [F, n]`` long; ``n_keep: [F]`` long -> ``[F, n]`` bool.
    Similarity is the cosine of the same spatial position in the two frames (pure pruning).
    """
    frames, n = frame_tokens.shape
    similarity = torch.empty((frames, n), device=video.device)
    for part in chunk_slices(frames, 2 * n * video.shape[-1], video.device):
        current = gather_grid_units(video, frame_tokens[part])
        previous = gather_grid_units(video, previous_tokens[part])
        similarity[part] = exact_rowwise_cosine(current, previous)
    return ascending_ranks(similarity) < n_keep.unsqueeze(-1)


def video_keep_mask(
    embeds: Tensor,
    even_frames: Tensor,
    even_keep_counts: Tensor,
    odd_frames: Tensor,
    odd_previous: Tensor,
    odd_keep_counts: Tensor,
    knn_k: int,
) -> Tensor:
    """Sequence keep mask after ISTC: ``[L]`` bool, False only for pruned video tokens.

    ``embeds: [L, D]``; frames are ``[F, tpf]`` sequence positions; keep counts ``[F]`` long.
    Tokens outside full frames (text, audio, short runs, partial frames) stay True.
    """
    keep = torch.ones(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    if even_frames.numel():
        keep[even_frames] = even_frame_keep(embeds, even_frames, even_keep_counts, knn_k)
    if odd_frames.numel():
        keep[odd_frames] = odd_frame_keep(embeds, odd_frames, odd_previous, odd_keep_counts)
    return keep
