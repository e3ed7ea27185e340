"""Model families and loading: ``model_type`` -> adapter, and ``load_model(spec)``.

``--model`` is a hub id, a local checkpoint folder, or the name of a family's tiny random checkpoint
(built offline on first use). The checkpoint's ``config.json`` ``model_type`` picks the family's
adapter (:data:`ADAPTERS`), which loads only the thinker (the talker and the token-to-wave model
are not needed for text answers; their weights in a full hub checkpoint are skipped) and the
family's stock processor.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UsageError
from ..integrity import check_checkpoint_folder, read_config
from .base import ModelAdapter
from .tiny import ensure_tiny_checkpoint, is_tiny_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-Omni-7B"
MODEL_ENV_VAR = "OMNIZIP_MODEL"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
ATTN_CHOICES = ("sdpa", "flash_attention_2", "eager")


def adapters() -> tuple[ModelAdapter, ...]:
    """Every registered model family (the first is the default family)."""
    from .qwen2_5_omni import ADAPTER as QWEN25
    from .qwen3_omni import ADAPTER as QWEN3

    return (QWEN25, QWEN3)


def adapter_for_model_type(model_type: Any) -> ModelAdapter | None:
    return next((a for a in adapters() if model_type in a.model_types), None)


def adapter_for_tiny_name(name: str) -> ModelAdapter | None:
    return next((a for a in adapters() if a.tiny_name == name), None)


def supported_model_types() -> list[str]:
    return [t for a in adapters() for t in a.model_types]


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for, before anything heavy is imported."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    offline: bool = False
    revision: str | None = None
    fast_encoders: bool = True  # one varlen attention call per encoder layer where it pays (CUDA, no flash-attn)
    fast_decoder: bool = True  # static KV cache + CUDA-graph decode step where it pays (CUDA)
    allow_pickle: bool = False  # --trust-pickle-weights: load pickle (.bin) weights, with weights_only=True
    #: --device-map: auto, balanced, sequential, or a JSON object / .json file (:mod:`.placement`)
    device_map: str | None = None
    #: --quantization: bnb-8bit, bnb-4bit or torchao-int8, the language model only (:mod:`.quantization`)
    quantization: str | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICE_CHOICES and not _is_cuda_index(self.device):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.device_map is not None:
            from .placement import parse_device_map

            parse_device_map(self.device_map)
            if self.device != "auto":
                raise UsageError("give --device or --device-map, not both (the map says where everything goes)")
        from .quantization import check_choice

        check_choice(self.quantization)
        if self.dtype not in DTYPE_CHOICES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, not {self.dtype!r}")
        if self.attn_implementation not in ATTN_CHOICES:
            raise UsageError(
                f"--attn-implementation must be one of {', '.join(ATTN_CHOICES)}, not {self.attn_implementation!r}"
            )


@dataclass
class LoadedModel:
    """The thinker, its processor, its family's adapter and the settings actually used."""

    model: Any  # the family's thinker, in eval mode
    processor: Any  # the family's stock processor
    adapter: ModelAdapter
    name: str  # what the user asked for ("tiny", a hub id or a folder)
    path: str  # where it was loaded from
    is_tiny: bool
    device: str  # resolved, e.g. "cpu" or "cuda:0"
    dtype: str  # resolved, e.g. "float32"
    attn_implementation: str  # resolved (after any fallback)
    load_seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    fast_encoder_attention: bool = False  # encoders on the single-call varlen path
    encoder_attention_note: str = ""  # why (not)
    fast_decoder: bool = True  # may the runner use the CUDA-graph decoder (where supported)
    #: The model files' fingerprint (:func:`.fingerprint.model_fingerprint`, taken at load): the
    #: prefix cache's key holds it, so other weights under the same name are a miss.
    weights_fingerprint: str = ""
    device_map: str | None = None  # --device-map as asked (None: one device)
    #: Bytes of weights per device label (``cuda:0``, ``cpu``, ``disk``): where the thinker lies.
    weights_per_device: dict[str, int] = field(default_factory=dict)
    quantization: str | None = None  # --quantization (the language model's)
    #: Bytes of all weights as loaded, and as they would be unquantized (equal without --quantization).
    weights_bytes: int = 0
    unquantized_bytes: int = 0

    @property
    def spans_devices(self) -> bool:
        """Whether the thinker is split over several devices (or partly offloaded)."""
        return len(self.weights_per_device) > 1

    @property
    def context_length(self) -> int:
        """The language model's maximum context (``max_position_embeddings``)."""
        return int(getattr(self.model.config.get_text_config(), "max_position_embeddings", 32768))

    def describe(self) -> dict[str, Any]:
        from .placement import describe_placement

        return {
            "model": self.name,
            "family": self.adapter.display_name,
            "path": self.path,
            "random_weights": self.is_tiny,
            # a split thinker: every device and the weights on it (inputs go to ``self.device``)
            "device": describe_placement(self.weights_per_device) if self.spans_devices else self.device,
            # quantized: what it applies to and the weight memory it saves (what the report's dtype row shows)
            "dtype": self.dtype if self.quantization is None else (
                f"{self.dtype}, language model {self.quantization} (weights {self.weights_bytes / 1e6:.2f} MB, "
                f"{self.unquantized_bytes / 1e6:.2f} MB unquantized)"),
            "attn_implementation": self.attn_implementation,
            "fast_encoder_attention": self.fast_encoder_attention,
            "encoder_attention_note": self.encoder_attention_note,
            "device_map": self.device_map,
            "weights_per_device": dict(self.weights_per_device),
            "quantization": self.quantization,
            "weights_bytes": self.weights_bytes,
            "unquantized_weights_bytes": self.unquantized_bytes,
        }


