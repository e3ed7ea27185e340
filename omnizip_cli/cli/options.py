"""Every command-line option, declared once, in groups that commands share.

A command lists the groups it takes (``@with_options(MODEL, MEDIA, OUTPUT)``); its signature gets
the groups' parameters (what Typer shows in ``--help``), and the body receives one built object per
group (``model: ModelSpec``, ``media: MediaOptions``, ...). Building a group validates its values
(a bad value is a one-line usage error, exit code 2) before any heavy work. The command body runs
inside the error guard (:func:`~omnizip_cli.cli.app.run_guarded`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models.registry import DEFAULT_MODEL, MODEL_ENV_VAR
from .app import run_guarded



class Preset(str, Enum):
    p45 = "45"
    p35 = "35"


@dataclass(frozen=True)
class OptionGroup:
    """Options that travel together; ``build(**values)`` turns them into the object a command receives."""

    name: str
    parameters: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_options(*groups: OptionGroup, stdout: str = "always") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the groups' options; it is called with one built object per group, guarded.

    ``stdout``: ``"always"`` (the command writes its result there: a closed stdout is an error before
    any work) or ``"json"`` (only with ``--json``: ``keep-map`` writes a file).
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [_evaluated(p, command) for p in inspect.signature(command).parameters.values()
               if p.name not in {g.name for g in groups}]
        parameters = [*own, *(p for g in groups for p in g.parameters)]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            debug = bool(values.get("debug", False))

            def body() -> Any:
                from .signals import require_stdout

                for group in groups:
                    values[group.name] = group.build(**{n: values.pop(n) for n in group.names})
                output = values.get("output")
                if stdout == "always" or getattr(output, "json_output", False):
                    require_stdout()  # a closed stdout is an error before any work (exit 1)
                return command(**values)

            return run_guarded(debug, body)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # Typer must read the combined signature, not the command's own
        return wrapper

    return decorate


def _evaluated(parameter: inspect.Parameter, command: Callable[..., Any]) -> inspect.Parameter:
    """The parameter with its annotation evaluated in the command's module (``from __future__ import annotations``)."""
    if isinstance(parameter.annotation, str):
        return parameter.replace(annotation=eval(parameter.annotation, command.__globals__))  # noqa: S307
    return parameter


# --------------------------------------------------------------------------------- model
def _model_spec(*, model: str, device: str, dtype: str, attn_implementation: str, offline: bool,
                revision: str | None, stock_encoders: bool, eager_decode: bool, trust_pickle_weights: bool,
                device_map: str | None, quantization: str | None) -> Any:
    from ..models.registry import ModelSpec, apply_offline_mode

    apply_offline_mode(offline)  # before huggingface_hub / transformers are imported
    return ModelSpec(model=model, device=device, dtype=dtype, attn_implementation=attn_implementation,
                     offline=offline, revision=revision, fast_encoders=not stock_encoders,
                     fast_decoder=not eager_decode, allow_pickle=trust_pickle_weights, device_map=device_map,
                     quantization=quantization)


