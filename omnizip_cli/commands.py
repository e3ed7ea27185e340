"""What ``omnizip ask`` does, apart from option parsing (which lives in :mod:`omnizip_cli.cli`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compression import OmniZipConfig
    from .decoding import GenerationOptions
    from .loading import LoadedModel, ModelSpec
    from .media import MediaOptions


@dataclass
class AskSettings:
    media_path: Path
    question: str
    model: ModelSpec
    media: MediaOptions
    compression: OmniZipConfig | None
    generation: GenerationOptions
    system: str | None = None
    retention: float | None = None  # --retention: re-solved for this clip's audio/video token mix
    compression_overrides: dict[str, Any] = field(default_factory=dict)
    stream: bool = True
    json_output: bool = False
    quiet: bool = False
    no_color: bool = False
    verbose: bool = False


def prepare_environment(verbose: bool) -> None:
    """Check the transformers version, then quiet library logging and progress bars."""
    from .versions import check_transformers_version

    check_transformers_version()
    from .cli import _quiet_libraries

    _quiet_libraries(verbose)


def load_model_with_progress(spec: ModelSpec, console: Any, show_progress: bool) -> LoadedModel:
    """Load the model, with a transient spinner on a terminal."""
    from .loading import load_model

    if not show_progress:
        return load_model(spec)
    with console.status(f"loading {spec.model} ...", spinner="dots"):
        return load_model(spec)


class _Progress:
    """A transient spinner on stderr (terminal only); every call is a no-op when disabled."""

    def __init__(self, console: Any, enabled: bool) -> None:
        self._status = console.status("starting ...", spinner="dots") if enabled else None
        self._running = False

    def update(self, message: str) -> None:
        if self._status is None:
            return
        self._status.update(message)
        if not self._running:
            self._status.start()
            self._running = True

    def stop(self) -> None:
        if self._status is not None and self._running:
            self._status.stop()
            self._running = False


STAGE_MESSAGES = {
    "preprocess": "preprocessing (processor) ...",
    "audio_encoder": "encoding audio ...",
    "saliency": "scoring audio saliency ...",
    "vision_encoder": "encoding video ...",
    "keep_plan": "planning compression ...",
}


def _progress_timer(device: str, progress: _Progress) -> Any:
    """A :class:`StageTimer` that names each stage on the spinner as it starts."""
    from contextlib import contextmanager

    from .stats import StageTimer

    class ProgressTimer(StageTimer):
        @contextmanager
        def stage(self, name: str) -> Iterator[None]:
            progress.update(STAGE_MESSAGES.get(name, f"{name.replace('_', ' ')} ..."))
            with super().stage(name):
                yield

    return ProgressTimer(device=device)


def clip_compression(loaded: LoadedModel, inputs: Any, retention: float, overrides: dict[str, Any]) -> Any:
    """``--retention`` solved for this clip's own audio/video token mix (as ``omnizip profile`` does)."""
    from .cli import compression_for_retention

    ids = inputs.input_ids[0]
    audio = int((ids == loaded.model.config.audio_token_id).sum())
    video = int((ids == loaded.model.config.video_token_id).sum())
    if audio + video == 0:
        return compression_for_retention(retention, overrides)
    return compression_for_retention(retention, overrides, audio, video)


def run_ask(settings: AskSettings) -> None:
    """Decode the media, load the model, answer, then print the answer and the report.

    stdout gets the answer only (streamed, or once with ``--no-stream``), or the single JSON object
    with ``--json``. stderr gets warnings (not with ``--json``: they go into the JSON), the spinner
    (terminal only, not with ``--json`` or ``-q``) and the report (not with ``--json`` or ``-q``).
    """
    from .media import load_media
    from .report import build_payload, make_console, print_report
    from .runner import answer, prepare_inputs
    from .stats import process_peak_rss_bytes

    prepare_environment(settings.verbose)
    console = make_console(no_color=settings.no_color)
    show_progress = console.is_terminal and not settings.quiet and not settings.json_output
    show_warnings = not settings.json_output
    progress = _Progress(console, show_progress)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if show_warnings:
            console.print(f"warning: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)

    streamed = False
    try:
        # Media first: a bad file should fail before a multi-GB model load.
        started = time.perf_counter()
        progress.update(f"decoding {settings.media_path} ...")
        media = load_media(settings.media_path, settings.media)
        media_rss = process_peak_rss_bytes()
        progress.update(f"loading {settings.model.model} ...")
        load_started = time.perf_counter()
        loaded = load_model_with_progress(settings.model, console, False)
        load_wall = time.perf_counter() - load_started
        timer = _progress_timer(loaded.device, progress)
        timer.add("load_model", loaded.load_seconds)
        timer.add("media_decode", media.summary.decode_seconds)
        _record_setup_memory(timer, loaded.device, media_rss)
        for message in (*loaded.warnings, *media.summary.warnings):
            warn(message)

        inputs = prepare_inputs(loaded, media, settings.question, settings.system, timer)
        if settings.retention is not None:
            settings.compression = clip_compression(loaded, inputs, settings.retention, settings.compression_overrides)

        def before_prefill(prompt_length: int, prefill_length: int) -> None:
            from .runner import context_length

            limit = context_length(loaded.model)
            if prefill_length > limit:
                warn(
                    f"the prompt has {prefill_length} tokens, more than the model's context of {limit}: "
                    "the answer may be degraded (lower --fps, --max-frames or --max-pixels, or compress harder)"
                )
            progress.update(f"prefilling {prefill_length} tokens ...")

        from .decoding import IncrementalDetokenizer

        detok = IncrementalDetokenizer(loaded.processor.tokenizer)
        first_token_at: list[float] = []

        def on_token(token_id: int) -> None:
            nonlocal streamed
            if not first_token_at:
                first_token_at.append(time.perf_counter())
                progress.stop()
            piece = detok.push(token_id)
            if settings.stream and piece:
                sys.stdout.write(piece)
                sys.stdout.flush()
                streamed = True

        result = answer(
            loaded,
            inputs,
            settings.compression,
            settings.generation,
            timer=timer,
            on_token=on_token,
            on_before_prefill=before_prefill,
        )
        finished = time.perf_counter()
    except BaseException:
        progress.stop()
        if streamed:  # end the partial answer's line, so the error line starts clean
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise
    progress.stop()
    result.warnings = warnings
    ttft = first_token_at[0] - started - load_wall if first_token_at else None
    payload = build_payload(
        result,
        loaded=loaded,
        media=media.summary,
        settings=settings,
        time_to_first_token_seconds=ttft,
        total_seconds=finished - started - load_wall,
    )
    if settings.json_output:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        sys.stdout.flush()
        return
    if settings.stream:
        sys.stdout.write(detok.flush() + "\n")
    else:
        sys.stdout.write(result.answer + "\n")
    sys.stdout.flush()
    if not settings.quiet:
        print_report(console, payload)


def _record_setup_memory(timer: Any, device: str, media_rss: int) -> None:
    """Peak memory of the two stages timed outside the stage timer (media decode, model load)."""
    from .stats import process_peak_rss_bytes

    media_record, load_record = timer.stages["media_decode"], timer.stages["load_model"]
    if device.startswith("cuda"):
        import torch

        # Media decoding runs on the CPU before the model exists: no GPU memory to report.
        media_record.memory_kind = load_record.memory_kind = "cuda_allocated"
        load_record.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    else:
        media_record.peak_memory_bytes, media_record.memory_kind = media_rss, "cpu_rss"
        load_record.peak_memory_bytes, load_record.memory_kind = process_peak_rss_bytes(), "cpu_rss"
