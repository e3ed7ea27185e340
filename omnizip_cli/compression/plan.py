"""The OmniZip keep plan: which audio/video tokens reach the LLM, and the merged audio anchors.

:func:`build_keep_plan` implements ``shared/docs/method.md`` §3 (the reference ``omnizip_core.py``)
as pure tensor functions for batch size 1 and one video:

1. audio selection and anchor merge (:mod:`~omnizip_cli.compression.audio`);
2. time groups from the interleaved layout, per-group audio retention, the dynamic per-group video
   drop ratio in ``[rho_min, rho_max]`` and its budget normalisation
   (:mod:`~omnizip_cli.compression.groups`);
3. ISTC per group: DPC-KNN on even frames, novelty against the previous frame on odd frames
   (:mod:`~omnizip_cli.compression.video`).

:func:`apply_keep_plan` writes the merged anchors in and keeps the rows of the plan.

Hot path: no Python loop over frames, groups or anchors and no host synchronisation. The layout
(positions, runs, frames) is derived once on the CPU from ``input_ids`` (small); everything that
depends on embeddings or scores stays on the device. The only Python loops left are over memory
chunks of many frames or tokens (1-4 per kind on a GPU at 300 s; 16 MB chunks on the CPU, where
that is faster), over the ``G`` merge slots and over the ``k`` neighbours of DPC-KNN; none depends
on the data. Output sizes known on the host: ``merged_positions`` lists every
anchor (``M = C``), and anchors that absorbed nothing carry their input row unchanged.

Numerics (identical in the loop reference of ``tests/compression_reference.py``):
- similarities are float32 dot products of unit vectors snapped to a grid of 1/4064 (D = 3584),
  where every partial sum is an exact integer (see :mod:`~omnizip_cli.compression.video`): they do
  not depend on batching, chunking, BLAS or device, error about 1e-4 (the reference core computes
  them in bf16, 4e-3);
- DPC-KNN scores, ranks and the anchor softmax/merge are float32 (the merge is cast back to the
  embeddings' dtype at the end);
- group figures are float64, like the reference's Python floats; ``S_i`` is a float32 mean and the
  keep count per frame is ``int(tpf * (1 - ratio))`` (floor), like the reference; ``round`` is
  Python's (banker's) rounding.

Deviations from the reference
-----------------------------
Not switchable (the reference crashes, does nothing, or is undefined there):

- **No audio** (video only): the reference crashes (``audio_features`` unbound). Every video run
  is unguided and drops ``rho_video``: for a video-only clip, ``rho_video`` over the whole clip.
- **Audio only**: the reference does not compress at all (it runs only with a video). Here the
  audio selection and merge run alone; pool scores are the cosine to the assigned anchor (the
  reference's no-video branch).
- **Frames, not runs**: the reference cuts each video run into frames counted from the run's start
  and keeps a run shorter than a frame whole. Below 1 fps the processor's chunking (one chunk step
  per token, see ``get_chunked_index``) splits frames over runs (``tpf + 1 + (tpf - 1) + 1 + ...``
  at 0.5 fps; ``1 + 1 + 1 + (tpf - 3)`` per frame at 0.25 fps), so the reference finds (almost) no
  whole frame and keeps (almost) every video token. Here a frame is ``tpf`` consecutive video tokens
  in input order (frame-major, as the processor lays them out); it is pruned whole with the ratio
  of the time group (video run) holding most of its tokens, the earliest on a tie, and the groups'
  sizes in the budget normalisation are the tokens of their frames (0 for a run that holds no
  frame's majority). Where no frame straddles runs (every processor layout from 1 to 2 fps) this is
  the reference's plan exactly; below 1 fps the presets keep the same share of video tokens as at
  2 fps (``tests/test_frame_layouts.py``). ``reference_quirks=True`` restores
  the run-local frames (and their partial trailing frames).
- **Ties** are broken by position, lowest index first, in every ranking (dominant audio, top-G,
  DPC-KNN, temporal novelty) and argmax (anchor assignment, min/max group); ``torch.topk`` in the
  reference leaves ties unspecified.

Switchable with ``OmniZipConfig(reference_quirks=True)`` (they change results where the reference
runs):

- **One or two guided groups**: the reference skips the normalisation, so ``rho_video`` has no
  effect (ratio = ``rho_max - (rho_max - rho_min) * S``). Here the guided groups are normalised
  together with none held fixed, so one guided group drops ``rho_video`` (clamped to the window).
- **All base ratios equal** (first argmin == first argmax): the reference counts that group twice
  in the fixed part of the budget; here it is counted once.
- **rho_video == 0** turns video pruning off; the reference still prunes 35-75 % of every guided
  group because the dynamic ratios are clamped to ``[rho_min, rho_max]``.
- **Partial trailing frame** of a run (its length not a multiple of the tokens per frame; produced
  by the processor only below 1 fps): with ``reference_quirks`` (run-local frames) its tokens are
  dropped, as in the reference; without, frames are frame-major and no partial frame exists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from omnizip_cli.compression.audio import audio_counts, select_audio
from omnizip_cli.compression.config import OmniZipConfig
from omnizip_cli.compression.groups import (
    SequenceLayout,
    derive_layout,
    keep_counts,
    ratio_dtype,
    segment_sums,
    video_drop_ratios,
)
from omnizip_cli.compression.video import video_keep_mask

__all__ = ["GroupStats", "KeepPlan", "apply_keep_plan", "build_keep_plan"]


@dataclass
class GroupStats:
    """Per time group figures (device tensors, ``[G]``), for a report or a picture.

    Row ``i`` pairs video run ``i`` with audio run ``i`` (either may be absent when the counts of
    runs differ, e.g. audio only); ``guided`` marks rows with both, which use the dynamic ratio.

    audio_tokens, audio_kept, video_tokens, video_kept: long; the video side counts the tokens of
        the group's frames (its run's tokens wherever no frame straddles runs).
    video_drop_ratio: float64, the ratio used for the group's frames (0 without video).
    guided: bool.
    """

    audio_tokens: Tensor
    audio_kept: Tensor
    video_tokens: Tensor
    video_drop_ratio: Tensor
    video_kept: Tensor
    guided: Tensor

    def __len__(self) -> int:
        return int(self.guided.numel())

    def to_rows(self) -> list[dict[str, int | float | bool]]:
        """One dict per group (copies to the host: call it after the plan, not inside a hot path)."""
        columns = {f.name: getattr(self, f.name).tolist() for f in fields(self)}
        return [{name: values[i] for name, values in columns.items()} for i in range(len(self))]


@dataclass
class KeepPlan:
    """Which rows of the sequence to keep, and the new embeddings of the audio anchors.

    keep: ``[L]`` bool; text and special tokens are always True.
    merged_positions: ``[M]`` long sequence positions of the contextual anchors (all kept); ``M`` is
        the anchor count ``C`` (0 when nothing merges). Anchors that absorbed nothing have their
        input row in ``merged_embeds`` unchanged.
    merged_embeds: ``[M, D]`` new anchor embeddings, in the embeddings' dtype.
    groups: per time group figures.
    audio_total, audio_kept, video_total: host-known counts.
    """

    keep: Tensor
    merged_positions: Tensor
    merged_embeds: Tensor
    groups: GroupStats
    audio_total: int
    audio_kept: int
    video_total: int

    @property
    def video_kept(self) -> int:
        """Video tokens kept (host sync)."""
        return int(self.groups.video_kept.sum())

    @property
    def kept_total(self) -> int:
        """Audio + video tokens kept (host sync)."""
        return self.audio_kept + self.video_kept

    @property
    def retention(self) -> float:
        """Fraction of audio + video tokens kept (1.0 when there are none; host sync)."""
        total = self.audio_total + self.video_total
        return self.kept_total / total if total else 1.0


@torch.no_grad()
def build_keep_plan(
    embeds: Tensor,
    input_ids: Tensor,
    audio_scores: Tensor | None,
    video_grid_thw: tuple[int, int, int] | None,
    *,
    audio_token_id: int,
    video_token_id: int,
    spatial_merge_size: int = 2,
    config: OmniZipConfig,
    time_groups: Tensor | None = None,
) -> KeepPlan:
    """Compute the OmniZip keep plan of one sequence.

    Parameters
    ----------
    embeds: ``[L, D]`` post-projector LLM-space embeddings, audio and video already scattered in.
    input_ids: ``[L]`` token ids (best on the CPU; copied there once otherwise).
    audio_scores: ``[N_a]`` saliency per audio token, in the order of the audio tokens of
        ``input_ids``; None when there is no audio token.
    video_grid_thw: ``(T, H, W)`` of the single video in patches (a tensor of 3 values, e.g.
        ``video_grid_thw[0]`` of the processor, is accepted too), or None without video.
    audio_token_id, video_token_id: the placeholder ids.
    spatial_merge_size: s; a frame (temporal grid step) has ``(H // s) * (W // s)`` tokens.
    config: ratios and hyper-parameters.
    time_groups: ``[L]`` long time-group index per token from the model family's adapter (see
        :func:`~omnizip_cli.compression.groups.derive_layout`); None (default): the time groups are
        the runs of consecutive audio / video positions.

    Raises ``ValueError`` when the inputs disagree (shapes, token counts vs grid or scores).
    """
    _check_shapes(embeds, input_ids, spatial_merge_size)
    video_grid_thw = _grid_tuple(video_grid_thw)
    layout = derive_layout(
        input_ids,
        audio_token_id=audio_token_id,
        video_token_id=video_token_id,
        video_grid_thw=video_grid_thw,
        spatial_merge_size=spatial_merge_size,
        frame_major=not config.reference_quirks,
        time_groups=time_groups,
    )
    _check_against_layout(layout, audio_scores, video_grid_thw)
    device = embeds.device
    on_device = _Uploader(device)
    audio_positions = on_device(layout.audio_positions)
    video_positions = on_device(layout.video_positions)
    audio_runs = on_device(layout.audio_runs)
    video_group_sizes = on_device(layout.video_group_sizes)

    counts = audio_counts(layout.num_audio, config)
    if layout.num_audio:
        selection = select_audio(
            audio_scores.to(device).reshape(-1),
            embeds,
            audio_positions,
            video_positions if layout.num_video else None,
            counts,
            config.merge_g,
        )
        audio_keep = selection.keep
    else:
        selection = None
        audio_keep = torch.zeros(0, dtype=torch.bool, device=device)

    ratios = video_drop_ratios(audio_keep, audio_runs, video_group_sizes, layout=layout, config=config)
    frame_keep = keep_counts(ratios, layout.tokens_per_frame)  # [R_v], per time group
    video_keep = video_keep_mask(
        embeds,
        on_device(layout.even_frames),
        frame_keep[on_device(layout.even_frame_run)],
        on_device(layout.odd_frames),
        on_device(layout.odd_previous),
        frame_keep[on_device(layout.odd_frame_run)],
        config.knn_k,
    )

    if config.reference_quirks and layout.partial_frame_positions.numel():
        video_keep[on_device(layout.partial_frame_positions)] = False
    keep = video_keep  # [L]: False only for pruned video tokens
    keep[audio_positions] = audio_keep

    merged_positions, merged_embeds = _merged_rows(selection, audio_positions, embeds)
    groups = _group_stats(
        layout, audio_runs, on_device(layout.video_groups), audio_keep, keep[video_positions], ratios
    )
    return KeepPlan(
        keep=keep,
        merged_positions=merged_positions,
        merged_embeds=merged_embeds,
        groups=groups,
        audio_total=layout.num_audio,
        audio_kept=counts.kept,
        video_total=layout.num_video,
    )


@torch.no_grad()
def apply_keep_plan(embeds: Tensor, plan: KeepPlan) -> Tensor:
    """``[L, D] -> [L', D]``: the kept rows, with the merged anchor embeddings written in.

    Does not modify ``embeds``. The output size is data-dependent, so this syncs once.
    """
    kept = embeds[plan.keep]
    if plan.merged_positions.numel():
        compact_index = torch.cumsum(plan.keep.long(), 0) - 1
        kept.index_copy_(0, compact_index[plan.merged_positions], plan.merged_embeds.to(embeds.dtype))
    return kept


# ------------------------------------------------------------------------------------ helpers


class _Uploader:
    """Copies CPU index tensors to the device without blocking the host (pinned on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, tensor: Tensor) -> Tensor:
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)


