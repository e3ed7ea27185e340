"""Sequence layout, time groups and the dynamic per-group video drop ratio (method §3, steps 3-5).

The layout (where audio and video tokens are, their runs, the frames) is derived **once on the
CPU** from ``input_ids``: the ids are small (tens of thousands of ints), so this costs one small
copy when they live on a GPU (pass them on the CPU to avoid even that). Index tensors then go to
the device through pinned memory without blocking. Everything that depends on embeddings or
scores (audio kept per group, the ratios, the keep counts) stays on the device: no host sync.

Time groups: runs of consecutive audio positions and of consecutive video positions. Video run
``i`` and audio run ``i`` form guided group ``i`` for ``i < min(#video runs, #audio runs)``; the
remaining video runs are unguided and drop ``rho_video``. A model family may instead give the time
groups itself (``time_groups`` of :func:`derive_layout`: a group index per token; runs are then the
runs of equal index, which need not be contiguous in the sequence): Qwen3-Omni pairs two grid steps
with their audio, which lie between the two steps.

Frames, not runs: a frame is ``tokens_per_frame`` consecutive video tokens in input order (the
processor lays video tokens out frame-major), and it belongs to the time group (video run) that
holds most of its tokens, the earliest such run on a tie. Below 1 fps the processor's chunking splits
frames over two or more runs (e.g. ``1 + (tpf - 1)`` tokens at 0.5 fps); each frame is still pruned
whole, with the ratio of its group, and a group's size (for the budget) is the tokens of its frames.
Where no frame straddles runs (every 1-2 fps layout) each group's frames are exactly its run's, so
the plan is the run-local one of the reference. ``frame_major=False`` gives the reference's
run-local frames (``reference_quirks``): frames counted from the start of each run, a partial
trailing frame per run, and runs shorter than a frame untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from omnizip_cli.compression.config import OmniZipConfig

__all__ = [
    "SequenceLayout",
    "derive_layout",
    "frame_groups",
    "frame_tokens_per_grid",
    "guided_budget",
    "keep_counts",
    "normalise_to_budget",
    "ratio_dtype",
    "runs_of_consecutive",
    "runs_of_equal",
    "segment_sums",
    "video_drop_ratios",
]

BUDGET_TOLERANCE = 1e-3  # the reference's |difference| threshold, in tokens


@dataclass(frozen=True)
class SequenceLayout:
    """Where the audio and video tokens are (CPU tensors, long).

    Attributes
    ----------
    length: L, tokens in the sequence.
    audio_positions: ``[N_a]`` sequence positions of audio tokens, ascending.
    video_positions: ``[N_v]`` sequence positions of video tokens, ascending.
    audio_runs, video_runs: ``[R, 2]`` (start, end) of each maximal run of consecutive positions,
        as indices into ``audio_positions`` / ``video_positions`` (end exclusive).
    tokens_per_frame: ``(H // s) * (W // s)``; 0 without video.
    even_frames, odd_frames: ``[F, tokens_per_frame]`` sequence positions of the full frames whose
        index within their time group is even / odd; ``odd_previous``: the frame before each odd
        frame (in the same group).
    even_frame_run, odd_frame_run: ``[F]`` time group (video run index) of each frame.
    partial_frame_positions: ``[K]`` sequence positions of the tokens after the last full frame of
        a run that has at least one full frame (run-local frames only; empty for the processor's
        layouts and always empty with frame-major frames when ``N_v`` is a multiple of tpf).
    video_groups: ``[R_v, 2]`` (start, end) indices into ``video_positions`` of the frames of each
        time group (end exclusive; ``start == end`` for a group with no frame). Frame-major: the
        frames whose majority lies in run ``i``; equal to ``video_runs`` where no frame straddles
        runs. Run-local: ``video_runs`` itself.
    """

    length: int
    audio_positions: Tensor
    video_positions: Tensor
    audio_runs: Tensor
    video_runs: Tensor
    tokens_per_frame: int
    even_frames: Tensor
    even_frame_run: Tensor
    odd_frames: Tensor
    odd_previous: Tensor
    odd_frame_run: Tensor
    partial_frame_positions: Tensor
    video_groups: Tensor

    @property
    def num_audio(self) -> int:
        return int(self.audio_positions.numel())

    @property
    def num_video(self) -> int:
        return int(self.video_positions.numel())

    @property
    def num_guided(self) -> int:
        """Guided groups: min(#video runs, #audio runs) (0 without audio or without video)."""
        return min(len(self.audio_runs), len(self.video_runs))

    @property
    def video_group_sizes(self) -> Tensor:
        """``[R_v]`` video tokens pruned with each group's ratio (the tokens of its frames)."""
        return self.video_groups[:, 1] - self.video_groups[:, 0]


def frame_tokens_per_grid(video_grid_thw: tuple[int, int, int] | None, spatial_merge_size: int) -> int:
    """LLM tokens per temporal grid step: ``(H // s) * (W // s)``; 0 without a grid."""
    if video_grid_thw is None:
        return 0
    _, height, width = (int(v) for v in video_grid_thw)
    return (height // spatial_merge_size) * (width // spatial_merge_size)


def runs_of_consecutive(positions: Tensor) -> Tensor:
    """Maximal runs of consecutive values. ``[N]`` ascending long -> ``[R, 2]`` (start, end) indices."""
    if positions.numel() == 0:
        return torch.zeros((0, 2), dtype=torch.long)
    breaks = torch.nonzero(positions[1:] - positions[:-1] != 1).flatten() + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.long), breaks])
    ends = torch.cat([breaks, torch.tensor([positions.numel()])])
    return torch.stack([starts, ends], dim=1)


