"""Versions and devices: what a measurement ran on."""

from __future__ import annotations

import platform
from typing import Any

PACKAGES = ("torch", "torchvision", "transformers", "av", "numpy", "pillow")


def versions() -> dict[str, str | None]:
    """omnizip, Python and the main packages' versions."""
    from .. import __version__
    from ..versions import installed_version

    found: dict[str, str | None] = {"omnizip": __version__, "python": platform.python_version()}
    for package in PACKAGES:
        found[package] = installed_version(package)
    return found


def device_info(device: str) -> dict[str, Any]:
    """The host and, on a GPU, the device's name, memory and CUDA version."""
    import os

    import torch

    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_memory_bytes=int(props.total_memory),
            cuda=torch.version.cuda,
        )
    return info


def environment_notes(is_random_model: bool, device: str) -> list[str]:
    """Why timings may not be representative (empty when they are)."""
    notes = []
    if is_random_model:
        notes.append("tiny random model, so the figures are small and say nothing about a real checkpoint")
    if not device.startswith("cuda"):
        notes.append("CPU run, not representative of GPU timings and memory")
    return notes
