#!/usr/bin/env python
"""``omnizip serve`` under load from a client's side (issues 24 and 25): time to first token of the
first question on a video vs repeated questions on it, requests per second with N concurrent clients,
and (``--replicas N``) the same load on N model replicas behind Ray Serve against one process.

    python benchmarks/serve.py                                      # tiny model, samples/talking.mp4, 1 4 8 clients
    python benchmarks/serve.py --model /path/to/Qwen2.5-Omni-7B --device cuda --video clip.mp4 --concurrency 1 4 8 16
    python benchmarks/serve.py --model /path/to/Qwen2.5-Omni-7B --device cuda --video clip.mp4 --replicas 2
    python benchmarks/serve.py --tiny                               # CPU smoke: 1 and 4 clients, few requests
    python benchmarks/serve.py --tiny --replicas 2 --concurrency 4  # CPU smoke of the replicas (local Ray)

It starts a real server process (``python -m omnizip_cli serve --port 0 --no-cache``: the first
question on a video opens it fresh, later ones answer from the prefix held in memory), reads its
address from stderr, and measures with streaming requests over HTTP (``httpx``, server-sent events).
The videos asked about are ``--videos K`` copies of ``--video`` in a temporary folder (the server's
``--allowed-media-path``), each with a different trailing ``free`` box (an ISO-BMFF box players
skip): the same decode and compute, different bytes, so K different prefixes (the prefix id is a
hash of the content).

* ``server``: the server's start (seconds to listen: with replicas, Ray, Serve and N model loads)
  and, with replicas, the replicas ``/health`` lists.
* ``question``: question 1 on each video (a fresh prefix: media decode, encoders, compression,
  prefill), then ``--repeats`` rounds of another question on each video, one at a time. ``ttft_s``:
  from sending the request to the first chunk carrying answer text; ``total_s``: to ``[DONE]``; the
  server's ``prefix_source``, ``cached_tokens`` and ``replica`` with it.
* ``concurrency``: for each N in ``--concurrency``, ``--requests`` questions (each different; request
  k on video k mod K, all warm) sent by N client threads; ``requests_per_second`` (answered / wall
  time), the median and 90th percentile time to first token and latency, answer tokens per second,
  the 429s (``--max-queue`` is set above N, so there should be none) and the replicas that answered.
* ``routing``: from every answer's ``omnizip.replica``, how many distinct replicas answered, and per
  video which replicas answered it; ``affinity``: every video stayed on one replica (and every
  repeated question found its prefix in memory: with ``--no-cache`` a question routed elsewhere
  would say ``fresh``).
* ``ratio``: repeated over first question (median time to first token), each N over 1 clients
  (requests per second; median time to first token); with ``--replicas N``, N replicas over one
  process for each of these (requests per second and time to first token per concurrency level,
  repeated-question time to first token). Measured in this one run, on this machine.
* ``shutdown``: SIGTERM, the exit code and the seconds to exit (with replicas: Ray stopped too).

``--replicas N`` (N > 1) runs the same load twice, one server after the other: the plain
single-process server (no Ray), then ``omnizip serve --replicas N`` (a local Ray started by the
server: one replica per GPU when there are N GPUs, CPU replicas otherwise). Every record of a server
carries its ``replicas``. ``--videos`` defaults to 1 (one process) or 2N (replicas: Ray Serve's
multiplexed routing sends a new video to the replica holding the fewest, so the videos spread).

What replicas gain depends on what they get. On a machine with N GPUs each replica has its own GPU,
so N videos' questions run at the same time: requests/s under load should approach N times one
process, while a repeated question's time to first token stays that of one replica plus the
routing hop (a Ray handle call). On the 2-core CPU of CI it is no gain: the
two replicas share the same 2 cores (Ray gives each replica 1 CPU, so each runs its model with one
thread where the single process had two), every request pays the hop from the HTTP process to a
replica actor and back (Ray's object transfer per answer piece), and with the tiny model a warm
answer takes about 10 ms, so that hop is a large part of it. Measured with ``--tiny --replicas 2`` on 2 shared
CPU cores (two runs): repeated-question time to first token 9.2 / 12.9 ms with one process, 16.0 /
29.8 ms with 2 replicas (x1.7 / x2.3); requests/s x0.70 / x0.36 with 1 client and x0.37 / x0.46
with 4 clients (2 replicas over one process); both replicas answered, every video stayed on its
replica. So there the replicas are a loss, as expected; the CPU run checks routing and affinity, a
machine with one GPU per replica measures the gain. Figures are medians of what was measured here;
nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.jsonlines import json_lines_output  # noqa: E402
from omnizip_cli.serve.listening import StderrWatcher  # noqa: E402

BENCH = "serve"
FIRST_QUESTION = "What happens in this video?"
#: Containers a trailing ``free`` box keeps valid (ISO base media file format).
ISO_BMFF = {".mp4", ".m4v", ".mov", ".m4a", ".3gp"}

log, emit = json_lines_output(BENCH)


class Server:
    """One ``omnizip serve`` process (``replicas`` > 1: on a local Ray Serve) on a free loopback port;
    stderr is collected (the tail is shown when it fails). It runs in its own process group, so the
    processes a local Ray starts under it can be found (and killed) when it ends."""

    def __init__(self, args: argparse.Namespace, replicas: int, media_dir: Path) -> None:
        command = [sys.executable, "-m", "omnizip_cli", "serve", "--model", args.model, "--port", "0",
                   "--no-cache", "--allowed-media-path", str(media_dir),
                   "--max-queue", str(max(args.concurrency) * 2 + 4), "--max-tokens", str(args.max_tokens),
                   "--shutdown-grace", "10", *(["--device", args.device] if args.device else []),
                   *(["--replicas", str(replicas)] if replicas > 1 else []), *args.server_arg]
        self.replicas = replicas
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stderr is not None
        self.watcher = StderrWatcher(self.proc.stderr)
        self.url = self.watcher.wait(args.start_timeout)
        self.lines = self.watcher.lines
        if self.url is None:
            self.kill()
            raise SystemExit(f"{BENCH}: the server (replicas {replicas}) did not start:\n{''.join(self.lines)[-3000:]}")
        self.ready_s = time.perf_counter() - self.started

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        sent = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self.watcher.join()
        return code, time.perf_counter() - sent

    def leftovers(self) -> int:
        """Kill what is left of the server's process group (a local Ray's processes, when the server
        did not stop them); how many there were."""
        pgid = self.proc.pid
        left = 0
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == pgid:
                        left += 1
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return left

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.leftovers()


def make_videos(source: Path, count: int, folder: Path) -> list[Path]:
    """``count`` copies of ``source`` in ``folder``: the first as it is, the others with a trailing
    ISO-BMFF ``free`` box naming their index (skipped by demuxers: the same frames and audio, other
    bytes, so another prefix)."""
    data = source.read_bytes()
    videos = []
    for index in range(count):
        path = folder / f"video{index}{source.suffix}"
        payload = f"omnizip benchmark copy {index}".encode()
        path.write_bytes(data if index == 0 else data + struct.pack(">I4s", 8 + len(payload), b"free") + payload)
        videos.append(path)
    return videos


def ask(client: Any, url: str, args: argparse.Namespace, video: Path, question: str) -> dict[str, Any]:
    """One streaming chat request; its client-side timings and the server's figures."""
    body = {"model": args.model_name, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": args.max_tokens,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(video)}},
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
            "prefix_source": omnizip.get("prefix_source"), "prefix_id": omnizip.get("prefix_id"),
            "replica": omnizip.get("replica")}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def first_vs_repeated(url: str, args: argparse.Namespace, replicas: int, answers: list[dict[str, Any]]) \
        -> dict[str, float]:
    """Question 1 on each video, then ``repeats`` rounds of one more question on each; medians."""
    import httpx

    first, repeated = [], []
    with httpx.Client(timeout=args.request_timeout) as client:
        for index in range(args.repeats + 1):
            question = FIRST_QUESTION if index == 0 else f"Question {index + 1}: what is on screen at second {index}?"
            for number, video in enumerate(args.videos):
                result = ask(client, url, args, video, question)
                if "error" in result:
                    raise SystemExit(f"{BENCH}: replicas {replicas}, video {number}, question {index + 1} failed: "
                                     f"{result}")
                answers.append(dict(result, video=number, phase="question"))
                emit(dict(kind="question", replicas=replicas, question=index + 1, video=number, text=question,
                          model=args.model_name, **result))
                where = f", replica {result['replica']}" if result["replica"] else ""
                log(f"[replicas {replicas}] video {number} question {index + 1}: first token "
                    f"{result['ttft_s']:.3f} s, done {result['total_s']:.3f} s ({result['prefix_source']}, "
                    f"{result['cached_tokens']} cached tokens{where})")
                (first if index == 0 else repeated).append(result["ttft_s"])
    out = {"first": statistics.median(first), "repeated": statistics.median(repeated)}
    emit(dict(kind="ratio", replicas=replicas, name="ttft_repeated_over_first", value=out["repeated"] / out["first"],
              first_s=out["first"], repeated_s_median=out["repeated"], repeats=args.repeats, videos=len(args.videos),
              statistic="median", target=None, meets_target=None,
              formula="median ttft_s of questions 2.. / median ttft_s of question 1 (fresh prefix), over the "
                      "videos, one at a time"))
    return out