def runs_of_equal(values: Tensor) -> Tensor:
    """Maximal runs of equal values. ``[N]`` non-decreasing long -> ``[R, 2]`` (start, end) indices."""
    if values.numel() == 0:
        return torch.zeros((0, 2), dtype=torch.long)
    if bool((values[1:] < values[:-1]).any()):
        raise ValueError("time groups must not decrease along the sequence")
    breaks = torch.nonzero(values[1:] != values[:-1]).flatten() + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.long), breaks])
    ends = torch.cat([breaks, torch.tensor([values.numel()])])
    return torch.stack([starts, ends], dim=1)


def derive_layout(
    input_ids: Tensor,
    *,
    audio_token_id: int,
    video_token_id: int,
    video_grid_thw: tuple[int, int, int] | None,
    spatial_merge_size: int,
    frame_major: bool = True,
    time_groups: Tensor | None = None,
) -> SequenceLayout:
    """Positions, runs and frames from ``input_ids [L]`` (copied to the CPU once).

    ``frame_major`` (default): frames are ``tokens_per_frame`` consecutive video tokens counted from
    the first video token, each in the group of the run holding most of its tokens; ``False``: the
    reference's frames counted from the start of each run.

    ``time_groups``: ``[L]`` long time-group index per token, computed by the model family's adapter
    (only the entries at audio and video tokens are read; they must not decrease within each
    modality, and group ``g`` of the video and of the audio must cover the same time). The runs are
    then the maximal runs of equal group index (audio and video lists separately), not of
    consecutive positions: a group may hold tokens that are not contiguous in the sequence
    (Qwen3-Omni's two grid steps with the audio between them). None: runs of consecutive positions.
    """
    ids = input_ids.detach().to("cpu").reshape(-1)
    audio_positions = torch.nonzero(ids == audio_token_id).flatten()
    video_positions = torch.nonzero(ids == video_token_id).flatten()
    if time_groups is None:
        audio_runs = runs_of_consecutive(audio_positions)
        video_runs = runs_of_consecutive(video_positions)
    else:
        groups = time_groups.detach().to("cpu").reshape(-1).long()
        if groups.numel() != ids.numel():
            raise ValueError(f"time_groups has {groups.numel()} entries for {ids.numel()} tokens")
        audio_runs = runs_of_equal(groups[audio_positions])
        video_runs = runs_of_equal(groups[video_positions])
    tokens_per_frame = frame_tokens_per_grid(video_grid_thw, spatial_merge_size)
    if frame_major:
        frames = _frame_major_frames(video_positions, video_runs, tokens_per_frame)
    else:
        frames = _frames(video_positions, video_runs, tokens_per_frame)
    return SequenceLayout(
        length=int(ids.numel()),
        audio_positions=audio_positions,
        video_positions=video_positions,
        audio_runs=audio_runs,
        video_runs=video_runs,
        tokens_per_frame=tokens_per_frame,
        **frames,
    )


