"""``omnizip profile``: the full path and each compression setting, same input, measured properly.

The media is decoded once, the model loaded once and the processor run once; every setting then
answers the same prepared inputs. Each setting gets one warm-up run, then ``repeats`` timed runs.
Runs are interleaved (round 1: full, 45 %, 35 %; round 2: full, 45 %, 35 %; ...) so slow drift of
the machine (clock boost, thermal state, other processes) spreads over all settings alike instead
of favouring the ones measured first. Answers are greedy, so the runs of one setting must agree
and the settings can be compared token by token.

Figures of one run (each summarised over the timed runs as median, min and max):

``prefill_seconds``
    The language model over the (kept) prompt tokens, device-synchronised.
``ttft_seconds``
    Time to first token: wall time from handing the prepared inputs to the model until the first
    answer token id is known, i.e. audio encoder + vision encoder + saliency + keep plan + prefill
    + choosing the first token (plus the small glue in between: embedding lookup, M-RoPE ids).
    Media decoding and the processor run once before all runs and are reported apart (``shared``).
``decode_tokens_per_second``
    Answer tokens after the first, divided by the time spent producing them (0 when the answer is a
    single token).
``e2e_seconds``
    Wall time of one whole answer from the prepared inputs to the last token (TTFT + decode).
``peak_memory_bytes``
    GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start of the
    run (and of every stage), all timings synchronised. CPU: the peak resident set size of the
    **whole process** during the run (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), which
    includes the weights, Python and the runtime; where it cannot be reset, the process's lifetime
    peak (``ru_maxrss``), which can only grow from run to run.
``prefill_flops``
    Analytic estimate of the language-model prefill, from the model config (see
    :func:`prefill_flops`).
"""

from __future__ import annotations

import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .stats import StageTimer, TokenCounts, process_peak_rss_bytes

if TYPE_CHECKING:
    from .compression import OmniZipConfig
    from .decoding import GenerationOptions
    from .inputs import ModelInputs
    from .loading import LoadedModel, ModelSpec
    from .media import MediaOptions

SCHEMA_VERSION = 1

#: Stages timed once per run, in order (what the chart stacks after the shared stages).
RUN_STAGES = ("audio_encoder", "vision_encoder", "saliency", "keep_plan", "prefill", "decode")
#: Stages done once for all settings.
SHARED_STAGES = ("media_decode", "preprocess")
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
        "time to first token: encoders + saliency + keep plan + prefill + first token, from prepared inputs; "
        "media decoding and the processor are shared and excluded"
    ),
    "decode_seconds": "time spent producing the answer tokens after the first",
    "decode_tokens_per_second": "answer tokens after the first / decode_seconds",
    "e2e_seconds": "one whole answer from prepared inputs to the last token (ttft + decode)",
    "peak_memory_bytes": (
        "GPU: torch.cuda.max_memory_allocated, reset at the start of each run; "
        "CPU: peak resident set size of the whole process during the run"
    ),
    "prefill_flops": (
        "analytic LLM prefill FLOPs: 2 * N * P_linear + 2 * L * n_heads * head_dim * N * (N + 1) + 2 * H * V"
    ),
    "speedup": "median of the full run / median of the setting (higher is better)",
    "memory_saved": "1 - peak(setting) / peak(full), from the medians",
}


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ProfileSetting:
    """One column of the profile: the full path or one compression setting.

    ``retention`` settings carry no config until the clip's token mix is known
    (:func:`resolve_retention_settings`), so that 0.45 means 45 % of *this* clip's audio+video tokens.
    """

    key: str  # unique, JSON-safe: "full", "preset-45", "retention-0.4"
    label: str  # column title: "full", "45 %", "40 %"
    source: str  # "full" | "preset" | "retention"
    config: OmniZipConfig | None = None
    target_retention: float | None = None  # fraction of audio+video tokens the setting aims to keep

    @property
    def is_full(self) -> bool:
        return self.source == "full"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "source": self.source,
            "target_retention": self.target_retention,
            "compression": self.config.to_dict() if self.config is not None else None,
        }


