"""The video processor's pixel work on the model's device (issue 19).

The stock fast video processor turns every sampled frame into float32 patches on the CPU:
rescale (``/ 255``), normalise (per-channel mean and std) and patchify (``[T, C, H, W]`` ->
``[patches, C * temporal_patch * patch * patch]``). For a 60 s 720p clip that is about 1.3-1.5 s on
2 cores, more than the whole model side of an answer on an H100. The processor accepts a
``device``: the uint8 frames are then moved to that device first (4x fewer bytes than the float32
patches) and the torch operations run there, so the pixel values already sit where the vision
encoder reads them.

The switch (:func:`preprocess_device`): environment variable ``OMNIZIP_PREPROCESS_DEVICE``

* ``auto`` (default): the model's CUDA device; on the CPU the one-pass pixel work of
  :mod:`omnizip_cli.models.fused_preprocess` (uint8 frames straight into the float32 patch layout,
  bitwise the stock values, 3x faster than the stock processor on a 60 s 720p clip), after the
  host-memory check of :mod:`omnizip_cli.models.preprocess`. ``OMNIZIP_PREPROCESS_DEVICE=cpu``
  chooses the uint8-first processor call below on the CPU instead, without the memory bound;
* ``stock``: the stock processor path (over bounded chunks of frames), no fused pass;
* any torch device (``cpu``, ``cuda``, ``cuda:1``): that device.

An adapter's ``prepare`` merges :func:`video_kwargs` into the video processor's keyword arguments
and calls :func:`finish_pixel_values` on the processor's output. The device path patchifies the
frames in uint8 and converts to float32 once, on the patches (the stock path converts whole frames
to float32, then copies them into patches): on the device that is one small upload and two
passes; the tensors are those of the stock path within float tolerance (tests check it).
"""

from __future__ import annotations

import os
from typing import Any

ENV_VAR = "OMNIZIP_PREPROCESS_DEVICE"


def preprocess_device(model_device: Any, setting: str | None = None) -> str | None:
    """The device for the video processor's pixel work, or None for the stock CPU path.

    ``model_device``: where the model (its vision encoder) runs, e.g. ``"cuda:0"``.
    ``setting``: ``auto`` / ``stock`` / a device; default: ``$OMNIZIP_PREPROCESS_DEVICE`` or ``auto``.
    """
    value = (setting if setting is not None else os.environ.get(ENV_VAR, "auto")).strip() or "auto"
    if value == "auto":
        device = str(model_device) if model_device is not None else "cpu"
        if device.startswith("cuda") and _cuda_available():
            return device
        return None  # the CPU: the bounded, memory-checked chunked path (omnizip_cli.models.preprocess)
    if value == "stock":
        return None
    return value


def video_kwargs(device: str | None) -> dict[str, Any]:
    """Keyword arguments of the video processor for the pixel work on ``device``.

    Empty for None (the stock CPU path, unchanged). Otherwise the processor moves the uint8 frames
    to ``device`` and patchifies them there **in uint8** (rescale and normalise off); then
    :func:`finish_pixel_values` converts the patches to float32 and normalises them on the device,
    with the stock processor's fused arithmetic.
    """
    return {} if device is None else {"device": device, "do_rescale": False, "do_normalize": False}


def finish_pixel_values(tensors: dict[str, Any], video_processor: Any, device: str | None) -> None:
    """Rescale and normalise the uint8 patches that :func:`video_kwargs` left in ``tensors`` (in place).

    The arithmetic is the stock processor's: mean and std scaled by ``1 / rescale_factor`` in
    float32, then ``(x - mean) / std`` per channel, here on the patch layout
    ``[patches, channels * temporal_patch * patch * patch]`` (channels first). No-op when
    ``device`` is None or the pixel values are already float.
    """
    import torch

    pixels = tensors.get("pixel_values_videos")
    if device is None or pixels is None or pixels.is_floating_point():
        return
    processor = video_processor
    factor = 1.0 / float(processor.rescale_factor)
    mean = torch.tensor(processor.image_mean, device=pixels.device) * factor
    std = torch.tensor(processor.image_std, device=pixels.device) * factor
    channels = mean.numel()
    count = pixels.shape[0]
    values = pixels.reshape(count, channels, -1).to(torch.float32)
    values.sub_(mean.view(1, channels, 1)).div_(std.view(1, channels, 1))
    tensors["pixel_values_videos"] = values.reshape(count, -1)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