def _frames(video_positions: Tensor, video_runs: Tensor, tokens_per_frame: int) -> dict[str, Tensor]:
    """Full frames of every video run, split by the parity of their index within the run."""
    empty = torch.zeros((0, max(tokens_per_frame, 1)), dtype=torch.long)
    if tokens_per_frame == 0 or len(video_runs) == 0:
        none = torch.zeros(0, dtype=torch.long)
        return dict(
            even_frames=empty,
            even_frame_run=none,
            odd_frames=empty,
            odd_previous=empty,
            odd_frame_run=none,
            partial_frame_positions=none,
            video_groups=video_runs.clone(),
        )
    sizes = video_runs[:, 1] - video_runs[:, 0]
    frames_per_run = sizes // tokens_per_frame
    run_of_frame = torch.repeat_interleave(torch.arange(len(video_runs)), frames_per_run)
    first_frame_of_run = torch.cumsum(frames_per_run, 0) - frames_per_run
    local_index = torch.arange(run_of_frame.numel()) - first_frame_of_run[run_of_frame]
    frame_start = video_runs[run_of_frame, 0] + local_index * tokens_per_frame
    tokens = video_positions[frame_start.unsqueeze(1) + torch.arange(tokens_per_frame)]  # [F, tpf]
    in_run = torch.arange(video_positions.numel()) - torch.repeat_interleave(video_runs[:, 0], sizes)
    run_frames = torch.repeat_interleave(frames_per_run, sizes)
    partial = (run_frames > 0) & (in_run >= run_frames * tokens_per_frame)
    return dict(
        partial_frame_positions=video_positions[partial],
        video_groups=video_runs.clone(),
        **_split_by_parity(tokens, run_of_frame, local_index),
    )


def _split_by_parity(tokens: Tensor, group_of_frame: Tensor, local_index: Tensor) -> dict[str, Tensor]:
    """Even/odd frames by their index within their group. ``tokens: [F, tpf]``, others ``[F]``."""
    is_odd = local_index % 2 == 1
    odd_ids = torch.nonzero(is_odd).flatten()
    return dict(
        even_frames=tokens[~is_odd],
        even_frame_run=group_of_frame[~is_odd],
        odd_frames=tokens[odd_ids],
        odd_previous=tokens[odd_ids - 1],
        odd_frame_run=group_of_frame[odd_ids],
    )


def frame_groups(video_runs: Tensor, num_frames: int, tokens_per_frame: int) -> Tensor:
    """Time group of each frame: the run holding most of its tokens, the earliest on a tie.

    ``video_runs: [R, 2]`` (start, end) indices into the video tokens; frame ``k`` is video tokens
    ``[k * tpf, (k + 1) * tpf)`` -> ``[num_frames]`` long run indices, non-decreasing (a frame's runs
    all precede the next frame's). Vectorised over the (frame, run) overlaps, whose number is at most
    ``num_frames + R``.
    """
    if num_frames == 0:
        return torch.zeros(0, dtype=torch.long)
    count = len(video_runs)
    sizes = video_runs[:, 1] - video_runs[:, 0]
    covered = num_frames * tokens_per_frame
    run_of_token = torch.repeat_interleave(torch.arange(count), sizes)[:covered]
    frame_of_token = torch.arange(covered) // tokens_per_frame
    pairs, overlap = torch.unique_consecutive(frame_of_token * count + run_of_token, return_counts=True)
    pair_frame, pair_run = pairs // count, pairs % count
    most = torch.zeros(num_frames, dtype=torch.long).scatter_reduce(
        0, pair_frame, overlap, reduce="amax", include_self=False
    )
    is_most = overlap == most[pair_frame]
    pair_index = torch.arange(pairs.numel())
    first = torch.full((num_frames,), pairs.numel(), dtype=torch.long).scatter_reduce(
        0, pair_frame[is_most], pair_index[is_most], reduce="amin", include_self=True
    )
    return pair_run[first]