def _percent_label(fraction: float) -> str:
    text = f"{fraction * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text} %"


def build_settings(
    presets: Sequence[str] | None, retentions: Sequence[float] | None, include_full: bool = True
) -> list[ProfileSetting]:
    """The settings to profile, in order: full (unless excluded), then presets, then retentions.

    With neither presets nor retentions the defaults are the paper's two presets, 45 % and 35 %.
    Raises :class:`UsageError` for an unknown preset, a retention outside (0, 1] or a duplicate.
    """
    from .compression import PRESETS

    presets = list(presets or [])
    retentions = list(retentions or [])
    if not presets and not retentions:
        presets = ["45", "35"]
    settings: list[ProfileSetting] = []
    if include_full:
        settings.append(ProfileSetting(key="full", label="full", source="full"))
    for name in presets:
        if name not in PRESETS:
            raise UsageError(f"unknown --preset {name!r} (choose from {', '.join(PRESETS)})")
        target = int(name) / 100 if name.isdigit() else None
        settings.append(
            ProfileSetting(
                key=f"preset-{name}",
                label=_percent_label(target) if target is not None else name,
                source="preset",
                config=PRESETS[name],
                target_retention=target,
            )
        )
    for value in retentions:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value <= 1.0):
            raise UsageError(f"--retention must be in (0, 1], got {value}")
        settings.append(
            ProfileSetting(key=f"retention-{value:g}", label=_percent_label(value), source="retention",
                           target_retention=float(value))
        )
    keys = [s.key for s in settings]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise UsageError(f"the same setting is asked for twice: {', '.join(duplicates)}")
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):  # e.g. --preset 45 --retention 0.45: tell the columns apart
        settings = [
            ProfileSetting(s.key, f"{s.label} (r)" if s.source == "retention" else s.label, s.source, s.config,
                           s.target_retention)
            for s in settings
        ]
    return settings


def resolve_retention_settings(
    settings: Sequence[ProfileSetting], audio_tokens: int, video_tokens: int
) -> list[ProfileSetting]:
    """Derive the ratios of ``retention`` settings for this clip's audio/video token mix."""
    from .compression import config_for_retention

    resolved = []
    for setting in settings:
        if setting.source == "retention" and setting.config is None:
            assert setting.target_retention is not None
            if audio_tokens + video_tokens == 0:
                raise UsageError("--retention needs audio or video tokens, and this input has none")
            config = config_for_retention(
                setting.target_retention,
                audio_tokens_per_second=float(audio_tokens),
                video_tokens_per_second=float(video_tokens),
            )
            setting = ProfileSetting(setting.key, setting.label, setting.source, config, setting.target_retention)
        resolved.append(setting)
    return resolved


def nominal_retention(config: OmniZipConfig | None, audio_tokens: int, video_tokens: int) -> float:
    """Fraction of audio+video tokens the ratios keep at this clip's mix, ignoring rounding and floors."""
    if config is None or audio_tokens + video_tokens == 0:
        return 1.0
    from .compression import expected_retention

    return float(expected_retention(config, float(audio_tokens), float(video_tokens)))


