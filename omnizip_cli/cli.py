"""The ``omnizip`` command line: ``ask``, ``profile`` and ``env``.

Only the answer goes to stdout; the report, progress and warnings go to stderr. Errors are one line
(``error: ...``) with exit code 1 for runtime failures, 2 for usage errors and 130 on Ctrl-C;
``--debug`` or ``OMNIZIP_DEBUG=1`` shows the traceback instead. Heavy libraries (torch,
transformers, av) are imported inside the commands, so ``omnizip --help`` is instant.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from . import __version__
from .errors import OmnizipError, OutOfMemory, UsageError

if TYPE_CHECKING:
    from .compression import OmniZipConfig

app = typer.Typer(
    name="omnizip",
    help="Ask questions about local videos with Qwen2.5-Omni, made fast by OmniZip token compression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DEBUG_ENV_VAR = "OMNIZIP_DEBUG"
EXIT_INTERRUPTED = 130


class Preset(str, Enum):
    p45 = "45"
    p35 = "35"


# ----------------------------------------------------------------------------- shared options
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="OMNIZIP_MODEL",
        help="Hub id or local checkpoint folder of a Qwen2.5-Omni model; 'tiny' builds a tiny random one offline.",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, bfloat16, float16 or float32 (auto: bf16 on GPU, fp32 on CPU).")]
AttnOpt = Annotated[str, typer.Option("--attn-implementation", help="sdpa, flash_attention_2 or eager.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never contact the hub (sets HF_HUB_OFFLINE).")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
FpsOpt = Annotated[float, typer.Option(help="Video frames sampled per second.")]
MaxFramesOpt = Annotated[int, typer.Option(help="At most this many frames.")]
MinPixelsOpt = Annotated[int, typer.Option(help="Minimum pixels per frame (multiple-of-28 sizing).")]
MaxPixelsOpt = Annotated[int, typer.Option(help="Maximum pixels per frame (multiple-of-28 sizing).")]
TotalPixelsOpt = Annotated[int | None, typer.Option(help="Optional pixel budget over all frames.")]
NoAudioOpt = Annotated[bool, typer.Option("--no-audio", help="Ignore the video's audio track.")]
NoCompressOpt = Annotated[bool, typer.Option("--no-compress", help="Stock path: no token compression.")]
PresetOpt = Annotated[
    Preset | None, typer.Option(help="Paper setting: 45 (rho_audio .3, rho_video .6) or 35 (.4, .7) % kept.")
]
RetentionOpt = Annotated[
    float | None, typer.Option(help="Target fraction of audio+video tokens kept, e.g. 0.45; derives the ratios.")
]
RhoAudioOpt = Annotated[float | None, typer.Option(help="Fraction of audio tokens dropped, in [0, 1).")]
RhoVideoOpt = Annotated[float | None, typer.Option(help="Fraction of video tokens dropped, in [0, 1).")]
AnchorOpt = Annotated[float | None, typer.Option(help="Contextual anchors, as a fraction of audio tokens.")]
MergeGOpt = Annotated[int | None, typer.Option(help="G: dropped audio tokens merged into each anchor.")]
MaxNewOpt = Annotated[int, typer.Option(help="At most this many answer tokens.")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed for sampling.")]
SystemOpt = Annotated[str | None, typer.Option(help="System prompt (default: the checkpoint's chat template).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text and report.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No report and no progress on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.", envvar=DEBUG_ENV_VAR)]
StockEncodersOpt = Annotated[
    bool,
    typer.Option("--stock-encoders", help="Keep transformers' per-window encoder attention (no varlen fast path)."),
]
EagerDecodeOpt = Annotated[
    bool, typer.Option("--eager-decode", help="Decode with the plain loop (no static cache / CUDA graph).")
]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain report without colours.")]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"omnizip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Ask questions about local videos with Qwen2.5-Omni, made fast by OmniZip token compression."""


# ----------------------------------------------------------------------------- helpers
def _fail(error: OmnizipError) -> NoReturn:
    sys.stderr.write(f"error: {error.one_line()}\n")
    raise typer.Exit(error.exit_code)