def concurrent(url: str, args: argparse.Namespace, replicas: int, clients: int,
               answers: list[dict[str, Any]]) -> dict[str, Any]:
    import httpx

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        with httpx.Client(timeout=args.request_timeout) as client:
            barrier.wait()
            for k in range(index, args.requests, clients):
                video = k % len(args.videos)
                result = ask(client, url, args, args.videos[video],
                             f"Client {index}, request {k}: describe second {k % 10}.")
                with lock:
                    results.append(dict(result, video=video, phase=f"{clients} clients"))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    answers.extend(results)
    answered = [r for r in results if "error" not in r]
    refused = sum(1 for r in results if r.get("status") == 429)
    failed = len(results) - len(answered) - refused
    ttft = [r["ttft_s"] for r in answered]
    latency = [r["total_s"] for r in answered]
    tokens = sum(r["completion_tokens"] or 0 for r in answered)
    record = dict(kind="concurrency", replicas=replicas, clients=clients, requests=args.requests,
                  videos=len(args.videos), answered=len(answered), refused_429=refused, failed=failed, wall_s=wall,
                  requests_per_second=len(answered) / wall, answer_tokens_per_second=tokens / wall,
                  ttft_s_median=statistics.median(ttft) if ttft else None,
                  ttft_s_p90=percentile(ttft, 0.9) if ttft else None,
                  latency_s_median=statistics.median(latency) if latency else None,
                  latency_s_p90=percentile(latency, 0.9) if latency else None,
                  prefix_sources=sorted({r["prefix_source"] for r in answered}),
                  replicas_answered=len({r["replica"] for r in answered if r["replica"]}), model=args.model_name)
    emit(record)
    log(f"[replicas {replicas}] {clients} clients: {record['requests_per_second']:.2f} requests/s, first token "
        f"median {record['ttft_s_median']:.3f} s, latency median {record['latency_s_median']:.3f} s, "
        f"{refused} refused, {failed} failed")
    if failed:
        errors = [r["error"] for r in results if "error" in r and r.get("status") != 429]
        raise SystemExit(f"{BENCH}: {failed} requests failed with {clients} clients (replicas {replicas}): "
                         f"{errors[:3]}")
    return record


