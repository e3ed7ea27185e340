"""Fast attention for the omni models' encoders: one variable-length call per layer.

Why: with transformers' ``sdpa`` implementation the vision encoder runs one small attention call per
8 x 8-patch window (and the audio encoder one per 2-s chunk): thousands of kernel launches per clip,
so the vision encoder alone costs more than the whole LLM prefill (``shared/docs/performance.md``).
PyTorch ships a variable-length flash attention (``torch.nn.attention.varlen.varlen_attn``, CUDA,
fp16/bf16) that does all the windows of a layer in one call.

How it hooks in (no transformers class is patched):

* A function is registered in transformers' attention-function registry
  (``AttentionInterface.register``) under a name that contains ``"flash"``. The encoders' attention
  modules (the vision and audio attention classes of the Qwen omni families) look their function up at
  call time from ``self.config._attn_implementation``, and for any name containing ``"flash"``
  (``transformers.utils.generic.is_flash_attention_requested``) they take their varlen branch: ONE
  call per layer with ``cu_seq_lens_q/k`` (the windows or chunks the encoder already computed) and
  ``max_length_q/k``, instead of their per-window loop.
* :func:`enable_fast_encoder_attention` sets ``_attn_implementation`` on the **encoder** configs only
  (the config objects the encoders' attention modules hold; the adapter lists the encoders). The
  language model's config is never touched. :func:`disable_fast_encoder_attention` (or leaving the
  :func:`fast_encoder_attention` context) restores the previous names exactly.
* Modules, weights, hooks and call signatures are unchanged, so forward (pre-)hooks keep working:
  the audio saliency recorder's pre-hook on the last audio layer's ``self_attn`` still receives
  ``hidden_states`` and ``cu_seqlens`` as keyword arguments.

Policy (:func:`fast_attention_decision`): enabled on CUDA when flash-attn is not installed; the stock
path is kept on the CPU and when flash-attn is installed (then ``flash_attention_2`` is the better
choice and already varlen). ``force=True`` enables it anywhere, for tests and the CPU benchmark smoke.

Backends of the registered function (``backend=`` of :func:`enable_fast_encoder_attention`):

* ``"auto"``: ``varlen_attn`` when the tensors are on CUDA in fp16/bf16 with a head size the kernel
  takes (multiple of 8, at most 256); otherwise the reference below. The flash kernel has no fp32,
  so fp32 on CUDA runs the reference (still one batched call per layer).
* ``"kernel"``: always ``varlen_attn`` (errors where it cannot run).
* ``"reference"``: :func:`reference_varlen_attention`, the segments padded into one batch and one
  ``scaled_dot_product_attention`` call with a key-padding mask. Runs on any device and dtype and
  equals the stock per-window loop to float rounding (float32: relative error ~1e-7). No host
  synchronisation.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Registered names. They must contain "flash": that is what routes the encoders to their varlen branch.
FAST_ATTENTION_NAME = "omnizip_flash_varlen"
KERNEL_ATTENTION_NAME = "omnizip_flash_varlen_kernel"
REFERENCE_ATTENTION_NAME = "omnizip_flash_varlen_reference"
BACKENDS = {"auto": FAST_ATTENTION_NAME, "kernel": KERNEL_ATTENTION_NAME, "reference": REFERENCE_ATTENTION_NAME}
OUR_NAMES = frozenset(BACKENDS.values())

_KERNEL_DTYPES = (torch.float16, torch.bfloat16)

_registered = False


class _SavedNames:
    """config -> the ``_attn_implementation`` it had before we first switched it (for disable()).

    Configs are unhashable (they define ``__eq__``), so they are keyed by ``id`` and held weakly.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref[Any], str | None]] = {}

    def _prune(self) -> None:
        for key in [k for k, (ref, _) in self._items.items() if ref() is None]:
            del self._items[key]

    def __contains__(self, config: Any) -> bool:
        item = self._items.get(id(config))
        return item is not None and item[0]() is config

    def get(self, config: Any) -> str | None:
        return self._items[id(config)][1]

    def set(self, config: Any, name: str | None) -> None:
        self._prune()
        self._items[id(config)] = (weakref.ref(config), name)

    def pop(self, config: Any) -> str | None:
        if config not in self:
            return None
        return self._items.pop(id(config))[1]


_SAVED = _SavedNames()


# --------------------------------------------------------------------------------------------------
# The attention functions
# --------------------------------------------------------------------------------------------------


def varlen_kernel_available() -> bool:
    """Whether this PyTorch ships ``torch.nn.attention.varlen.varlen_attn`` and a CUDA device is visible."""
    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def kernel_supports(query: torch.Tensor) -> bool:
    """Whether ``varlen_attn`` can run on this packed query [T, H, D]."""
    head_dim = query.shape[-1]
    return query.is_cuda and query.dtype in _KERNEL_DTYPES and head_dim % 8 == 0 and head_dim <= 256


