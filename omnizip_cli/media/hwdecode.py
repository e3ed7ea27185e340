"""Hardware video decoding (NVDEC through PyAV's CUDA hwaccel), opt-in, with the CPU as fallback (issue 28).

``OMNIZIP_HW_DECODE``:

* ``off`` (default): the CPU decoders (:mod:`.video`, :mod:`.segments`);
* ``cuda`` (or ``nvdec``, ``auto``, ``on``): PyAV opens the file with
  ``HWAccel("cuda", allow_software_fallback=True)``: NVDEC decodes, the frames come back to host
  memory (NV12) and are scaled and converted as usual. Where PyAV is older than 14, its FFmpeg has
  no CUDA device type, there is no NVIDIA driver, or opening fails, decoding stays on the CPU with a
  one-line note (logged once).

Off by default because it is not measured yet: hardware decoders may round differently from the
CPU ones, and the GPU suite has to show the frames within a documented tolerance and the time won
before it is turned on where present. Nothing here runs without the variable set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omnizip_cli.errors import UsageError

__all__ = ["ENV_VAR", "accel_with_note", "cuda_driver_present", "hardware_accel", "note_once"]

logger = logging.getLogger(__name__)

ENV_VAR = "OMNIZIP_HW_DECODE"
_ON = frozenset({"cuda", "nvdec", "auto", "on", "1"})
_OFF = frozenset({"", "off", "0", "no", "cpu", "none"})
_NOTED: set[str] = set()


def cuda_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (``/proc/driver/nvidia/version``), without importing torch."""
    return Path("/proc/driver/nvidia/version").exists()


def hardware_accel(setting: str | None = None, *, driver: bool | None = None) -> tuple[Any, str | None]:
    """``(hwaccel or None, note or None)`` for ``setting`` (default ``$OMNIZIP_HW_DECODE``, else ``off``).

    The hwaccel is a PyAV ``HWAccel`` for :func:`~omnizip_cli.media.container.open_container`; None
    means the CPU, with ``note`` saying why when hardware decoding was asked for. ``driver``: whether
    an NVIDIA driver is present (default :func:`cuda_driver_present`). Raises :class:`UsageError`
    (one line) for a value it does not know.
    """
    value = (setting if setting is not None else os.environ.get(ENV_VAR, "off")).strip().lower()
    if value in _OFF:
        return None, None
    if value not in _ON:
        raise UsageError(f"{ENV_VAR} must be off or cuda (got {value!r})")
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:
        return None, "hardware decoding needs PyAV 14 or later; decoding on the CPU"
    if "cuda" not in hwdevices_available():
        return None, "this PyAV's FFmpeg has no CUDA decoder; decoding on the CPU"
    if not (cuda_driver_present() if driver is None else driver):
        return None, "no NVIDIA driver for hardware decoding; decoding on the CPU"
    return HWAccel(device_type="cuda", allow_software_fallback=True), None


def accel_with_note() -> Any:
    """:func:`hardware_accel` for ``$OMNIZIP_HW_DECODE``, its note (if any) logged once."""
    accel, note = hardware_accel()
    if note is not None:
        note_once(note)
    return accel


def note_once(note: str) -> None:
    """Log ``note`` as a warning, once per process."""
    if note not in _NOTED:
        _NOTED.add(note)
        logger.warning("%s", note)
