"""``omnizip ask VIDEO QUESTION [QUESTION ...]``: answers on stdout, the report on stderr.

The video is decoded, encoded and compressed once (a :class:`~omnizip_cli.generation.Session`);
each question then costs only its own tokens (the media prefix is prefilled once and reused).
stdout gets the answers only (streamed, each ending with a newline, in order), or one JSON object
with ``--json``. stderr gets warnings (not with ``--json``: they go into the JSON), the spinner
(terminal only, not with ``--json`` or ``-q``) and the report (not with ``--json`` or ``-q``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UsageError
from .app import app, prepare_environment
from .options import (
    COMPRESSION,
    GENERATION,
    MEDIA,
    MODEL,
    OUTPUT,
    KeepMapOpt,
    MaxPromptOpt,
    NoCacheOpt,
    OutputOptions,
    SystemOpt,
    check_output_file,
    check_prompt_budget,
    with_options,
)
from .opening import open_video
from .progress import Spinner

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..generation import GenerationOptions
    from ..media import MediaOptions
    from ..models import ModelSpec


def check_questions(questions: list[str]) -> list[str]:
    if not questions:
        raise UsageError("give at least one QUESTION")
    for index, question in enumerate(questions, 1):
        if not question.strip():
            raise UsageError(f"question {index} is empty")
    return questions


def prompt_budget(loaded: Any, questions: list[str], generation: Any, max_prompt_tokens: int | None
                  ) -> tuple[int, int]:
    """``--max-prompt-tokens`` and the tokens reserved for the question (the longest question's tokens
    plus the template's 16 around it).

    The default is the model's context minus ``--max-new-tokens``, but at least half the context: a
    ``--max-new-tokens`` beyond the context must not squeeze the prompt to nothing.
    """
    context = loaded.context_length
    budget = max_prompt_tokens if max_prompt_tokens is not None else max(context - generation.max_new_tokens,
                                                                          context // 2)
    tokenizer = loaded.processor.tokenizer
    reserve = max(len(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in questions) + 16
    return budget, reserve


def load_model(spec: ModelSpec) -> Any:
    """The model (tests replace this to run the CLI on a fake session)."""
    from ..models import load_model as load

    return load(spec)


def open_session(loaded: Any, media: Any, **kwargs: Any) -> Any:
    """The session (tests replace this to run the CLI on a fake session)."""
    from ..generation import Session

    return Session.open(loaded, media, **kwargs)


def load_media(path: Path, options: MediaOptions) -> Any:
    from ..media import load_media as load

    return load(path, options)


def start_media(path: Path, options: MediaOptions) -> Callable[..., Any]:
    """Check the file now (header, streams, video timestamps: most bad files fail here) and return
    its decoding, ``decode(on_audio=None, cancel=None) -> DecodedMedia``, to run on a worker thread
    (tests replace this)."""
    import functools

    from ..media import decode_media, plan_media

    return functools.partial(decode_media, plan_media(path, options))


@app.command()
@with_options(MODEL, MEDIA, COMPRESSION, GENERATION, OUTPUT)
def ask(
    video: Annotated[Path, typer.Argument(help="Video (or audio) file.", show_default=False)],
    questions: Annotated[list[str], typer.Argument(
        metavar="QUESTION...", help="Your question(s) about it; several share one compressed video.",
        show_default=False)],
    model: ModelSpec,
    media: MediaOptions,
    compression: CompressionSetting,
    generation: GenerationOptions,
    output: OutputOptions,
    system: SystemOpt = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream the answer as it is generated.")] = True,
    keep_map: KeepMapOpt = None,
    max_prompt_tokens: MaxPromptOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Answer QUESTION(s) about VIDEO; answers stream to stdout, the report goes to stderr."""
    check_questions(questions)
    if keep_map is not None:
        check_output_file(keep_map, "--keep-map")
    check_prompt_budget(max_prompt_tokens)
    run_ask(video, questions, model=model, media_options=media, compression=compression, generation=generation,
            output=output, system=system, stream=stream and not output.json_output, keep_map=keep_map,
            max_prompt_tokens=max_prompt_tokens, use_cache=not no_cache and keep_map is None)  # the map needs the frames


def run_ask(
    video: Path,
    questions: list[str],
    *,
    model: ModelSpec,
    media_options: MediaOptions,
    compression: CompressionSetting,
    generation: GenerationOptions,
    output: OutputOptions,
    system: str | None,
    stream: bool,
    keep_map: Path | None = None,
    max_prompt_tokens: int | None = None,
    use_cache: bool = True,
) -> None:
    from ..report import make_console
    from ..report.ask_view import print_questions, print_report
    from ..report.payload import answer_payload
    from .signals import finish_partial_lines, write_stdout
    from ..terminal import escape_control, sanitize_answer

    prepare_environment(output.verbose)
    console = make_console(no_color=output.no_color)
    show_progress = console.is_terminal and not output.quiet and not output.json_output
    spinner = Spinner(console, show_progress)
    warnings: list[str] = []

    def warn(message: str) -> None:
        if message in warnings:
            return
        warnings.append(message)
        if not output.json_output:
            spinner.stop()
            console.print(f"warning: {escape_control(message)}", style="yellow", markup=False, highlight=False,
                          soft_wrap=True)

    payloads: list[dict[str, Any]] = []
    try:
        # The disk cache first (when it has this file), else the file's checks, then decoding beside
        # the model load: see cli/opening.py.
        opened = open_video(video, model=model, media_options=media_options, compression=compression, system=system,
                            warn=warn, spinner=spinner, use_cache=use_cache,
                            budget_for=lambda loaded: prompt_budget(loaded, questions, generation, max_prompt_tokens),
                            start_media=start_media, load_model=load_model, open_session=open_session)
        session, started, load_excluded = opened.session, opened.started, opened.load_excluded
        config = {
            "media_path": str(video),
            "system": system,
            "model": _spec_dict(model),
            "media": media_options.to_dict(),
            "generation": {**_asdict(generation), "stream": stream},
        }
        for index, question in enumerate(questions):
            asked = time.perf_counter()
            first_token_at: float | None = None
            stats = None
            spinner.update(f"prefilling {'the video and ' if index == 0 else ''}question {index + 1} ...")
            for chunk in session.ask(question, generation):
                if chunk.token is not None and first_token_at is None:
                    first_token_at = time.perf_counter()
                    spinner.stop()
                if stream and chunk.text:
                    write_stdout(sanitize_answer(chunk.text))
                if chunk.stats is not None:
                    stats = chunk.stats
            assert stats is not None
            finished = time.perf_counter()
            origin = started + load_excluded if index == 0 else asked
            ttft = (first_token_at - origin) if first_token_at is not None else finished - origin
            payload = answer_payload(session, stats, question=question, config=config,
                                     time_to_first_token_seconds=ttft, total_seconds=finished - origin,
                                     include_setup=index == 0)
            payloads.append(payload)
            if not output.json_output:
                write_stdout(("" if stream else sanitize_answer(stats.text)) + "\n")
    except BaseException as exc:
        spinner.stop()
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            finish_partial_lines()  # end a partial answer's line, so the error line starts clean
        raise
    if keep_map is not None:
        from ..report.keep_map import keep_map_for_session, render_keep_map, save_keep_map

        path = save_keep_map(render_keep_map(keep_map_for_session(session)), keep_map)
        for payload in payloads:
            payload["keep_map"] = str(path)
    spinner.stop()
    for payload in payloads:
        payload["warnings"] = list(warnings)
    if output.json_output:
        document = payloads[0] if len(payloads) == 1 else {
            "schema_version": payloads[0]["schema_version"], "kind": "answers", "answers": payloads,
            "warnings": list(warnings)}
        write_stdout(json.dumps(document, indent=2) + "\n")
        return
    if not output.quiet:
        print_report(console, payloads[0])
        if len(payloads) > 1:
            print_questions(console, payloads)
        if keep_map is not None:
            console.print(f"keep map: {keep_map}", markup=False, highlight=False)


def _spec_dict(spec: Any) -> dict[str, Any]:
    keys = ("model", "device", "dtype", "attn_implementation", "offline", "revision")
    return {key: getattr(spec, key, None) for key in keys}


def _asdict(options: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(options)
