"""Fast decoding: a preallocated KV cache and the one-token step replayed as a CUDA graph.

Stock ``generate`` (and our eager loop in :mod:`omnizip_cli.decoding`) spends most of each decode
step in Python and in launching a few hundred small kernels: about 20 ms per token for the 7B thinker
on an H100, against about 5.5 ms to read the weights once. This module removes that overhead after
our (compressed or full) prefill:

* **Static KV cache.** A transformers ``StaticCache`` with ``capacity >= prefill length +
  max_new_tokens`` slots is allocated once. The prefill itself runs exactly as in
  :func:`omnizip_cli.decoding.prefill` (same kernels, same logits), then its keys and values are
  copied into slots ``0 .. L'-1``.
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
* **One small read per token.** Token choice (greedy argmax, or sampling through the very logits
  processors of :func:`omnizip_cli.decoding.build_logits_processor`) stays on the device. The chosen
  id goes to the next step's input buffer on the device and, by a non-blocking copy into pinned
  memory, to the host for the stop check and streaming. On CUDA the next step is launched *before*
  that read completes, so the GPU never waits for Python; a step launched after an end token is
  simply discarded.

Greedy tokens equal the eager loop's and stock ``generate``'s (the tests prove it on the tiny model in
float32, with and without pruning); sampling with a seed makes the same ``torch.multinomial`` draws.
Policy (:func:`choose_decoder`): CUDA with ``sdpa`` or ``eager`` attention uses this path with a
CUDA graph; the CPU keeps the eager loop (there the step is compute-bound and graphs do not exist),
though the static path without a graph runs on the CPU too, which is how its tokens are tested.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .decoding import GenerationOptions, GenerationResult, build_logits_processor, end_token_ids, prefill
from .pipeline import PrefillInputs

SUPPORTED_ATTENTION = ("sdpa", "eager")
WARMUP_STEPS = 3  # eager steps on a side stream before capture (allocator, cuBLAS and SDPA settle)
DECODER_GRAPH = "static+cuda_graph"
DECODER_STATIC = "static"
# Device types on which the next step is queued before the current id is read on the host.
_PIPELINED_DEVICES: tuple[str, ...] = ("cuda",)


@dataclass
class FastGenerationResult(GenerationResult):
    """:class:`~omnizip_cli.decoding.GenerationResult` plus the one-off costs of the fast path."""

    warmup_seconds: float = 0.0  # cache allocation + warm-up + graph capture paid in this call (0 when reused)
    cache_capacity: int = 0  # KV slots of the static cache used


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


def _attn_implementation(model: Any) -> str:
    config = model.model.language_model.config
    return str(getattr(config, "_attn_implementation", None) or "eager")


def _graph_blocker(model: Any) -> str | None:
    """Why the step cannot be captured as a graph for this model, if it cannot."""
    rope = getattr(model.model.language_model.config, "rope_parameters", None) or {}
    rope_type = str(rope.get("rope_type", "default"))
    if "dynamic" in rope_type or rope_type == "longrope":
        return f"rope type {rope_type!r} recomputes its frequencies from the positions on the host"
    return None


def _capacity_for(needed: int, device: torch.device) -> int:
    """Slots to allocate: rounded up so that later answers of similar length reuse the captured graph."""
    quantum = 1024 if device.type == "cuda" else 64
    return -(-needed // quantum) * quantum


class StaticDecoder:
    """A static KV cache, the static buffers of one decode step and (on CUDA) its captured graph.

    One per model and process (see :func:`_decoder_for`): the graph's addresses are those of this
    object's tensors, so the object is refilled for each answer rather than rebuilt.
    """

    def __init__(self, model: Any, capacity: int) -> None:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        language_model = model.model.language_model
        self._model = weakref.ref(model)
        self.capacity = int(capacity)
        self.device = language_model.embed_tokens.weight.device
        attentions = [layer.self_attn for layer in language_model.layers]
        self.dtype = attentions[0].k_proj.weight.dtype
        self.cache = StaticCache(config=language_model.config, max_cache_len=self.capacity)
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
        self.additive_mask = _attn_implementation(model) == "eager"
        self.token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.position = torch.zeros((3, 1, 1), dtype=torch.long, device=self.device)
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
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this static decoder was freed")
        language_model = model.model.language_model
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
        logits = model.lm_head(out.last_hidden_state[:, -1:, :])[:, -1, :]
        self.position.add_(1)
        return logits

    def step(self, use_graph: bool) -> torch.Tensor:
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

    def load(self, cache: Any, inputs: PrefillInputs) -> None:
        """Copy the prefill's KV (a DynamicCache) into slots 0..L'-1 and set the step's buffers."""
        length = inputs.length
        if length + 1 > self.capacity:
            raise ValueError(f"prefill of {length} tokens does not fit a static cache of {self.capacity} slots")
        for static_layer, layer in zip(self.cache.layers, cache.layers, strict=True):
            static_layer.keys[:, :, :length].copy_(layer.keys)
            static_layer.values[:, :, :length].copy_(layer.values)
            layer.keys = layer.values = None  # free the dynamic copy layer by layer
        self._set_fill(length)
        self.slot_mask.fill_(True)
        self.slot_mask[:length].copy_(inputs.attention_mask[0].to(torch.bool))
        self.position.fill_(int(inputs.next_position))

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

    def fits(self, needed: int, device: torch.device, dtype: torch.dtype) -> bool:
        slack = max(needed, 4096)  # attention reads every slot: do not keep a cache far larger than needed
        return device == self.device and dtype == self.dtype and needed <= self.capacity <= needed + slack


