"""``omnizip profile``: the full path and each compression setting, same input, measured properly.

The media is decoded once, the model loaded once and the processor run once; every setting then
runs the same prepared inputs through a fresh :class:`~omnizip_cli.generation.Session` (encoders,
saliency, keep plan, prefill, decode: the library's opening path, :mod:`omnizip_cli.generation.opening`,
from its processor output on). Each setting gets one warm-up run,
then ``repeats`` timed runs. Runs are interleaved (round 1: full, 45 %, 35 %; round 2: full, 45 %,
35 %; ...) so slow drift of the machine (clock boost, thermal state, other processes) spreads over
all settings alike. Answers are greedy, so the runs of one setting must agree and the settings can
be compared token by token.

Figures of one run (each summarised over the timed runs as median, min and max):

``prefill_seconds``
    The language model over the (kept) prompt tokens, device-synchronised.
``ttft_seconds``
    Time to first token, with ``ask``'s definition: from the start of media decoding to the first
    answer token id, model load excluded. Media decoding and the processor run once for all runs,
    so their (shared) seconds are added to each run's own time from its encoders to its first token.
``decode_tokens_per_second``
    Answer tokens after the first, divided by the time spent producing them (0 when the answer is a
    single token).
``e2e_seconds``
    Time to first token plus decoding: to the last answer token.
``peak_memory_bytes``
    Of the kind :mod:`omnizip_cli.measure.memory` names for the device (``cuda_allocated`` or
    ``cpu_rss``), reset at the start of each run where the kind allows.
``prefill_flops``
    Analytic estimate of the language-model prefill (:func:`omnizip_cli.measure.flops.prefill_flops`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compression import CompressionSetting
from ..errors import UsageError
from ..measure import MemoryProbe, StageTimer, TokenCounts
from ..measure.environment import device_info, environment_notes, versions
from ..measure.flops import prefill_flops
from ..report import SCHEMA_VERSION

if TYPE_CHECKING:
    from ..compression import OmniZipConfig
    from ..generation import GenerationOptions
    from ..media import MediaOptions
    from ..models import LoadedModel, ModelSpec
    from ..models.base import PreparedPrompt

#: The kind of results ``profile --out`` writes (``"command"`` in its config.json, ``"kind"`` in its metrics.json).
KIND = "profile"
#: Stages timed once per run, in order (what the chart stacks after the shared stages).
RUN_STAGES = ("audio_encoder", "vision_encoder", "saliency", "keep_plan", "prefill", "decode")
#: The figures summarised per setting.
FIGURES = (
    "prefill_seconds",
    "ttft_seconds",
    "decode_seconds",
    "decode_tokens_per_second",
    "e2e_seconds",
    "peak_memory_bytes",
    "generated_tokens",
)

DEFINITIONS = {
    "prefill_seconds": "language-model prefill over the kept prompt tokens (device-synchronised)",
    "ttft_seconds": (
        "time to first token, as ask defines it: from the start of media decoding to the first answer token, "
        "model load excluded (the shared media decode and processor seconds plus the run's encoders, saliency, "
        "keep plan, prefill and first token)"
    ),
    "decode_seconds": "time spent producing the answer tokens after the first",
    "decode_tokens_per_second": "answer tokens after the first / decode_seconds",
    "e2e_seconds": "ttft_seconds + decode: to the last answer token",
    "peak_memory_bytes": "peak memory of the run, of the kind named by memory_kind (see memory_description)",
    "prefill_flops": (
        "analytic LLM prefill FLOPs: 2 * N * P_linear + 2 * L * n_heads * head_dim * N * (N + 1) + 2 * H * V"
    ),
    "speedup": "median of the full run / median of the setting (higher is better)",
    "memory_saved": "1 - peak(setting) / peak(full), from the medians",
}


# ----------------------------------------------------------------------------- settings
def build_settings(
    presets: Sequence[str] | None, retentions: Sequence[float] | None, include_full: bool = True
) -> list[CompressionSetting]:
    """The settings to profile, in order: full (unless excluded), then presets, then retentions.

    With neither presets nor retentions the defaults are the paper's two presets, 45 % and 35 %.
    Raises :class:`UsageError` for an unknown preset, a retention outside (0, 1] or a duplicate.
    """
    presets = list(presets or [])
    retentions = list(retentions or [])
    if not presets and not retentions:
        presets = ["45", "35"]
    settings: list[CompressionSetting] = [CompressionSetting.off()] if include_full else []
    settings += [CompressionSetting(source="preset", preset=name) for name in presets]
    settings += [CompressionSetting(source="retention", preset=None, retention=float(value)) for value in retentions]
    keys = [s.key for s in settings]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise UsageError(f"the same setting is asked for twice: {', '.join(duplicates)}")
    if not settings:
        raise UsageError("nothing to profile: give --preset or --retention, or keep the full run")
    return settings


def column_labels(settings: Sequence[CompressionSetting]) -> dict[str, str]:
    """Column titles by key; a retention that reads like a preset (``45 %``) gets `` (r)``."""
    labels = {s.key: s.label for s in settings}
    values = list(labels.values())
    return {s.key: (f"{s.label} (r)" if s.source == "retention" and values.count(s.label) > 1 else s.label)
            for s in settings}


def nominal_retention(config: OmniZipConfig | None, audio_tokens: int, video_tokens: int) -> float:
    """Fraction of audio+video tokens the ratios keep at this clip's mix, ignoring rounding and floors."""
    if config is None or audio_tokens + video_tokens == 0:
        return 1.0
    from ..compression import expected_retention

    return float(expected_retention(config, float(audio_tokens), float(video_tokens)))