def routing(args: argparse.Namespace, replicas: int, listed: list[str], answers: list[dict[str, Any]]) \
        -> dict[str, Any]:
    """Which replicas answered which video (``replica`` is null for the single-process server)."""
    answered = [a for a in answers if "error" not in a]
    per_video = []
    for number in range(len(args.videos)):
        mine = [a for a in answered if a["video"] == number]
        per_video.append(dict(video=number, answers=len(mine), replicas=sorted({a["replica"] for a in mine}, key=str),
                              prefix_ids=sorted({str(a["prefix_id"]) for a in mine}),
                              fresh=sum(a["prefix_source"] == "fresh" for a in mine)))
    used = sorted({a["replica"] for a in answered if a["replica"]})
    record = dict(kind="routing", replicas=replicas, videos=len(args.videos), replicas_listed=len(listed),
                  replicas_answered=len(used) if replicas > 1 else 1, replica_ids=used,
                  unknown_replicas=sorted(set(used) - set(listed)),
                  affinity=all(len(v["replicas"]) == 1 and v["fresh"] == 1 for v in per_video),
                  distinct_prefixes=len({p for v in per_video for p in v["prefix_ids"]}), per_video=per_video)
    emit(record)
    log(f"[replicas {replicas}] {record['replicas_answered']} of {replicas} replicas answered "
        f"{len(args.videos)} videos; each video on one replica: {record['affinity']}")
    return record


