"""The video processor's pixel work in one pass: uint8 frames straight to float32 patches (issue 28).

The stock video processor (transformers' ``Qwen2VLVideoProcessor``, also Qwen3-Omni's) makes several
full-size copies of the frames: channels first (uint8), then float32, normalised, then the patch
layout. Here the pairs of frames (temporal patches) go from the decoded ``[T, H, W, 3]`` uint8
array straight into their rows of one preallocated ``[T/2 * h * w, 3 * 2 * 14 * 14]`` float32 output:
the patchify permutation in uint8 into a small staging buffer, one contiguous conversion to float32,
then ``(x - mean') / std'`` per channel in place, :data:`STEP_BYTES` of output at a time (the
extra memory is the uint8 staging of one step).

Bitwise the stock values: the stock processor computes ``float32(x)`` then subtracts ``mean'`` and
divides by ``std'`` (torchvision ``normalize``, ``sub`` then ``div``), with ``mean' = tensor(mean) *
(1 / rescale_factor)`` and the same for ``std'`` (its fused rescale + normalise). Those are
elementwise IEEE operations, correctly rounded whatever the loop order, and patchify is a
permutation, so doing them per step on the patch layout gives the same bits. The frames must
already have the size the processor would resize them to (omnizip's media layer sizes them; the
resize is then a no-op): :class:`FusedVideoProcessor` checks that, and the first pair's values
against the stock call, at run time, and otherwise hands the call to the chunked stock path.

Measured (2 shared cores, other jobs running, the 60-s 720p clip's 120 frames of 1008x560, the
adapter's whole ``prepare`` with the audio features, interleaved, medians of 4): 1.08 s against
2.43 s for the stock processor over bounded chunks and 1.29 s for the uint8-first processor call
of the device path on the CPU.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["FusedVideoProcessor", "PatchLayout", "fused_pixel_values", "layout_of"]

logger = logging.getLogger(__name__)

#: float32 output bytes per step of the pass (its uint8 staging: a quarter of it). Few, large
#: operations: on the shared 2-core VM (60-s 720p clip, 120 frames of 1008x560, medians of 3) steps
#: of 16 / 64 / 256 MiB took 1.37 / 1.04 / 0.82 s against 1.17 s for the uint8-first processor call
#: of the device path on the CPU; pre-faulting the output with MAP_POPULATE made every size slower.
STEP_BYTES = 256 * 2**20
_SETTINGS = ("patch_size", "temporal_patch_size", "merge_size", "do_rescale", "rescale_factor", "do_normalize",
             "image_mean", "image_std")
#: Keyword arguments of a video processor call the fused pass understands (others: the stock call).
_KNOWN_KWARGS = frozenset({*_SETTINGS, "size", "fps", "do_sample_frames", "return_tensors", "do_convert_rgb",
                           "cap_pixels_per_frame", "do_resize", "resample", "device"})


class PatchLayout:
    """The patch geometry and normalisation constants of one video processor call.

    ``mean``/``std``: float32 ``[3]``, already scaled by ``1 / rescale_factor`` as the stock fused
    rescale + normalise scales them.
    """

    def __init__(self, patch: int, temporal: int, merge: int, mean: Any, std: Any) -> None:
        self.patch, self.temporal, self.merge = patch, temporal, merge
        self.mean, self.std = mean, std

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(grid_t, grid_h, grid_w)`` of ``frames`` frames of ``height x width`` (frames padded to pairs)."""
        return -(-frames // self.temporal), height // self.patch, width // self.patch

    def fits(self, height: int, width: int) -> bool:
        """Whether ``height x width`` is a whole number of merged patches (no crop, no resize)."""
        side = self.patch * self.merge
        return height > 0 and width > 0 and height % side == 0 and width % side == 0


def layout_of(video_processor: Any, kwargs: dict[str, Any]) -> PatchLayout | None:
    """The :class:`PatchLayout` of a call ``video_processor(videos, **kwargs)``, or None when the fused
    pass cannot reproduce it (unknown keyword arguments, rescale or normalise off, a per-frame pixel
    cap that depends on the frame count, frame sampling by the processor, another device)."""
    import torch

    if set(kwargs) - _KNOWN_KWARGS or kwargs.get("device") is not None:
        return None
    value = {name: kwargs[name] if kwargs.get(name) is not None else getattr(video_processor, name, None)
             for name in (*_SETTINGS, "cap_pixels_per_frame", "do_resize", "do_sample_frames")}
    if not (value["do_rescale"] and value["do_normalize"]) or value["cap_pixels_per_frame"]:
        return None
    if value["do_sample_frames"]:  # the processor would choose frames itself
        return None
    if any(value[name] is None for name in _SETTINGS) or value["do_resize"] is False:
        return None
    factor = 1.0 / value["rescale_factor"]  # the stock processor's arithmetic, in its order
    mean = torch.tensor(value["image_mean"]) * factor
    std = torch.tensor(value["image_std"]) * factor
    if mean.numel() != 3 or std.numel() != 3:
        return None
    return PatchLayout(int(value["patch_size"]), int(value["temporal_patch_size"]), int(value["merge_size"]),
                       mean.to(torch.float32), std.to(torch.float32))


def fused_pixel_values(frames: np.ndarray, layout: PatchLayout, *, out: Any = None,
                       pairs: range | None = None) -> Any:
    """Patches of ``frames [T, H, W, 3]`` uint8: float32 ``[ceil(T/tp) * gh * gw, 3 * tp * p * p]``.

    The rows and values of the stock processor's ``pixel_values_videos`` (``tp`` = temporal patch,
    ``p`` = patch, ``gh = H / p``, ``gw = W / p``; rows grid-step major, then merge blocks; a last
    odd frame is repeated, as the stock patchify pads). ``out``: the preallocated output to fill
    (allocated here when None). ``pairs``: only these temporal steps (the rest of ``out`` untouched).
    """
    import torch

    count, height, width, channels = (int(v) for v in frames.shape)
    if frames.dtype != np.uint8 or channels != 3 or not layout.fits(height, width) or count < 1:
        raise ValueError(f"fused preprocessing needs uint8 [T, H, W, 3] frames of whole merged patches, "
                         f"got {frames.dtype} {list(frames.shape)}")
    p, tp, m = layout.patch, layout.temporal, layout.merge
    grid_t, grid_h, grid_w = layout.grid(count, height, width)
    rows = grid_h * grid_w
    width_out = 3 * tp * p * p
    if out is None:
        out = torch.empty((grid_t * rows, width_out), dtype=torch.float32)
    frames = np.ascontiguousarray(frames)
    source = torch.from_numpy(frames) if frames.flags.writeable else torch.from_numpy(frames.copy())
    steps = pairs if pairs is not None else range(grid_t)
    whole = count // tp  # steps with all their frames (the last one may need its last frame repeated)
    per_chunk = max(1, STEP_BYTES // (rows * width_out * 4))
    staging = torch.empty((min(per_chunk, max(1, len(steps))) * rows, width_out), dtype=torch.uint8)
    t, stop = steps.start, steps.stop
    while t < stop:
        end = min(stop, t + per_chunk, whole) if t < whole else t + 1
        if t < whole:
            part = source[t * tp : end * tp]
        else:  # the last, partial step: its last frame repeated, as the stock patchify pads
            part = source[[min(t * tp + k, count - 1) for k in range(tp)]]
        _fill(out[t * rows : end * rows], staging[: (end - t) * rows], part, layout, grid_h, grid_w)
        t = end
    return out


def _fill(target: Any, staging: Any, part: Any, layout: PatchLayout, grid_h: int, grid_w: int) -> None:
    """``target [n * gh * gw, 3 * tp * p * p]`` float32 from ``part [n * tp, H, W, 3]`` uint8: the
    patchify permutation in uint8 into ``staging`` (same shape as ``target``, a quarter of the bytes),
    one contiguous conversion to float32, then ``sub_`` and ``div_`` per channel, in place."""
    p, tp, m = layout.patch, layout.temporal, layout.merge
    steps = part.shape[0] // tp
    # [n, tp, gh/m, m, p, gw/m, m, p, C] -> [n, gh/m, gw/m, m, m, C, tp, p, p]: merge blocks, then C, tp, p, p
    patches = part.view(steps, tp, grid_h // m, m, p, grid_w // m, m, p, 3).permute(0, 2, 5, 3, 6, 8, 1, 4, 7)
    staging.view(steps, grid_h // m, grid_w // m, m, m, 3, tp, p, p).copy_(patches)
    target.copy_(staging)
    values = target.view(-1, 3, tp * p * p)
    values.sub_(layout.mean.view(1, 3, 1)).div_(layout.std.view(1, 3, 1))


class FusedVideoProcessor:
    """Wraps a video processor: a call on uint8 frames ``[T, H, W, 3]`` runs :func:`fused_pixel_values`.

    The first pair is also run through the wrapped processor and compared bit for bit (and its
    grid with the frames' own size: no resize); any difference, unknown keyword arguments or
    other inputs hand the call to ``fallback`` (the chunked stock path), with a debug note. Every
    other attribute is the wrapped processor's.
    """

    def __init__(self, inner: Any, fallback: Any) -> None:
        self._inner = inner
        self._fallback = fallback
        self.last_path: str | None = None  # "fused" or "stock": what the last call ran

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_fallback"):  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __call__(self, videos: Any, **kwargs: Any) -> Any:
        from transformers import BatchFeature

        items = videos if isinstance(videos, (list, tuple)) else [videos]
        layout = layout_of(self._inner, kwargs)
        if layout is None or len(items) != 1 or not self._usable(items[0], layout):
            self.last_path = "stock"
            return self._fallback(videos, **kwargs)
        frames = items[0]
        grid = layout.grid(*(int(v) for v in frames.shape[:3]))
        out = self._first_pair_checked(frames, layout, kwargs)
        if out is None:
            self.last_path = "stock"
            return self._fallback(videos, **kwargs)
        fused_pixel_values(frames, layout, out=out, pairs=range(1, grid[0]))
        self.last_path = "fused"
        return BatchFeature(data={"pixel_values_videos": out, "video_grid_thw": _grid_tensor(grid)})

    @staticmethod
    def _usable(frames: Any, layout: PatchLayout) -> bool:
        return (isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.dtype == np.uint8
                and frames.shape[-1] == 3 and frames.shape[0] >= 1 and layout.fits(*frames.shape[1:3]))

    def _first_pair_checked(self, frames: np.ndarray, layout: PatchLayout, kwargs: dict[str, Any]) -> Any:
        """The output with its first pair filled, or None when it differs from the stock call's."""
        import torch

        count, height, width = (int(v) for v in frames.shape[:3])
        grid_t, grid_h, grid_w = layout.grid(count, height, width)
        head = frames[: layout.temporal]
        stock = self._inner([head], **kwargs)
        expected = [-(-len(head) // layout.temporal), grid_h, grid_w]
        if stock["video_grid_thw"].reshape(-1).tolist() != expected:
            logger.debug("fused preprocessing: the processor resizes %dx%d frames; stock path", width, height)
            return None
        rows = grid_h * grid_w
        out = torch.empty((grid_t * rows, 3 * layout.temporal * layout.patch ** 2), dtype=torch.float32)
        fused_pixel_values(head, layout, out=out[:rows])
        if not torch.equal(out[:rows], stock["pixel_values_videos"]):
            logger.debug("fused preprocessing differs from the stock processor on the first pair; stock path")
            return None
        return out


def _grid_tensor(grid: tuple[int, int, int]) -> Any:
    import torch

    return torch.tensor([list(grid)], dtype=torch.long)