# ----------------------------------------------------------------------------- one run
@dataclass
class RunMeasurement:
    """The figures of one run of one setting."""

    stages: dict[str, float]
    prefill_seconds: float
    ttft_seconds: float
    decode_seconds: float
    decode_tokens_per_second: float
    e2e_seconds: float
    peak_memory_bytes: int
    generated_tokens: int
    token_ids: list[int]
    answer: str
    stop_reason: str
    decoder: str
    tokens: TokenCounts
    prompt_length: int
    prefill_length: int
    groups: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None

    def figure(self, name: str) -> float:
        return float(getattr(self, name))


def measure_run(
    loaded: LoadedModel,
    prepared: PreparedPrompt,
    setting: CompressionSetting,
    question: str,
    options: GenerationOptions,
    memory: MemoryProbe,
    shared_seconds: float,
) -> RunMeasurement:
    """One answer from prepared inputs through a fresh Session, with synchronised clocks and the run's peak memory.

    Time to first token and e2e are the answer's own (:class:`~omnizip_cli.generation.AnswerStats`)
    from an origin ``shared_seconds`` before this run started: the shared media decode and
    processor count once in each run, as in ``ask``. A one-off set-up of the fast decoder (cache
    allocation, CUDA-graph capture), paid by the first answer that needs it (normally the warm-up
    run), is kept out of both and reported as its own stage.
    """
    from ..generation import Session
    from ..generation.opening import encode_prepared
    from ..generation.prefix import records_saliency

    timer = StageTimer(device=loaded.device)
    memory.reset()
    timer.sync()
    started = time.perf_counter()
    video = encode_prepared(loaded, prepared, record_saliency=records_saliency(setting), timer=timer)
    session = Session.from_video(video, setting, timer=timer)
    stats = session.answer(question, options, origin=started - shared_seconds)
    ttft = stats.time_to_first_token_seconds
    e2e = stats.total_seconds
    stages = {name: session.timer.seconds(name) for name in RUN_STAGES if name in session.timer.stages}
    for name in ("prefill", "decode", "decode_warmup"):
        if name in stats.timer.stages:
            stages[name] = stats.timer.seconds(name)
    question_tokens = stats.prompt_tokens - session.prefill.length
    return RunMeasurement(
        stages=stages,
        prefill_seconds=float(stats.prefill_seconds),
        ttft_seconds=float(ttft),
        decode_seconds=float(stats.decode_seconds),
        decode_tokens_per_second=float(stats.decode_tokens_per_second),
        e2e_seconds=float(e2e),
        peak_memory_bytes=int(memory.peak()),
        generated_tokens=len(stats.token_ids),
        token_ids=list(stats.token_ids),
        answer=stats.text,
        stop_reason=stats.stop_reason,
        decoder=stats.decoder,
        tokens=session.tokens.plus_text(question_tokens),
        prompt_length=session.prefix_length + question_tokens,
        prefill_length=stats.prompt_tokens,
        groups=session.group_rows,
        config=session.config.to_dict() if session.config is not None else None,
    )