_DECODERS: weakref.WeakKeyDictionary[Any, StaticDecoder] = weakref.WeakKeyDictionary()


def _decoder_for(model: Any, needed: int, use_graph: bool) -> tuple[StaticDecoder, float, list[str], bool]:
    """This process's static decoder for ``model``, built (and captured) when none fits.

    Returns the decoder, the seconds of one-off work done now (0 when everything was reused), notes
    for the report, and whether the graph is to be used.
    """
    language_model = model.model.language_model
    device = language_model.embed_tokens.weight.device
    dtype = language_model.layers[0].self_attn.k_proj.weight.dtype
    notes: list[str] = []
    started = time.perf_counter()
    decoder = _DECODERS.get(model)
    if decoder is None or not decoder.fits(needed, device, dtype):
        if decoder is not None:  # release the old cache and graph before allocating the new ones
            del _DECODERS[model]
            decoder.graph = decoder.graph_logits = None
            del decoder
            if device.type == "cuda":
                torch.cuda.empty_cache()
        decoder = StaticDecoder(model, _capacity_for(needed, device))
        _DECODERS[model] = decoder
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


def generate_fast(
    model: Any,
    inputs: PrefillInputs,
    options: GenerationOptions,
    *,
    prompt_ids: torch.Tensor | None = None,
    on_token: Callable[[int], None] | None = None,
    sync: Callable[[], None] | None = None,
    use_cuda_graph: bool | None = None,
    head_on_all_positions: bool = False,
) -> FastGenerationResult:
    """Prefill, then decode from a static KV cache (replaying a CUDA graph on a GPU).

    Same contract as :func:`omnizip_cli.decoding.generate`: greedy when ``options.temperature`` is 0,
    otherwise sampling with the stock logits processors (seeded by ``options.seed``); stops at the
    model's end tokens (included in ``token_ids``) or after ``options.max_new_tokens``; ``on_token``
    receives each id as it comes. ``warmup_seconds`` of the result is the one-off cost paid in this
    call (cache allocation, graph warm-up and capture), outside ``prefill_seconds`` and
    ``decode_seconds``; ``notes`` say what was built or reused.

    Args:
        model: the thinker (``sdpa`` or ``eager`` attention).
        inputs: the (possibly pruned) prefill; kept tokens carry their original positions.
        options: generation options.
        prompt_ids: the original prompt ids [1, L], for a repetition penalty as ``generate`` applies it.
        on_token: streaming callback.
        sync: called before reading the clock (``torch.cuda.synchronize`` on a GPU).
        use_cuda_graph: ``None``: on CUDA devices. ``False`` runs the same static-cache step eagerly
            (the path the CPU tests check). ``True`` on a CPU model is an error.
        head_on_all_positions: see :func:`omnizip_cli.decoding.prefill`.
    """
    device = inputs.embeds.device
    is_cuda = device.type == "cuda"
    attn = _attn_implementation(model)
    if attn not in SUPPORTED_ATTENTION:
        raise ValueError(f"fast decoding supports {' or '.join(SUPPORTED_ATTENTION)} attention, not {attn}")
    if use_cuda_graph is None:
        use_cuda_graph = is_cuda
    if use_cuda_graph and not is_cuda:
        raise ValueError("use_cuda_graph=True needs the model on a CUDA device")
    notes: list[str] = []
    if use_cuda_graph and (blocker := _graph_blocker(model)) is not None:
        use_cuda_graph = False
        notes.append(f"CUDA graph off: {blocker}")
    # Graph capture, replay, streams and events all act on the current CUDA device: make it the model's.
    with torch.cuda.device(device) if is_cuda else contextlib.nullcontext(), torch.no_grad():
        return _generate(
            model,
            inputs,
            options,
            prompt_ids=prompt_ids,
            on_token=on_token,
            sync=sync or (lambda: None),
            use_cuda_graph=bool(use_cuda_graph),
            head_on_all_positions=head_on_all_positions,
            notes=notes,
        )