def _is_cuda_index(device: str) -> bool:
    return device.startswith("cuda:") and device[5:].isdigit()


def apply_offline_mode(offline: bool) -> None:
    """Set the hub's offline switches. Must run before huggingface_hub/transformers are imported."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} was asked for but no CUDA GPU is available (use --device cpu)")
        index = int(device[5:]) if _is_cuda_index(device) else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return f"cuda:{index}"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` is bfloat16 on a GPU that supports it, float16 on an older GPU, float32 on the CPU."""
    import torch

    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def resolve_attn_implementation(requested: str) -> tuple[str, list[str]]:
    """Fall back from flash_attention_2 to sdpa (with a warning) when flash-attn is not installed."""
    warnings: list[str] = []
    if requested == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            warnings.append("flash-attn is not installed: using --attn-implementation sdpa instead")
            return "sdpa", warnings
    return requested, warnings


def resolve_model_location(
    model: str, offline: bool = False, revision: str | None = None, allow_pickle: bool = False
) -> tuple[str, bool, ModelAdapter]:
    """Turn ``--model`` into a loadable location and the adapter of its family.

    Returns ``(path_or_hub_id, is_tiny, adapter)``. Raises :class:`ModelLoadError` for a missing
    folder, a folder that is not a supported checkpoint, an incomplete or corrupt folder (naming the
    file), a folder with only pickle weights unless ``allow_pickle``, or a hub id that cannot be
    reached or found.
    """
    tiny = adapter_for_tiny_name(model)
    if tiny is not None:
        return str(ensure_tiny_checkpoint(tiny)), True, tiny
    path = Path(model).expanduser()
    kind = _local_kind(path, model)
    looks_local = kind is not None or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if kind is None:
            raise ModelLoadError(f"model folder {model} does not exist")
        if kind != "dir":
            raise ModelLoadError(f"--model {model} is a file, not a checkpoint folder")
        # config.json must be a JSON object (checked first, so a folder of another model type is named
        # as such); then cheap completeness checks (safetensors headers and sizes, shards,
        # tokenizer/preprocessor files) and the pickle refusal, one line each.
        try:
            config = read_config(path, model)
            adapter = _adapter_for(config.get("model_type"), model)
            check_checkpoint_folder(path, allow_pickle=allow_pickle, label=model)
        except PermissionError as exc:  # e.g. a sub-folder or the folder's listing is not readable
            raise ModelLoadError(f"cannot read the model folder {model}: permission denied ({exc.filename})") from None
        return str(path), is_tiny_checkpoint(path), adapter
    location, adapter = _check_hub_model(model, offline=offline, revision=revision)
    return location, False, adapter