# ----------------------------------------------------------------------------- summaries
def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread of one figure over the timed runs."""
    values = [float(v) for v in values]
    return {
        "median": float(statistics.median(values)) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "values": values,
    }


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """Index of the first position where ``a`` and ``b`` differ; None when equal.

    When one is a prefix of the other, the length of the shorter one.
    """
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def compare_to_reference(setting: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Speedups, memory saved and answer agreement of a setting against the full run (from medians)."""
    ref, own = reference["figures"], setting["figures"]

    def median(figures: dict[str, Any], name: str) -> float | None:
        return figures[name]["median"]

    ref_peak, own_peak = median(ref, "peak_memory_bytes"), median(own, "peak_memory_bytes")
    ref_answer, own_answer = reference["answer"], setting["answer"]
    token_diff = first_difference(ref_answer["token_ids"], own_answer["token_ids"])
    char_diff = first_difference(ref_answer["text"], own_answer["text"])
    return {
        "reference": reference["key"],
        "speedup_prefill": _ratio(median(ref, "prefill_seconds"), median(own, "prefill_seconds")),
        "speedup_ttft": _ratio(median(ref, "ttft_seconds"), median(own, "ttft_seconds")),
        "speedup_e2e": _ratio(median(ref, "e2e_seconds"), median(own, "e2e_seconds")),
        "decode_speed_ratio": _ratio(median(own, "decode_tokens_per_second"), median(ref, "decode_tokens_per_second")),
        "memory_saved_bytes": (ref_peak - own_peak) if ref_peak is not None and own_peak is not None else None,
        "memory_saved_fraction": (1.0 - own_peak / ref_peak) if ref_peak and own_peak is not None else None,
        "flops_ratio": _ratio(setting["prefill_flops"]["total"], reference["prefill_flops"]["total"]),
        "prefill_tokens_ratio": _ratio(setting["prefill_length"], reference["prefill_length"]),
        "answer_identical": token_diff is None,
        "first_differing_token": token_diff,
        "first_differing_char": char_diff,
    }


# ----------------------------------------------------------------------------- the whole profile
@dataclass
class ProfileRequest:
    """Everything ``omnizip profile`` was asked to do."""

    media_path: Path
    question: str
    model: ModelSpec
    media: MediaOptions
    settings: list[CompressionSetting]
    generation: GenerationOptions
    repeats: int = 3
    warmup: int = 1
    system: str | None = None

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise UsageError("--repeats must be at least 1")
        if self.warmup < 0:
            raise UsageError("warm-up runs must be >= 0")
        if not self.settings:
            raise UsageError("nothing to profile: give --preset or --retention, or keep the full run")


Progress = Callable[[str], None]


