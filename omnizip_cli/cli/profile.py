"""``omnizip profile VIDEO [QUESTION]``: the full path against compression settings, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from .app import app, prepare_environment
from .options import GREEDY_32, MEDIA, MODEL, OUTPUT, OutputOptions, Preset, SystemOpt, out_folder, with_options
from .signals import write_stdout

if TYPE_CHECKING:
    from ..generation import GenerationOptions
    from ..media import MediaOptions
    from ..models import ModelSpec

DEFAULT_PROFILE_QUESTION = "What happens in this video?"


@app.command()
@with_options(MODEL, MEDIA, GREEDY_32, OUTPUT)
def profile(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video (or audio) file.", show_default=False)],
    model: ModelSpec,
    media: MediaOptions,
    generation: GenerationOptions,
    output: OutputOptions,
    question_arg: Annotated[
        str | None, typer.Argument(metavar="QUESTION", help="The question (or use --question).", show_default=False)
    ] = None,
    question: Annotated[
        str | None, typer.Option("--question", help=f"The question [default: {DEFAULT_PROFILE_QUESTION!r}].")
    ] = None,
    preset: Annotated[
        list[Preset] | None,
        typer.Option("--preset", help="Paper setting to profile (45 or 35); repeat for several. Default: 45 and 35."),
    ] = None,
    retention: Annotated[
        list[float] | None,
        typer.Option("--retention", help="Fraction of audio+video tokens kept, e.g. 0.45; repeat for several."),
    ] = None,
    include_full: Annotated[
        bool, typer.Option("--include-full/--no-full", help="Also run the uncompressed path (the reference).")
    ] = True,
    repeats: Annotated[int, typer.Option("--repeats", "-n", min=1, help="Timed runs per setting, after one warm-up.")] = 3,
    system: SystemOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write metrics.json, config.json and timings.png into this folder (new, "
                     "empty, or written by profile before).", parser=out_folder, metavar="DIR"),
    ] = None,
) -> None:
    """Measure the full path against compression settings on VIDEO, side by side (greedy answers)."""
    from rich.text import Text

    from ..evaluation.profile import ProfileRequest, build_settings, check_out_dir, run_profile, write_outputs
    from ..report import make_console
    from ..report.profile_view import print_profile_report
    from ..terminal import escape_control

    if question is not None and question_arg is not None and question != question_arg:
        raise UsageError("give the question once: as QUESTION or as --question")
    text = question or question_arg or DEFAULT_PROFILE_QUESTION
    if not text.strip():
        raise UsageError("the question is empty")
    if out is not None:
        check_out_dir(out)  # before any work: a profile is too long to lose at the end
    request = ProfileRequest(
        media_path=video,
        question=text,
        model=model,
        media=media,
        settings=build_settings([p.value for p in preset or []], list(retention or []), include_full),
        generation=generation,
        repeats=repeats,
        system=system,
    )
    prepare_environment(output.verbose)
    console = make_console(no_color=output.no_color)
    if console.is_terminal and not output.quiet and not output.json_output:
        with console.status("profiling ...", spinner="dots") as status:
            # the messages name the file and the model: escaped, and never read as markup
            payload = run_profile(request, progress=lambda message: status.update(Text(escape_control(message))))
    else:
        payload = run_profile(request)
    paths = write_outputs(payload, out) if out is not None else {}
    if output.json_output:
        write_stdout(json.dumps(payload, indent=2) + "\n")
    elif not output.quiet:
        print_profile_report(console, payload)
        if paths:
            console.print(f"wrote {', '.join(escape_control(str(p)) for p in paths.values())}", markup=False,
                          highlight=False)
