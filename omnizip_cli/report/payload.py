"""The ``--json`` object of ``omnizip ask`` (one per answer): the answer, the configuration and every
figure of the report. The Rich report (:mod:`~omnizip_cli.report.ask_view`) only renders this dict,
so every figure it shows is in the JSON and the other way round. Schema: ``docs/json-schema.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..measure import STAGES, StageTimer, memory_kind
from ..measure.memory import MEMORY_DEFINITIONS, MEMORY_LABELS
from . import SCHEMA_VERSION
from .units import finite, rate

if TYPE_CHECKING:
    from ..generation import AnswerStats, Session

TTFT_DEFINITION = (
    "wall time from the start of media decoding to the first answer token, model loading excluded "
    "(the part of it that media decoding did not overlap) "
    "(media decode + preprocessing + encoders + saliency + keep plan + prefill + choosing the first token; "
    "stages marked overlapped_with_media_decode ran beside the decoding)"
)
TTFT_DEFINITION_DISK = (
    "wall time from the start of opening to the first answer token, model loading excluded "
    "(hashing the file, reading the media prefix from the disk cache, prefill + choosing the first token)"
)
TTFT_DEFINITION_LATER = "wall time from the question to its first token (the media prefix was already prefilled)"
TOTAL_DEFINITION = "wall time from the start of media decoding to the last answer token, model loading excluded"
TOTAL_DEFINITION_DISK = "wall time from the start of opening to the last answer token, model loading excluded"
TOTAL_DEFINITION_LATER = "wall time from the question to its last token"


def timing_definitions(first_answer: bool, prefix_source: str) -> tuple[str, str, str]:
    """Where this answer's time to first token and total start: ``(ttft definition, total
    definition, short label)``, for the first answer of a fresh or a disk-cached opening, or a later one."""
    if not first_answer:
        return TTFT_DEFINITION_LATER, TOTAL_DEFINITION_LATER, "from the question"
    if prefix_source == "disk":
        return TTFT_DEFINITION_DISK, TOTAL_DEFINITION_DISK, "from opening (disk cache), load excluded"
    return TTFT_DEFINITION, TOTAL_DEFINITION, "from media decode, load excluded"


def compression_label(compression: dict[str, Any] | None) -> str:
    """``off``, ``OmniZip preset 45 (...)`` or ``OmniZip custom (...)``: the setting in one line."""
    if compression is None:
        return "off"
    from ..compression import PRESETS

    name = next((f"preset {key}" for key, preset in PRESETS.items() if preset.to_dict() == compression), "custom")
    return (
        f"OmniZip {name}: rho_audio {compression.get('rho_audio'):g}, rho_video {compression.get('rho_video'):g}, "
        f"anchors {compression.get('anchor_ratio'):g}, G {compression.get('merge_g')}"
    )


def stage_rows(timer: StageTimer, device: str) -> tuple[dict[str, Any], int | None]:
    """Per stage: ran, seconds, peak memory and its kind; and the largest peak of the device's kind."""
    kind = memory_kind(device)
    stages: dict[str, Any] = {}
    for name in STAGES:
        record = timer.stages.get(name)
        stages[name] = {
            "ran": record is not None,
            "seconds": finite(record.seconds) if record is not None else 0.0,
            "peak_memory_bytes": record.peak_memory_bytes if record is not None else None,
            "memory_kind": record.memory_kind if record is not None and record.peak_memory_bytes is not None else kind,
            "overlapped_with_media_decode": bool(record is not None and record.overlapped),
        }
    peaks = [s["peak_memory_bytes"] for s in stages.values()
             if s["peak_memory_bytes"] is not None and s["memory_kind"] == kind]
    return stages, (max(peaks) if peaks else None)


def answer_payload(
    session: Session,
    stats: AnswerStats,
    *,
    question: str,
    config: dict[str, Any],
    include_setup: bool = True,
) -> dict[str, Any]:
    """The JSON object of one answer of ``session``.

    Time to first token and the total are the answer's own (:class:`~omnizip_cli.generation.AnswerStats`,
    from the origin the session defines: the opening for its first answer, else the question).
    ``config``: the resolved request (media path, model spec, media options, generation options).
    ``include_setup``: charge the session's set-up stages (media decode to keep plan) to this answer
    (the first question); later questions show only their own stages.
    """
    loaded = session.loaded
    timer = StageTimer(device=loaded.device)
    if include_setup:
        timer = timer.merged(session.timer)
    timer = timer.merged(stats.timer)
    stages, peak = stage_rows(timer, loaded.device)
    definitions = timing_definitions(include_setup, stats.prefix_source)
    kind = memory_kind(loaded.device)
    question_tokens = stats.prompt_tokens - session.prefill.length
    tokens = session.tokens.plus_text(question_tokens)
    prompt = session.prefix_length + question_tokens
    generated = len(stats.token_ids)
    compression = session.config.to_dict() if session.config is not None else None
    summary = session.summary
    return {
        "schema_version": SCHEMA_VERSION,
        "answer": stats.text,
        "question": question,
        "random_weights": loaded.is_tiny,
        "config": {**config, "question": question, "compression": compression},
        "model": loaded.describe(),
        "compression": {
            "enabled": compression is not None,
            "label": compression_label(compression),
            "groups": session.group_rows,
        },
        "media": summary.to_dict() if summary is not None else None,
        "tokens": {
            **tokens.to_dict(),
            "prompt": prompt,
            "prefill": stats.prompt_tokens,
            "context_length": loaded.context_length,
            "generated": generated,
        },
        "generation": {
            "prompt_tokens": stats.prompt_tokens,
            "prompt_tokens_before_compression": prompt,
            "prefilled_tokens": stats.prefilled_tokens,
            "prefix_source": stats.prefix_source,
            "prompt_seconds": finite(stats.prefill_seconds),
            "prompt_tokens_per_second": rate(stats.prefilled_tokens, stats.prefill_seconds),
            "generated_tokens": generated,
            "first_token_seconds": finite(stats.first_token_seconds),
            "decode_tokens": max(generated - 1, 0),
            "decode_seconds": finite(stats.decode_seconds),
            "decode_tokens_per_second": finite(stats.decode_tokens_per_second),
            "stop_reason": stats.stop_reason,
            "decoder": stats.decoder,
            "decoder_notes": list(stats.notes),
        },
        "timings": {
            "stages": stages,
            "load_model_seconds": finite(timer.seconds("load_model")),
            "time_to_first_token_seconds": finite(stats.time_to_first_token_seconds),
            "time_to_first_token_definition": definitions[0],
            "total_seconds": finite(stats.total_seconds),
            "total_definition": definitions[1],
            "time_to_first_token_from": definitions[2],
        },
        "memory": {
            "kind": kind,
            "label": MEMORY_LABELS[kind],
            "definition": MEMORY_DEFINITIONS[kind],
            "peak_bytes": peak,
        },
        "context": session.context_fit.to_dict() if session.context_fit is not None else None,
        # Where the media prefix came from (disk cache entry, read time, set-up seconds it saved) or
        # whether a fresh one was stored; None when the disk cache was off (--no-cache).
        "prefix_cache": session.prefix_cache,
        "warnings": [],
    }
