"""``omnizip evaluate DATASET --out DIR``: accuracy of the full model vs OmniZip settings over a dataset.

Output: the results folder's path on stdout (escaped when stdout is a terminal), or with ``--json``
the metrics as one JSON object and nothing on stderr; ``-q`` leaves only warnings and errors on
stderr. ``--out`` is checked before any work (see :func:`omnizip_cli.evaluation.command.run_evaluate`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .app import app, prepare_environment
from .options import MEDIA, MODEL, OUTPUT, OutputOptions, SystemOpt, out_folder, with_options
from .signals import write_stdout

if TYPE_CHECKING:
    from ..media import MediaOptions
    from ..models import ModelSpec


@app.command()
@with_options(MODEL, MEDIA, OUTPUT)
def evaluate(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", help="Manifest (JSONL/CSV) or a benchmark's annotation file.",
                                            show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder (resumed when it exists).",
                                      show_default=False, parser=out_folder, metavar="DIR")],
    model: ModelSpec,
    media: MediaOptions,
    output: OutputOptions,
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", help="full, a preset (45, 35), a retention (0.4) or METHOD@R (frames@0.45, pixels@0.45, "
        "random@0.45, omnizip@0.45); repeat. Default: full, 45, 35.")] = None,
    retention: Annotated[list[float] | None, typer.Option(
        "--retention", help="A target retention to evaluate; repeat for several.")] = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", help="With --retention: evaluate each retention with these methods (omnizip,frames,pixels,"
        "random), the grid.", metavar="LIST")] = None,
    layout: Annotated[str, typer.Option(help="auto, manifest, videomme, worldsense or avut.")] = "auto",
    video_dir: Annotated[Path | None, typer.Option(help="Where the dataset's videos are.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (> 1 needs omnizip[ray]).")] = 1,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (ray://host:port or auto).")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        help="GPUs per Ray worker (default: 1 on CUDA, 0 on the CPU).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="At most this many answer tokens (greedy).")] = 100,
    system: SystemOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a results folder of a different run.")]
    = False,
) -> None:
    """Answer every question of DATASET with each setting, score it and write a results folder."""

    from ..evaluation.command import EvaluateOptions, run_evaluate
    from ..evaluation.session_answerer import SessionAnswererFactory
    from ..generation.sampling import GenerationOptions
    from ..report import make_console

    GenerationOptions(max_new_tokens=max_new_tokens)  # validated before any work
    prepare_environment(output.verbose)
    gpus = gpus_per_worker if gpus_per_worker is not None else (0.0 if model.device == "cpu" else _cuda_gpus())
    spec = asdict(model)
    media_fields = asdict(media)
    factory = SessionAnswererFactory(model=spec, media=media_fields, max_new_tokens=max_new_tokens, system=system)
    description = {**{k: spec[k] for k in ("model", "revision", "dtype", "attn_implementation")},
                   "media": media_fields, "max_new_tokens": max_new_tokens, "system": system}
    options = EvaluateOptions(dataset=dataset, out=out, settings=list(setting or []), retentions=list(retention or []),
                              methods=[methods] if methods else [],
                              layout=layout, video_dir=video_dir, workers=workers, ray_address=ray_address,
                              gpus_per_worker=gpus, overwrite=overwrite)
    console = make_console(no_color=output.no_color)
    silent = output.quiet or output.json_output
    result = run_evaluate(options, description, factory, console=console,
                          show_progress=console.is_terminal and not silent,
                          report=not silent, warnings=not output.json_output)
    if output.json_output:  # the content of the folder's metrics.json (ASCII: safe on a terminal)
        write_stdout(json.dumps(result.metrics, indent=2) + "\n")
    else:
        write_stdout(f"{_shown_path(out)}\n")


def _shown_path(path: Path) -> str:
    """``path`` as printed on stdout: as is for a pipe (scripts get the real name), with terminal
    controls escaped on a terminal (:func:`omnizip_cli.terminal.escape_control`)."""
    from ..terminal import escape_control

    text = str(path)
    stdout = sys.stdout
    return escape_control(text) if stdout is not None and stdout.isatty() else text


def _cuda_gpus() -> float:
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0