def run_profile(
    request: ProfileRequest,
    *,
    loaded: LoadedModel | None = None,
    progress: Progress | None = None,
    load: Callable[[], LoadedModel] | None = None,
) -> dict[str, Any]:
    """Decode once, load once, prepare once, then measure every setting; returns the JSON object.

    ``loaded`` reuses an already loaded model; otherwise ``load()`` (default
    :func:`omnizip_cli.models.load_model`) is called after the media decoded successfully.
    """
    from ..generation.opening import prepare
    from ..generation.prefix import prompt_counts
    from ..media import load_media

    from ..models.registry import token_pixels_before_loading

    progress = progress or (lambda _message: None)
    token_pixels = loaded.adapter.vision_geometry(loaded.model).token_pixels if loaded is not None else \
        token_pixels_before_loading(request.model.model, request.model.revision)
    media = None
    if token_pixels is not None:  # decode first: a bad file fails before the model load
        progress(f"decoding {request.media_path.name} ...")
        media = load_media(request.media_path, request.media, token_pixels=token_pixels)
    if loaded is None:
        progress(f"loading {request.model.model} ...")
        if load is None:
            from ..models import load_model

            loaded = load_model(request.model)
        else:
            loaded = load()
    own = loaded.adapter.vision_geometry(loaded.model).token_pixels
    if media is None or own != token_pixels:  # frames sized for the model's own geometry
        progress(f"decoding {request.media_path.name} ...")
        media = load_media(request.media_path, request.media, token_pixels=own)
    shared = StageTimer(device=loaded.device)
    shared.add("media_decode", media.summary.decode_seconds)
    progress("running the processor ...")
    prepared = prepare(loaded, media, system=request.system, timer=shared)
    shared_seconds = shared.seconds("media_decode") + shared.seconds("preprocess")

    counts = prompt_counts(loaded, prepared)
    audio_tokens, video_tokens = counts.audio, counts.video
    settings = request.settings
    labels = column_labels(settings)
    memory = MemoryProbe(loaded.device)
    runs: dict[str, list[RunMeasurement]] = {s.key: [] for s in settings}
    warmups: dict[str, list[RunMeasurement]] = {s.key: [] for s in settings}
    total = (request.warmup + request.repeats) * len(settings)
    done = 0
    for round_index in range(request.warmup + request.repeats):
        warm = round_index < request.warmup
        for setting in settings:
            done += 1
            what = "warm-up" if warm else f"run {round_index - request.warmup + 1}/{request.repeats}"
            progress(f"[{done}/{total}] {labels[setting.key]}: {what}")
            measurement = measure_run(loaded, prepared, setting, request.question, request.generation, memory,
                                      shared_seconds)
            (warmups if warm else runs)[setting.key].append(measurement)

    text_config = loaded.model.config.get_text_config()
    columns = [
        _setting_summary(setting, labels[setting.key], runs[setting.key], warmups[setting.key], text_config,
                         audio_tokens, video_tokens)
        for setting in settings
    ]
    reference = next((c for c in columns if c["key"] == "full"), None)
    for column in columns:
        column["vs_full"] = (
            compare_to_reference(column, reference) if reference is not None and column is not reference else None
        )

    warnings = [*loaded.warnings, *media.summary.warnings]
    for setting in settings:
        run = runs[setting.key][0]
        if run.prefill_length > loaded.context_length:
            warnings.append(
                f"{labels[setting.key]}: the prompt has {run.prefill_length} tokens, more than the model's context of "
                f"{loaded.context_length}: its answer may be degraded"
            )
    for column in columns:
        if not column["answer"]["stable_across_runs"]:
            warnings.append(f"{column['label']}: the runs gave different answers (greedy decoding should not)")
    notes = environment_notes(loaded.is_tiny, loaded.device)
    config = resolved_config(request, loaded, settings, memory, audio_tokens, video_tokens)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "question": request.question,
        "media": media.summary.to_dict(),
        "model": loaded.describe(),
        "repeats": request.repeats,
        "warmup": request.warmup,
        "representative": not notes,
        "notes": notes,
        "memory_kind": memory.kind,
        "memory_description": memory.describe(),
        "shared": {
            "load_model_seconds": float(loaded.load_seconds),
            "media_decode_seconds": float(shared.seconds("media_decode")),
            "preprocess_seconds": float(shared.seconds("preprocess")),
        },
        "reference": reference["key"] if reference is not None else None,
        "settings": columns,
        "definitions": DEFINITIONS,
        "config": config,
        "warnings": warnings,
    }


