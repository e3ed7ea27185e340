#!/usr/bin/env python
"""``omnizip serve`` under load from a client's side (issue 24): time to first token of the first
question on a video vs repeated questions on it, and requests per second with N concurrent clients.

    python benchmarks/serve.py                                      # tiny model, samples/talking.mp4, 1 4 8 clients
    python benchmarks/serve.py --model /path/to/Qwen2.5-Omni-7B --device cuda --video clip.mp4 --concurrency 1 4 8 16
    python benchmarks/serve.py --tiny                               # CPU smoke: 1 and 4 clients, few requests

It starts a real server process (``python -m omnizip_cli serve --port 0 --no-cache``: the first
question on the video opens it fresh, later ones answer from the prefix held in memory), reads its
address from stderr, and measures with streaming requests over HTTP (``httpx``, server-sent events):

* ``question``: question 1 (a fresh prefix: media decode, encoders, compression, prefill) then
  ``--repeats`` other questions on the same video, one at a time. ``ttft_s``: from sending the
  request to the first chunk carrying answer text; ``total_s``: to ``[DONE]``; the server's
  ``prefix_source`` and ``cached_tokens`` with it.
* ``concurrency``: for each N in ``--concurrency``, ``--requests`` questions (each different, on the
  warm video) sent by N client threads; ``requests_per_second`` (answered / wall time), the median
  and 90th percentile time to first token and latency, answer tokens per second, and the 429s
  (``--max-queue`` is set above N, so there should be none).
* ``ratio``: repeated over first question (median time to first token), and each N over 1
  (requests per second; median time to first token). Measured in this one run, on this machine.
* ``shutdown``: SIGTERM, the exit code and the seconds to exit.

Figures are medians of what was measured here; nothing is extrapolated. ``--replicas N`` (several
server processes behind Ray Serve) is reserved: it is not available yet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402

BENCH = "serve"
LISTENING = re.compile(r"omnizip serve: listening on (http://\S+) \(pid (\d+)\)")
FIRST_QUESTION = "What happens in this video?"

log, emit = json_lines_output(BENCH)


class Server:
    """One ``omnizip serve`` process on a free loopback port; stderr is collected (the tail is shown
    when it fails)."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "omnizip_cli", "serve", "--model", args.model, "--port", "0",
                   "--no-cache", "--allowed-media-path", str(args.video.parent),
                   "--max-queue", str(max(args.concurrency) * 2 + 4), "--max-tokens", str(args.max_tokens),
                   "--shutdown-grace", "10", *(["--device", args.device] if args.device else []), *args.server_arg]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                found = LISTENING.search(line)
                if found and self.url is None:
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(args.start_timeout) or self.url is None:
            self.kill()
            raise SystemExit(f"{BENCH}: the server did not start:\n{''.join(self.lines)[-3000:]}")
        self.ready_s = time.perf_counter() - self.started

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        sent = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self.reader.join(timeout=5)
        return code, time.perf_counter() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def ask(client: Any, url: str, args: argparse.Namespace, question: str) -> dict[str, Any]:
    """One streaming chat request; its client-side timings and the server's figures."""
    body = {"model": args.model_name, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": args.max_tokens,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(args.video)}},
                                                      {"type": "text", "text": question}]}]}
    sent = time.perf_counter()
    first = None
    omnizip: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return {"status": response.status_code, "error": response.text[:300]}
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if "error" in chunk:
                return {"status": 200, "error": chunk["error"].get("message")}
            for choice in chunk.get("choices", []):
                if first is None and choice.get("delta", {}).get("content"):
                    first = time.perf_counter() - sent
            omnizip = chunk.get("omnizip") or omnizip
            usage = chunk.get("usage") or usage
    total = time.perf_counter() - sent
    return {"status": 200, "ttft_s": first if first is not None else total, "total_s": total,
            "completion_tokens": usage.get("completion_tokens"), "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            "prefix_source": omnizip.get("prefix_source")}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def first_vs_repeated(url: str, args: argparse.Namespace) -> dict[str, float]:
    import httpx

    with httpx.Client(timeout=args.request_timeout) as client:
        ttft = []
        for index in range(args.repeats + 1):
            question = FIRST_QUESTION if index == 0 else f"Question {index + 1}: what is on screen at second {index}?"
            result = ask(client, url, args, question)
            if "error" in result:
                raise SystemExit(f"{BENCH}: question {index + 1} failed: {result}")
            emit(dict(kind="question", question=index + 1, text=question, model=args.model_name, **result))
            log(f"question {index + 1}: first token {result['ttft_s']:.3f} s, done {result['total_s']:.3f} s "
                f"({result['prefix_source']}, {result['cached_tokens']} cached tokens)")
            ttft.append(result["ttft_s"])
    repeated = statistics.median(ttft[1:])
    emit(dict(kind="ratio", name="ttft_repeated_over_first", value=repeated / ttft[0], first_s=ttft[0],
              repeated_s_median=repeated, repeats=args.repeats, statistic="median", target=None, meets_target=None,
              formula="median ttft_s of questions 2.. / ttft_s of question 1 (fresh prefix), one at a time"))
    return {"first": ttft[0], "repeated": repeated}


def concurrent(url: str, args: argparse.Namespace, clients: int) -> dict[str, Any]:
    import httpx

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        with httpx.Client(timeout=args.request_timeout) as client:
            barrier.wait()
            for k in range(index, args.requests, clients):
                result = ask(client, url, args, f"Client {index}, request {k}: describe second {k % 10}.")
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    answered = [r for r in results if "error" not in r]
    refused = sum(1 for r in results if r.get("status") == 429)
    failed = len(results) - len(answered) - refused
    ttft = [r["ttft_s"] for r in answered]
    latency = [r["total_s"] for r in answered]
    tokens = sum(r["completion_tokens"] or 0 for r in answered)
    record = dict(kind="concurrency", clients=clients, requests=args.requests, answered=len(answered),
                  refused_429=refused, failed=failed, wall_s=wall, requests_per_second=len(answered) / wall,
                  answer_tokens_per_second=tokens / wall, ttft_s_median=statistics.median(ttft) if ttft else None,
                  ttft_s_p90=percentile(ttft, 0.9) if ttft else None,
                  latency_s_median=statistics.median(latency) if latency else None,
                  latency_s_p90=percentile(latency, 0.9) if latency else None,
                  prefix_sources=sorted({r["prefix_source"] for r in answered}), model=args.model_name)
    emit(record)
    log(f"{clients} clients: {record['requests_per_second']:.2f} requests/s, first token median "
        f"{record['ttft_s_median']:.3f} s, latency median {record['latency_s_median']:.3f} s, "
        f"{refused} refused, {failed} failed")
    if failed:
        errors = [r["error"] for r in results if "error" in r and r.get("status") != 429]
        raise SystemExit(f"{BENCH}: {failed} requests failed with {clients} clients: {errors[:3]}")
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: the tiny model, 1 and 4 clients, few requests")
    parser.add_argument("--model", default="tiny", help="--model of omnizip serve (default tiny)")
    parser.add_argument("--device", default=None, help="--device of omnizip serve (default: its own; --tiny cpu)")
    parser.add_argument("--video", type=Path, default=ROOT / "samples" / "talking.mp4", help="the video asked about")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="concurrent clients, one measurement each (default 1 4 8; --tiny 1 4)")
    parser.add_argument("--requests", type=int, default=None, help="requests per concurrency level (default 48; --tiny 8)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="questions after the first on the video, one at a time (default 5; --tiny 3)")
    parser.add_argument("--max-tokens", type=int, default=None, help="answer tokens per request (default 32; --tiny 8)")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="client timeout per request, s")
    parser.add_argument("--start-timeout", type=float, default=1800.0, help="seconds to wait for the server to listen")
    parser.add_argument("--replicas", type=int, default=1,
                        help="server replicas behind Ray Serve (not available yet: only 1)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra argument for omnizip serve (repeatable), e.g. --server-arg=--preset=45")
    args = parser.parse_args(argv)
    if args.replicas != 1:
        parser.error(f"--replicas {args.replicas}: several replicas (Ray Serve) are not available yet")
    if args.tiny and args.model != "tiny":
        parser.error("--tiny runs the tiny model (leave --model out)")
    args.device = args.device or ("cpu" if args.tiny else None)
    args.concurrency = args.concurrency or ([1, 4] if args.tiny else [1, 4, 8])
    if min(args.concurrency) < 1:
        parser.error("--concurrency takes positive numbers of clients")
    args.requests = args.requests or (8 if args.tiny else 48)
    args.repeats = args.repeats or (3 if args.tiny else 5)
    args.max_tokens = args.max_tokens or (8 if args.tiny else 32)
    args.video = args.video.resolve()
    if not args.video.is_file():
        parser.error(f"--video {args.video} is not a file")
    return args


