"""The video processor's pixel work on the model's device (issue 19).

The stock fast video processor turns every sampled frame into float32 patches on the CPU:
rescale (``/ 255``), normalise (per-channel mean and std) and patchify (``[T, C, H, W]`` ->
``[patches, C * temporal_patch * patch * patch]``). For a 60 s 720p clip that is about 1.3-1.5 s on
2 cores, more than the whole model side of an answer on an H100. The processor accepts a
``device``: the uint8 frames are then moved to that device first (4x fewer bytes than the float32
patches) and the same torch operations run there, so the pixel values are those of the CPU path
within float tolerance and already sit where the vision encoder reads them.

The switch (:func:`preprocess_device`): environment variable ``OMNIZIP_PREPROCESS_DEVICE``

* ``auto`` (default): the model's device when it is a CUDA device, else the CPU (stock path);
* ``cpu``: always the stock CPU path;
* any torch device (``cuda``, ``cuda:1``): that device.

An adapter's ``prepare`` merges :func:`video_kwargs` into the video processor's keyword arguments.
"""

from __future__ import annotations

import os
from typing import Any

ENV_VAR = "OMNIZIP_PREPROCESS_DEVICE"
CHOICES = ("auto", "cpu")


def preprocess_device(model_device: Any, setting: str | None = None) -> str | None:
    """The device for the video processor's pixel work, or None for the stock CPU path.

    ``model_device``: where the model (its vision encoder) runs, e.g. ``"cuda:0"``.
    ``setting``: ``auto`` / ``cpu`` / a device; default: ``$OMNIZIP_PREPROCESS_DEVICE`` or ``auto``.
    """
    value = (setting if setting is not None else os.environ.get(ENV_VAR, "auto")).strip() or "auto"
    if value == "cpu":
        return None
    if value == "auto":
        device = str(model_device) if model_device is not None else "cpu"
        return device if device.startswith("cuda") and _cuda_available() else None
    return value


def video_kwargs(device: str | None) -> dict[str, Any]:
    """Keyword arguments that make the stock video processor do its pixel work on ``device``.

    Empty for None (the stock CPU path, bitwise unchanged).
    """
    return {} if device is None else {"device": device}


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
