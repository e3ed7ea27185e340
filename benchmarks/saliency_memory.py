"""Peak memory and time of the audio saliency scores on a long clip (default: 300 s).

Runs :func:`omnizip_cli.models.saliency.frame_attention_received` on random queries and keys of the real
Qwen2.5-Omni audio encoder's last layer (H = 20 heads, head_dim d = 64; T = 50 post-CNN frames per
second, so T = 15,000 at 300 s) with the recorder's default chunking, and prints one JSON object per
measurement (``"bench": "saliency_memory"``) on stdout, progress on stderr:

* ``bound_bytes``: :func:`~omnizip_cli.models.saliency.attention_received_peak_bytes`, the stated bound;
* ``tracked_peak_bytes``: the peak of live tensor storage created during the call, tracked op by op
  with a ``TorchDispatchMode`` (every output storage is counted when it appears and released when
  it is freed; exact for what PyTorch allocates at the operator level);
* ``largest_allocation_bytes``: the largest single storage created;
* ``rss_peak_delta_bytes``: peak RSS during the call minus RSS before it (Linux: the peak is reset
  through ``/proc/self/clear_refs``; ``null`` where that is not allowed). The allocator may reuse
  memory that is already resident, so this can be below the tensor figure; it catches what the
  tracker cannot see (allocations inside kernels, allocator overhead), which ``RSS_SLACK_BYTES``
  (8 MiB) allows for;
* ``cuda_peak_delta_bytes`` on a GPU (``torch.cuda.max_memory_allocated``, reset before the call);
* ``within_bound``: tracked peak <= bound, and RSS / CUDA peak <= bound + ``RSS_SLACK_BYTES``
  (the exit code is 1 otherwise);
* ``full_matrix_bytes``: what the naive float32 ``[H, T, T]`` matrix would take;
* ``wall_s`` / ``cpu_s``: median wall-clock and process CPU seconds of ``--repeats`` untracked runs
  after a warm-up; ``threads``: torch's intra-op threads.

    python benchmarks/saliency_memory.py                       # 300 s, float32, default chunking
    python benchmarks/saliency_memory.py --seconds 60 300 --dtype bfloat16
    python benchmarks/saliency_memory.py --query-chunks 64 128 256 512   # chunk sweep (time)
    python benchmarks/saliency_memory.py --quick               # CI smoke: 20 s, 4 heads, 1 run
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from omnizip_cli.models.saliency import (  # noqa: E402
    DEFAULT_QUERY_CHUNK,
    attention_received_peak_bytes,
    default_head_chunk,
    frame_attention_received,
)

# What the process may touch beyond the tensors the bound counts: malloc headers, page rounding,
# BLAS packing buffers (measured: under 1 MB at 300 s).
RSS_SLACK_BYTES = 8 * 2**20
FRAMES_PER_SECOND = 50  # post-CNN frames of the audio encoder (25 LLM audio tokens per second)
HEADS, HEAD_DIM = 20, 64  # Qwen2.5-Omni 3B/7B audio encoder: d_model 1280, 20 heads


class TensorPeakTracker(TorchDispatchMode):
    """Peak bytes of tensor storage created while active (op outputs; freed when their storage dies).

    Storages are keyed by their Python object, which PyTorch keeps alive exactly as long as the
    C++ storage, so a ``weakref.finalize`` on it fires when the memory is released. Outputs that
    share an input's storage (views, in-place ops) are not allocations and add nothing, also when
    the input was created before the tracker started.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.largest = 0
        self.allocations = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = id(storage)
                if key not in self.live and key not in inputs:  # views / in-place results: not new
                    size = storage.nbytes()
                    self.live[key] = size
                    self.current += size
                    self.largest = max(self.largest, size)
                    self.allocations += 1
                    weakref.finalize(storage, self._release, key)
        self.peak = max(self.peak, self.current)
        return out


def _proc_status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1)) * 1024


def rss_peak_delta(fn: Callable[[], Any]) -> int | None:
    """Peak RSS while ``fn()`` runs minus the RSS before; None where the peak cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
        before = _proc_status_bytes("VmRSS")
    except OSError:
        return None
    fn()
    return _proc_status_bytes("VmHWM") - before


def measure(seconds: float, *, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
            query_chunk: int, head_chunk: int | None, repeats: int, seed: int = 0) -> dict[str, Any]:
    frames = int(round(seconds * FRAMES_PER_SECOND))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(heads, frames, head_dim, generator=gen).to(device, dtype)
    k = torch.randn(heads, frames, head_dim, generator=gen).to(device, dtype)
    hc = head_chunk or default_head_chunk(heads, frames, query_chunk, device=device)
    scaling = head_dim**-0.5

    def call() -> torch.Tensor:
        return frame_attention_received(q, k, scaling, query_chunk=query_chunk, head_chunk=hc)

    # Warm-up on a short slice: loads the kernels' code pages before the RSS measurement.
    frame_attention_received(q[:, :64], k[:, :64], scaling, query_chunk=query_chunk, head_chunk=hc)
    # RSS first: later runs leave freed blocks resident in the C allocator, which hides them from RSS.
    rss = rss_peak_delta(call) if device.type == "cpu" else None
    with TensorPeakTracker() as tracker:
        result = call()
        del result
    cuda_peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        cuda_peak = torch.cuda.max_memory_allocated(device) - base
    walls, cpus = [], []
    total = None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        total = float(out.sum())
    bound = attention_received_peak_bytes(heads, frames, head_dim, query_chunk=query_chunk, head_chunk=hc)
    return {
        "bench": "saliency_memory",
        "seconds": seconds,
        "frames": frames,
        "heads": heads,
        "head_dim": head_dim,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "query_chunk": query_chunk,
        "head_chunk": hc,
        "bound_bytes": bound,
        "tracked_peak_bytes": tracker.peak,
        "largest_allocation_bytes": tracker.largest,
        "rss_peak_delta_bytes": rss,
        "cuda_peak_delta_bytes": cuda_peak,
        "within_bound": tracker.peak <= bound and (rss is None or rss <= bound + RSS_SLACK_BYTES) and (
            cuda_peak is None or cuda_peak <= bound + RSS_SLACK_BYTES),
        "full_matrix_bytes": 4 * heads * frames * frames,
        "wall_s": statistics.median(walls) if walls else None,
        "cpu_s": statistics.median(cpus) if cpus else None,
        "runs_wall_s": walls,
        "threads": torch.get_num_threads(),
        "scores_sum": total,  # 1 up to float32 rounding: each softmax row sums to 1
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[300.0])
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--query-chunks", type=int, nargs="+", default=[DEFAULT_QUERY_CHUNK])
    parser.add_argument("--head-chunk", type=int, default=None, help="default: the recorder's automatic choice")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20 s, 4 heads, 1 run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seconds, args.heads, args.repeats = [20.0], 4, 1
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    ok = True
    for seconds in args.seconds:
        for query_chunk in args.query_chunks:
            print(f"saliency_memory: {seconds:g} s, query_chunk {query_chunk} ...", file=sys.stderr, flush=True)
            row = measure(seconds, heads=args.heads, head_dim=args.head_dim, dtype=dtype, device=device,
                          query_chunk=query_chunk, head_chunk=args.head_chunk, repeats=args.repeats)
            ok &= row["within_bound"]
            print(json.dumps(row), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
