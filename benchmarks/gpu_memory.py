#!/usr/bin/env python
"""Is there enough free GPU memory for a step of the GPU suite? (``gpu_suite.sh``, before the
Qwen3-Omni 30B-A3B step.)

    python benchmarks/gpu_memory.py --step model_stages_qwen3 --need-bytes 68000000000

Prints JSON lines for the suite's ``suite.jsonl``: a ``memory_check`` record (free, total and needed
bytes, the GPU's name, the verdict) and, when the memory is short, the step's ``step`` record marked
``"skipped": true`` with the reason. Exit status: 0 enough, 3 not enough (skip the step), 2 the free
memory could not be read (no CUDA: the step then runs and says why itself).

The free memory is CUDA's own figure (``torch.cuda.mem_get_info``: free on the device, whatever holds
the rest) read in a process of its own, so that nothing of this check stays allocated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

BENCH = "gpu_suite"

#: Qwen3-Omni 30B-A3B thinker with random weights (``model_stages.py --family qwen3``): 63 GB of bf16
#: weights (31.72 B parameters) plus about 5 GB of float32 encoder copies for the equivalence check.
QWEN3_30B_A3B_NEEDED_BYTES = 68 * 10**9


def memory_check(free_bytes: int, total_bytes: int | None, needed_bytes: int, *, step: str,
                 gpu: str | None = None, mode: str = "gpu") -> tuple[bool, list[dict[str, Any]]]:
    """``(enough, records)`` for ``step`` that needs ``needed_bytes`` with ``free_bytes`` free.

    ``records``: the ``memory_check`` record, then (only when the memory is short) the step's
    ``step`` record marked skipped, with the reason, the free and the needed bytes.
    """
    enough = free_bytes >= needed_bytes
    where = f"on {gpu}" if gpu else "on the GPU"
    total = f" of {total_bytes / 1e9:.1f} GB" if total_bytes else ""
    reason = None if enough else (
        f"{free_bytes / 1e9:.1f} GB free{total} {where}; {step} needs about {needed_bytes / 1e9:.1f} GB: skipped "
        "(run it on a GPU with more free memory, e.g. the device tool's nvidia-h200)")
    check = {"bench": BENCH, "kind": "memory_check", "mode": mode, "step": step, "gpu": gpu,
             "free_bytes": int(free_bytes), "total_bytes": None if total_bytes is None else int(total_bytes),
             "needed_bytes": int(needed_bytes), "enough": enough, "reason": reason}
    records = [check]
    if not enough:
        records.append({"bench": BENCH, "kind": "step", "mode": mode, "step": step, "skipped": True, "rc": None,
                        "timed_out": False, "seconds": 0.0, "reason": reason, "free_bytes": int(free_bytes),
                        "needed_bytes": int(needed_bytes), "total_bytes": check["total_bytes"], "gpu": gpu})
    return enough, records


def cuda_memory(device: int = 0) -> tuple[int, int, str]:
    """``(free bytes, total bytes, name)`` of CUDA device ``device`` (raises without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch")
    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total), torch.cuda.get_device_name(device)


def main(argv: list[str] | None = None,
         probe: Callable[[int], tuple[int, int, str]] = cuda_memory) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", required=True, help="the suite's step name (for the records)")
    parser.add_argument("--need-bytes", type=int, default=QWEN3_30B_A3B_NEEDED_BYTES,
                        help=f"bytes the step needs free (default {QWEN3_30B_A3B_NEEDED_BYTES}: Qwen3-Omni 30B-A3B)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    args = parser.parse_args(argv)
    try:
        free, total, name = probe(args.device)
    except Exception as exc:  # noqa: BLE001 - any failure to read it: say so, let the step run
        print(json.dumps({"bench": BENCH, "kind": "memory_check", "mode": "gpu", "step": args.step, "enough": None,
                          "needed_bytes": args.need_bytes, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 2
    enough, records = memory_check(free, total, args.need_bytes, step=args.step, gpu=name)
    for record in records:
        print(json.dumps(record), flush=True)
    return 0 if enough else 3


if __name__ == "__main__":
    sys.exit(main())
