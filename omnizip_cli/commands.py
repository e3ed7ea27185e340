"""What ``omnizip ask`` does, apart from option parsing (which lives in :mod:`omnizip_cli.cli`)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
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


def run_ask(settings: AskSettings) -> None:
    from .media import load_media
    from .report import make_console, print_report, result_to_json
    from .runner import answer, prepare_inputs
    from .stats import StageTimer

    prepare_environment(settings.verbose)
    console = make_console(no_color=settings.no_color)
    show_progress = console.is_terminal and not settings.quiet and not settings.json_output

    # Media first: a bad file should fail before a multi-GB model load.
    media = load_media(settings.media_path, settings.media)
    loaded = load_model_with_progress(settings.model, console, show_progress)
    timer = StageTimer(device=loaded.device)
    timer.add("load_model", loaded.load_seconds)
    timer.add("media_decode", media.summary.decode_seconds)
    warnings = [*loaded.warnings, *media.summary.warnings]
    if not settings.quiet and not settings.json_output:
        for warning in warnings:
            console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)

    inputs = prepare_inputs(loaded, media, settings.question, settings.system, timer)

    def before_prefill(prompt_length: int, prefill_length: int) -> None:
        from .runner import context_length

        limit = context_length(loaded.model)
        if prefill_length > limit:
            message = (
                f"the prompt has {prefill_length} tokens, more than the model's context of {limit}: "
                "the answer may be degraded (lower --fps, --max-frames or --max-pixels, or compress harder)"
            )
            warnings.append(message)
            if not settings.quiet and not settings.json_output:
                console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)

    from .decoding import IncrementalDetokenizer

    detok = IncrementalDetokenizer(loaded.processor.tokenizer)

    def on_token(token_id: int) -> None:
        piece = detok.push(token_id)
        if settings.stream and piece:
            sys.stdout.write(piece)
            sys.stdout.flush()

    result = answer(
        loaded,
        inputs,
        settings.compression,
        settings.generation,
        timer=timer,
        on_token=on_token,
        on_before_prefill=before_prefill,
    )
    result.warnings = warnings
    if settings.json_output:
        payload = result_to_json(result, loaded=loaded, media=media.summary, settings=settings)
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if settings.stream:
        rest = detok.flush()
        sys.stdout.write(rest + "\n")
    else:
        sys.stdout.write(result.answer + "\n")
    sys.stdout.flush()
    if not settings.quiet:
        print_report(console, result, loaded=loaded, media=media.summary)
