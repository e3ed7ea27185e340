"""Video preprocessing in bounded chunks of frames, with a memory check before the work starts.

The stock omni processor hands all sampled frames to its video processor at once, which
converts them to float32, resizes, rescales and normalises, and patchifies them, each step a new
full-size float32 copy: a 400-s 1280x720 clip passed 18 GB of RAM (about 12 MB per frame per copy).
Here the video processor runs over chunks of at most :data:`CHUNK_BYTES` of float32 frames, and
each chunk's patches are copied straight into one preallocated output tensor. The peak is then the
output itself (``4 * T * H * W * 3`` bytes: what the model needs anyway) plus a few chunk-sized
temporaries, instead of several copies of the output.

Bitwise identical: the video processor's steps are per frame (resize, rescale, normalise) or per
pair of frames (temporal patches of 2), and patchify orders the rows grid-step major, so chunks of
an even number of frames give the same rows, in the same order, as one call (``tests/model/test_preprocess.py``
checks ``torch.equal`` on ``pixel_values_videos``, ``video_grid_thw`` and ``video_second_per_grid``).

By default the video processor's call runs in one pass instead (:mod:`.fused_preprocess`: uint8
frames straight into the preallocated float32 patches, bitwise the same); the chunked stock call
is where that pass cannot reproduce the call (frames the processor resizes, other settings) and
with ``OMNIZIP_PREPROCESS_DEVICE=stock``. The memory check covers both.

Use::

    processor = bounded_processor(processor, frames)  # raises OutOfMemory if it cannot fit
    tensors = processor(text=..., videos=[frames], ...)

:func:`bounded_processor` returns a shallow copy of the processor whose ``video_processor`` is a
:class:`~.fused_preprocess.FusedVideoProcessor` over a :class:`ChunkedVideoProcessor` (the original
processor is not modified), after checking :func:`estimate_peak_bytes` against :func:`available_bytes`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutOfMemory

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_COPIES",
    "ChunkedVideoProcessor",
    "PreprocessEstimate",
    "available_bytes",
    "bounded_processor",
    "check_fits",
    "chunk_frames_for",
    "estimate_peak_bytes",
    "fused_enabled",
    "process_video_in_chunks",
]

#: float32 bytes of frames per chunk: 256 MiB (24 frames of 1280x720, 102 frames of 336x644).
CHUNK_BYTES = 256 * 2**20
#: Chunk-sized float32 copies alive at once inside the video processor (conversion, resize,
#: normalisation, patchify, its concatenation) plus slack: an upper bound, measured about 4.
CHUNK_COPIES = 6
#: Share of the available memory preprocessing may plan to use (the rest: allocator slack, the
#: audio features, the rest of the program).
USABLE_SHARE = 0.9
_F32 = 4
_TEMPORAL_PATCH = 2


@dataclass(frozen=True)
class PreprocessEstimate:
    """Host memory preprocessing needs (bytes) and what is available (None: unknown)."""

    frames: int
    height: int
    width: int
    chunk_frames: int
    output_bytes: int
    peak_bytes: int
    available_bytes: int | None

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.peak_bytes <= USABLE_SHARE * self.available_bytes


def chunk_frames_for(height: int, width: int, *, chunk_bytes: int = CHUNK_BYTES,
                     temporal_patch: int = _TEMPORAL_PATCH) -> int:
    """Frames per chunk: a multiple of ``temporal_patch`` whose float32 pixels fit ``chunk_bytes`` (>= one patch)."""
    per_frame = _F32 * 3 * max(1, height) * max(1, width)
    frames = chunk_bytes // per_frame
    return max(temporal_patch, frames - frames % temporal_patch)


def estimate_peak_bytes(frames: int, height: int, width: int, chunk_frames: int) -> int:
    """Extra host bytes of chunked preprocessing: the float32 output plus the chunk temporaries.

    ``4 * 3 * H * W * (T + CHUNK_COPIES * min(chunk, T))``. The uint8 frames are not counted (they
    are already in memory).
    """
    pixels = 3 * height * width
    return _F32 * pixels * (frames + CHUNK_COPIES * min(chunk_frames, frames))


def available_bytes() -> int | None:
    """Memory this process can still take: ``MemAvailable``, lowered to the cgroup's limit left.

    None where neither can be read (not Linux).
    """
    values = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            values.append(max(0, int(limit) - int(used)))
    except (OSError, ValueError):
        pass
    return min(values) if values else None


def check_fits(frames: int, height: int, width: int, *, chunk_frames: int | None = None,
               available: int | None = None) -> PreprocessEstimate:
    """Estimate preprocessing memory for ``frames`` frames of ``height x width``; raise if it cannot fit.

    ``available`` defaults to :func:`available_bytes`. Raises :class:`OutOfMemory` (one line, with
    what to lower) when the estimate exceeds 90 % of it.
    """
    chunk = chunk_frames or chunk_frames_for(height, width)
    estimate = PreprocessEstimate(
        frames=frames,
        height=height,
        width=width,
        chunk_frames=chunk,
        output_bytes=_F32 * 3 * height * width * frames,
        peak_bytes=estimate_peak_bytes(frames, height, width, chunk),
        available_bytes=available_bytes() if available is None else available,
    )
    if not estimate.fits:
        raise OutOfMemory(
            f"preprocessing {frames} frames of {width}x{height} needs about {estimate.peak_bytes / 1e9:.1f} GB of RAM"
            f" ({estimate.output_bytes / 1e9:.1f} GB of float32 pixels for the model) but only"
            f" {estimate.available_bytes / 1e9:.1f} GB is available",
            hint="lower --max-frames or --fps, or --max-pixels / --total-pixels (smaller frames)",
        )
    return estimate


def process_video_in_chunks(video_processor: Any, video: np.ndarray, chunk_frames: int,
                            **kwargs: Any) -> dict[str, Any]:
    """Run ``video_processor`` over ``video [T, H, W, 3]`` in chunks of ``chunk_frames`` frames.

    Returns ``{"pixel_values_videos": [N, C] float32, "video_grid_thw": [1, 3] long}`` equal (bitwise)
    to ``video_processor([video], **kwargs)``. ``chunk_frames`` is rounded down to a multiple of the
    processor's temporal patch size (at least one patch); the output tensor is allocated once, after
    the first chunk shows its row width.
    """
    import torch

    temporal = int(getattr(video_processor, "temporal_patch_size", _TEMPORAL_PATCH) or _TEMPORAL_PATCH)
    total = int(video.shape[0])
    step = max(temporal, chunk_frames - chunk_frames % temporal)
    if total <= step or total % temporal:
        # One chunk, or a count the processor pads itself (the last frame repeated): one call.
        out = video_processor([video], **kwargs)
        return {"pixel_values_videos": out["pixel_values_videos"], "video_grid_thw": out["video_grid_thw"]}
    pixel_values = None
    grid_t = 0
    grid_hw: tuple[int, int] | None = None
    row = 0
    for start in range(0, total, step):
        part = video_processor([video[start : start + step]], **kwargs)
        values, grid = part["pixel_values_videos"], part["video_grid_thw"]
        t, h, w = (int(v) for v in grid.reshape(-1).tolist())
        if grid_hw is None:
            grid_hw = (h, w)
            rows_per_step = values.shape[0] // t
            pixel_values = torch.empty((rows_per_step * (total // temporal), values.shape[1]), dtype=values.dtype)
        elif (h, w) != grid_hw:
            raise ValueError(f"chunks of one video gave different grids: {grid_hw} then {(h, w)}")
        pixel_values[row : row + values.shape[0]].copy_(values)
        row += values.shape[0]
        grid_t += t
        del part, values
    if row != pixel_values.shape[0]:
        raise ValueError(f"chunked preprocessing filled {row} of {pixel_values.shape[0]} rows")
    video_grid_thw = torch.tensor([[grid_t, grid_hw[0], grid_hw[1]]], dtype=torch.long)
    return {"pixel_values_videos": pixel_values, "video_grid_thw": video_grid_thw}


class ChunkedVideoProcessor:
    """Wraps a video processor: calls on one video run in chunks (:func:`process_video_in_chunks`).

    Every attribute but the call is the wrapped processor's (``temporal_patch_size``, ``merge_size``...).
    Several videos in one call are processed one after the other and concatenated.
    """

    def __init__(self, inner: Any, chunk_frames: int) -> None:
        self._inner = inner
        self.chunk_frames = chunk_frames

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __call__(self, videos: Any, **kwargs: Any) -> Any:
        import torch
        from transformers import BatchFeature

        items = videos if isinstance(videos, (list, tuple)) else [videos]
        if not all(isinstance(v, np.ndarray) and v.ndim == 4 for v in items):
            return self._inner(videos, **kwargs)  # not frames in memory: the stock call
        parts = [process_video_in_chunks(self._inner, v, self.chunk_frames, **kwargs) for v in items]
        if len(parts) == 1:
            data = parts[0]
        else:
            data = {
                "pixel_values_videos": torch.cat([p["pixel_values_videos"] for p in parts]),
                "video_grid_thw": torch.cat([p["video_grid_thw"] for p in parts]),
            }
        return BatchFeature(data=data)


def fused_enabled(setting: str | None = None) -> bool:
    """Whether the CPU path runs the one-pass pixel work (:mod:`.fused_preprocess`): yes unless
    ``$OMNIZIP_PREPROCESS_DEVICE`` (or ``setting``) is ``stock``."""
    value = setting if setting is not None else os.environ.get("OMNIZIP_PREPROCESS_DEVICE", "auto")
    return value.strip().lower() != "stock"


def bounded_processor(processor: Any, frames: np.ndarray | None, *, chunk_bytes: int = CHUNK_BYTES,
                      available: int | None = None, fused: bool | None = None) -> Any:
    """The processor to call for ``frames [T, H, W, 3]``: a shallow copy whose video processor runs the
    one-pass pixel work (:class:`~.fused_preprocess.FusedVideoProcessor`, bitwise the stock values)
    or, where that cannot reproduce the call, the stock one in chunks, after checking that it fits
    in memory (:func:`check_fits`, raises :class:`OutOfMemory`).

    ``fused``: False for the chunked stock path only (default :func:`fused_enabled`). Without
    frames, ``processor`` itself. The input ``processor`` is not modified.
    """
    from .fused_preprocess import FusedVideoProcessor

    if frames is None:
        return processor
    total, height, width = (int(v) for v in frames.shape[:3])
    chunk = chunk_frames_for(height, width, chunk_bytes=chunk_bytes)
    check_fits(total, height, width, chunk_frames=chunk, available=available)
    bounded = copy.copy(processor)
    chunked = ChunkedVideoProcessor(processor.video_processor, chunk)
    use_fused = fused_enabled() if fused is None else fused
    bounded.video_processor = FusedVideoProcessor(processor.video_processor, chunked) if use_fused else chunked
    return bounded
