"""What ``omnizip evaluate`` runs, minus option parsing and model loading (the CLI's part).

The CLI parses its options into :class:`EvaluateOptions`, describes the model (:attr:`model`:
everything that changes answers, recorded in ``config.json``), builds a picklable answerer
factory, and calls :func:`run_evaluate`. This module renders the progress bar (Rich, on terminals
only, on stderr), prints the summary table to stderr and returns the result; only the path of the
results folder is for stdout (the CLI prints it). Text from the user's files (the manifest's name,
categories, ids in the warnings, the ``--out`` path) is shown through
:func:`omnizip_cli.terminal.escape_control` and never read as Rich markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnizip_cli.evaluation.datasets import load_dataset
from omnizip_cli.evaluation.protocol import AnswererFactory, parse_methods, parse_settings
from omnizip_cli.evaluation.runner import EvaluationRequest, EvaluationResult, Progress, run_evaluation
from omnizip_cli.report.results_folder import METRICS

__all__ = ["EvaluateOptions", "run_evaluate"]


@dataclass
class EvaluateOptions:
    """The options of ``omnizip evaluate DATASET --out DIR ...``.

    ``settings`` are ``--setting`` values (``full``, ``45``, ``35``, a fraction or ``METHOD@R``),
    ``retentions`` the ``--retention`` values and ``methods`` the ``--methods`` names (with them each
    retention becomes one ``METHOD@R`` per method); with none: full, 45, 35. ``layout`` is ``--layout`` (``auto``,
    ``manifest``, ``videomme``, ``worldsense``, ``avut``), ``video_dir`` ``--video-dir``.
    ``workers`` > 1 or ``ray_address`` runs on Ray; ``gpus_per_worker`` is 1 for one model per
    GPU, 0 for CPU workers. ``options`` are recorded in ``config.json`` and must match on resume.
    """

    dataset: Path
    out: Path
    settings: list[str] = field(default_factory=list)
    retentions: list[float] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    layout: str = "auto"
    video_dir: Path | None = None
    workers: int = 1
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def run_evaluate(options: EvaluateOptions, model: dict[str, Any], factory: AnswererFactory,
                 console: Any | None = None, show_progress: bool | None = None, *,
                 report: bool = True, warnings: bool = True) -> EvaluationResult:
    """Load the dataset, run (or resume) the evaluation with a progress bar, print the summary.

    ``console`` defaults to a Rich console on stderr; the progress bar shows on terminals unless
    ``show_progress`` says otherwise. Bad rows are announced before the run unless ``warnings``
    is False (``--json``: they are in ``metrics.json``); the summary table and the closing line
    are printed unless ``report`` is False (``-q``, ``--json``). ``--out`` is checked (a folder
    that can be written, not a file) before the dataset is read. Errors are
    :class:`omnizip_cli.errors.OmnizipError` subclasses (``UsageError`` for bad options, an
    ``--out`` that cannot be written or holds a different run or other files, a folder that
    another evaluation is writing, a missing or unreadable dataset).
    """
    from rich.console import Console
    from rich.text import Text

    from omnizip_cli.evaluation.summary import print_summary
    from omnizip_cli.report.results_folder import ResultsFolder
    from omnizip_cli.terminal import escape_control

    console = console or Console(stderr=True)
    settings = parse_settings(options.settings, options.retentions, methods=parse_methods(options.methods))
    ResultsFolder(options.out).check_writable()  # before any work: a run is too long to lose at the end
    dataset = load_dataset(options.dataset, layout=options.layout, video_dir=options.video_dir)
    if dataset.problems and warnings:
        first = dataset.problems[0]
        console.print(Text.assemble(
            ("warning:", "yellow"),
            f" {len(dataset.problems)} rows of {escape_control(dataset.path.name)} skipped "
            f"(first: {escape_control(str(first))}); all are listed in {METRICS}"), soft_wrap=True)
    request = EvaluationRequest(dataset=dataset, settings=settings, out=options.out, model=model,
                                options=options.options, overwrite=options.overwrite, workers=options.workers,
                                ray_address=options.ray_address, gpus_per_worker=options.gpus_per_worker,
                                cpus_per_worker=options.cpus_per_worker)
    show = console.is_terminal if show_progress is None else show_progress
    if not show:
        result = run_evaluation(request, factory)
    else:
        with _Bar(console) as bar:
            result = run_evaluation(request, factory, progress=bar.update)
    if report:
        print_summary(result.metrics, console)
        resumed = f", {result.resumed} from an earlier run" if result.resumed else ""
        console.print(f"{result.answered} answers in {result.elapsed_seconds:.1f} s{resumed}; "
                      f"results in {escape_control(str(options.out))}", markup=False, highlight=False)
    return result


class _Bar:
    """A transient Rich progress bar: answers done/total, answers/s, ETA, errors."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self.progress = RichProgress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[detail]}"), console=console, transient=True)
        self.task = self.progress.add_task("evaluate", total=None, detail="")

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, progress: Progress) -> None:
        from omnizip_cli.evaluation.summary import format_progress

        detail = format_progress(progress).split(" ", 2)[2] if progress.total else ""
        self.progress.update(self.task, total=progress.total, completed=progress.done, detail=detail)
