"""``--device-map``: the thinker spread over several devices (or offloaded) by accelerate's big-model
loading, through transformers' ``from_pretrained(device_map=...)``.

A map is ``auto``, ``balanced`` or ``sequential`` (accelerate fills the visible GPUs, then the CPU,
then the disk), or a JSON object from module names of the thinker to devices (``0``, ``"cuda:1"``,
``"cpu"``, ``"disk"``), given inline or as a ``.json`` file, e.g.::

    {"model.audio_tower": 0, "model.visual": 0, "model.language_model.embed_tokens": 0,
     "model.language_model.layers.0": 0, "model.language_model.layers.1": 1,
     "model.language_model.norm": 1, "model.language_model.rotary_emb": 1, "lm_head": 1}

What omnizip needs of a split thinker: its inputs go to the token embedding's device (the encoders'
and the language model's layers are moved there and back by accelerate's hooks), so the embedding
must sit on a real device, not on the disk or offloaded (checked after the load, one-line error).
The static-cache decoder needs the language model on one device: a split one decodes with the
eager loop (the report's decoder line says why: :func:`placement_blocker`).

Nothing here imports torch or transformers at module level (``omnizip --help`` stays instant).
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UsageError

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "sequential")
_DEVICE_RE = re.compile(r"^(cpu|disk|cuda|cuda:\d+|mps)$")


def parse_device_map(text: str) -> str | dict[str, int | str]:
    """A strategy name, or the JSON map (inline or a ``.json`` file), checked; :class:`UsageError` otherwise."""
    value = text.strip()
    if value in DEVICE_MAP_STRATEGIES:
        return value
    source = "--device-map"
    if not value.startswith("{"):
        path = Path(value).expanduser()
        if not (value.endswith(".json") and path.is_file()):
            raise UsageError(f"--device-map must be {', '.join(DEVICE_MAP_STRATEGIES)}, a JSON object or a .json "
                             f"file, not {text!r}")
        try:
            value = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--device-map {text}: cannot read it ({exc})") from None
        source = f"--device-map {text}"
    try:
        mapping = json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise UsageError(f"{source} must be a JSON object from module names to devices")
    checked: dict[str, int | str] = {}
    for module, device in mapping.items():
        if isinstance(device, bool) or not (
            (isinstance(device, int) and device >= 0) or (isinstance(device, str) and _DEVICE_RE.match(device))
        ):
            raise UsageError(f"{source}: the device of {module!r} must be a GPU index, cuda:N, cpu or disk, "
                             f"not {device!r}")
        checked[str(module)] = device
    return checked


def check_devices_exist(device_map: str | dict[str, int | str]) -> None:
    """A map naming a GPU that is not there is a usage error (before anything loads)."""
    if not isinstance(device_map, dict):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for module, device in device_map.items():
        index = device if isinstance(device, int) else (
            int(device[5:]) if isinstance(device, str) and device.startswith("cuda:") else (0 if device == "cuda" else None))
        if index is not None and index >= count:
            raise UsageError(f"--device-map puts {module!r} on {device!r} but only {count} CUDA device(s) are visible")


_OFFLOAD_FOLDERS: list[str] = []


def _remove_offload_folders() -> None:
    for folder in _OFFLOAD_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def from_pretrained_kwargs(device_map: str | dict[str, int | str]) -> dict[str, Any]:
    """``device_map`` and an ``offload_folder`` (a temporary folder, removed at exit) for weights
    that a map puts, or a strategy must put, on the disk."""
    folder = tempfile.mkdtemp(prefix="omnizip-offload-")
    if not _OFFLOAD_FOLDERS:
        atexit.register(_remove_offload_folders)
    _OFFLOAD_FOLDERS.append(folder)
    return {"device_map": device_map, "offload_folder": folder}


def _label(device: Any) -> str:
    if isinstance(device, int):
        return f"cuda:{device}"
    return str(device)


def weights_per_device(model: Any) -> dict[str, int]:
    """Bytes of parameters and buffers per device label (``cuda:0``, ``cpu``, ``disk``), from the
    model's ``hf_device_map`` when it was split, else from where the tensors are."""
    from .quantization import tensor_bytes

    placement = getattr(model, "hf_device_map", None)
    totals: dict[str, int] = {}
    if isinstance(placement, dict) and placement:
        for name, device in placement.items():
            module = model.get_submodule(name) if name else model
            size = sum(tensor_bytes(t) for t in (*module.parameters(), *module.buffers()))
            totals[_label(device)] = totals.get(_label(device), 0) + int(size)
        return totals
    for tensor in (*model.parameters(), *model.buffers()):
        label = str(tensor.device)
        totals[label] = totals.get(label, 0) + tensor_bytes(tensor)
    return totals


def input_device(model: Any, embedding: Any) -> str:
    """Where inputs go: the token embedding's device. A map that offloads the embedding (its
    weight on ``meta``: disk, or the CPU under a GPU) is refused in one line."""
    device = embedding.weight.device
    if device.type == "meta":
        raise ModelLoadError(
            "--device-map offloads the token embedding (model.language_model.embed_tokens): omnizip needs it on a "
            "device (a GPU index or cpu), where the inputs are placed")
    return str(device)


def spans_devices(weights: dict[str, int]) -> bool:
    return len(weights) > 1


def describe_placement(weights: dict[str, int]) -> str:
    """``cuda:0 7.10 GB + cuda:1 8.30 GB`` (weights per device)."""
    def size(value: int) -> str:
        return f"{value / 1e9:.2f} GB" if value >= 1e8 else f"{value / 1e6:.2f} MB"

    return " + ".join(f"{device} {size(value)}" for device, value in weights.items())


def cleanup_offload(folder: str) -> None:
    """Remove one offload folder now (a failed load)."""
    if folder in _OFFLOAD_FOLDERS:
        _OFFLOAD_FOLDERS.remove(folder)
    shutil.rmtree(folder, ignore_errors=True)