def _local_kind(path: Path, model: str) -> str | None:
    """``"dir"``, ``"file"`` or None (nothing there) for a ``--model`` path; a path that cannot be
    looked at is one :class:`ModelLoadError` line, not a ``PermissionError``."""
    import errno
    import stat

    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise ModelLoadError(f"cannot access the model folder {model}: permission denied (on a folder of the path)",
                             hint="check the permissions of the folders on the path") from None
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
            return None  # not a usable path: maybe a hub id
        raise ModelLoadError(f"cannot access the model folder {model}: {exc.strerror or exc}") from None
    except ValueError:  # an embedded NUL: not a path
        return None
    return "dir" if stat.S_ISDIR(mode) else "file"


def token_pixels_before_loading(model: str, revision: str | None = None) -> int | None:
    """The pixels one video token covers for ``--model``, known without loading it (the family's
    :attr:`~.base.ModelAdapter.geometry`): from a tiny name, a local folder's ``config.json``, or a
    hub id's config already in the local cache. None when it cannot be known yet (an unreadable
    folder, a hub model not downloaded): the caller then sizes frames after the load."""
    tiny = adapter_for_tiny_name(model)
    if tiny is not None:
        return tiny.geometry.token_pixels
    config_file: Path | None = Path(model).expanduser() / "config.json"
    try:
        is_file = config_file.is_file()
    except (OSError, ValueError):  # a folder that cannot be entered: the load says so, in one line
        return None
    if not is_file:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json", revision=revision)
        except Exception:  # noqa: BLE001 - not a hub id, or no cache: unknown for now
            cached = None
        config_file = Path(cached) if isinstance(cached, str) else None
    if config_file is None:
        return None
    try:
        import json

        adapter = adapter_for_model_type(json.loads(config_file.read_text()).get("model_type"))
    except (OSError, ValueError, AttributeError):
        return None
    return adapter.geometry.token_pixels if adapter is not None else None


def _adapter_for(model_type: Any, model: str) -> ModelAdapter:
    adapter = adapter_for_model_type(model_type)
    if adapter is None:
        families = ", ".join(a.display_name for a in adapters())
        raise ModelLoadError(
            f"{model} is not a supported checkpoint (model_type is {model_type!r}; omnizip supports "
            f"{families}: model_type {', '.join(supported_model_types())})"
        )
    return adapter


