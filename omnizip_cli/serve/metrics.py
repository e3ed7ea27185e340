"""The server's Prometheus metrics (``GET /metrics``, text format), in a registry of its own."""

from __future__ import annotations

from typing import Any

#: Time-to-first-token buckets, seconds (a cached prefix on a GPU answers in tens of ms; a fresh
#: long video on a CPU takes minutes).
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServerMetrics:
    """Requests by route and status, queue length, requests running, prompt tokens before and after
    compression (audio, video, text), generated tokens, prefixes by source (fresh, memory, disk),
    time to first token, and the prefixes held in memory."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created samples: one series per counter, as dashboards expect
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("omnizip_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.queue_length = Gauge("omnizip_queue_length", "Chat requests waiting for the model", registry=r)
        self.running = Gauge("omnizip_requests_running", "Chat requests being answered (0 or 1)", registry=r)
        self.refused = Counter("omnizip_requests_refused", "Chat requests refused with a 429 (queue full)",
                               registry=r)
        self.tokens_before = Counter("omnizip_prompt_tokens_before_compression",
                                     "Prompt tokens before compression, by modality", ["modality"], registry=r)
        self.tokens_after = Counter("omnizip_prompt_tokens_after_compression",
                                    "Prompt tokens the language model saw, by modality", ["modality"], registry=r)
        self.generated = Counter("omnizip_generated_tokens", "Answer tokens generated", registry=r)
        self.prefixes = Counter("omnizip_prefix", "Answers by where their media prefix came from "
                                "(fresh: computed; memory: held by the server; disk: the prefix cache)",
                                ["source"], registry=r)
        self.ttft = Histogram("omnizip_time_to_first_token_seconds",
                              "From a chat request's arrival to its first answer token", ["prefix_source"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.prefix_bytes = Gauge("omnizip_prefix_memory_bytes", "Bytes of media prefixes held in memory",
                                  registry=r)
        self.prefixes_held = Gauge("omnizip_prefixes_in_memory", "Media prefixes held in memory", registry=r)
        self.evicted = Counter("omnizip_prefixes_evicted", "Prefixes dropped from memory (--max-prefix-memory)",
                               registry=r)
        self.failed = Counter("omnizip_answers_failed", "Chat requests that ended in an error, by reason",
                              ["reason"], registry=r)
        self.cancelled = Counter("omnizip_answers_cancelled", "Chat requests whose client went away before "
                                 "the answer ended (queued: before it started)", ["when"], registry=r)
        for when in ("queued", "answering"):
            self.cancelled.labels(when=when)
        for source in ("fresh", "memory", "disk"):
            self.prefixes.labels(source=source)

    def answered(self, tokens: dict[str, Any], generated: int, source: str, ttft: float) -> None:
        """Count one answer: ``tokens`` as the JSON's ``tokens`` (per modality before/after)."""
        for modality in ("audio", "video", "text"):
            counts = tokens.get(modality) or {}
            self.tokens_before.labels(modality=modality).inc(counts.get("before", 0))
            self.tokens_after.labels(modality=modality).inc(counts.get("after", 0))
        self.generated.inc(generated)
        self.prefixes.labels(source=source).inc()
        self.ttft.labels(prefix_source=source).observe(ttft)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
