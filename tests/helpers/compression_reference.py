"""A plain, loop-by-loop reference of the OmniZip keep plan, written to be read, not to be fast.

It follows ``shared/docs/method.md`` §3 step by step, with Python loops over audio tokens, anchors,
groups and frames, the way the specification reads. Only the arithmetic inside a frame or a
similarity matrix uses torch. It makes the same choices as ``omnizip_cli.compression`` (ties by
lowest position; the deviations listed in ``omnizip_cli/compression/plan.py``, or the reference
behaviour with ``config.reference_quirks``) and the same numerics, so the two must agree **bit for
bit**:

- cosine = float32 dot product of unit vectors snapped to multiples of 1/S (integer coordinates,
  ||q|| <= 2**12, so every partial sum is an exact integer whatever the order), times 1/S**2;
- float32 for DPC-KNN figures and the anchor merge, every sum taken in a fixed order
  (smallest distance first; best-scored merged token first);
- Python floats (float64) for group ratios, with ``S_i`` as a float32 mean.

It also hosts :func:`interleaved_input_ids` / :func:`synthetic_case`, small builders of
processor-like layouts used by the tests and the benchmark, and :func:`processor_input_ids` /
:func:`processor_case`, the processor's audio-in-video layout at any sampling rate (checked against
the real processor in ``tests/test_frame_layouts.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from omnizip_cli.compression.config import OmniZipConfig

# ----------------------------------------------------------------------------- numerics


def grid_scale(dim: int) -> float:
    """S such that unit vectors snapped to multiples of 1/S have integer coordinates with ||q|| <= 2**12."""
    return float(math.floor(2**12 - 0.51 * math.sqrt(dim)) - 1)


def grid_units(x: Tensor, plus_eps: bool = False) -> Tensor:
    """Unit rows as integer grid coordinates: round(x * (S / denom)), float32.

    denom = ||x|| + 1e-6 (audio side) or max(||x||, 1e-12) (F.normalize, video frames).
    """
    x = x.float()
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    denom = norm + 1e-6 if plus_eps else norm.clamp_min(1e-12)
    return torch.round(x * (grid_scale(x.shape[-1]) / denom))


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """[M, D] x [N, D] grid units -> [M, N] float32 (integer sums: exact in any order)."""
    scale = grid_scale(a.shape[-1])
    return (a @ b.T) * (1.0 / (scale * scale))


def cosine_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-by-row cosines of grid units -> [N] float32."""
    scale = grid_scale(a.shape[-1])
    return (a * b).sum(-1) * (1.0 / (scale * scale))


def f32(x: float) -> np.float32:
    return np.float32(x)


# ----------------------------------------------------------------------------- the plan


@dataclass
class ReferencePlan:
    keep: Tensor  # [L] bool
    merged: dict[int, Tensor] = field(default_factory=dict)  # position -> new row (embeds dtype)
    video_ratios: list[float] = field(default_factory=list)  # drop ratio per video run
    audio_kept_per_run: list[int] = field(default_factory=list)
    video_kept_per_run: list[int] = field(default_factory=list)

    def merged_embeds(self, embeds: Tensor) -> Tensor:
        """``embeds`` with the merged anchor rows written in (a copy)."""
        out = embeds.clone()
        for position, row in self.merged.items():
            out[position] = row
        return out