def measure(args: argparse.Namespace, replicas: int, media_dir: Path) -> dict[str, Any]:
    """Start a server with ``replicas``, run the whole load on it, stop it."""
    import httpx

    log(f"starting omnizip serve --model {args.model}" + (f" --replicas {replicas}" if replicas > 1 else ""))
    server = Server(args, replicas, media_dir)
    try:
        health = httpx.get(f"{server.url}/health", timeout=30).json()
        args.model_name = health["model"]
        listed = [r["replica"] for r in health.get("replicas", [])]
        emit(dict(kind="server", replicas=replicas, ready_s=server.ready_s, model=args.model_name,
                  replicas_listed=len(listed), replica_states=sorted({r["state"] for r in health.get("replicas", [])}),
                  replica_pids=sorted(r["pid"] for r in health.get("replicas", []))))
        log(f"listening at {server.url} after {server.ready_s:.1f} s")
        answers: list[dict[str, Any]] = []
        questions = first_vs_repeated(server.url, args, replicas, answers)
        levels = {clients: concurrent(server.url, args, replicas, clients, answers) for clients in args.concurrency}
        low = min(levels)
        for clients, record in levels.items():
            if clients == low:
                continue
            emit(dict(kind="ratio", replicas=replicas, name=f"requests_per_second_{clients}_over_{low}_clients",
                      value=record["requests_per_second"] / levels[low]["requests_per_second"],
                      statistic="answered / wall", target=None, meets_target=None,
                      formula=f"requests_per_second with {clients} clients / with {low}"))
            emit(dict(kind="ratio", replicas=replicas, name=f"ttft_{clients}_over_{low}_clients",
                      value=record["ttft_s_median"] / levels[low]["ttft_s_median"], statistic="median", target=None,
                      meets_target=None, formula=f"median ttft_s with {clients} clients / with {low}"))
        route = routing(args, replicas, listed, answers)
        if replicas > 1:
            time.sleep(1.5)  # the replicas report their metrics every half second
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        code, seconds = server.stop()
        emit(dict(kind="shutdown", replicas=replicas, exit_code=code, seconds_to_exit=seconds,
                  stopped_line="omnizip serve: stopped" in "".join(server.lines),
                  leftover_processes=server.leftovers(),
                  refused_total=_metric(metrics, "omnizip_requests_refused_total"),
                  generated_tokens_total=_metric(metrics, "omnizip_generated_tokens_total")))
        log(f"[replicas {replicas}] stopped (exit {code}) {seconds:.1f} s after SIGTERM")
        return {"questions": questions, "levels": levels, "routing": route, "exit_code": code}
    finally:
        server.kill()