def _quiet_libraries(verbose: bool = False) -> None:
    """Silence transformers' and huggingface_hub's info/warnings (e.g. the hub's "Retrying in 2s"
    lines) and transformers' weight-loading bars unless asked: they would clutter stderr around our
    one-line errors. The hub's download bars stay: a first 7B download takes minutes."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    if not verbose:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        hub_logging.set_verbosity_error()


def run_guarded(debug: bool, body: Any) -> Any:
    """Run ``body()`` turning failures into one-line errors with the right exit code."""
    debug = debug or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0", "false")
    try:
        return body()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        # Click would turn a re-raised KeyboardInterrupt into "Aborted!" and exit 1: print the
        # traceback ourselves under --debug and keep the conventional 130 either way.
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write("error: interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OmnizipError as exc:
        if debug:
            raise
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if _is_out_of_memory(exc):
            _fail(OutOfMemory(f"out of memory: {message}" if message else "out of memory"))
        _fail(OmnizipError(f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
                           hint="run again with --debug for the traceback"))


def _is_out_of_memory(exc: BaseException) -> bool:
    if type(exc).__name__ in ("OutOfMemoryError", "MemoryError"):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def resolve_compression(
    no_compress: bool,
    preset: str | None,
    retention: float | None,
    rho_audio: float | None,
    rho_video: float | None,
    anchor_ratio: float | None,
    merge_g: int | None,
) -> OmniZipConfig | None:
    """The OmniZip setting the options ask for (None with --no-compress); default: the 45 % preset.

    Precedence: ``--preset`` or ``--retention`` (not both) picks the base ratios; ``--rho-audio``,
    ``--rho-video``, ``--anchor-ratio`` and ``--merge-g`` override single fields of it. For
    ``--retention`` this solves with the paper's token mix (25 audio : 144 video tokens per second);
    ``omnizip ask`` solves again with the clip's own mix once it is known
    (:func:`compression_for_retention`).
    """
    from dataclasses import replace

    from .compression import PRESETS

    overrides = compression_overrides(rho_audio, rho_video, anchor_ratio, merge_g)
    if no_compress:
        if preset is not None or retention is not None or overrides:
            raise UsageError("--no-compress cannot be combined with compression settings")
        return None
    if preset is not None and retention is not None:
        raise UsageError("give either --preset or --retention, not both")
    if retention is not None:
        return compression_for_retention(retention, overrides)
    base = PRESETS[preset or "45"]
    return replace(base, **overrides) if overrides else base


def compression_overrides(
    rho_audio: float | None, rho_video: float | None, anchor_ratio: float | None, merge_g: int | None
) -> dict[str, Any]:
    """The single-field overrides the user gave (``--rho-audio`` ...)."""
    given = {"rho_audio": rho_audio, "rho_video": rho_video, "anchor_ratio": anchor_ratio, "merge_g": merge_g}
    return {k: v for k, v in given.items() if v is not None}


def compression_for_retention(
    retention: float,
    overrides: dict[str, Any],
    audio_tokens_per_second: float = 25,
    video_tokens_per_second: float = 144,
) -> OmniZipConfig:
    """Ratios for a target retention at a token mix; ``--anchor-ratio``/``--merge-g`` enter the solve,
    ``--rho-audio``/``--rho-video`` override its result."""
    from dataclasses import replace

    from .compression import config_for_retention

    solve = {k: v for k, v in overrides.items() if k in ("anchor_ratio", "merge_g")}
    fixed = {k: v for k, v in overrides.items() if k in ("rho_audio", "rho_video")}
    base = config_for_retention(retention, audio_tokens_per_second, video_tokens_per_second, **solve)
    return replace(base, **fixed) if fixed else base


def _media_options(fps: float, max_frames: int, min_pixels: int, max_pixels: int, total_pixels: int | None,
                   no_audio: bool) -> Any:
    from .media import MediaOptions

    return MediaOptions(fps=fps, max_frames=max_frames, min_pixels=min_pixels, max_pixels=max_pixels,
                        total_pixels=total_pixels, use_audio=not no_audio)


# ----------------------------------------------------------------------------- ask
@app.command()
def ask(
    video: Annotated[Path, typer.Argument(help="Video (or audio) file.", show_default=False)],
    question: Annotated[str, typer.Argument(help="Your question about it.", show_default=False)],
    model: ModelOpt = "Qwen/Qwen2.5-Omni-7B",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attn_implementation: AttnOpt = "sdpa",
    offline: OfflineOpt = False,
    revision: RevisionOpt = None,
    fps: FpsOpt = 2.0,
    max_frames: MaxFramesOpt = 768,
    min_pixels: MinPixelsOpt = 128 * 28 * 28,
    max_pixels: MaxPixelsOpt = 768 * 28 * 28,
    total_pixels: TotalPixelsOpt = None,
    no_audio: NoAudioOpt = False,
    no_compress: NoCompressOpt = False,
    preset: PresetOpt = None,
    retention: RetentionOpt = None,
    rho_audio: RhoAudioOpt = None,
    rho_video: RhoVideoOpt = None,
    anchor_ratio: AnchorOpt = None,
    merge_g: MergeGOpt = None,
    max_new_tokens: MaxNewOpt = 256,
    temperature: TemperatureOpt = 0.0,
    seed: SeedOpt = None,
    system: SystemOpt = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream the answer as it is generated.")] = True,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False,
    stock_encoders: StockEncodersOpt = False,
    eager_decode: EagerDecodeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Answer QUESTION about VIDEO; the answer streams to stdout, the report goes to stderr."""

    def body() -> None:
        from .commands import AskSettings, run_ask

        settings = AskSettings(
            media_path=video,
            question=question,
            model=_model_spec(
                model, device, dtype, attn_implementation, offline, revision, stock_encoders, eager_decode
            ),
            media=_media_options(fps, max_frames, min_pixels, max_pixels, total_pixels, no_audio),
            compression=_ask_compression(
                no_compress, preset.value if preset else None, retention, rho_audio, rho_video, anchor_ratio, merge_g
            ),
            generation=_generation_options(max_new_tokens, temperature, seed),
            system=system,
            retention=None if no_compress else retention,
            compression_overrides=compression_overrides(rho_audio, rho_video, anchor_ratio, merge_g),
            stream=stream and not json_output,
            json_output=json_output,
            quiet=quiet,
            no_color=no_color,
            verbose=verbose,
        )
        run_ask(settings)

    run_guarded(debug, body)