def _frame_major_frames(video_positions: Tensor, video_runs: Tensor, tokens_per_frame: int) -> dict[str, Tensor]:
    """Frames counted over all video tokens (frame-major), grouped by :func:`frame_groups`."""
    none = torch.zeros(0, dtype=torch.long)
    if tokens_per_frame == 0 or len(video_runs) == 0:
        empty = torch.zeros((0, max(tokens_per_frame, 1)), dtype=torch.long)
        return dict(
            even_frames=empty,
            even_frame_run=none,
            odd_frames=empty,
            odd_previous=empty,
            odd_frame_run=none,
            partial_frame_positions=none,
            video_groups=video_runs.clone(),
        )
    num_frames = video_positions.numel() // tokens_per_frame
    group_of_frame = frame_groups(video_runs, num_frames, tokens_per_frame)
    frames_per_group = torch.bincount(group_of_frame, minlength=len(video_runs))
    first_frame = torch.cumsum(frames_per_group, 0) - frames_per_group
    local_index = torch.arange(num_frames) - first_frame[group_of_frame]
    starts = torch.arange(num_frames) * tokens_per_frame
    tokens = video_positions[starts.unsqueeze(1) + torch.arange(tokens_per_frame)]  # [F, tpf]
    groups = torch.stack([first_frame, first_frame + frames_per_group], dim=1) * tokens_per_frame
    return dict(
        partial_frame_positions=video_positions[num_frames * tokens_per_frame :],
        video_groups=groups,
        **_split_by_parity(tokens, group_of_frame, local_index),
    )


# ----------------------------------------------------------------------------- video ratios