# ----------------------------------------------------------------------------- FLOPs
def prefill_flops(text_config: Any, tokens: int) -> dict[str, int]:
    """Analytic FLOPs of the language-model prefill over ``tokens`` tokens (a lower bound).

    With ``L`` layers, hidden size ``H``, ``n_h`` query heads and ``n_kv`` key/value heads of size
    ``d``, MLP width ``I`` and vocabulary ``V``:

    * linear layers: ``P_linear = L * (2 * H * n_h * d + 2 * H * n_kv * d + 3 * H * I)`` weights
      (q and o projections, k and v projections, gate/up/down), each weight one multiply-add per
      token: ``2 * N * P_linear``;
    * attention (causal): query ``i`` sees ``i`` keys, ``N (N + 1) / 2`` query-key pairs per head;
      ``Q K^T`` and ``softmax(.) V`` each cost ``2 * d`` FLOPs per pair:
      ``2 * L * n_h * d * N * (N + 1)`` (= ``4 * L * H * N^2 / 2`` for large ``N`` when ``n_h d = H``);
    * the head on the last position only: ``2 * H * V``.

    Norms, rotary embeddings, softmax, biases and activations are left out (a few per cent).
    """
    hidden = int(text_config.hidden_size)
    layers = int(text_config.num_hidden_layers)
    heads = int(text_config.num_attention_heads)
    kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text_config, "head_dim", None) or hidden // heads)
    intermediate = int(text_config.intermediate_size)
    vocab = int(text_config.vocab_size)
    n = int(tokens)
    linear_params = layers * (2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate)
    linear = 2 * n * linear_params
    attention = 2 * layers * heads * head_dim * n * (n + 1)
    head = 2 * hidden * vocab if n > 0 else 0
    return {
        "tokens": n,
        "linear": linear,
        "attention": attention,
        "lm_head": head,
        "total": linear + attention + head,
        "linear_params": linear_params,
    }


# ----------------------------------------------------------------------------- memory
class MemoryProbe:
    """Peak memory of one run: CUDA allocated memory, or the process's peak RSS on the CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        if self.cuda:
            self.kind = "cuda_max_memory_allocated"
        elif _can_reset_rss_peak():
            self.kind = "cpu_process_rss_peak"
        else:
            self.kind = "cpu_process_rss_lifetime_peak"

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "cpu_process_rss_peak":
            _reset_rss_peak()

    def peak(self, timer: StageTimer) -> int:
        """The run's peak: the largest of the per-stage peaks and what is read now."""
        stage_peaks = [r.peak_memory_bytes or 0 for r in timer.stages.values()]
        if self.cuda:
            import torch

            now = int(torch.cuda.max_memory_allocated(self.device))
            return max([now, *stage_peaks])
        if self.kind == "cpu_process_rss_peak":
            return _read_rss_peak() or process_peak_rss_bytes()
        return process_peak_rss_bytes()

    def describe(self) -> str:
        return {
            "cuda_max_memory_allocated": "GPU memory allocated by PyTorch (max_memory_allocated, reset per run)",
            "cpu_process_rss_peak": "peak resident memory of the whole process during the run (VmHWM, reset per run)",
            "cpu_process_rss_lifetime_peak": "peak resident memory of the whole process since it started (ru_maxrss)",
        }[self.kind]


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _read_rss_peak() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _can_reset_rss_peak() -> bool:
    return _read_rss_peak() is not None and _reset_rss_peak()


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
    context_length: int = 0

    def figure(self, name: str) -> float:
        return float(getattr(self, name))