_FIELD_OPTIONS = {"rho_audio": "--rho-audio", "rho_video": "--rho-video", "anchor_ratio": "--anchor-ratio",
                  "merge_g": "--merge-g", "retention": "--retention"}


def _ask_compression(*args: Any) -> OmniZipConfig | None:
    """:func:`resolve_compression`, with a bad value reported under its option name (``--rho-audio``)."""
    try:
        return resolve_compression(*args)
    except UsageError as exc:
        field, _, rest = exc.message.partition(" ")
        if field in _FIELD_OPTIONS:
            raise UsageError(f"{_FIELD_OPTIONS[field]} {rest}", hint=exc.hint) from exc
        raise


def _model_spec(
    model: str,
    device: str,
    dtype: str,
    attn: str,
    offline: bool,
    revision: str | None,
    stock_encoders: bool = False,
    eager_decode: bool = False,
) -> Any:
    from .loading import ModelSpec, apply_offline_mode

    apply_offline_mode(offline)  # before transformers / huggingface_hub are imported
    return ModelSpec(model=model, device=device, dtype=dtype, attn_implementation=attn, offline=offline,
                     revision=revision, fast_encoders=not stock_encoders, fast_decoder=not eager_decode)


def _generation_options(max_new_tokens: int, temperature: float, seed: int | None) -> Any:
    from .decoding import GenerationOptions

    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if temperature < 0:
        raise UsageError("--temperature must be >= 0 (0 is greedy)")
    return GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)


# ----------------------------------------------------------------------------- profile
DEFAULT_PROFILE_QUESTION = "What happens in this video?"