def compare(args: argparse.Namespace, one: dict[str, Any], many: dict[str, Any]) -> None:
    """N replicas over one process, for every figure both runs measured."""
    n = args.replicas
    common = dict(kind="ratio", replicas=n, over_replicas=1, target=None, meets_target=None)
    emit(dict(common, name=f"ttft_repeated_{n}_over_1_replicas",
              value=many["questions"]["repeated"] / one["questions"]["repeated"], statistic="median",
              formula=f"median repeated-question ttft_s with {n} replicas / with one process (one at a time)"))
    log(f"repeated-question first token: {one['questions']['repeated'] * 1e3:.1f} ms (1 process), "
        f"{many['questions']['repeated'] * 1e3:.1f} ms ({n} replicas)")
    for clients in args.concurrency:
        a, b = one["levels"][clients], many["levels"][clients]
        emit(dict(common, name=f"requests_per_second_{n}_over_1_replicas_{clients}_clients", clients=clients,
                  value=b["requests_per_second"] / a["requests_per_second"], statistic="answered / wall",
                  formula=f"requests_per_second with {n} replicas / with one process, {clients} clients"))
        emit(dict(common, name=f"ttft_{n}_over_1_replicas_{clients}_clients", clients=clients,
                  value=b["ttft_s_median"] / a["ttft_s_median"], statistic="median",
                  formula=f"median ttft_s with {n} replicas / with one process, {clients} clients"))
        log(f"{clients} clients: {a['requests_per_second']:.2f} requests/s (1 process), "
            f"{b['requests_per_second']:.2f} ({n} replicas): "
            f"x{b['requests_per_second'] / a['requests_per_second']:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: the tiny model, 1 and 4 clients, few requests")
    parser.add_argument("--model", default="tiny", help="--model of omnizip serve (default tiny)")
    parser.add_argument("--device", default=None, help="--device of omnizip serve (default: its own; --tiny cpu)")
    parser.add_argument("--video", type=Path, default=ROOT / "samples" / "talking.mp4",
                        help="the video asked about (--videos > 1: an MP4/MOV, copied with other bytes)")
    parser.add_argument("--videos", type=int, default=None,
                        help="distinct videos (copies of --video) the load asks about "
                             "(default 1; with --replicas N: 2N)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="concurrent clients, one measurement each (default 1 4 8; --tiny 1 4)")
    parser.add_argument("--requests", type=int, default=None, help="requests per concurrency level (default 48; --tiny 8)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="questions after the first on each video, one at a time (default 5; --tiny 3)")
    parser.add_argument("--max-tokens", type=int, default=None, help="answer tokens per request (default 32; --tiny 8)")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="client timeout per request, s")
    parser.add_argument("--start-timeout", type=float, default=1800.0,
                        help="seconds to wait for a server to listen (with replicas: Ray start and N model loads)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="N > 1: the same load on one process, then on omnizip serve --replicas N (Ray Serve); "
                             "ratios N over 1")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra argument for omnizip serve (repeatable), e.g. --server-arg=--preset=45")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas {args.replicas}: at least 1")
    if args.tiny and args.model != "tiny":
        parser.error("--tiny runs the tiny model (leave --model out)")
    args.device = args.device or ("cpu" if args.tiny else None)
    args.concurrency = sorted(set(args.concurrency or ([1, 4] if args.tiny else [1, 4, 8])))
    if min(args.concurrency) < 1:
        parser.error("--concurrency takes positive numbers of clients")
    args.requests = args.requests or (8 if args.tiny else 48)
    args.repeats = args.repeats or (3 if args.tiny else 5)
    args.max_tokens = args.max_tokens or (8 if args.tiny else 32)
    args.videos_count = args.videos if args.videos is not None else (1 if args.replicas == 1 else 2 * args.replicas)
    if args.videos_count < 1:
        parser.error("--videos takes a positive number")
    args.video = args.video.resolve()
    if not args.video.is_file():
        parser.error(f"--video {args.video} is not a file")
    if args.videos_count > 1 and args.video.suffix.lower() not in ISO_BMFF:
        parser.error(f"--videos {args.videos_count} copies --video with a trailing MP4 box: give an "
                     f"{'/'.join(sorted(ISO_BMFF))} file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omnizip-bench-serve-") as folder:
        media_dir = Path(folder)
        args.videos = make_videos(args.video, args.videos_count, media_dir)
        compared = [1, args.replicas] if args.replicas > 1 else [1]
        emit(dict(kind="setup", model=args.model, device=args.device, video=str(args.video),
                  video_bytes=args.video.stat().st_size, videos=len(args.videos), max_tokens=args.max_tokens,
                  repeats=args.repeats, requests=args.requests, concurrency=args.concurrency, replicas=args.replicas,
                  compared_replicas=compared, server_args=args.server_arg, cpu_count=os.cpu_count()))
        runs = {replicas: measure(args, replicas, media_dir) for replicas in compared}
        if args.replicas > 1:
            compare(args, runs[1], runs[args.replicas])
    return 0 if all(run["exit_code"] == 0 for run in runs.values()) else 1


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


if __name__ == "__main__":
    sys.exit(main())