def reference_keep_plan(
    embeds: Tensor,
    input_ids: Tensor,
    audio_scores: Tensor | None,
    video_grid_thw: tuple[int, int, int] | None,
    *,
    audio_token_id: int,
    video_token_id: int,
    spatial_merge_size: int = 2,
    config: OmniZipConfig,
) -> ReferencePlan:
    ids = input_ids.tolist()
    audio_positions = [i for i, t in enumerate(ids) if t == audio_token_id]
    video_positions = [i for i, t in enumerate(ids) if t == video_token_id]
    tokens_per_frame = 0
    if video_grid_thw is not None:
        _, height, width = video_grid_thw
        tokens_per_frame = (height // spatial_merge_size) * (width // spatial_merge_size)
    plan = ReferencePlan(keep=torch.ones(len(ids), dtype=torch.bool))

    # Steps 1-2: audio selection and anchor merge.
    audio_keep = select_and_merge_audio(embeds, audio_positions, video_positions, audio_scores, config, plan)
    for position, kept in zip(audio_positions, audio_keep):
        plan.keep[position] = kept

    # Step 3: time groups = runs of consecutive positions.
    audio_runs = consecutive_runs(audio_positions)
    video_runs = consecutive_runs(video_positions)
    num_guided = min(len(audio_runs), len(video_runs))

    # The frames of each group: run-local with the reference's quirks, else frame-major frames, each in
    # the run holding most of its tokens (the earliest on a tie).
    if config.reference_quirks:
        group_frames = run_local_frames(video_runs, tokens_per_frame)
    else:
        group_frames = frame_major_frames(video_runs, len(video_positions), tokens_per_frame)
    if config.reference_quirks:
        video_groups = video_runs
    else:  # the video-index range of each group's frames (consecutive: groups ascend with frames)
        video_groups = []
        for frames in group_frames:
            start = frames[0] if frames else (video_groups[-1][1] if video_groups else 0)
            video_groups.append((start, start + len(frames) * tokens_per_frame))

    # Steps 4-5: video drop ratio per group.
    plan.video_ratios = video_ratios(audio_keep, audio_runs, video_groups, num_guided, len(video_positions), config)

    # Step 6: ISTC per group, frame by frame (t = the frame's index within its group).
    for group_index, frames in enumerate(group_frames):
        n_keep = int(tokens_per_frame * (1 - plan.video_ratios[group_index]))
        for t, first in enumerate(frames):
            frame = video_positions[first : first + tokens_per_frame]
            if t % 2 == 0:
                frame_keep = dpc_knn_keep(embeds[frame], n_keep, config.knn_k)
            else:
                previous = video_positions[frames[t - 1] : frames[t - 1] + tokens_per_frame]
                frame_keep = novelty_keep(embeds[frame], embeds[previous], n_keep)
            for position, kept in zip(frame, frame_keep):
                plan.keep[position] = kept
    if config.reference_quirks:
        for (start, end), frames in zip(video_runs, group_frames):
            if frames:
                for position in video_positions[frames[-1] + tokens_per_frame : end]:
                    plan.keep[position] = False  # the reference drops a partial trailing frame

    plan.audio_kept_per_run = [sum(audio_keep[s:e]) for s, e in audio_runs]
    plan.video_kept_per_run = []
    for (start, end), frames in zip(video_runs, group_frames):
        if config.reference_quirks:
            counted = video_positions[start:end]
        else:
            counted = [video_positions[f + i] for f in frames for i in range(tokens_per_frame)]
        plan.video_kept_per_run.append(sum(bool(plan.keep[p]) for p in counted))
    return plan


def run_local_frames(video_runs: list[tuple[int, int]], tokens_per_frame: int) -> list[list[int]]:
    """The reference's frames: for each run, the first video index of each full frame from its start."""
    if tokens_per_frame == 0:
        return [[] for _ in video_runs]
    return [list(range(start, start + (end - start) // tokens_per_frame * tokens_per_frame, tokens_per_frame))
            for start, end in video_runs]


def frame_major_frames(video_runs: list[tuple[int, int]], num_video: int, tokens_per_frame: int) -> list[list[int]]:
    """For each run, the first video index of the frames (tpf consecutive video tokens counted from
    the first) that have most of their tokens in it, the earliest run on a tie."""
    groups: list[list[int]] = [[] for _ in video_runs]
    if tokens_per_frame == 0:
        return groups
    run_of = []
    for run_index, (start, end) in enumerate(video_runs):
        run_of += [run_index] * (end - start)
    for first in range(0, num_video - tokens_per_frame + 1, tokens_per_frame):
        counts: dict[int, int] = {}
        for index in range(first, first + tokens_per_frame):
            counts[run_of[index]] = counts.get(run_of[index], 0) + 1
        most = max(counts.values())
        groups[min(run for run, count in counts.items() if count == most)].append(first)
    return groups


def consecutive_runs(positions: list[int]) -> list[tuple[int, int]]:
    """(start, end) index ranges of maximal runs of consecutive positions."""
    runs = []
    start = 0
    for i in range(1, len(positions) + 1):
        if i == len(positions) or positions[i] != positions[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def select_and_merge_audio(
    embeds: Tensor,
    audio_positions: list[int],
    video_positions: list[int],
    audio_scores: Tensor | None,
    config: OmniZipConfig,
    plan: ReferencePlan,
) -> list[bool]:
    total = len(audio_positions)
    if total == 0:
        return []
    scores = audio_scores.reshape(-1).tolist()

    # Dominant tokens: top scores, ties by lowest index.
    n_dominant = int(max(0, min(total, round((1 - config.rho_audio) * total))))
    by_score = sorted(range(total), key=lambda i: (-scores[i], i))
    dominant = set(by_score[:n_dominant])
    remaining = [i for i in range(total) if i not in dominant]

    # Contextual anchors: evenly spaced over the remaining tokens.
    n_anchors = round(config.anchor_ratio * total)
    anchors: list[int] = []
    if remaining and n_anchors > 0 and config.merge_g > 0:
        n_anchors = min(n_anchors, len(remaining))
        step = max(1, len(remaining) // n_anchors)
        anchors = [remaining[j] for j in range(0, len(remaining), step)][:n_anchors]
    anchor_set = set(anchors)
    pool = [i for i in remaining if i not in anchor_set]
    keep = [i in dominant or i in anchor_set for i in range(total)]
    if not pool or not anchors:
        return keep

    audio = embeds[audio_positions]
    units = grid_units(audio, plus_eps=True)
    to_anchor = cosine_matrix(units[pool], units[anchors])  # [P, C]
    to_anchor_rows = to_anchor.tolist()
    assignment = [row.index(max(row)) for row in to_anchor_rows]  # first best anchor
    if video_positions:
        video_units = grid_units(embeds[video_positions], plus_eps=True)
        pool_scores = cosine_matrix(units[pool], video_units).max(dim=1).values
    else:
        pool_scores = to_anchor.max(dim=1).values
    score_list = pool_scores.tolist()

    members: dict[int, list[int]] = {c: [] for c in range(len(anchors))}
    for j, c in enumerate(assignment):
        members[c].append(j)
    for c, anchor in enumerate(anchors):
        chosen = sorted(members[c], key=lambda j: (-score_list[j], pool[j]))[: config.merge_g]
        if not chosen:
            continue
        s = pool_scores[chosen]  # best first
        exps = torch.exp(s - s[0])
        total_exp = exps[0]
        for e in exps[1:]:
            total_exp = total_exp + e
        weights = exps / total_exp
        weighted = weights[0] * audio[pool[chosen[0]]].float()
        weight_sum = weights[0]
        for w, j in zip(weights[1:], chosen[1:]):
            weighted = weighted + w * audio[pool[j]].float()
            weight_sum = weight_sum + w
        new = (audio[anchor].float() + weighted) / (1 + weight_sum)
        plan.merged[audio_positions[anchor]] = new.to(embeds.dtype)
    return keep


def video_ratios(
    audio_keep: list[bool],
    audio_runs: list[tuple[int, int]],
    video_groups: list[tuple[int, int]],
    num_guided: int,
    num_video: int,
    config: OmniZipConfig,
) -> list[float]:
    """Drop ratio per time group; ``video_groups`` are (start, end) video-index ranges whose size
    counts in the budget (the runs themselves with run-local frames)."""
    group_sizes = [end - start for start, end in video_groups]
    ratios = [config.rho_video] * len(group_sizes)
    quirks = config.reference_quirks
    if num_guided == 0 or (config.rho_video == 0.0 and not quirks):
        return ratios
    base = []
    for i in range(num_guided):
        start, end = audio_runs[i]
        kept_fraction = float(f32(sum(audio_keep[start:end])) / f32(end - start))  # float32 mean
        ratio = config.rho_max + (config.rho_min - config.rho_max) * kept_fraction
        base.append(min(max(ratio, config.rho_min), config.rho_max))
    if quirks and num_guided <= 2:
        ratios[:num_guided] = base
        return ratios
    sizes = group_sizes[:num_guided]
    unguided = sum(group_sizes[num_guided:])
    target = config.rho_video * num_video - config.rho_video * unguided
    ratios[:num_guided] = normalise(base, sizes, target, num_guided > 2, config)
    return ratios


def normalise(
    base: list[float], sizes: list[int], target: float, fix_extremes: bool, config: OmniZipConfig
) -> list[float]:
    def clamp(x: float) -> float:
        return min(max(x, config.rho_min), config.rho_max)

    base_total = 0.0
    for b, s in zip(base, sizes):
        base_total += b * s
    if not (abs(base_total - target) > 1e-3 and base_total > 0):
        return base
    if fix_extremes:
        lowest = base.index(min(base))
        highest = base.index(max(base))
        fixed_ids = {lowest, highest}
        fixed = base[lowest] * sizes[lowest]
        if highest != lowest or config.reference_quirks:
            fixed = fixed + base[highest] * sizes[highest]
        else:
            fixed = fixed + 0.0
    else:
        fixed_ids, fixed = set(), 0.0
    others = [i for i in range(len(base)) if i not in fixed_ids]
    other_total = 0.0
    for i in others:
        other_total += base[i] * sizes[i]
    if not others or not other_total > 0:
        return base
    scale = (target - fixed) / other_total
    adjusted = list(base)
    for i in others:
        adjusted[i] = clamp(base[i] * scale)
    total = 0.0
    for a, s in zip(adjusted, sizes):
        total += a * s
    diff = target - total
    if abs(diff) > 1e-3:
        other_size = sum(sizes[i] for i in others)
        for i in others:
            adjusted[i] = clamp(adjusted[i] + diff / other_size)
    return adjusted


def dpc_knn_keep(tokens: Tensor, n_keep: int, knn_k: int) -> list[bool]:
    """Keep the n_keep tokens of one frame with the highest DPC-KNN score delta * rho."""
    n = tokens.shape[0]
    units = grid_units(tokens)
    dist = (1.0 - cosine_matrix(units, units)).tolist()
    k = min(knn_k, n - 1)
    if k > 0:
        totals = []
        for i in range(n):
            nearest = sorted(dist[i][j] for j in range(n) if j != i)[:k]
            total = f32(nearest[0])
            for d in nearest[1:]:
                total = f32(total + f32(d))
            totals.append(total)
        density = torch.exp(-(torch.tensor(np.array(totals, dtype=np.float32)) / k)).tolist()
    else:
        density = [1.0] * n
    scores = []
    for i in range(n):
        denser = [dist[i][j] for j in range(n) if j != i and density[j] > density[i]]
        if denser:
            delta = min(denser)
        else:
            delta = max([0.0] + [dist[i][j] for j in range(n) if j != i])  # self counts as 0
        scores.append(float(f32(delta) * f32(density[i])))
    best = sorted(range(n), key=lambda i: (-scores[i], i))[:n_keep]
    return [i in set(best) for i in range(n)]


def novelty_keep(tokens: Tensor, previous: Tensor, n_keep: int) -> list[bool]:
    """Keep the n_keep positions least similar to the same position of the previous frame."""
    n = tokens.shape[0]
    similarity = cosine_rows(grid_units(tokens), grid_units(previous)).tolist()
    novel = sorted(range(n), key=lambda p: (similarity[p], p))[:n_keep]
    return [p in set(novel) for p in range(n)]


# ------------------------------------------------------------------- synthetic layouts

TEXT_ID, AUDIO_ID, VIDEO_ID = 5, 1, 3
VISION_BOS_ID, AUDIO_BOS_ID, AUDIO_EOS_ID, VISION_EOS_ID = 10, 11, 12, 13


def interleaved_input_ids(
    frames: int,
    tokens_per_frame: int,
    num_audio: int,
    *,
    audio_per_chunk: int = 50,
    frames_per_chunk: int = 2,
    layout: str = "interleaved",
    prefix: int = 4,
    suffix: int = 6,
) -> Tensor:
    """``[L]`` ids like the Qwen2.5-Omni processor with use_audio_in_video.

    ``interleaved``: ``text <vision_bos><audio_bos> (V*2tpf A*50)* <audio_eos><vision_eos> text``,
    chunk by chunk, a side that has run out simply contributing nothing (so trailing video or
    audio chunks become one run). ``separate``: all video, then text, then all audio.
    """
    body: list[int] = []
    if layout == "interleaved":
        video_left, audio_left = frames * tokens_per_frame, num_audio
        while video_left > 0 or audio_left > 0:
            v = min(video_left, frames_per_chunk * tokens_per_frame)
            a = min(audio_left, audio_per_chunk)
            body += [VIDEO_ID] * v + [AUDIO_ID] * a
            video_left, audio_left = video_left - v, audio_left - a
    elif layout == "separate":
        body = [VIDEO_ID] * (frames * tokens_per_frame) + [TEXT_ID] * 2 + [AUDIO_ID] * num_audio
    else:
        raise ValueError(layout)
    ids = [TEXT_ID] * prefix + [VISION_BOS_ID, AUDIO_BOS_ID] + body + [AUDIO_EOS_ID, VISION_EOS_ID] + [TEXT_ID] * suffix
    return torch.tensor(ids, dtype=torch.long)


def chunk_bounds(time_ids: list[float], ids_per_chunk: int) -> list[tuple[int, int]]:
    """(start, end) token ranges of the chunks, as the Qwen2.5-Omni processor forms them.

    Tokens are visited in order with a chunk counter ``c`` starting at 1; a token whose time id is at
    least ``c * ids_per_chunk`` closes the current chunk and the counter moves on by **one** step
    only. So when consecutive tokens jump over several chunk boundaries (a frame more than one chunk
    after the previous one, i.e. below 1 fps), the next tokens each close a chunk of one token until
    the counter catches up: a frame's tokens end up split over several runs.
    """
    bounds = []
    start, step = 0, 1
    for index, time_id in enumerate(time_ids):
        if time_id >= step * ids_per_chunk:
            bounds.append((start, index))
            start, step = index, step + 1
    bounds.append((start, len(time_ids)))
    return bounds


def processor_input_ids(
    frames: int,
    tokens_per_frame: int,
    num_audio: int,
    *,
    fps: float,
    temporal_patch_size: int = 2,
    ids_per_second: int = 25,
    seconds_per_chunk: float = 2.0,
    prefix: int = 4,
    suffix: int = 6,
) -> Tensor:
    """``[L]`` ids laid out like ``Qwen2_5OmniProcessor`` with audio in video, at any ``fps``.

    ``frames`` temporal grid steps of ``tokens_per_frame`` tokens; grid step ``t`` has time id
    ``t * (temporal_patch_size / fps) * ids_per_second``, audio token ``j`` has time id ``j``; both
    are cut by :func:`chunk_bounds` into chunks of ``ids_per_second * seconds_per_chunk`` ids and
    interleaved chunk by chunk (video chunk ``j`` then audio chunk ``j``).
    """
    second_per_grid = temporal_patch_size / fps
    video_times = [t * second_per_grid * ids_per_second for t in range(frames) for _ in range(tokens_per_frame)]
    ids_per_chunk = int(ids_per_second * seconds_per_chunk)
    video_chunks = chunk_bounds(video_times, ids_per_chunk) if video_times else []
    audio_chunks = chunk_bounds(list(range(num_audio)), ids_per_chunk) if num_audio else []
    body: list[int] = []
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            body += [VIDEO_ID] * (video_chunks[j][1] - video_chunks[j][0])
        if j < len(audio_chunks):
            body += [AUDIO_ID] * (audio_chunks[j][1] - audio_chunks[j][0])
    ids = [TEXT_ID] * prefix + [VISION_BOS_ID, AUDIO_BOS_ID] + body + [AUDIO_EOS_ID, VISION_EOS_ID] + [TEXT_ID] * suffix
    return torch.tensor(ids, dtype=torch.long)


def processor_case(
    generator: torch.Generator,
    *,
    seconds: float,
    fps: float,
    height: int,
    width: int,
    dim: int,
    audio: bool = True,
    spatial_merge_size: int = 2,
) -> SyntheticCase:
    """Random embeddings and scores on the processor's layout of a ``seconds`` clip sampled at ``fps``.

    ``fps * seconds`` raw frames (rounded down to even, at least 2) make ``frames / 2`` grid steps;
    the audio has 25 tokens per second.
    """
    raw_frames = max(2, int(seconds * fps) // 2 * 2)
    grid_steps = raw_frames // 2
    tokens_per_frame = (height // spatial_merge_size) * (width // spatial_merge_size)
    num_audio = int(seconds * 25) if audio else 0
    ids = processor_input_ids(grid_steps, tokens_per_frame, num_audio, fps=fps)
    return SyntheticCase(
        embeds=torch.randn(ids.numel(), dim, generator=generator),
        input_ids=ids,
        audio_scores=torch.rand(num_audio, generator=generator) if num_audio else None,
        video_grid_thw=(grid_steps, height, width),
        spatial_merge_size=spatial_merge_size,
    )


@dataclass
class SyntheticCase:
    embeds: Tensor
    input_ids: Tensor
    audio_scores: Tensor | None
    video_grid_thw: tuple[int, int, int] | None
    spatial_merge_size: int = 2

    def kwargs(self, config: OmniZipConfig) -> dict:
        return dict(
            embeds=self.embeds,
            input_ids=self.input_ids,
            audio_scores=self.audio_scores,
            video_grid_thw=self.video_grid_thw,
            audio_token_id=AUDIO_ID,
            video_token_id=VIDEO_ID,
            spatial_merge_size=self.spatial_merge_size,
            config=config,
        )


def synthetic_case(
    generator: torch.Generator,
    *,
    frames: int,
    height: int,
    width: int,
    num_audio: int,
    dim: int,
    dtype: torch.dtype = torch.float32,
    audio_per_chunk: int = 50,
    layout: str = "interleaved",
    spatial_merge_size: int = 2,
    ties: bool = False,
) -> SyntheticCase:
    """Random embeddings and scores on a processor-like layout.

    ``ties`` draws coarse values (and repeats some frames and scores) so exact ties occur in every
    ranking. ``frames == 0`` means no video; ``num_audio == 0`` no audio.
    """
    tokens_per_frame = (height // spatial_merge_size) * (width // spatial_merge_size)
    ids = interleaved_input_ids(frames, tokens_per_frame, num_audio, audio_per_chunk=audio_per_chunk, layout=layout)
    if ties:
        embeds = torch.randint(-2, 3, (ids.numel(), dim), generator=generator).float()
        scores = torch.randint(0, 4, (num_audio,), generator=generator).float()
    else:
        embeds = torch.randn(ids.numel(), dim, generator=generator)
        scores = torch.rand(num_audio, generator=generator)
    if ties and frames > 1:  # repeat a frame: novelty ties (cosine 1) on odd frames
        video = torch.nonzero(ids == VIDEO_ID).flatten()
        embeds[video[tokens_per_frame : 2 * tokens_per_frame]] = embeds[video[:tokens_per_frame]]
    return SyntheticCase(
        embeds=embeds.to(dtype),
        input_ids=ids,
        audio_scores=scores if num_audio else None,
        video_grid_thw=(frames, height, width) if frames else None,
        spatial_merge_size=spatial_merge_size,
    )