def _generate(
    model: Any,
    inputs: PrefillInputs,
    options: GenerationOptions,
    *,
    prompt_ids: torch.Tensor | None,
    on_token: Callable[[int], None] | None,
    sync: Callable[[], None],
    use_cuda_graph: bool,
    head_on_all_positions: bool,
    notes: list[str],
) -> FastGenerationResult:
    device = inputs.embeds.device
    is_cuda = device.type == "cuda"
    pipelined = device.type in _PIPELINED_DEVICES
    max_new = max(int(options.max_new_tokens), 0)
    processors = build_logits_processor(model, options)
    stops = set(end_token_ids(model))

    # One-off costs first, outside the prefill and decode clocks.
    sync()
    decoder, warmup_seconds, decoder_notes, use_cuda_graph = _decoder_for(
        model, inputs.length + max(max_new, 1), use_cuda_graph
    )
    notes.extend(decoder_notes)
    sync()

    if options.temperature > 0 and options.seed is not None:
        torch.manual_seed(options.seed)
    # The history the processors see, as in generate: prompt ids then the tokens so far (views of one buffer).
    keep_history = len(processors) > 0
    prompt = prompt_ids.to(device) if prompt_ids is not None else torch.zeros((1, 0), dtype=torch.long, device=device)
    base = int(prompt.shape[1])
    history_buffer = torch.empty((1, base + max_new), dtype=torch.long, device=device)
    history_buffer[:, :base] = prompt

    sync()
    started = time.perf_counter()
    logits, cache = prefill(model, inputs, head_on_all_positions=head_on_all_positions)
    decoder.load(cache, inputs)
    del cache
    sync()
    prefill_seconds = time.perf_counter() - started
    prefill_logits = logits[0].detach()

    def choose(step_logits: torch.Tensor, step: int) -> torch.Tensor:
        scores = step_logits.float() if step_logits.dtype != torch.float32 else step_logits
        if keep_history:
            scores = processors(history_buffer[:, : base + step], scores)
        if options.temperature > 0:
            return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
        return torch.argmax(scores, dim=-1, keepdim=True)

    # The host side of each chosen id: a pinned slot filled by a non-blocking copy, waited on by an event.
    host_ids = torch.empty((max(max_new, 1),), dtype=torch.long, pin_memory=is_cuda)
    copied = torch.cuda.Event() if is_cuda else None

    tokens: list[int] = []
    stop_reason = "max_new_tokens"
    first_token_seconds = 0.0
    decode_started = 0.0
    current = logits
    for step in range(max_new):
        next_token = choose(current, step)  # [1, 1], on the device
        if keep_history:
            history_buffer[:, base + step : base + step + 1].copy_(next_token)
        decoder.token.copy_(next_token)
        last = step + 1 == max_new
        if copied is not None:
            host_ids[step : step + 1].copy_(next_token.view(1), non_blocking=True)
            copied.record()
        # Pipelined (GPU): queue the next step before waiting for this id, so the device never idles on
        # Python; the step queued after an end token is discarded (its KV slot is never attended to).
        launched = pipelined and step > 0 and not last
        if launched:
            current = decoder.step(use_cuda_graph)
        if copied is not None:
            copied.synchronize()
            token_id = int(host_ids[step])
        else:
            token_id = int(next_token)
        tokens.append(token_id)
        if step == 0:
            sync()
            first_token_seconds = time.perf_counter() - started
            decode_started = time.perf_counter()
        if on_token is not None:
            on_token(token_id)
        if token_id in stops:
            stop_reason = "eos"
            break
        if last:
            break
        if not launched:
            current = decoder.step(use_cuda_graph)
    sync()
    decode_seconds = time.perf_counter() - decode_started if tokens else 0.0
    return FastGenerationResult(
        token_ids=tokens,
        prefill_logits=prefill_logits,
        prefill_seconds=prefill_seconds,
        first_token_seconds=first_token_seconds,
        decode_seconds=decode_seconds,
        stop_reason=stop_reason,
        cache_length=inputs.length,
        decoder=DECODER_GRAPH if use_cuda_graph else DECODER_STATIC,
        notes=notes,
        warmup_seconds=warmup_seconds,
        cache_capacity=decoder.capacity,
    )