def main(argv: list[str] | None = None) -> int:
    import httpx

    args = parse_args(argv)
    log(f"starting omnizip serve --model {args.model}")
    server = Server(args)
    try:
        args.model_name = httpx.get(f"{server.url}/health", timeout=30).json()["model"]
        emit(dict(kind="setup", model=args.model_name, device=args.device, video=str(args.video),
                  video_bytes=args.video.stat().st_size, max_tokens=args.max_tokens, repeats=args.repeats,
                  requests=args.requests, concurrency=args.concurrency, replicas=args.replicas,
                  server_ready_s=server.ready_s, server_args=args.server_arg, cpu_count=os.cpu_count()))
        log(f"listening at {server.url} after {server.ready_s:.1f} s")
        first_vs_repeated(server.url, args)
        levels = {clients: concurrent(server.url, args, clients) for clients in args.concurrency}
        base = levels[min(levels)]
        for clients, record in levels.items():
            if clients == min(levels):
                continue
            emit(dict(kind="ratio", name=f"requests_per_second_{clients}_over_{min(levels)}_clients",
                      value=record["requests_per_second"] / base["requests_per_second"], statistic="answered / wall",
                      target=None, meets_target=None,
                      formula=f"requests_per_second with {clients} clients / with {min(levels)}"))
            emit(dict(kind="ratio", name=f"ttft_{clients}_over_{min(levels)}_clients",
                      value=record["ttft_s_median"] / base["ttft_s_median"], statistic="median", target=None,
                      meets_target=None, formula=f"median ttft_s with {clients} clients / with {min(levels)}"))
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        code, seconds = server.stop()
        emit(dict(kind="shutdown", exit_code=code, seconds_to_exit=seconds,
                  stopped_line="omnizip serve: stopped" in "".join(server.lines),
                  refused_total=_metric(metrics, "omnizip_requests_refused_total"),
                  generated_tokens_total=_metric(metrics, "omnizip_generated_tokens_total")))
        log(f"stopped (exit {code}) {seconds:.1f} s after SIGTERM")
        return 0 if code == 0 else 1
    finally:
        server.kill()


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


if __name__ == "__main__":
    sys.exit(main())