#: Seconds to wait for a TCP connection to the hub before calling it unreachable.
HUB_PROBE_SECONDS = 3.0


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub (``$HF_ENDPOINT``, default huggingface.co:443) opens in time."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _fail_fast_without_hub(model: str, revision: str | None) -> None:
    """Without a network (and without ``--offline``), a hub model that is not downloaded fails in
    seconds with one line, rather than after the hub client's retries (about 25 s). A downloaded one
    loads as before (the hub client falls back to the local copy; ``--offline`` skips its retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0") or hub_reachable():
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a name the hub client rejects: not downloaded
        cached = None
    if not isinstance(cached, str):
        raise ModelLoadError(
            f"cannot reach the Hugging Face hub to download {model}, and it is not in the local cache",
            hint="connect to the network, or pass --offline with a downloaded model, or a local checkpoint "
                 "folder to --model")


def _check_hub_model(model: str, offline: bool, revision: str | None) -> tuple[str, ModelAdapter]:
    from transformers import AutoConfig

    if not offline:
        _fail_fast_without_hub(model, revision)
    try:
        config = AutoConfig.from_pretrained(model, revision=revision, local_files_only=offline)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "in the local cache (offline mode)" if offline else "on the Hugging Face hub"
        raise ModelLoadError(
            f"cannot load {model} {where}: {reason}",
            hint="check the name, your network, or pass a local checkpoint folder to --model",
        ) from exc
    return model, _adapter_for(getattr(config, "model_type", None), model)


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load the thinker and the processor described by ``spec`` (same code path for tiny and real)."""
    import time

    import pickle

    import torch
    from safetensors import SafetensorError

    started = time.perf_counter()
    location, is_tiny, adapter = resolve_model_location(
        spec.model, offline=spec.offline, revision=spec.revision, allow_pickle=spec.allow_pickle
    )
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    attn, warnings = resolve_attn_implementation(spec.attn_implementation)
    common: dict[str, Any] = {"revision": spec.revision, "local_files_only": spec.offline or is_tiny}
    # Never rely on library defaults for what may be unpickled (issue 18, case 9).
    weight_kwargs: dict[str, Any] = {"use_safetensors": None if spec.allow_pickle else True, "weights_only": True}
    offload_folder = None
    if spec.device_map is not None:
        from . import placement

        device_map = placement.parse_device_map(spec.device_map)
        placement.check_devices_exist(device_map)
        _require_accelerate()
        weight_kwargs.update(placement.from_pretrained_kwargs(device_map))
        offload_folder = weight_kwargs["offload_folder"]
    if spec.quantization is not None:
        from .quantization import quantization_config

        weight_kwargs["quantization_config"] = quantization_config(
            spec.quantization, getattr(torch, dtype), "cuda" if spec.device_map is not None and
            torch.cuda.is_available() else device)
    try:
        with _library_quiet_as_transformers():
            model, processor = adapter.load(
                location, dtype=getattr(torch, dtype), attn_implementation=attn, device=device,
                from_pretrained_kwargs=common, weight_kwargs=weight_kwargs,
            )
    except torch.OutOfMemoryError:
        raise
    except pickle.UnpicklingError as exc:  # weights_only=True refused a pickle
        raise pickle_refusal(adapter.display_name, spec.model, location, exc) from exc
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = None
        if isinstance(exc, SafetensorError):  # e.g. a truncated file in the hub cache
            hint = (
                "a weight file is corrupt or truncated: delete it (for a hub model: huggingface-cli "
                "delete-cache) and download it again"
            )
        raise ModelLoadError(
            f"cannot load the {adapter.display_name} thinker from {spec.model}: {first_line}", hint=hint
        ) from exc
    from .fingerprint import model_fingerprint
    from .placement import cleanup_offload, input_device, weights_per_device
    from .quantization import weight_bytes

    weights = weights_per_device(model)
    held, unquantized = weight_bytes(model, getattr(torch, dtype))
    if spec.device_map is not None:
        if offload_folder is not None and "disk" not in weights:
            cleanup_offload(offload_folder)
        device = input_device(model, adapter.text_model(model).embed_tokens)
    fast, note = _set_up_encoder_attention(adapter.encoder_modules(model), spec.fast_encoders)
    fingerprint = model_fingerprint(location, spec.revision)
    if is_tiny:
        warnings.insert(0, f"--model {spec.model}: the weights are random, so the answer is meaningless")
    return LoadedModel(
        model=model,
        processor=processor,
        adapter=adapter,
        name=spec.model,
        path=location,
        is_tiny=is_tiny,
        device=device,
        dtype=dtype,
        attn_implementation=attn,
        load_seconds=time.perf_counter() - started,
        warnings=tuple(warnings),
        fast_encoder_attention=fast,
        encoder_attention_note=note,
        fast_decoder=spec.fast_decoder,
        weights_fingerprint=fingerprint,
        device_map=spec.device_map,
        weights_per_device=weights,
        quantization=spec.quantization,
        weights_bytes=held,
        unquantized_bytes=unquantized,
    )


