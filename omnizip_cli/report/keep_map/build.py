"""Building the keep map's data: from a keep plan and the media (arrays or tensors), or from a session.

:func:`keep_map_data_from_plan` reads which prompt positions were kept and turns them into
:class:`~.data.KeepMapData`; :func:`keep_map_for_session` gathers those pieces from a
:class:`~omnizip_cli.generation.Session`. NumPy (and, for a session without a plan, torch) is
imported inside the functions.

Assumptions about the input order (true for the Qwen2.5-Omni processor, interleaved or not):
the video tokens of ``input_ids``, taken in order, are the merged tokens of grid step 0 row by
row, then step 1, and so on (the audio tokens interleaved between 2-s chunks do not change that
relative order); the audio tokens, taken in order, are chronological from the start of the
audio, which starts with the file; the groups come in sequence order and each group's audio and
video tokens are the next ``audio_tokens`` / ``video_tokens`` of their kind (whole grid steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnizip_cli.errors import UsageError

from .data import GroupRow, KeepMapData, audio_token_spans, grid_step_spans

if TYPE_CHECKING:
    import numpy as np

__all__ = ["keep_map_data_from_plan", "keep_map_for_session"]


def _numpy(value: Any) -> np.ndarray:
    """A NumPy array from a NumPy array, a list or a (CPU or device) torch tensor."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def keep_map_data_from_plan(
    input_ids: Any,
    keep: Any,
    *,
    audio_token_id: int,
    video_token_id: int,
    merged_positions: Any = None,
    video_grid_thw: Any = None,
    spatial_merge_size: int = 2,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    frames: Any = None,
    frame_times: Any = None,
    audio: Any = None,
    sample_rate: int = 16000,
    audio_tokens_per_second: float = 25.0,
    audio_token_times: Any = None,
    group_rows: Sequence[Mapping[str, Any]] | None = None,
    title: str = "",
    setting: str = "",
    model: str = "",
    is_random_model: bool = False,
) -> KeepMapData:
    """Build :class:`KeepMapData` from a keep plan and the media (tensors or arrays, batch size 1).

    Parameters
    ----------
    input_ids:
        ``[L]`` (or ``[1, L]``) token ids of the uncompressed prompt.
    keep:
        ``[L]`` bool keep mask over the same positions (``KeepPlan.keep``; all True for no compression).
    audio_token_id, video_token_id:
        The placeholder ids (``model.config.audio_token_id`` / ``video_token_id``).
    merged_positions:
        ``[M]`` sequence positions of the audio anchors (``KeepPlan.merged_positions``), or None.
    video_grid_thw:
        ``(T, H, W)`` of the single video **in patches**, as the processor gives it (a tensor of 3
        values or ``[[T, H, W]]`` is fine); None without video. The token grid is
        ``(T, H // spatial_merge_size, W // spatial_merge_size)``.
    spatial_merge_size, patch_size, temporal_patch_size:
        The vision encoder's (2, 14, 2 for Qwen2.5-Omni; Qwen3-Omni has patch 16): one token covers
        ``spatial_merge_size * patch_size`` input pixels square and ``temporal_patch_size`` frames.
    frames, frame_times:
        ``[T, H, W, 3]`` uint8 sampled frames and their ``[T]`` seconds (``DecodedMedia``'s), or None.
    audio, sample_rate:
        The waveform the audio tokens were computed from (``DecodedMedia.audio``, 16 kHz), or None.
    audio_tokens_per_second, audio_token_times:
        The audio tokens are evenly spaced at this rate (25 for Qwen2.5-Omni) unless
        ``audio_token_times`` (``[N_a, 2]`` start/end seconds of each token) says otherwise.
    group_rows:
        ``GroupStats.to_rows()``: one dict per time group with ``audio_tokens, audio_kept,
        video_tokens, video_kept, video_drop_ratio, guided``; None or empty leaves the group lanes out.
    title, setting, model, is_random_model:
        For the title (``title`` is usually the file name).

    Raises ``ValueError`` when the pieces disagree (lengths, token counts against the grid or the
    groups). The input order it assumes is in the module docstring.
    """
    import numpy as np

    ids = _numpy(input_ids).reshape(-1)
    keep_mask = _numpy(keep).astype(bool).reshape(-1)
    if keep_mask.size != ids.size:
        raise ValueError(f"keep has {keep_mask.size} entries but input_ids has {ids.size}")
    video_positions = np.flatnonzero(ids == video_token_id)
    audio_positions = np.flatnonzero(ids == audio_token_id)
    grid = _token_grid(video_positions.size, video_grid_thw, spatial_merge_size)
    video_keep = keep_mask[video_positions] if grid is not None else None

    merged = np.zeros(0, dtype=np.int64) if merged_positions is None else _numpy(merged_positions).reshape(-1)
    if audio_token_times is None:
        token_times = audio_token_spans(audio_positions.size, audio_tokens_per_second)
    else:
        token_times = _numpy(audio_token_times).astype(np.float64).reshape(-1, 2)

    frames_array = None if frames is None or grid is None else _numpy(frames)
    times_array = None if frame_times is None or grid is None else _numpy(frame_times).astype(np.float64)
    step_spans = grid_step_spans(times_array, grid[0], temporal_patch_size) if grid else None
    groups = _group_rows(group_rows or (), token_times, step_spans, grid[1] * grid[2] if grid else 0)
    _check_group_totals(groups, video_positions.size, audio_positions.size)
    return KeepMapData(
        title=title,
        setting=setting,
        frames=frames_array,
        frame_times=times_array,
        grid=grid,
        temporal_patch=temporal_patch_size,
        token_pixels=spatial_merge_size * patch_size,
        video_keep=video_keep,
        audio=None if audio is None else _numpy(audio),
        sample_rate=sample_rate,
        audio_kept=keep_mask[audio_positions],
        audio_anchor=np.isin(audio_positions, merged),
        audio_token_times=token_times,
        groups=groups,
        model=model,
        is_random_model=is_random_model,
        text_tokens=int(ids.size - video_positions.size - audio_positions.size),
    )


