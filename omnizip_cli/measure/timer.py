"""One stage timer for every command: device-synchronised wall clocks and peak memory per stage.

On a GPU every stage boundary synchronises the device before reading the clock, so asynchronous
kernels are charged to the stage that launched them, and the peak allocated memory is reset at the
start of each stage. On the CPU the peak resident set size of the process is recorded (see
:mod:`omnizip_cli.measure.memory` for the one vocabulary of memory kinds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from .memory import CPU_RSS, CUDA_ALLOCATED, process_peak_rss_bytes

# The stages of one answer, in order; reports show them in this order.
STAGES = (
    "content_hash",  # the file's SHA-256, the disk cache's key (only with the cache on)
    "load_model",
    "media_decode",
    "preprocess",
    "audio_encoder",
    "vision_encoder",
    "saliency",
    "keep_plan",
    "prefill",
    "decode_warmup",  # CUDA-graph capture of the fast decoder: once per process
    "decode",
)


@dataclass
class StageRecord:
    seconds: float = 0.0
    peak_memory_bytes: int | None = None  # GPU allocated peak during the stage, or process RSS peak on CPU
    memory_kind: str = CPU_RSS  # CUDA_ALLOCATED or CPU_RSS
    overlapped: bool = False  # ran beside media decoding (on another thread), off the critical path


@dataclass
class StageTimer:
    """Times named stages; synchronises the CUDA device around each one when there is one.

    ``on_stage`` (optional) is called with a stage's name when it starts (the CLI's spinner).
    """

    device: str = "cpu"
    stages: dict[str, StageRecord] = field(default_factory=dict)
    on_stage: Callable[[str], None] | None = None

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        """Wait for the device (no-op on the CPU)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (accumulates if the stage runs more than once)."""
        if self.on_stage is not None:
            self.on_stage(name)
        if self.cuda:
            import torch

            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            elapsed = time.perf_counter() - started
            record = self.stages.setdefault(name, StageRecord())
            record.seconds += elapsed
            self._record_peak(record)

    def _record_peak(self, record: StageRecord) -> None:
        if self.cuda:
            import torch

            peak, record.memory_kind = int(torch.cuda.max_memory_allocated(self.device)), CUDA_ALLOCATED
        else:
            peak, record.memory_kind = process_peak_rss_bytes(), CPU_RSS
        record.peak_memory_bytes = max(record.peak_memory_bytes or 0, peak)

    def add(self, name: str, seconds: float, peak_memory_bytes: int | None = None, memory_kind: str | None = None,
            *, overlapped: bool = False) -> None:
        """Record a stage measured elsewhere (e.g. media decoding, which has its own clock).

        ``overlapped``: the stage ran beside media decoding, so its seconds were not waited for.
        """
        record = self.stages.setdefault(name, StageRecord())
        record.seconds += seconds
        record.overlapped = record.overlapped or overlapped
        if peak_memory_bytes is not None:
            record.peak_memory_bytes = max(record.peak_memory_bytes or 0, int(peak_memory_bytes))
            record.memory_kind = memory_kind or (CUDA_ALLOCATED if self.cuda else CPU_RSS)

    def record_memory(self, name: str) -> None:
        """Set a stage's peak memory to what is measured now (for stages timed outside :meth:`stage`)."""
        self._record_peak(self.stages.setdefault(name, StageRecord()))

    def seconds(self, name: str) -> float:
        return self.stages[name].seconds if name in self.stages else 0.0

    def merged(self, other: StageTimer) -> StageTimer:
        """A new timer holding this one's stages followed by ``other``'s (records copied, seconds added)."""
        combined = StageTimer(device=self.device)
        for source in (self, other):
            for name, record in source.stages.items():
                target = combined.stages.setdefault(name, StageRecord(memory_kind=record.memory_kind))
                target.seconds += record.seconds
                target.overlapped = target.overlapped or record.overlapped
                if record.peak_memory_bytes is not None:
                    target.peak_memory_bytes = max(target.peak_memory_bytes or 0, record.peak_memory_bytes)
                    target.memory_kind = record.memory_kind
        return combined

    def to_dict(self) -> dict[str, Any]:
        return {name: asdict(record) for name, record in self.stages.items()}
