"""``omnizip ask VIDEO QUESTION [QUESTION ...]``: answers on stdout, the report on stderr.

The video is opened through the library's one path (:meth:`omnizip_cli.generation.Session.open`:
the disk cache first, decoding beside the model load, the prompt budget), decoded, encoded and
compressed once (a :class:`~omnizip_cli.generation.Session`);
each question then costs only its own tokens (the media prefix is prefilled once and reused).
stdout gets the answers only (streamed, each ending with a newline, in order), or one JSON object
with ``--json``. stderr gets warnings (not with ``--json``: they go into the JSON), the spinner
(terminal only, not with ``--json`` or ``-q``) and the report (not with ``--json`` or ``-q``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .answering import Answering, check_questions, check_text, open_options, request_config
from .app import app
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

if TYPE_CHECKING:
    from ..compression import CompressionSetting
    from ..generation import GenerationOptions
    from ..media import MediaOptions
    from ..models import ModelSpec


@app.command()
@with_options(MODEL, MEDIA, COMPRESSION, GENERATION, OUTPUT)
def ask(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video (or audio) file.", show_default=False)],
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
    check_text(system, "--system")
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
    from ..report.ask_view import print_questions, print_report
    from ..report.payload import answer_payload
    from ..terminal import sanitize_answer
    from .signals import write_stdout

    answering = Answering.start(output)
    options = open_options(media=media_options, compression=compression, generation=generation, system=system,
                           max_prompt_tokens=max_prompt_tokens, questions=tuple(questions), use_cache=use_cache,
                           revision=model.revision)
    session = answering.open(video, model, options)
    config = request_config(video, system=system, model=model, media=media_options, generation=generation,
                            stream=stream)
    payloads: list[dict[str, Any]] = []
    for index, question in enumerate(questions):
        answering.spinner.update(f"prefilling {'the video and ' if index == 0 else ''}question {index + 1} ...")
        stats = answering.stream(session.ask(question, generation), to_stdout=stream)
        payloads.append(answer_payload(session, stats, question=question, config=config, include_setup=index == 0))
        if not output.json_output:
            write_stdout(("" if stream else sanitize_answer(stats.text)) + "\n")
    if keep_map is not None:
        from ..report.keep_map import keep_map_for_session, render_keep_map, save_keep_map

        path = save_keep_map(render_keep_map(keep_map_for_session(session)), keep_map)
        for payload in payloads:
            payload["keep_map"] = str(path)
    answering.spinner.stop()
    for payload in payloads:
        payload["warnings"] = list(answering.warnings)
    if output.json_output:
        document = payloads[0] if len(payloads) == 1 else {
            "schema_version": payloads[0]["schema_version"], "kind": "answers", "answers": payloads,
            "warnings": list(answering.warnings)}
        write_stdout(json.dumps(document, indent=2) + "\n")
        return
    if not output.quiet:
        print_report(answering.console, payloads[0])
        if len(payloads) > 1:
            print_questions(answering.console, payloads)
        if keep_map is not None:
            answering.console.print(f"keep map: {keep_map}", markup=False, highlight=False)