MODEL = OptionGroup("model", (
    _option("model", Annotated[str, typer.Option(
        "--model", "-m", envvar=MODEL_ENV_VAR,
        help="Hub id or local checkpoint folder of an omni model (Qwen2.5-Omni, Qwen3-Omni); 'tiny' or 'tiny-qwen3' "
             "builds a tiny random one offline.")], DEFAULT_MODEL),
    _option("device", Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")], "auto"),
    _option("dtype", Annotated[str, typer.Option(
        help="auto, bfloat16, float16 or float32 (auto: bf16 on GPU, fp32 on CPU).")], "auto"),
    _option("attn_implementation", Annotated[str, typer.Option(
        "--attn-implementation", help="sdpa, flash_attention_2 or eager.")], "sdpa"),
    _option("offline", Annotated[bool, typer.Option("--offline", help="Never contact the hub (sets HF_HUB_OFFLINE).")],
            False),
    _option("revision", Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")], None),
    _option("stock_encoders", Annotated[bool, typer.Option(
        "--stock-encoders", help="Keep transformers' per-window encoder attention (no varlen fast path).")], False),
    _option("eager_decode", Annotated[bool, typer.Option(
        "--eager-decode", help="Decode with the plain loop (no static cache / CUDA graph).")], False),
    _option("trust_pickle_weights", Annotated[bool, typer.Option(
        "--trust-pickle-weights",
        help="Also load pickle (.bin) weights, with torch's weights_only loader; safetensors only by default.")], False),
    _option("device_map", Annotated[str | None, typer.Option(
        "--device-map",
        help="Split the model over devices (accelerate): auto, balanced, sequential, or a JSON object / .json file "
             "from module names to devices (0, cuda:1, cpu, disk). Replaces --device.")], None),
    _option("quantization", Annotated[str | None, typer.Option(
        "--quantization",
        help="Load the language model quantized: torchao-int8 (CPU or GPU, needs torchao), bnb-8bit or bnb-4bit "
             "(CUDA, needs bitsandbytes); the encoders stay unquantized.")], None),
), _model_spec)


# --------------------------------------------------------------------------------- media
def _media_options(*, fps: float, max_frames: int, min_pixels: int, max_pixels: int, total_pixels: int | None,
                   no_audio: bool, max_audio_seconds: float | None) -> Any:
    from ..media import MediaOptions

    return MediaOptions(fps=fps, max_frames=max_frames, min_pixels=min_pixels, max_pixels=max_pixels,
                        total_pixels=total_pixels, use_audio=not no_audio, max_audio_seconds=max_audio_seconds)


MEDIA = OptionGroup("media", (
    _option("fps", Annotated[float, typer.Option(help="Video frames sampled per second.")], 2.0),
    _option("max_frames", Annotated[int, typer.Option(help="At most this many frames.")], 768),
    _option("min_pixels", Annotated[int, typer.Option(help="Minimum pixels per frame (multiple-of-28 sizing).")],
            128 * 28 * 28),
    _option("max_pixels", Annotated[int, typer.Option(help="Maximum pixels per frame (multiple-of-28 sizing).")],
            768 * 28 * 28),
    _option("total_pixels", Annotated[int | None, typer.Option(
        help="Pixel budget over all frames (default: qwen-omni-utils' 90,316,800; 0: no budget).")], None),
    _option("no_audio", Annotated[bool, typer.Option("--no-audio", help="Ignore the video's audio track.")], False),
    _option("max_audio_seconds", Annotated[float | None, typer.Option(
        help="Use at most this many seconds of audio (the rest is cut, and the report says so).")], None),
), _media_options)


# --------------------------------------------------------------------------------- compression (one setting)
#: The option that sets each compression field (a bad value is reported under the option's name).
COMPRESSION_FIELD_OPTIONS = {"rho_audio": "--rho-audio", "rho_video": "--rho-video", "anchor_ratio": "--anchor-ratio",
                             "merge_g": "--merge-g", "retention": "--retention"}


def _compression(*, no_compress: bool, preset: Preset | None, retention: float | None, rho_audio: float | None,
                 rho_video: float | None, anchor_ratio: float | None, merge_g: int | None) -> Any:
    from ..compression import CompressionSetting
    from ..errors import UsageError

    try:
        return CompressionSetting.from_options(
            no_compress=no_compress, preset=preset.value if preset else None, retention=retention,
            rho_audio=rho_audio, rho_video=rho_video, anchor_ratio=anchor_ratio, merge_g=merge_g,
        )
    except UsageError as exc:
        raise exc.for_option(COMPRESSION_FIELD_OPTIONS) from exc


COMPRESSION = OptionGroup("compression", (
    _option("no_compress", Annotated[bool, typer.Option("--no-compress", help="Stock path: no token compression.")],
            False),
    _option("preset", Annotated[Preset | None, typer.Option(
        help="Paper setting: 45 (the default: rho_audio .3, rho_video .6) or 35 (.4, .7) % kept.")], None),
    _option("retention", Annotated[float | None, typer.Option(
        help="Target fraction of audio+video tokens kept, e.g. 0.45; derives the ratios.")], None),
    _option("rho_audio", Annotated[float | None, typer.Option(help="Fraction of audio tokens dropped, in [0, 1).")],
            None),
    _option("rho_video", Annotated[float | None, typer.Option(help="Fraction of video tokens dropped, in [0, 1).")],
            None),
    _option("anchor_ratio", Annotated[float | None, typer.Option(
        help="Contextual anchors, as a fraction of audio tokens.")], None),
    _option("merge_g", Annotated[int | None, typer.Option(help="G: dropped audio tokens merged into each anchor.")],
            None),
), _compression)


# --------------------------------------------------------------------------------- generation
def _generation(*, max_new_tokens: int, temperature: float, seed: int | None) -> Any:
    from ..generation.sampling import GenerationOptions

    return GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)


#: ``--max-new-tokens`` of ask and chat.
DEFAULT_MAX_NEW_TOKENS = 256


def generation_group(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> OptionGroup:
    return OptionGroup("generation", (
        _option("max_new_tokens", Annotated[int, typer.Option(help="At most this many answer tokens.")],
                max_new_tokens),
        _option("temperature", Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")], 0.0),
        _option("seed", Annotated[int | None, typer.Option(help="Random seed for sampling.")], None),
    ), _generation)


GENERATION = generation_group()


def _greedy(*, max_new_tokens: int) -> Any:
    from ..generation.sampling import GenerationOptions

    return GenerationOptions(max_new_tokens=max_new_tokens)


GREEDY_32 = OptionGroup("generation", (
    _option("max_new_tokens", Annotated[int, typer.Option(help="At most this many answer tokens.")], 32),
), _greedy)


# --------------------------------------------------------------------------------- output
@dataclass(frozen=True)
class OutputOptions:
    json_output: bool
    quiet: bool
    no_color: bool
    verbose: bool
    debug: bool


OUTPUT = OptionGroup("output", (
    _option("json_output", Annotated[bool, typer.Option(
        "--json", help="Print one JSON object on stdout instead of text and report.")], False),
    _option("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No report and no progress on stderr.")],
            False),
    _option("no_color", Annotated[bool, typer.Option("--no-color", help="Plain report without colours.")], False),
    _option("verbose", Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")], False),
    _option("debug", Annotated[bool, typer.Option("--debug", help="Show tracebacks.", envvar="OMNIZIP_DEBUG")], False),
), OutputOptions)

SystemOpt = Annotated[str | None, typer.Option(help="System prompt (default: the checkpoint's chat template).")]

KeepMapOpt = Annotated[Path | None, typer.Option(
    "--keep-map", help="Also write a PNG of what was kept (frames with dropped patches dimmed, audio, groups).")]

NoCacheOpt = Annotated[bool, typer.Option(
    "--no-cache", help="Neither read nor write the disk cache of prepared media (see: omnizip cache info).")]


def check_output_file(path: Path, option: str) -> None:
    """Fail before any work when a result file cannot be written at ``path`` (a folder, no folder, read-only)."""
    import os

    from ..errors import UsageError

    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path} is not writable")
    import tempfile

    try:  # what access() cannot see (root on /proc, a read-only mount): try to write there
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".omnizip-write-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path} cannot be written: {exc.strerror or exc}") from exc


def out_folder(text: str) -> Path:
    """The parser of a results folder option (``evaluate --out``, ``profile --out``).

    An empty or blank value is a usage error: ``Path("")`` would be the current folder, which the
    user did not ask for (``.`` says so explicitly).
    """
    if not text.strip():
        raise typer.BadParameter("is empty: give a folder (or . for the current one)")
    return Path(text)


MaxPromptOpt = Annotated[int | None, typer.Option(
    "--max-prompt-tokens",
    help="Token budget of the prompt (default: the model's context minus --max-new-tokens). When the "
         "uncompressed prompt exceeds it, a retention that fits is chosen; when nothing fits, an error says what "
         "to lower.")]


def check_prompt_budget(value: int | None) -> None:
    from ..errors import UsageError

    if value is not None and value < 1:
        raise UsageError(f"--max-prompt-tokens must be at least 1, got {value}")
