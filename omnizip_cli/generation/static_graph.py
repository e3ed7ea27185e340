"""Fast decoding: a preallocated KV cache and the one-token step replayed as a CUDA graph.

Stock ``generate`` (and our eager loop in :mod:`omnizip_cli.generation.eager`) spends most of each decode
step in Python and in launching a few hundred small kernels: about 20 ms per token for the 7B thinker
on an H100, against about 5.5 ms to read the weights once. This module removes that overhead after
our (compressed or full) prefill:

* **Static KV cache.** A transformers ``StaticCache`` with ``capacity >= prompt length +
  max_new_tokens`` slots is allocated once. The prefill itself runs exactly as in
  :func:`omnizip_cli.generation.eager.forward_tokens` (same kernels, same logits) into a
  ``DynamicCache``, whose keys and values are then copied into slots ``0 .. L'-1``. The dynamic cache
  is left intact, so a session's cached media prefix serves the next question too (the copy costs
  one read of the KV cache; the cache is held twice while an answer decodes).
* **Slots are not positions.** After OmniZip pruning the prefill holds ``L'`` tokens whose M-RoPE
  positions have gaps and reach ``max_pos``; the first generated token sits in KV slot ``L'`` but at
  rope position ``max_pos + 1``. The cache and the attention mask index **slots** (the cache's own
  device-side ``cumulative_length``: the step attends to slots ``<= slot`` that the prefill's mask
  allowed); RoPE gets the **original positions** from a device tensor ``position`` that the step
  increments in place. Nothing about either is read on the host.
* **CUDA graph.** The single-token step (embedding, 28 layers, head) reads its inputs from static
  buffers (``token``, ``position``, the cache, the slot mask) and writes its logits to a static
  output, so it is captured once with ``torch.cuda.CUDAGraph`` (after a warm-up on a side stream) and
  replayed: one launch per token instead of hundreds. The capture is paid once per process (the graph
  is kept with its cache for later answers that fit in it) and reported apart
  (:attr:`FastGenerationResult.warmup_seconds`).
* **One small read per token.** Token choice (:class:`~omnizip_cli.generation.sampling.TokenChooser`,
  shared with the eager decoder) stays on the device; the loop
  (:func:`~omnizip_cli.generation.eager.decode_loop`, shared too) queues the next step *before* the
  chosen id is read on the host, so the GPU never waits for Python; a step queued after an end token
  is simply discarded.

Greedy tokens equal the eager loop's and stock ``generate``'s (the tests prove it on the tiny model in
float32, with and without pruning); sampling with a seed makes the same ``torch.multinomial`` draws.
Policy (:func:`choose_decoder`): CUDA with ``sdpa`` or ``eager`` attention uses this path with a
CUDA graph; the CPU keeps the eager loop (there the step is compute-bound and graphs do not exist),
though the static path without a graph runs on the CPU too, which is how its tokens are tested.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch

from ..models.base import TextModel

SUPPORTED_ATTENTION = ("sdpa", "eager")
WARMUP_STEPS = 3  # eager steps on a side stream before capture (allocator, cuBLAS and SDPA settle)
DECODER_GRAPH = "static+cuda_graph"
DECODER_STATIC = "static"
# Device types on which the next step is queued before the current id is read on the host.
_PIPELINED_DEVICES: tuple[str, ...] = ("cuda",)


def choose_decoder(device: str, attn_implementation: str) -> tuple[str, str | None]:
    """``("fast", None)`` where the static-cache + CUDA-graph decoder applies, else ``("eager", reason)``."""
    if not str(device).startswith("cuda"):
        return "eager", f"fast decoder off on {device}: its CUDA-graph step needs a GPU (eager loop used)"
    if attn_implementation not in SUPPORTED_ATTENTION:
        return "eager", (
            f"fast decoder off: its static-cache masks are built for sdpa or eager attention, "
            f"not {attn_implementation} (eager loop used)"
        )
    return "fast", None


def _attn_implementation(text: TextModel) -> str:
    return str(getattr(text.config, "_attn_implementation", None) or "eager")


def graph_blocker(text: TextModel) -> str | None:
    """Why the step cannot be captured as a graph for this model, if it cannot."""
    rope = getattr(text.config, "rope_parameters", None) or {}
    rope_type = str(rope.get("rope_type", "default"))
    if "dynamic" in rope_type or rope_type == "longrope":
        return f"rope type {rope_type!r} recomputes its frequencies from the positions on the host"
    return None


def placement_blocker(text: TextModel) -> str | None:
    """Why the static-cache decoder cannot run on this model's placement, if it cannot: its cache
    and step live on one device, and a language model split with ``--device-map`` (several devices,
    or weights offloaded to the CPU or the disk) is not."""
    devices = {str(p.device) for p in (*text.language_model.parameters(), *text.lm_head.parameters())}
    if len(devices) > 1 or "meta" in devices:
        shown = ", ".join(sorted(d if d != "meta" else "offloaded" for d in devices))
        return f"the language model is split over {shown} (--device-map); the static cache needs one device"
    return None


def _capacity_for(needed: int, device: torch.device) -> int:
    """Slots to allocate: rounded up so that later answers of similar length reuse the captured graph."""
    quantum = 1024 if device.type == "cuda" else 64
    return -(-needed // quantum) * quantum


class StaticDecoder:
    """A static KV cache, the static buffers of one decode step and (on CUDA) its captured graph.

    One per model and process (see :func:`static_decoder_for`): the graph's addresses are those of
    this object's tensors, so the object is refilled for each answer rather than rebuilt. It holds
    the language model weakly (the model owns the decoder, not the other way round).
    """

    def __init__(self, text: TextModel, capacity: int, position_dtype: torch.dtype = torch.long) -> None:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        language_model = text.language_model
        self._language_model = weakref.ref(language_model)
        self._lm_head = weakref.ref(text.lm_head)
        self.capacity = int(capacity)
        self.device = text.device
        attentions = [layer.self_attn for layer in language_model.layers]
        self.dtype = attentions[0].k_proj.weight.dtype
        self.position_dtype = position_dtype
        self.cache = StaticCache(config=text.config, max_cache_len=self.capacity)
        if any(type(layer) is not StaticLayer for layer in self.cache.layers):
            kinds = sorted({type(layer).__name__ for layer in self.cache.layers})
            raise ValueError(f"fast decoding supports full-attention layers only, not {', '.join(kinds)}")
        self.cache.early_initialization(
            batch_size=1,
            num_heads=[int(a.num_key_value_heads) for a in attentions],
            head_dim=[int(a.head_dim) for a in attentions],
            dtype=self.dtype,
            device=self.device,
        )
        self.additive_mask = _attn_implementation(text) == "eager"
        self.token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.position = torch.zeros((3, 1, 1), dtype=position_dtype, device=self.device)
        self.slot_mask = torch.ones((self.capacity,), dtype=torch.bool, device=self.device)
        self.slot_index = torch.arange(self.capacity, device=self.device)
        self.mask_min = torch.tensor(torch.finfo(self.dtype).min, dtype=self.dtype, device=self.device)
        self.mask_zero = torch.zeros((), dtype=self.dtype, device=self.device)
        self.graph: Any = None
        self.graph_logits: torch.Tensor | None = None
        self.capture_seconds = 0.0

    # ----------------------------------------------------------------------------------- the step

    def _slot_counter(self) -> torch.Tensor:
        return self.cache.layers[0].cumulative_length

    def _forward(self) -> torch.Tensor:
        """One token through the language model, from and to the static buffers; logits [1, V]."""
        language_model, lm_head = self._language_model(), self._lm_head()
        if language_model is None or lm_head is None:
            raise RuntimeError("the model of this static decoder was freed")
        # The KV slot this token is written to is the cache's fill level (a device tensor, read before
        # the layers' update advances it): attend to every slot up to it that the prefill allowed.
        allowed = (self.slot_index <= self._slot_counter()) & self.slot_mask
        mask = allowed.view(1, 1, 1, self.capacity)
        if self.additive_mask:
            mask = torch.where(mask, self.mask_zero, self.mask_min)
        embeds = language_model.embed_tokens(self.token)
        out = language_model(
            inputs_embeds=embeds,
            attention_mask={"full_attention": mask},  # a prepared mask: create_causal_mask is skipped
            position_ids=self.position,  # original M-RoPE positions, not slots
            past_key_values=self.cache,
            use_cache=True,
        )
        logits = lm_head(out.last_hidden_state[:, -1:, :])[:, -1, :]
        self.position.add_(1)
        return logits

    def replay(self, use_graph: bool) -> torch.Tensor:
        """Run one decode step on ``self.token``; returns the logits (the graph's static output when replayed)."""
        if use_graph and self.graph is not None:
            self.graph.replay()
            assert self.graph_logits is not None
            return self.graph_logits
        return self._forward()

    # ------------------------------------------------------------------------------ set-up per answer

    def _set_fill(self, length: int) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(length)

    def load(self, cache: Any, attention_mask: torch.Tensor, next_position: torch.Tensor) -> None:
        """Copy a prefilled ``DynamicCache`` (left intact) into slots 0..n-1 and set the step's buffers.

        ``attention_mask [1, n]`` of the cached tokens; ``next_position``: the first new token's position.
        """
        length = int(cache.get_seq_length())
        if length + 1 > self.capacity:
            raise ValueError(f"prompt of {length} tokens does not fit a static cache of {self.capacity} slots")
        for static_layer, layer in zip(self.cache.layers, cache.layers, strict=True):
            static_layer.keys[:, :, :length].copy_(layer.keys)
            static_layer.values[:, :, :length].copy_(layer.values)
        self._set_fill(length)
        self.slot_mask.fill_(True)
        self.slot_mask[:length].copy_(attention_mask[0, :length].to(torch.bool))
        self.position.copy_(next_position.reshape(1, 1, 1).to(self.position_dtype).expand(3, 1, 1))

    def capture(self) -> float:
        """Warm up on a side stream, then capture :meth:`_forward` as a CUDA graph. Returns the seconds spent."""
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        started = time.perf_counter()
        with torch.cuda.device(self.device):
            # Warm-up writes junk into the first slots; a later load() overwrites them and resets the
            # counters, and slots past the fill level are masked out.
            self._set_fill(0)
            self.position.zero_()
            self.token.zero_()
            self.slot_mask.fill_(True)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._forward()
            torch.cuda.current_stream(self.device).wait_stream(side)
            torch.cuda.synchronize(self.device)
            self._set_fill(0)
            self.position.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._forward()
            torch.cuda.synchronize(self.device)
        self.graph, self.graph_logits = graph, logits
        self.capture_seconds = time.perf_counter() - started
        return self.capture_seconds

    def fits(self, needed: int, device: torch.device, dtype: torch.dtype, position_dtype: torch.dtype) -> bool:
        slack = max(needed, 4096)  # attention reads every slot: do not keep a cache far larger than needed
        return (device == self.device and dtype == self.dtype and position_dtype == self.position_dtype
                and needed <= self.capacity <= needed + slack)


_DECODERS: weakref.WeakKeyDictionary[Any, StaticDecoder] = weakref.WeakKeyDictionary()


def static_decoder_for(
    text: TextModel, needed: int, use_graph: bool, position_dtype: torch.dtype = torch.long
) -> tuple[StaticDecoder, float, list[str], bool]:
    """This process's static decoder for ``text``'s model, built (and captured) when none fits.

    Returns the decoder, the seconds of one-off work done now (0 when everything was reused), notes
    for the report, and whether the graph is to be used.
    """
    device = text.device
    dtype = text.language_model.layers[0].self_attn.k_proj.weight.dtype
    notes: list[str] = []
    started = time.perf_counter()
    decoder = _DECODERS.get(text.owner)
    if decoder is None or not decoder.fits(needed, device, dtype, position_dtype):
        if decoder is not None:  # release the old cache and graph before allocating the new ones
            del _DECODERS[text.owner]
            decoder.graph = decoder.graph_logits = None
            del decoder
            if device.type == "cuda":
                torch.cuda.empty_cache()
        decoder = StaticDecoder(text, _capacity_for(needed, device), position_dtype)
        _DECODERS[text.owner] = decoder
        built = True
    else:
        built = False
    captured = use_graph and decoder.graph is None
    if captured:
        try:
            capture = decoder.capture()
        except RuntimeError as exc:  # a capture that fails leaves the eager static step usable
            decoder.graph = decoder.graph_logits = None
            use_graph = False
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            notes.append(f"CUDA graph capture failed ({first_line}): static cache without a graph")
        else:
            notes.append(
                f"CUDA graph of the decode step captured in {capture:.3f} s ({WARMUP_STEPS} warm-up steps), "
                "paid once per process"
            )
    elif use_graph:
        notes.append(f"CUDA graph reused (captured earlier in this process in {decoder.capture_seconds:.3f} s)")
    cost = time.perf_counter() - started if (built or captured) else 0.0
    notes.insert(0, f"static KV cache: {decoder.capacity} slots ({'allocated' if built else 'reused'})")
    return decoder, cost, notes, use_graph


class StaticGraphDecoder:
    """The decoder protocol of :func:`~omnizip_cli.generation.eager.decode_loop` over a :class:`StaticDecoder`.

    ``use_cuda_graph``: ``None`` -> on CUDA devices. ``False`` runs the same static-cache step eagerly
    (the path the CPU tests check). ``True`` on a CPU model is an error. Pipelined on CUDA.
    """

    def __init__(self, text: TextModel, cache: Any, attention_mask: torch.Tensor, next_position: torch.Tensor,
                 max_new_tokens: int, use_cuda_graph: bool | None = None) -> None:
        is_cuda = text.device.type == "cuda"
        attn = _attn_implementation(text)
        if attn not in SUPPORTED_ATTENTION:
            raise ValueError(f"fast decoding supports {' or '.join(SUPPORTED_ATTENTION)} attention, not {attn}")
        if use_cuda_graph is None:
            use_cuda_graph = is_cuda
        if use_cuda_graph and not is_cuda:
            raise ValueError("use_cuda_graph=True needs the model on a CUDA device")
        if (placed := placement_blocker(text)) is not None:
            raise ValueError(placed)  # the caller decodes with the eager loop and notes why
        self.notes: list[str] = []
        if use_cuda_graph and (blocker := graph_blocker(text)) is not None:
            use_cuda_graph = False
            self.notes.append(f"CUDA graph off: {blocker}")
        length = int(cache.get_seq_length())
        with torch.cuda.device(text.device) if is_cuda else _nullcontext():
            decoder, self.warmup_seconds, notes, use_cuda_graph = static_decoder_for(
                text, length + max(int(max_new_tokens), 1), bool(use_cuda_graph), next_position.dtype
            )
            decoder.load(cache, attention_mask, next_position)
        self.notes.extend(notes)
        self.decoder = decoder
        self.use_cuda_graph = bool(use_cuda_graph)
        self.pipelined = text.device.type in _PIPELINED_DEVICES
        self.name = DECODER_GRAPH if self.use_cuda_graph else DECODER_STATIC
        self.cache_capacity = decoder.capacity

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        self.decoder.token.copy_(token)
        if self.decoder.device.type == "cuda":
            with torch.cuda.device(self.decoder.device):
                return self.decoder.replay(self.use_cuda_graph)
        return self.decoder.replay(self.use_cuda_graph)


def _nullcontext() -> Any:
    import contextlib

    return contextlib.nullcontext()
