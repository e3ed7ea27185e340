"""Measurements shared by every command: one stage timer, one memory probe, token counts, FLOPs, environment."""

from .memory import CPU_RSS, CUDA_ALLOCATED, MemoryProbe, memory_kind, process_peak_rss_bytes
from .timer import STAGES, StageRecord, StageTimer
from .tokens import ModalityCount, TokenCounts, count_tokens

__all__ = [
    "CPU_RSS",
    "CUDA_ALLOCATED",
    "STAGES",
    "MemoryProbe",
    "ModalityCount",
    "StageRecord",
    "StageTimer",
    "TokenCounts",
    "count_tokens",
    "memory_kind",
    "process_peak_rss_bytes",
]
