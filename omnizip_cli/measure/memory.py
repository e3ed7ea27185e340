"""One memory probe and one vocabulary of memory kinds for every command.

Two kinds, named the same in the report, ``--json`` and ``profile``:

``cuda_allocated``
    ``torch.cuda.max_memory_allocated`` on the model's GPU (weights, activations, caches).
``cpu_rss``
    The resident memory of the **whole process** (weights, Python, the runtime). Its peak is the
    kernel's high-water mark (Linux ``VmHWM``), which :class:`MemoryProbe` resets per measured run
    where the kernel allows (``/proc/self/clear_refs``); elsewhere it is the process's lifetime peak
    (``ru_maxrss``), which can only grow.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

CUDA_ALLOCATED = "cuda_allocated"
CPU_RSS = "cpu_rss"

#: How each kind is named in a report line.
MEMORY_LABELS = {CUDA_ALLOCATED: "GPU allocated", CPU_RSS: "process RSS"}
#: The short column header of per-stage peak memory.
MEMORY_COLUMNS = {CUDA_ALLOCATED: "peak GPU alloc", CPU_RSS: "peak RSS"}
#: What a peak of each kind measures.
MEMORY_DEFINITIONS = {
    CUDA_ALLOCATED: "torch's peak allocated GPU memory (reset at the start of each stage and run)",
    CPU_RSS: "high-water resident memory of the whole process (reset per run where Linux allows)",
}

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def memory_kind(device: str) -> str:
    """The kind measured on ``device``."""
    return CUDA_ALLOCATED if str(device).startswith("cuda") else CPU_RSS


def process_peak_rss_bytes() -> int:
    """Peak resident set size of this process (bytes): ``VmHWM`` where readable, else ``ru_maxrss``."""
    hwm = read_rss_high_water_mark()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def read_rss_high_water_mark() -> int | None:
    """Linux ``VmHWM`` of this process in bytes (None where /proc is not there)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_rss_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory of one measured run on ``device`` (kind :func:`memory_kind`)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.kind = memory_kind(device)
        self.resettable = self.kind == CUDA_ALLOCATED or (
            read_rss_high_water_mark() is not None and reset_rss_high_water_mark()
        )

    def reset(self) -> None:
        """Start a new measurement window (where the kind allows it)."""
        if self.kind == CUDA_ALLOCATED:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            reset_rss_high_water_mark()

    def peak(self) -> int:
        """The peak since the last :meth:`reset` (bytes)."""
        if self.kind == CUDA_ALLOCATED:
            import torch

            return int(torch.cuda.max_memory_allocated(self.device))
        return process_peak_rss_bytes()

    def describe(self) -> str:
        text = MEMORY_DEFINITIONS[self.kind]
        if self.kind == CPU_RSS and not self.resettable:
            text = "high-water resident memory of the whole process since it started (ru_maxrss: not resettable here)"
        return text