def _check_shapes(embeds: Tensor, input_ids: Tensor, spatial_merge_size: int) -> None:
    if spatial_merge_size < 1:
        raise ValueError(f"spatial_merge_size must be >= 1, got {spatial_merge_size}")
    if embeds.dim() != 2:
        raise ValueError(f"embeds must be [L, D] (batch size 1, squeezed), got shape {tuple(embeds.shape)}")
    if input_ids.dim() != 1 or input_ids.numel() != embeds.shape[0]:
        raise ValueError(
            f"input_ids must be [L] with L = {embeds.shape[0]} (as embeds), got shape {tuple(input_ids.shape)}"
        )


def _grid_tuple(video_grid_thw: tuple[int, int, int] | Tensor | None) -> tuple[int, int, int] | None:
    if video_grid_thw is None:
        return None
    values = video_grid_thw.reshape(-1).tolist() if isinstance(video_grid_thw, Tensor) else list(video_grid_thw)
    if len(values) != 3:
        raise ValueError(f"video_grid_thw must hold (T, H, W) of one video, got {values}")
    return (int(values[0]), int(values[1]), int(values[2]))


def _check_against_layout(
    layout: SequenceLayout, audio_scores: Tensor | None, video_grid_thw: tuple[int, int, int] | None
) -> None:
    score_count = 0 if audio_scores is None else int(audio_scores.numel())
    if score_count != layout.num_audio:
        raise ValueError(f"audio_scores has {score_count} entries but input_ids has {layout.num_audio} audio tokens")
    if layout.num_video and video_grid_thw is None:
        raise ValueError(f"input_ids has {layout.num_video} video tokens but video_grid_thw is None")
    if video_grid_thw is not None:
        frames = int(video_grid_thw[0])
        expected = frames * layout.tokens_per_frame
        if expected != layout.num_video:
            raise ValueError(
                f"video_grid_thw {tuple(int(v) for v in video_grid_thw)} gives {frames} x "
                f"{layout.tokens_per_frame} = {expected} video tokens, but input_ids has {layout.num_video}"
            )


