"""Measurements of one run: stage timings (device-synchronised), peak memory, token counts.

On a GPU every stage boundary synchronises the device before reading the clock, so asynchronous
kernels are charged to the stage that launched them, and the peak allocated memory is reset at the
start of each stage. On the CPU the peak resident set size of the process is recorded instead.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

# The stages of one answer, in order; the report shows them in this order.
STAGES = (
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


def process_peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class StageRecord:
    seconds: float = 0.0
    peak_memory_bytes: int | None = None  # GPU allocated peak during the stage, or process RSS peak on CPU
    memory_kind: str = "cpu_rss"  # "cuda_allocated" or "cpu_rss"


@dataclass
class StageTimer:
    """Times named stages; synchronises the CUDA device around each one when there is one."""

    device: str = "cpu"
    stages: dict[str, StageRecord] = field(default_factory=dict)

    @property
    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (accumulates if the stage runs more than once)."""
        if self._cuda:
            import torch

            self._sync()
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - started
            record = self.stages.setdefault(name, StageRecord())
            record.seconds += elapsed
            if self._cuda:
                import torch

                peak = int(torch.cuda.max_memory_allocated(self.device))
                record.memory_kind = "cuda_allocated"
            else:
                peak = process_peak_rss_bytes()
                record.memory_kind = "cpu_rss"
            record.peak_memory_bytes = max(record.peak_memory_bytes or 0, peak)

    def add(self, name: str, seconds: float) -> None:
        """Record a stage measured elsewhere (e.g. media decoding, which has its own clock)."""
        self.stages.setdefault(name, StageRecord()).seconds += seconds

    def seconds(self, name: str) -> float:
        return self.stages[name].seconds if name in self.stages else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {name: asdict(record) for name, record in self.stages.items()}


@dataclass
class ModalityCount:
    """Tokens of one modality before and after compression."""

    before: int
    after: int

    @property
    def dropped(self) -> int:
        return self.before - self.after

    @property
    def retention(self) -> float:
        return self.after / self.before if self.before else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "dropped": self.dropped, "retention": self.retention}


@dataclass
class TokenCounts:
    video: ModalityCount
    audio: ModalityCount
    text: ModalityCount

    @property
    def total(self) -> ModalityCount:
        return ModalityCount(
            self.video.before + self.audio.before + self.text.before,
            self.video.after + self.audio.after + self.text.after,
        )

    @property
    def audio_video(self) -> ModalityCount:
        return ModalityCount(self.video.before + self.audio.before, self.video.after + self.audio.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video.to_dict(),
            "audio": self.audio.to_dict(),
            "text": self.text.to_dict(),
            "audio_video": self.audio_video.to_dict(),
            "total": self.total.to_dict(),
        }