def _token_grid(video_tokens: int, video_grid_thw: Any, spatial_merge_size: int) -> tuple[int, int, int] | None:
    """``(grid_t, grid_h, grid_w)`` in merged tokens from the processor's grid in patches; None without video.

    Raises ``ValueError`` when there are video tokens but no grid, or the grid's token count differs.
    """
    if not video_tokens:
        return None
    if video_grid_thw is None:
        raise ValueError(f"input_ids has {video_tokens} video tokens but video_grid_thw is None")
    values = [int(v) for v in _numpy(video_grid_thw).reshape(-1).tolist()]
    if len(values) != 3:
        raise ValueError(f"video_grid_thw must hold (T, H, W) of one video, got {values}")
    grid = (values[0], values[1] // spatial_merge_size, values[2] // spatial_merge_size)
    if grid[0] * grid[1] * grid[2] != video_tokens:
        raise ValueError(
            f"video_grid_thw {tuple(values)} gives {grid[0] * grid[1] * grid[2]} tokens, "
            f"but input_ids has {video_tokens}"
        )
    return grid


def _check_group_totals(groups: Sequence[GroupRow], video_tokens: int, audio_tokens: int) -> None:
    """Raise ``ValueError`` when the groups (if any) do not hold exactly the prompt's audio and video tokens."""
    if not groups:
        return
    video_sum = sum(g.video_tokens for g in groups)
    audio_sum = sum(g.audio_tokens for g in groups)
    if video_sum != video_tokens or audio_sum != audio_tokens:
        raise ValueError(
            f"the groups hold {video_sum} video and {audio_sum} audio tokens, input_ids "
            f"{video_tokens} and {audio_tokens}"
        )


def _group_rows(
    rows: Sequence[Mapping[str, Any]],
    audio_token_times: np.ndarray,
    step_spans: np.ndarray | None,
    tokens_per_step: int,
) -> tuple[GroupRow, ...]:
    """Attach time spans to ``GroupStats.to_rows()`` rows (tokens taken in order, see the builder)."""
    out: list[GroupRow] = []
    audio_at = video_at = 0
    for index, row in enumerate(rows):
        audio_tokens, video_tokens = int(row["audio_tokens"]), int(row["video_tokens"])
        spans: list[tuple[float, float]] = []
        if audio_tokens:
            if audio_at + audio_tokens > audio_token_times.shape[0]:
                raise ValueError(f"group {index} runs past the last audio token")
            part = audio_token_times[audio_at : audio_at + audio_tokens]
            spans.append((float(part[:, 0].min()), float(part[:, 1].max())))
        if video_tokens:
            if step_spans is None or not tokens_per_step or video_tokens % tokens_per_step:
                raise ValueError(f"group {index} has {video_tokens} video tokens, not whole grid steps")
            first, last = video_at // tokens_per_step, (video_at + video_tokens) // tokens_per_step
            if last > step_spans.shape[0]:
                raise ValueError(f"group {index} runs past the last grid step")
            spans.append((float(step_spans[first, 0]), float(step_spans[last - 1, 1])))
        audio_at += audio_tokens
        video_at += video_tokens
        start = min((s for s, _ in spans), default=0.0)
        end = max((e for _, e in spans), default=start)
        out.append(
            GroupRow(
                start_s=start,
                end_s=end,
                audio_tokens=audio_tokens,
                audio_kept=int(row["audio_kept"]),
                video_tokens=video_tokens,
                video_kept=int(row["video_kept"]),
                video_drop_ratio=float(row["video_drop_ratio"]),
                guided=bool(row["guided"]),
            )
        )
    return tuple(out)


def keep_map_for_session(session: Any, *, title: str | None = None) -> KeepMapData:
    """:class:`KeepMapData` of what a :class:`~omnizip_cli.generation.Session` gives the model.

    Needs the decoded media (a session opened on a file or on decoded media). Without compression
    every token is drawn as kept.
    """
    from ..payload import compression_label

    if session.media is None:
        raise UsageError("a keep map needs the decoded media: open the session on a file")
    loaded = session.loaded
    adapter = loaded.adapter
    ids = adapter.token_ids(loaded.model)
    geometry = adapter.vision_geometry(loaded.model)
    encoded = session.encoded
    plan = session.plan
    media = session.media
    keep = plan.keep if plan is not None else None
    if keep is None:
        import torch

        keep = torch.ones(encoded.length, dtype=torch.bool)
    summary = media.summary
    return keep_map_data_from_plan(
        encoded.input_ids[0],
        keep,
        audio_token_id=ids.audio,
        video_token_id=ids.video,
        merged_positions=plan.merged_positions if plan is not None else None,
        video_grid_thw=encoded.video_grid_thw,
        spatial_merge_size=geometry.spatial_merge,
        patch_size=geometry.patch_size,
        temporal_patch_size=geometry.temporal_patch,
        frames=media.frames,
        frame_times=media.frame_times,
        audio=media.audio,
        audio_tokens_per_second=adapter.audio_tokens_per_second,
        group_rows=session.group_rows or None,
        title=title if title is not None else Path(summary.path).name,
        setting=compression_label(session.config.to_dict() if session.config is not None else None),
        model=loaded.name,
        is_random_model=loaded.is_tiny,
    )