def _setting_summary(
    setting: CompressionSetting,
    label: str,
    runs: list[RunMeasurement],
    warmups: list[RunMeasurement],
    text_config: Any,
    audio_tokens: int,
    video_tokens: int,
) -> dict[str, Any]:
    from ..compression import OmniZipConfig

    first = runs[0]
    tokens = first.tokens
    all_runs = [*warmups, *runs]
    stable = all(r.token_ids == first.token_ids for r in all_runs)
    stage_names = [name for name in (*RUN_STAGES, "decode_warmup") if any(name in r.stages for r in runs)]
    warmup_one_off = sum(r.stages.get("decode_warmup", 0.0) for r in warmups)
    config = OmniZipConfig(**first.config) if first.config is not None else None
    return {
        **setting.to_dict(),
        "label": label,
        "compression": first.config,
        "tokens": tokens.to_dict(),
        "prompt_length": first.prompt_length,
        "prefill_length": first.prefill_length,
        "retention": {
            "target": setting.target_retention,
            "nominal": nominal_retention(config, audio_tokens, video_tokens),
            "audio_video": tokens.audio_video.retention,
            "audio": tokens.audio.retention,
            "video": tokens.video.retention,
            "total": tokens.total.retention,
        },
        "figures": {name: summarize([r.figure(name) for r in runs]) for name in FIGURES},
        "stages": {name: summarize([r.stages.get(name, 0.0) for r in runs]) for name in stage_names},
        "prefill_flops": prefill_flops(text_config, first.prefill_length),
        "groups": first.groups,
        "answer": {
            "text": first.answer,
            "token_ids": first.token_ids,
            "tokens": len(first.token_ids),
            "stop_reason": first.stop_reason,
            "stable_across_runs": stable,
        },
        "decoder": first.decoder,
        "decoder_setup_seconds_in_warmup": warmup_one_off,
    }


def resolved_config(
    request: ProfileRequest,
    loaded: LoadedModel,
    settings: Sequence[CompressionSetting],
    memory: MemoryProbe,
    audio_tokens: int,
    video_tokens: int,
) -> dict[str, Any]:
    """The configuration actually run (``config.json`` of ``--out``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": KIND,
        "media_path": str(request.media_path),
        "question": request.question,
        "system": request.system,
        "model": {"requested": asdict(request.model), "resolved": loaded.describe()},
        "media_options": request.media.to_dict(),
        "settings": [{**s.to_dict(), "compression": _resolved(s, audio_tokens, video_tokens)} for s in settings],
        "ratios_derived_for": {"audio_tokens": audio_tokens, "video_tokens": video_tokens},
        "repeats": request.repeats,
        "warmup": request.warmup,
        "order": "interleaved: every round runs each setting once, warm-up rounds first",
        "generation": asdict(request.generation),
        "memory_kind": memory.kind,
        "versions": versions(),
        "device": device_info(loaded.device),
    }


def _resolved(setting: CompressionSetting, audio_tokens: int, video_tokens: int) -> dict[str, Any] | None:
    config = setting.resolve(audio_tokens, video_tokens)
    return config.to_dict() if config is not None else None


# ----------------------------------------------------------------------------- output
def check_out_dir(out_dir: Path) -> None:
    """Fail before any work when ``out_dir`` cannot take the results: an existing file, a folder that
    cannot be created or written (``/proc/...``, read-only), or a folder that profile did not write
    (the user's own files, an evaluation's results), whose ``metrics.json`` and ``config.json``
    would be overwritten. A missing or empty folder is fine (created now), and so is one an earlier
    ``profile --out`` wrote. Raises :class:`UsageError`."""
    from ..report.results_folder import ResultsFolder

    folder = ResultsFolder(out_dir)
    folder.check_writable()
    folder.check_owned(KIND)


def write_outputs(payload: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``config.json`` and ``timings.png`` into ``out_dir`` (created).

    The JSON files escape non-ASCII characters (``--json`` prints the same object that way).
    """
    from ..report.chart import render_timings_chart
    from ..report.results_folder import CONFIG, METRICS, TIMINGS_CHART, ResultsFolder

    folder = ResultsFolder(out_dir)
    folder.create()
    return {
        "metrics": folder.write_json(METRICS, payload, ascii_only=True),
        "config": folder.write_json(CONFIG, payload["config"], ascii_only=True),
        "chart": folder.write_chart(TIMINGS_CHART, render_timings_chart(payload), optimize=True),
    }
