"""The streaming answer API: a generator of chunks whose last one carries the answer's statistics.

In the spirit of mlx-lm's ``stream_generate``: :func:`stream_generate` yields a
:class:`GenerationChunk` per token (its text piece, held back while a UTF-8 sequence is
incomplete), and one final chunk with ``stats`` set. A blocking answer is a thin consumer
(:func:`collect`). Both decoders run behind it: the eager ``DynamicCache`` loop and the static-cache
CUDA-graph step (:mod:`~omnizip_cli.generation.static_graph`), with one token chooser and one loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..measure import StageTimer
from ..models.base import PrefillInputs, TextModel
from .eager import EagerDecoder, IncrementalDetokenizer, decode_loop, forward_tokens, new_cache
from .sampling import GenerationOptions, TokenChooser

DECODER_CHOICES = ("auto", "eager", "fast")


@dataclass(frozen=True)
class AnswerStats:
    """The figures of one answer, complete when :func:`stream_generate` emits them.

    ``first_token_seconds`` runs from the start of the answer (its prefill included) to the first
    token id; ``time_to_first_token_seconds`` from the origin the caller handed in (for the first
    answer of a freshly opened video: the start of opening, the model load that nothing overlapped
    excluded; else the start of the answer) to the first token id, and ``total_seconds`` from the
    same origin to the last token. ``prefill_seconds`` is the language model over this answer's new
    prompt tokens (``prefilled_tokens``: the media prefix too when it was not cached yet, and the
    question); ``decode_seconds`` is everything after the first token (the decoder's one-off
    warm-up excluded, reported as ``warmup_seconds``, and kept out of every figure above).
    """

    token_ids: list[int]
    text: str
    stop_reason: str  # "eos" | "max_new_tokens" | "stop" (a stop string of GenerationOptions.stop)
    prefilled_tokens: int
    prompt_tokens: int  # the whole (possibly pruned) prompt the answer was generated from
    prefill_seconds: float
    first_token_seconds: float
    decode_seconds: float
    decoder: str
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0
    prefix_source: str = "fresh"  # "fresh" | "memory" | "disk"
    notes: list[str] = field(default_factory=list)
    warmup_seconds: float = 0.0
    prefill_logits: torch.Tensor | None = None  # [V] at the last prompt position
    timer: StageTimer = field(default_factory=StageTimer)
    warnings: list[str] = field(default_factory=list)

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens_per_second(self) -> float:
        steps = max(len(self.token_ids) - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 and steps else 0.0


@dataclass(frozen=True)
class Prefilled:
    """A prompt in the cache, ready for decoding: what the prefill hands to :func:`stream_generate`.

    cache: the ``DynamicCache`` holding the prompt (the eager decoder extends it; the fast decoder
    copies it into its static cache and leaves it as it is); logits ``[1, V]`` at the last prompt
    position; attention_mask ``[1, cache length]``; next_position: the first answer token's position
    (scalar tensor, the positions' dtype); prefilled: tokens forwarded by this prefill; source: where
    the prompt's prefix came from (``fresh``, ``memory``, ``disk``).
    """

    cache: Any
    logits: torch.Tensor
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    prefilled: int
    source: str = "fresh"


@dataclass
class GenerationChunk:
    """One piece of a streamed answer: ``text`` may be empty (held back); ``stats`` only on the last chunk."""

    text: str
    token: int | None
    stats: AnswerStats | None = None


class StopText:
    """Cuts a streamed answer at the first of ``stops`` in its text.

    :meth:`push` takes each new piece and returns what may be shown: text that could still turn out
    to begin a stop string is held back until it cannot. ``hit``: a stop string appeared; ``text``:
    the answer so far, cut before it.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.text = ""
        self.sent = 0
        self.hit = False

    def push(self, piece: str) -> str:
        if self.hit:
            return ""
        self.text += piece
        found = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit = True
            self.text = self.text[: min(found)]
            return self._release(len(self.text))
        held = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        return self._release(len(self.text) - held)

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        piece, self.sent = self.text[self.sent:end], max(self.sent, end)
        return piece


def resolve_decoder(wanted: str, device: str, attn_implementation: str) -> tuple[str, str | None]:
    """``"fast"`` or ``"eager"`` for ``wanted`` (auto/eager/fast), with the reason when fast is not used."""
    from .static_graph import choose_decoder

    if wanted not in DECODER_CHOICES:
        raise ValueError(f"decoder must be one of {', '.join(DECODER_CHOICES)}, not {wanted!r}")
    if wanted == "eager":
        return "eager", "fast decoder off (--eager-decode)"
    choice, reason = choose_decoder(device, attn_implementation)
    if wanted == "fast" and choice != "fast":
        return "fast", None  # forced (tests run the static step on the CPU)
    return choice, reason


def stream_generate(
    text: TextModel,
    prompt: Prefilled,
    *,
    prompt_ids: torch.Tensor | None,
    options: GenerationOptions,
    tokenizer: Any | None = None,
    decoder: str = "eager",
    decoder_note: str | None = None,
    timer: StageTimer | None = None,
    started: float | None = None,
    origin: float | None = None,
    warnings: list[str] | None = None,
    use_cuda_graph: bool | None = None,
) -> Iterator[GenerationChunk]:
    """Decode from a prefilled prompt; yield chunks, the last one with complete :class:`AnswerStats`.

    Args:
        prompt: the prefill's result.
        prompt_ids: the whole uncompressed prompt ``[1, n]`` (what a repetition penalty sees).
        decoder: ``"eager"`` or ``"fast"`` (static cache; CUDA graph on a GPU).
        timer: the answer's stages; its ``prefill`` stage (when timed) is the prefill's seconds.
        started: ``time.perf_counter()`` at the start of the answer (its prefill included); default now.
        origin: where time to first token starts (see :class:`AnswerStats`); default ``started``.
        warnings: the answer's warnings (copied into the stats).
        use_cuda_graph: for the fast decoder; None: on CUDA devices (False runs its static step
            eagerly, the path the CPU tests check).
    """
    timer = timer or StageTimer(device=str(text.device))
    started = time.perf_counter() if started is None else started
    origin = started if origin is None else origin
    notes = [decoder_note] if decoder_note else []
    chooser = TokenChooser(text, options, prompt_ids, text.device)
    active: Any
    warm_started = time.perf_counter()
    if decoder == "fast":
        from .static_graph import StaticGraphDecoder

        try:
            active = StaticGraphDecoder(text, prompt.cache, prompt.attention_mask, prompt.next_position,
                                        options.max_new_tokens, use_cuda_graph=use_cuda_graph)
        except (torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the fast path is an optimisation: fall back, say so
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            notes.append(f"fast decoder failed ({type(exc).__name__}: {first_line}); eager loop used")
            active = EagerDecoder(text, prompt.cache, prompt.attention_mask, prompt.next_position)
    else:
        active = EagerDecoder(text, prompt.cache, prompt.attention_mask, prompt.next_position)
    warmup = float(getattr(active, "warmup_seconds", 0.0))
    if warmup > 0:
        one_off = time.perf_counter() - warm_started
        timer.add("decode_warmup", one_off)
        started += one_off  # a one-off cost, kept out of the time to first token
        origin += one_off
    notes.extend(active.notes)

    detok = IncrementalDetokenizer(tokenizer) if tokenizer is not None else None
    stopper = StopText(options.stop) if options.stop and detok is not None else None
    tokens: list[int] = []
    first_token_at = time.perf_counter()
    for token_id in decode_loop(active, chooser, prompt.logits, options.max_new_tokens):
        tokens.append(token_id)
        if len(tokens) == 1:
            timer.sync()
            first_token_at = time.perf_counter()
        piece = detok.push(token_id) if detok is not None else ""
        yield GenerationChunk(text=stopper.push(piece) if stopper is not None else piece, token=token_id)
        if stopper is not None and stopper.hit:
            break
    timer.sync()
    finished = time.perf_counter()
    decode_seconds = finished - first_token_at if tokens else 0.0
    timer.add("decode", decode_seconds)
    timer.record_memory("decode")
    tail = detok.flush() if detok is not None else ""
    text = tokenizer.decode(tokens, skip_special_tokens=True) if tokenizer is not None else ""
    if stopper is not None:
        tail = stopper.push(tail) + stopper.flush()
        text = stopper.text
    if stopper is not None and stopper.hit:
        stop_reason = "stop"
    else:
        stop_reason = "eos" if tokens and tokens[-1] in chooser.stops else "max_new_tokens"
    stats = AnswerStats(
        token_ids=tokens,
        text=text,
        stop_reason=stop_reason,
        prefilled_tokens=prompt.prefilled,
        prompt_tokens=int(prompt.attention_mask.shape[1]),
        prefill_seconds=timer.seconds("prefill"),
        first_token_seconds=(first_token_at if tokens else finished) - started,
        decode_seconds=decode_seconds,
        decoder=active.name,
        time_to_first_token_seconds=(first_token_at if tokens else finished) - origin,
        total_seconds=finished - origin,
        prefix_source=prompt.source,
        notes=notes,
        warmup_seconds=warmup,
        prefill_logits=prompt.logits[0].detach(),
        timer=timer,
        warnings=list(warnings or []),
    )
    yield GenerationChunk(text=tail, token=None, stats=stats)


def collect(chunks: Iterator[GenerationChunk]) -> AnswerStats:
    """Consume a stream; the final statistics (``stats.text`` is the whole answer)."""
    stats = None
    for chunk in chunks:
        if chunk.stats is not None:
            stats = chunk.stats
    if stats is None:
        raise RuntimeError("the answer stream ended without its statistics")
    return stats


def generate(
    text: TextModel,
    prefill: PrefillInputs,
    options: GenerationOptions,
    *,
    prompt_ids: torch.Tensor | None = None,
    tokenizer: Any | None = None,
    decoder: str = "eager",
    head_on_all_positions: bool = False,
    timer: StageTimer | None = None,
) -> AnswerStats:
    """Prefill ``prefill`` onto an empty cache, then decode: one whole answer, below the Session.

    The first answer token sits at the last prompt position + 1 (as stock ``generate`` continues).
    """
    timer = timer or StageTimer(device=str(text.device))
    cache = new_cache(text)
    timer.sync()
    started = time.perf_counter()
    with timer.stage("prefill"):
        with torch.no_grad():
            logits = forward_tokens(text, prefill.embeds, prefill.attention_mask, prefill.position_ids, cache,
                                    lm_kwargs=prefill.lm_kwargs, head_on_all_positions=head_on_all_positions)
    prompt = Prefilled(cache=cache, logits=logits, attention_mask=prefill.attention_mask,
                       next_position=prefill.position_ids[0, 0, -1] + 1, prefilled=prefill.length)
    return collect(stream_generate(text, prompt, prompt_ids=prompt_ids, options=options, tokenizer=tokenizer,
                                   decoder=decoder, timer=timer, started=started))