def _library_quiet_as_transformers() -> Any:
    """accelerate's loading logs (its dispatch warns that offloaded parameters are on ``meta``: the
    report says where every weight is) as quiet as transformers' are (the CLI quiets both unless -v)."""
    import contextlib
    import logging as std_logging

    from transformers.utils import logging as hf_logging

    if hf_logging.get_verbosity() <= std_logging.WARNING:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    accelerate_logger = std_logging.getLogger("accelerate")
    level = accelerate_logger.level
    accelerate_logger.setLevel(std_logging.ERROR)
    stack.callback(accelerate_logger.setLevel, level)
    return stack


def _require_accelerate() -> None:
    """--device-map loads through accelerate: a one-line error when it is missing."""
    from transformers.utils import is_accelerate_available

    if not is_accelerate_available():
        from ..errors import EnvironmentProblem

        raise EnvironmentProblem("--device-map needs accelerate, which is not installed",
                                 hint='pip install "accelerate>=1.0"')


#: What torch's weights-only unpickler names in its refusals: an object's class or function.
_REFUSED_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_REFUSED_CALL_RE = re.compile(r"unrecognized function ([\w.<> ]+?)(?: which|$)")


def pickle_refusal(family: str, model: str, location: str, exc: BaseException) -> ModelLoadError:
    """The one-line error for pickle weights that torch's ``weights_only=True`` loader refused.

    In omnizip's words rather than torch's (whose message asks to "file an issue" or to allowlist
    the global, which would run the file's code): the file holds objects that are not plain tensors,
    so it is refused even with ``--trust-pickle-weights``; naming what it refers to, when torch says.
    """
    from .. import integrity

    text = str(exc)
    match = _REFUSED_GLOBAL_RE.search(text) or _REFUSED_CALL_RE.search(text)
    refers = f" (it refers to {match.group(1).strip()[:80]})" if match else ""
    files = "its pickle weights"
    try:
        kind, names = integrity.weight_files(Path(location))
        if kind == "pickle" and names:
            files = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    except OSError:
        pass
    return ModelLoadError(
        f"cannot load the {family} thinker from {model}: {files} holds objects that are not plain tensors{refers},"
        " so it is refused even with --trust-pickle-weights",
        hint="convert the checkpoint to safetensors (only if you trust its source: converting runs its code),"
             " or use a safetensors release of it",
    )


def _set_up_encoder_attention(encoders: dict[str, Any], wanted: bool) -> tuple[bool, str]:
    """Route the encoders through one varlen attention call per layer where that pays off."""
    from .encoder_attention import enable_fast_encoder_attention, fast_attention_decision

    if not wanted:
        return False, "stock encoder attention (--stock-encoders)"
    decision = fast_attention_decision(encoders)
    if decision.enable:
        problem = _varlen_self_check(encoders)
        if problem is not None:  # never let an untested kernel/driver combination break the answer
            logger.warning("fast encoder attention disabled: %s", problem)
            return False, f"stock encoder attention: the varlen self-check failed ({problem})"
    enabled = enable_fast_encoder_attention(encoders)
    return enabled, decision.reason


def _varlen_self_check(encoders: dict[str, Any]) -> str | None:
    """Run the varlen kernel once on a small random problem against the reference; None when it agrees."""
    import torch

    from .encoder_attention import kernel_supports, reference_varlen_attention

    try:
        parameter = next(next(iter(encoders.values())).parameters())
        device, dtype = parameter.device, parameter.dtype
        generator = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(96, 4, 64, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
        cu = torch.tensor([0, 40, 64, 96], dtype=torch.int32, device=device)
        if not kernel_supports(q):
            return None  # the reference path will run: nothing to check
        from torch.nn.attention.varlen import varlen_attn

        fast = varlen_attn(q, k, v, cu, cu, 40, 40).float()
        reference = reference_varlen_attention(q.float(), k.float(), v.float(), cu, 40).float()
        error = float((fast - reference).abs().max() / reference.abs().max().clamp_min(1e-6))
    except Exception as exc:  # noqa: BLE001 - any failure means: keep the stock path
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return None if error < 5e-2 else f"relative error {error:.3g} against the reference"