def _merged_rows(selection, audio_positions: Tensor, embeds: Tensor) -> tuple[Tensor, Tensor]:
    """Positions and new rows of the anchors (``[M]``, ``[M, D]``), M = 0 when nothing merges."""
    if selection is None or selection.merged is None:
        return (
            torch.zeros(0, dtype=torch.long, device=embeds.device),
            embeds.new_zeros((0, embeds.shape[1])),
        )
    return audio_positions[selection.anchor_index], selection.merged.to(embeds.dtype)


def _group_stats(
    layout: SequenceLayout,
    audio_runs: Tensor,
    video_groups: Tensor,
    audio_keep: Tensor,
    video_keep: Tensor,
    ratios: Tensor,
) -> GroupStats:
    """One row per index of the longer of the two run lists (see :class:`GroupStats`).

    ``audio_keep: [N_a]``, ``video_keep: [N_v]`` bool in token order; ``audio_runs``, ``video_groups``
    ``[R, 2]`` (the video side counts the tokens of each group's frames); ``ratios: [R_v]``.
    """
    device = audio_keep.device
    rows = max(len(layout.audio_runs), len(layout.video_runs))

    def padded(values: Tensor, dtype: torch.dtype) -> Tensor:
        out = torch.zeros(rows, dtype=dtype, device=device)
        out[: values.numel()] = values.to(dtype)
        return out

    guided = torch.zeros(rows, dtype=torch.bool, device=device)
    guided[: layout.num_guided] = True
    return GroupStats(
        audio_tokens=padded(audio_runs[:, 1] - audio_runs[:, 0], torch.long),
        audio_kept=padded(segment_sums(audio_keep, audio_runs), torch.long),
        video_tokens=padded(video_groups[:, 1] - video_groups[:, 0], torch.long),
        video_drop_ratio=padded(ratios, ratio_dtype(device)),
        video_kept=padded(segment_sums(video_keep, video_groups), torch.long),
        guided=guided,
    )