def measure_run(
    loaded: LoadedModel,
    inputs: ModelInputs,
    config: OmniZipConfig | None,
    options: GenerationOptions,
    memory: MemoryProbe,
) -> RunMeasurement:
    """One answer from prepared inputs, with synchronised wall clocks and the run's peak memory."""
    import torch

    from .runner import answer

    cuda = loaded.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(loaded.device)

    timer = StageTimer(device=loaded.device)
    first_token_at: list[float] = []

    def on_token(_token_id: int) -> None:
        # ``generate`` synchronises the device before it hands out the first token.
        if not first_token_at:
            first_token_at.append(time.perf_counter())

    memory.reset()
    sync()
    started = time.perf_counter()
    result = answer(loaded, inputs, config, options, timer=timer, on_token=on_token)
    sync()
    e2e = time.perf_counter() - started
    generation = result.generation
    ttft = (first_token_at[0] - started) if first_token_at else e2e
    # A one-off set-up of the fast decoder (cache allocation, CUDA-graph capture) is paid before the
    # prefill of the first answer that needs it, normally the warm-up run: kept out of TTFT and e2e,
    # as the runner keeps it out of "decode", and reported as its own stage.
    one_off = timer.seconds("decode_warmup")
    ttft, e2e = max(ttft - one_off, 0.0), max(e2e - one_off, 0.0)
    return RunMeasurement(
        stages={name: timer.seconds(name) for name in (*RUN_STAGES, "decode_warmup") if name in timer.stages},
        prefill_seconds=float(generation.prefill_seconds),
        ttft_seconds=float(ttft),
        decode_seconds=float(generation.decode_seconds),
        decode_tokens_per_second=float(generation.decode_tokens_per_second),
        e2e_seconds=float(e2e),
        peak_memory_bytes=int(memory.peak(timer)),
        generated_tokens=len(result.token_ids),
        token_ids=list(result.token_ids),
        answer=result.answer,
        stop_reason=generation.stop_reason,
        decoder=str(getattr(generation, "decoder", "eager")),
        tokens=result.tokens,
        prompt_length=result.prompt_length,
        prefill_length=result.prefill_length,
        groups=list(result.groups),
        context_length=int(result.context_length),
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
    settings: list[ProfileSetting]
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
    :func:`omnizip_cli.loading.load_model`) is called after the media decoded successfully.
    """
    from .media import load_media
    from .runner import prepare_inputs

    progress = progress or (lambda _message: None)
    progress(f"decoding {request.media_path.name} ...")
    media = load_media(request.media_path, request.media)
    if loaded is None:
        progress(f"loading {request.model.model} ...")
        if load is None:
            from .loading import load_model

            loaded = load_model(request.model)
        else:
            loaded = load()
    shared = StageTimer(device=loaded.device)
    shared.add("media_decode", media.summary.decode_seconds)
    progress("running the processor ...")
    inputs = prepare_inputs(loaded, media, request.question, request.system, shared)

    audio_tokens, video_tokens = _count_media_tokens(loaded, inputs)
    settings = resolve_retention_settings(request.settings, audio_tokens, video_tokens)
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
            progress(f"[{done}/{total}] {setting.label}: {what}")
            measurement = measure_run(loaded, inputs, setting.config, request.generation, memory)
            (warmups if warm else runs)[setting.key].append(measurement)

    text_config = loaded.model.config.get_text_config()
    columns = [
        _setting_summary(setting, runs[setting.key], warmups[setting.key], text_config, audio_tokens, video_tokens)
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
        if run.context_length and run.prefill_length > run.context_length:
            warnings.append(
                f"{setting.label}: the prompt has {run.prefill_length} tokens, more than the model's context of "
                f"{run.context_length}: its answer may be degraded"
            )
    for column in columns:
        if not column["answer"]["stable_across_runs"]:
            warnings.append(f"{column['label']}: the runs gave different answers (greedy decoding should not)")
    notes = environment_notes(loaded)
    config = resolved_config(request, loaded, settings, memory, audio_tokens, video_tokens)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "profile",
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


def _count_media_tokens(loaded: LoadedModel, inputs: ModelInputs) -> tuple[int, int]:
    ids = inputs.input_ids[0]
    config = loaded.model.config
    return int((ids == config.audio_token_id).sum()), int((ids == config.video_token_id).sum())


def _setting_summary(
    setting: ProfileSetting,
    runs: list[RunMeasurement],
    warmups: list[RunMeasurement],
    text_config: Any,
    audio_tokens: int,
    video_tokens: int,
) -> dict[str, Any]:
    first = runs[0]
    tokens = first.tokens
    all_runs = [*warmups, *runs]
    stable = all(r.token_ids == first.token_ids for r in all_runs)
    stage_names = [name for name in (*RUN_STAGES, "decode_warmup") if any(name in r.stages for r in runs)]
    warmup_one_off = sum(r.stages.get("decode_warmup", 0.0) for r in warmups)
    return {
        **setting.to_dict(),
        "tokens": tokens.to_dict(),
        "prompt_length": first.prompt_length,
        "prefill_length": first.prefill_length,
        "retention": {
            "target": setting.target_retention,
            "nominal": nominal_retention(setting.config, audio_tokens, video_tokens),
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


def environment_notes(loaded: LoadedModel) -> list[str]:
    """Why the figures may not be representative (empty when they are)."""
    notes = []
    if loaded.is_tiny:
        notes.append("tiny random model, so the figures are small and say nothing about a real checkpoint")
    if not loaded.device.startswith("cuda"):
        notes.append("CPU run, not representative of GPU timings and memory")
    return notes


def versions() -> dict[str, str | None]:
    from . import __version__
    from .versions import installed_version

    found: dict[str, str | None] = {"omnizip": __version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "transformers", "av", "numpy", "pillow"):
        found[package] = installed_version(package)
    return found


def device_info(device: str) -> dict[str, Any]:
    import os

    import torch

    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_memory_bytes=int(props.total_memory),
            cuda=torch.version.cuda,
        )
    return info


def resolved_config(
    request: ProfileRequest,
    loaded: LoadedModel,
    settings: Sequence[ProfileSetting],
    memory: MemoryProbe,
    audio_tokens: int,
    video_tokens: int,
) -> dict[str, Any]:
    """The configuration actually run (``config.json`` of ``--out``)."""
    from dataclasses import asdict

    return {
        "schema_version": SCHEMA_VERSION,
        "command": "profile",
        "media_path": str(request.media_path),
        "question": request.question,
        "system": request.system,
        "model": {"requested": _spec_dict(request.model), "resolved": loaded.describe()},
        "media_options": request.media.to_dict(),
        "settings": [s.to_dict() for s in settings],
        "ratios_derived_for": {"audio_tokens": audio_tokens, "video_tokens": video_tokens},
        "repeats": request.repeats,
        "warmup": request.warmup,
        "order": "interleaved: every round runs each setting once, warm-up rounds first",
        "generation": asdict(request.generation),
        "memory_kind": memory.kind,
        "versions": versions(),
        "device": device_info(loaded.device),
    }


def _spec_dict(spec: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(spec) if is_dataclass(spec) else dict(vars(spec))


# ----------------------------------------------------------------------------- output
def write_outputs(payload: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``config.json`` and ``timings.png`` into ``out_dir`` (created)."""
    import json

    from .chart import render_timings_chart

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "config": out_dir / "config.json",
        "chart": out_dir / "timings.png",
    }
    paths["metrics"].write_text(json.dumps(payload, indent=2) + "\n")
    paths["config"].write_text(json.dumps(payload["config"], indent=2) + "\n")
    render_timings_chart(payload).save(paths["chart"], optimize=True)
    return paths