def reference_varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Block-diagonal (non-causal) attention over packed segments, in one SDPA call.

    Args:
        query, key, value: packed ``[T, H, D]``; segment ``i`` is rows ``cu_seqlens[i]:cu_seqlens[i+1]``.
        cu_seqlens: ``[N + 1]`` cumulative segment boundaries (``cu_seqlens[-1] == T``).
        max_seqlen: longest segment (computed, with one host sync, when not given).
        scale: softmax scale (default ``D ** -0.5``).

    Returns:
        ``[T, H, D]``: each token attends to the tokens of its own segment only.

    The segments are scattered into a zero-padded ``[N, H, max_seqlen, D]`` batch; padded keys are
    masked out, padded queries are computed and dropped. Works on any device and dtype.
    """
    total, heads, dim = query.shape
    device = query.device
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    n_segments = cu.numel() - 1
    lengths = cu[1:] - cu[:-1]
    if max_seqlen is None:
        max_seqlen = int(lengths.max()) if n_segments > 0 else 0
    if total == 0 or n_segments == 0:
        return query.new_zeros(query.shape)
    segment = torch.repeat_interleave(torch.arange(n_segments, device=device), lengths, output_size=total)
    offset = torch.arange(total, device=device) - cu[:-1][segment]

    def padded(x: torch.Tensor) -> torch.Tensor:
        buffer = x.new_zeros((n_segments, max_seqlen, x.shape[1], x.shape[2]))
        buffer[segment, offset] = x
        return buffer.transpose(1, 2)  # [N, H, S, D]

    valid = torch.arange(max_seqlen, device=device) < lengths[:, None]  # [N, S]
    valid = valid | (lengths == 0)[:, None]  # an empty segment: no NaN rows (they are dropped anyway)
    out = F.scaled_dot_product_attention(
        padded(query), padded(key), padded(value), attn_mask=valid[:, None, None, :], dropout_p=0.0, scale=scale
    )
    return out.transpose(1, 2)[segment, offset]  # [T, H, D]


def _kernel_varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float | None,
) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    cu = cu_seqlens.to(device=query.device, dtype=torch.int32)
    # The encoders' q/k/v are views of contiguous [T, H, D] projections, so these are no-ops there.
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    if scale is None or abs(scale - query.shape[-1] ** -0.5) <= 1e-12 * scale:
        # the kernel's default scale (the encoders' own): no keyword, so older varlen_attn signatures work too
        return varlen_attn(query, key, value, cu, cu, max_seqlen, max_seqlen)
    return varlen_attn(query, key, value, cu, cu, max_seqlen, max_seqlen, scale=scale)


def _packed(x: torch.Tensor) -> torch.Tensor:
    """[1, H, T, D] (the encoders' layout) -> [T, H, D]; a view of the projection output, no copy."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"varlen encoder attention expects [1, heads, tokens, head_dim], got {tuple(x.shape)}")
    return x[0].transpose(0, 1)


def _varlen_attention_forward(
    backend: str,
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if attention_mask is not None:
        raise ValueError("omnizip varlen encoder attention takes cu_seqlens, not an attention mask")
    if is_causal:
        raise ValueError("omnizip varlen encoder attention is for the encoders (non-causal) only")
    if dropout:
        raise ValueError("omnizip varlen encoder attention is for inference (dropout must be 0)")
    q, k, v = _packed(query), _packed(key), _packed(value)
    if cu_seq_lens_q is None:  # one segment: the whole sequence
        cu_seq_lens_q = torch.tensor([0, q.shape[0]], dtype=torch.int32, device=q.device)
        max_length_q = q.shape[0]
    if cu_seq_lens_k is not None and cu_seq_lens_k is not cu_seq_lens_q and not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
        raise ValueError("omnizip varlen encoder attention needs the same segments for queries and keys")
    use_kernel = backend == "kernel" or (backend == "auto" and kernel_supports(q))
    if use_kernel:
        if max_length_q is None:
            max_length_q = int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())
        out = _kernel_varlen_attention(q, k, v, cu_seq_lens_q, int(max_length_q), scaling)
    else:
        out = reference_varlen_attention(q, k, v, cu_seq_lens_q, max_length_q, scaling)
    return out.unsqueeze(0), None  # [1, T, H, D], the layout the encoders reshape to [T, H * D]


def varlen_attention_forward(module, query, key, value, attention_mask, **kwargs):  # type: ignore[no-untyped-def]
    """``auto`` backend: ``varlen_attn`` where the kernel runs, else :func:`reference_varlen_attention`."""
    return _varlen_attention_forward("auto", module, query, key, value, attention_mask, **kwargs)


def kernel_varlen_attention_forward(module, query, key, value, attention_mask, **kwargs):  # type: ignore[no-untyped-def]
    """``kernel`` backend: always ``torch.nn.attention.varlen.varlen_attn`` (CUDA, fp16/bf16)."""
    return _varlen_attention_forward("kernel", module, query, key, value, attention_mask, **kwargs)


def reference_varlen_attention_forward(module, query, key, value, attention_mask, **kwargs):  # type: ignore[no-untyped-def]
    """``reference`` backend: always the padded-batch SDPA (any device, any dtype)."""
    return _varlen_attention_forward("reference", module, query, key, value, attention_mask, **kwargs)


def register_fast_attention() -> str:
    """Register the three functions with transformers' ``AttentionInterface`` (idempotent); return the auto name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(FAST_ATTENTION_NAME, varlen_attention_forward)
        AttentionInterface.register(KERNEL_ATTENTION_NAME, kernel_varlen_attention_forward)
        AttentionInterface.register(REFERENCE_ATTENTION_NAME, reference_varlen_attention_forward)
        _registered = True
    return FAST_ATTENTION_NAME


# --------------------------------------------------------------------------------------------------
# Switching the encoders
# --------------------------------------------------------------------------------------------------


Encoders = Mapping[str, torch.nn.Module]
"""The encoders whose attention is switched, by name (``{"vision": ..., "audio": ...}``), as the
family's adapter lists them (:meth:`~omnizip_cli.models.base.ModelAdapter.encoder_modules`)."""


def _encoder_configs(encoder: torch.nn.Module) -> list[Any]:
    """Every distinct config object the encoder and its submodules read at call time (usually one)."""
    configs: dict[int, Any] = {}
    for module in encoder.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            configs.setdefault(id(config), config)
    return list(configs.values())


def encoder_attention_implementations(encoders: Encoders) -> dict[str, str | None]:
    """The attention implementation each encoder uses now."""
    return {name: enc.config._attn_implementation for name, enc in encoders.items()}


def is_fast_encoder_attention_enabled(encoders: Encoders) -> bool:
    """Whether every encoder currently runs one of our varlen functions."""
    return bool(encoders) and all(e.config._attn_implementation in OUR_NAMES for e in encoders.values())


def _flash_attn_installed() -> bool:
    try:
        from transformers.utils import is_flash_attn_2_available

        return bool(is_flash_attn_2_available())
    except ImportError:  # pragma: no cover - old transformers
        return False


@dataclass(frozen=True)
class FastAttentionDecision:
    enable: bool
    reason: str


def fast_attention_decision(encoders: Encoders) -> FastAttentionDecision:
    """The policy: enable on CUDA without flash-attn; keep the stock path on the CPU or with flash-attn."""
    if not encoders:
        return FastAttentionDecision(False, "the model has no vision or audio encoder")
    device = next(next(iter(encoders.values())).parameters()).device
    if device.type != "cuda":
        return FastAttentionDecision(False, f"encoders on {device.type}: stock attention path")
    current = {e.config._attn_implementation for e in encoders.values()}
    if any(name and "flash" in name and name not in OUR_NAMES for name in current):
        return FastAttentionDecision(False, f"encoders already use {sorted(current)} (varlen): stock path")
    if _flash_attn_installed():
        return FastAttentionDecision(False, "flash-attn is installed: use --attn-implementation flash_attention_2")
    if not varlen_kernel_available():
        return FastAttentionDecision(False, "this PyTorch has no torch.nn.attention.varlen.varlen_attn")
    return FastAttentionDecision(True, "CUDA without flash-attn: one varlen_attn call per encoder layer")


def enable_fast_encoder_attention(encoders: Encoders, *, force: bool = False, backend: str = "auto") -> bool:
    """Route the vision and audio encoders' attention through one varlen call per layer.

    Args:
        encoders: the encoders, by name (the adapter's ``encoder_modules(model)``).
        force: enable even where the policy keeps the stock path (CPU, flash-attn installed); the
            ``auto`` backend then runs :func:`reference_varlen_attention` off CUDA.
        backend: ``"auto"``, ``"kernel"`` or ``"reference"`` (see the module docstring).

    Returns:
        Whether the encoders now run the varlen path. The language model is never changed.
        Undo with :func:`disable_fast_encoder_attention`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if not force and not fast_attention_decision(encoders).enable:
        return False
    name = BACKENDS[backend]
    register_fast_attention()
    for encoder in encoders.values():
        for config in _encoder_configs(encoder):
            if config not in _SAVED:
                _SAVED.set(config, config._attn_implementation)
            config._attn_implementation = name
    return True


def disable_fast_encoder_attention(encoders: Encoders) -> None:
    """Give the encoders back the attention implementation they had before :func:`enable_fast_encoder_attention`."""
    for encoder in encoders.values():
        for config in _encoder_configs(encoder):
            if config in _SAVED:
                config._attn_implementation = _SAVED.pop(config)


@contextmanager
def fast_encoder_attention(encoders: Encoders, *, force: bool = False, backend: str = "auto") -> Iterator[bool]:
    """Context manager: the fast encoder attention inside (yields whether it is on), the previous state after.

    Nesting is safe: on exit each encoder config gets back exactly the name it had on entry.
    """
    before = [
        (config, config._attn_implementation)
        for encoder in encoders.values()
        for config in _encoder_configs(encoder)
    ]
    saved_before = [(config in _SAVED, _SAVED.get(config) if config in _SAVED else None) for config, _ in before]
    try:
        yield enable_fast_encoder_attention(encoders, force=force, backend=backend)
    finally:
        for (config, name), (was_saved, saved_name) in zip(before, saved_before):
            config._attn_implementation = name
            if was_saved:
                _SAVED.set(config, saved_name)
            else:
                _SAVED.pop(config)