@app.command()
def profile(
    video: Annotated[Path, typer.Argument(help="Video (or audio) file.", show_default=False)],
    question_arg: Annotated[
        str | None, typer.Argument(metavar="QUESTION", help="The question (or use --question).", show_default=False)
    ] = None,
    question: Annotated[
        str | None, typer.Option("--question", help=f"The question [default: {DEFAULT_PROFILE_QUESTION!r}].")
    ] = None,
    model: ModelOpt = "Qwen/Qwen2.5-Omni-7B",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attn_implementation: AttnOpt = "sdpa",
    offline: OfflineOpt = False,
    revision: RevisionOpt = None,
    fps: FpsOpt = 2.0,
    max_frames: MaxFramesOpt = 768,
    min_pixels: MinPixelsOpt = 128 * 28 * 28,
    max_pixels: MaxPixelsOpt = 768 * 28 * 28,
    total_pixels: TotalPixelsOpt = None,
    no_audio: NoAudioOpt = False,
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
    max_new_tokens: MaxNewOpt = 32,
    system: SystemOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write metrics.json, config.json and timings.png into this folder."),
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False,
    stock_encoders: StockEncodersOpt = False,
    eager_decode: EagerDecodeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Measure the full path against compression settings on VIDEO, side by side (greedy answers)."""

    def body() -> None:
        import json

        from .commands import load_model_with_progress, prepare_environment
        from .profiling import ProfileRequest, build_settings, print_profile_report, run_profile, write_outputs
        from .report import make_console

        if question is not None and question_arg is not None and question != question_arg:
            raise UsageError("give the question once: as QUESTION or as --question")
        request = ProfileRequest(
            media_path=video,
            question=question or question_arg or DEFAULT_PROFILE_QUESTION,
            model=_model_spec(
                model, device, dtype, attn_implementation, offline, revision, stock_encoders, eager_decode
            ),
            media=_media_options(fps, max_frames, min_pixels, max_pixels, total_pixels, no_audio),
            settings=build_settings([p.value for p in preset or []], list(retention or []), include_full),
            generation=_generation_options(max_new_tokens, 0.0, None),
            repeats=repeats,
            system=system,
        )
        prepare_environment(verbose)
        console = make_console(no_color=no_color)
        show_progress = console.is_terminal and not quiet and not json_output
        if show_progress:
            with console.status("profiling ...", spinner="dots") as status:
                payload = run_profile(
                    request,
                    progress=lambda message: status.update(message),
                    load=lambda: load_model_with_progress(request.model, console, False),
                )
        else:
            payload = run_profile(request)
        paths = write_outputs(payload, out) if out is not None else {}
        if json_output:
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
            sys.stdout.flush()
        elif not quiet:
            print_profile_report(console, payload)
            if paths:
                console.print(f"wrote {', '.join(str(p) for p in paths.values())}", markup=False)

    run_guarded(debug, body)


# ----------------------------------------------------------------------------- env
@app.command()
def env() -> None:
    """Show the versions and devices omnizip would use."""
    import platform

    from .versions import TRANSFORMERS_BELOW, TRANSFORMERS_MIN, installed_version

    lines = [f"omnizip {__version__}", f"python {platform.python_version()}"]
    for package in ("torch", "torchvision", "transformers", "av", "librosa", "typer", "rich", "numpy"):
        lines.append(f"{package} {installed_version(package) or 'not installed'}")
    lines.append(f"transformers range tested: >={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        lines.append(f"cuda available: {cuda}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    except ImportError:
        lines.append("cuda available: unknown (torch missing)")
    typer.echo("\n".join(lines))


def main() -> None:
    """Console-script entry point: like ``app()``, but a usage error is one line (exit code 2)."""
    # Typer vendors Click: its exception classes are reached through the public typer.BadParameter.
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError
    click_exception = typer.BadParameter.__mro__[2]  # click's ClickException

    try:
        code = app(standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `omnizip`: the help, as Click shows it
            sys.stderr.write(exc.format_message() + "\n")
            sys.exit(exc.exit_code)
        hint = f" (see: omnizip {exc.ctx.info_name} --help)" if exc.ctx is not None and exc.ctx.parent else ""
        sys.stderr.write(f"error: {' '.join(exc.format_message().split())}{hint}\n")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except click_exception as exc:
        sys.stderr.write(f"error: {' '.join(exc.format_message().split())}\n")
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