def ratio_dtype(device: torch.device) -> torch.dtype:
    """float64, like the reference's Python floats; float32 where the device has no float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def segment_sums(values: Tensor, runs: Tensor) -> Tensor:
    """Sum of ``values [N]`` (integer-valued) over each ``runs [R, 2]`` range -> ``[R]`` long, exact."""
    prefix = torch.cat([torch.zeros(1, dtype=torch.long, device=values.device), torch.cumsum(values.long(), 0)])
    return prefix[runs[:, 1]] - prefix[runs[:, 0]]


def guided_budget(rho_video: float, layout: SequenceLayout) -> float:
    """Target dropped tokens over the guided groups: ``rho_v * N_v - rho_v * unguided_tokens`` (host)."""
    unguided_tokens = int(layout.video_group_sizes[layout.num_guided :].sum())
    return rho_video * layout.num_video - rho_video * unguided_tokens


def video_drop_ratios(
    audio_keep: Tensor,
    audio_runs: Tensor,
    video_group_sizes: Tensor,
    *,
    layout: SequenceLayout,
    config: OmniZipConfig,
) -> Tensor:
    """Drop ratio of every time group: dynamic for guided groups, ``rho_video`` for the others.

    ``audio_keep: [N_a]`` bool, ``audio_runs: [R_a, 2]`` and ``video_group_sizes: [R_v]`` long
    (tokens of each group's frames, :attr:`SequenceLayout.video_group_sizes`), all
    on the device -> ``[R_v]`` float64. Guided run ``i``: ``S_i`` = fraction of its audio run kept
    (a float32 mean, as the reference), ``base_i = clamp(rho_max + (rho_min - rho_max) * S_i)``,
    then :func:`normalise_to_budget`. ``rho_video == 0`` gives all zeros (video pruning off).
    """
    device = video_group_sizes.device
    dtype = ratio_dtype(device)
    ratios = torch.full((video_group_sizes.numel(),), config.rho_video, dtype=dtype, device=device)
    num_guided = layout.num_guided
    quirks = config.reference_quirks
    if num_guided == 0 or (config.rho_video == 0.0 and not quirks):
        return ratios
    guided_audio = audio_runs[:num_guided]
    kept = segment_sums(audio_keep, guided_audio)
    sizes = guided_audio[:, 1] - guided_audio[:, 0]
    kept_fraction = (kept.float() / sizes.float()).to(dtype)
    base = torch.clamp(
        config.rho_max + (config.rho_min - config.rho_max) * kept_fraction, config.rho_min, config.rho_max
    )
    if quirks and num_guided <= 2:
        ratios[:num_guided] = base  # the reference skips the normalisation: rho_video is ignored
        return ratios
    ratios[:num_guided] = normalise_to_budget(
        base,
        video_group_sizes[:num_guided],
        target=guided_budget(config.rho_video, layout),
        fix_extremes=num_guided > 2,
        count_coinciding_twice=quirks,
        low=config.rho_min,
        high=config.rho_max,
    )
    return ratios


def normalise_to_budget(
    base: Tensor,
    sizes: Tensor,
    *,
    target: float,
    fix_extremes: bool,
    low: float,
    high: float,
    count_coinciding_twice: bool = False,
) -> Tensor:
    """Budget normalisation of the guided ratios (method §3 step 5), vectorized.

    ``base: [G]`` float, ``sizes: [G]`` long -> ``[G]``. With ``fix_extremes`` (more than two guided
    groups, as the reference) the first argmin and first argmax keep their base ratio (counted
    once when they coincide) and the others are scaled by ``(target - fixed) / other``, clamped,
    then shifted once by ``diff / their total size`` if the size-weighted total still misses the
    target by more than 1e-3, and clamped again. Without it (one or two groups) every group is
    scaled. Nothing changes when the base total already meets the target or is 0. Sums run in
    group order (``cumsum``), matching a plain loop on the CPU. ``count_coinciding_twice``
    reproduces the reference, which adds the fixed group twice when argmin == argmax.
    """
    count = base.numel()
    weights = sizes.to(base.dtype)
    weighted = base * weights
    base_total = _ordered_sum(weighted)
    index = torch.arange(count, device=base.device)
    if fix_extremes:
        is_lowest = index == torch.argmin(base)
        is_highest = index == torch.argmax(base)
        fixed_mask = is_lowest | is_highest
        # Each term picks one entry with a masked sum (exact: the rest are zeros); no host sync.
        lowest_term = torch.where(is_lowest, weighted, torch.zeros_like(weighted)).sum()
        highest_term = torch.where(is_highest, weighted, torch.zeros_like(weighted)).sum()
        if not count_coinciding_twice:
            highest_term = torch.where((is_highest & is_lowest).any(), torch.zeros_like(highest_term), highest_term)
        fixed = lowest_term + highest_term
    else:
        fixed_mask = torch.zeros(count, dtype=torch.bool, device=base.device)
        fixed = torch.zeros_like(base_total)
    others = ~fixed_mask
    other_total = _ordered_sum(torch.where(others, weighted, torch.zeros_like(weighted)))
    scale = (target - fixed) / other_total
    adjusted = torch.where(others, torch.clamp(base * scale, low, high), base)
    diff = target - _ordered_sum(adjusted * weights)
    other_size = torch.where(others, sizes, torch.zeros_like(sizes)).sum().to(base.dtype)
    shifted = torch.where(others, torch.clamp(adjusted + diff / other_size, low, high), adjusted)
    adjusted = torch.where(diff.abs() > BUDGET_TOLERANCE, shifted, adjusted)
    applies = ((base_total - target).abs() > BUDGET_TOLERANCE) & (base_total > 0) & others.any() & (other_total > 0)
    return torch.where(applies, adjusted, base)


def _ordered_sum(values: Tensor) -> Tensor:
    """Sum in index order (sequential on the CPU, like a Python loop). ``[G] -> []``."""
    return torch.cumsum(values, 0)[-1]


def keep_counts(ratios: Tensor, tokens_per_frame: int) -> Tensor:
    """Tokens kept per frame: ``int(tpf * (1 - ratio))`` (floor). ``[R] float -> [R] long``."""
    return torch.floor(tokens_per_frame * (1 - ratios)).long()