def _seconds_unit(value: float) -> tuple[str, float]:
    if value < 1e-3:
        return "µs", 1e-6
    if value < 1.0:
        return "ms", 1e-3
    return "s", 1.0


def _bytes_unit(value: float) -> tuple[str, float]:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return unit, float(size)
    return "B", 1.0


def _flops_unit(value: float) -> tuple[str, float]:
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if value >= size:
            return unit, size
    return "FLOP", 1.0


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100 or value == 0:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    unit, scale = _seconds_unit(value)
    return f"{_number(value / scale)} {unit}"


def format_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    unit, scale = _bytes_unit(value)
    return f"{_number(value / scale)} {unit}"


def format_flops(value: float | None) -> str:
    if value is None:
        return "-"
    unit, scale = _flops_unit(value)
    return f"{_number(value / scale)} {unit}"


def _spread(summary: dict[str, Any], units: Callable[[float], tuple[str, float]]) -> str:
    """``median unit`` and, with several runs, ``[min-max]`` in the same unit."""
    median = summary["median"]
    if median is None:
        return "-"
    unit, scale = units(median)
    text = f"{_number(median / scale)} {unit}".rstrip()
    if len(summary["values"]) > 1:
        text += f"\n[{_number(summary['min'] / scale)}–{_number(summary['max'] / scale)}]"
    return text


def _tokens_per_second_unit(_value: float) -> tuple[str, float]:
    return "tok/s", 1.0


def _speedup(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _answer_cell(column: dict[str, Any]) -> str:
    vs = column["vs_full"]
    if vs is None:
        return "reference" if column["key"] == "full" else "-"
    if vs["answer_identical"]:
        return "identical"
    return f"no: token {vs['first_differing_token']},\nchar {vs['first_differing_char']}"


def _short(text: str, width: int = 40) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(payload: dict[str, Any]) -> Any:
    """The side-by-side Rich table: one column per setting, one row per figure."""
    from rich.table import Table

    columns = payload["settings"]
    repeats = payload["repeats"]
    title = (
        f"omnizip profile: {Path(payload['media']['path']).name}, {payload['model']['model']} on "
        f"{payload['model']['device']} ({payload['model']['dtype']}); median of {repeats} run"
        f"{'s' if repeats != 1 else ''} [min–max]"
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("figure", style="bold", no_wrap=True)
    for column in columns:
        table.add_column(column["label"], justify="right")

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(name, *[cell(c) for c in columns])

    def tokens(modality: str) -> Callable[[dict[str, Any]], str]:
        def cell(c: dict[str, Any]) -> str:
            t = c["tokens"][modality]
            return str(t["after"]) if t["after"] == t["before"] else f"{t['before']} → {t['after']}"

        return cell

    for modality in ("video", "audio", "text", "total"):
        row(f"tokens: {modality}", tokens(modality))

    def retention(c: dict[str, Any]) -> str:
        r = c["retention"]
        return f"{r['audio_video'] * 100:.1f} %"

    def aim(c: dict[str, Any]) -> str:
        r = c["retention"]
        if c["source"] == "full":
            return "-"
        if c["source"] == "retention" and r["target"] is not None:
            return f"target {r['target'] * 100:.0f} %"
        return f"nominal {r['nominal'] * 100:.1f} %"

    row("retention (audio+video)", retention)
    row("  asked for", aim)
    figures = [
        ("prefill", "prefill_seconds", _seconds_unit),
        ("time to first token", "ttft_seconds", _seconds_unit),
        ("decode", "decode_tokens_per_second", _tokens_per_second_unit),
        ("end to end", "e2e_seconds", _seconds_unit),
        ("peak memory", "peak_memory_bytes", _bytes_unit),
    ]
    for name, key, units in figures:
        row(name, lambda c, key=key, units=units: _spread(c["figures"][key], units))
        if key == "e2e_seconds":
            row("answer tokens", lambda c: f"{c['figures']['generated_tokens']['median']:.0f}")
    row("prefill FLOPs (LLM)", lambda c: format_flops(c["prefill_flops"]["total"]))
    if payload["reference"] is not None:
        for name, key in (("speedup: prefill", "speedup_prefill"), ("speedup: TTFT", "speedup_ttft"),
                          ("speedup: end to end", "speedup_e2e")):
            row(name, lambda c, key=key: _speedup(c["vs_full"][key]) if c["vs_full"] else "1.00x")

        def saved(c: dict[str, Any]) -> str:
            vs = c["vs_full"]
            if vs is None or vs["memory_saved_bytes"] is None:
                return "-"
            return f"{format_bytes(vs['memory_saved_bytes'])}\n{vs['memory_saved_fraction'] * 100:.1f} %"

        row("memory saved", saved)
        row("FLOPs vs full", lambda c: f"{c['vs_full']['flops_ratio']:.2f}" if c["vs_full"] else "1.00")
        row("answer vs full", _answer_cell)
    row("answer", lambda c: _short(c["answer"]["text"], 24) or "(empty)")
    return table


def print_profile_report(console: Any, payload: dict[str, Any]) -> None:
    """The table, then the shared stages, notes and warnings, on the (stderr) console."""
    console.print(render_table(payload))
    shared = payload["shared"]
    console.print(
        f"once for all settings: model load {format_seconds(shared['load_model_seconds'])}, "
        f"media decode {format_seconds(shared['media_decode_seconds'])}, "
        f"processor {format_seconds(shared['preprocess_seconds'])}; memory: {payload['memory_description']}",
        markup=False,
    )
    for note in payload["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False)
    for warning in payload["warnings"]:
        console.print(f"warning: {warning}", style="yellow", markup=False)
