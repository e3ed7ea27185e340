"""Prefill the thinker's language model and decode the answer token by token.

The loop reproduces stock ``generate``: the same logits processors (repetition penalty, temperature,
top-k, top-p from the checkpoint's generation config and our options), greedy argmax when the
temperature is 0, ``torch.multinomial`` sampling otherwise (same draws as ``generate`` for the same
seed), the checkpoint's end tokens and ``max_new_tokens``. Two differences, both invisible in the
tokens:

* the language-model head runs on the last prompt position only at prefill (stock ``forward``
  computes logits for every prompt position, 0.3 MB per token for the 7B vocabulary);
* the prefill may be pruned (OmniZip): the KV cache then holds only the kept tokens, while the
  generated tokens continue at ``max(original position) + 1`` as in the uncompressed model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .pipeline import PrefillInputs


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float | None = None  # None = the checkpoint's generation config
    top_k: int | None = None
    seed: int | None = None


@dataclass
class GenerationResult:
    token_ids: list[int]  # generated ids, the end token included when one was produced
    prefill_logits: torch.Tensor  # [V] logits at the last prompt position (model dtype)
    prefill_seconds: float
    first_token_seconds: float  # prefill + choosing the first token
    decode_seconds: float  # everything after the first token
    stop_reason: str  # "eos" | "max_new_tokens"
    cache_length: int  # KV-cache length after prefill (the kept prompt length)
    decoder: str = "eager"
    notes: list[str] = field(default_factory=list)

    @property
    def decode_tokens_per_second(self) -> float:
        steps = max(len(self.token_ids) - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 and steps else 0.0


def end_token_ids(model: Any) -> list[int]:
    """The ids that end an answer, as ``generate`` uses them."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.config.get_text_config().eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return [int(i) for i in ids if i is not None]


def build_logits_processor(model: Any, options: GenerationOptions) -> Any:
    """The logits processors stock ``generate`` would apply, from the generation config and options."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    config = model.generation_config
    processors = LogitsProcessorList()
    penalty = getattr(config, "repetition_penalty", None)
    if penalty is not None and penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=penalty))
    if options.temperature > 0:
        top_k = options.top_k if options.top_k is not None else getattr(config, "top_k", None)
        top_p = options.top_p if options.top_p is not None else getattr(config, "top_p", None)
        if options.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(options.temperature))
        if top_k is not None and top_k != 0:
            processors.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return processors


@torch.no_grad()
def prefill(model: Any, inputs: PrefillInputs, *, head_on_all_positions: bool = False) -> tuple[torch.Tensor, Any]:
    """Run the language model over the prompt; return the last position's logits [1, V] and the cache.

    By default the head multiplies only the last hidden state ([1, D] x [D, V]). BLAS libraries pick a
    different kernel for one row than for many, so those logits can differ from stock ``forward``'s in
    the last bit (1e-6 in float32) while the hidden state is bitwise identical.
    ``head_on_all_positions=True`` runs the head on every position as stock ``forward`` does (bitwise
    identical logits, at the cost of an [L, V] matrix); the tests use it to prove exactness.
    """
    from transformers import DynamicCache

    language_model = model.model.language_model
    cache = DynamicCache(config=language_model.config)
    out = language_model(
        inputs_embeds=inputs.embeds,
        attention_mask=inputs.attention_mask,
        position_ids=inputs.position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    hidden = out.last_hidden_state if head_on_all_positions else out.last_hidden_state[:, -1:, :]
    logits = model.lm_head(hidden)[:, -1, :]
    return logits, out.past_key_values


@torch.no_grad()
def decode_step(
    model: Any, token: torch.Tensor, position: int, attention_mask: torch.Tensor, cache: Any
) -> torch.Tensor:
    """One token through the language model: token [1, 1], returns logits [1, V]."""
    language_model = model.model.language_model
    embeds = language_model.embed_tokens(token)
    position_ids = torch.full((3, 1, 1), position, dtype=torch.long, device=token.device)
    out = language_model(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    return model.lm_head(out.last_hidden_state[:, -1:, :])[:, -1, :]


def generate(
    model: Any,
    inputs: PrefillInputs,
    options: GenerationOptions,
    *,
    prompt_ids: torch.Tensor | None = None,
    on_token: Callable[[int], None] | None = None,
    sync: Callable[[], None] | None = None,
    head_on_all_positions: bool = False,
) -> GenerationResult:
    """Prefill then decode greedily or by sampling; ``on_token`` is called with each new id as it comes.

    Args:
        model: the thinker.
        inputs: the (possibly pruned) prefill.
        options: generation options.
        prompt_ids: the original prompt ids [1, L], used by a repetition penalty exactly as
            ``generate`` uses them.
        on_token: streaming callback.
        sync: called before reading the clock (``torch.cuda.synchronize`` on a GPU).
        head_on_all_positions: see :func:`prefill`.
    """
    sync = sync or (lambda: None)
    device = inputs.embeds.device
    processors = build_logits_processor(model, options)
    stops = set(end_token_ids(model))
    if options.temperature > 0 and options.seed is not None:
        torch.manual_seed(options.seed)
    history = prompt_ids.to(device) if prompt_ids is not None else torch.zeros((1, 0), dtype=torch.long, device=device)

    sync()
    started = time.perf_counter()
    logits, cache = prefill(model, inputs, head_on_all_positions=head_on_all_positions)
    sync()
    prefill_seconds = time.perf_counter() - started
    prefill_logits = logits[0].detach()
    cache_length = int(cache.get_seq_length())

    def choose(step_logits: torch.Tensor) -> torch.Tensor:
        scores = processors(history, step_logits.float() if step_logits.dtype != torch.float32 else step_logits)
        if options.temperature > 0:
            probs = torch.softmax(scores, dim=-1)
            return torch.multinomial(probs, num_samples=1)
        return torch.argmax(scores, dim=-1, keepdim=True)

    tokens: list[int] = []
    attention_mask = inputs.attention_mask
    stop_reason = "max_new_tokens"
    first_token_seconds = 0.0
    decode_started = 0.0
    for step in range(options.max_new_tokens):
        next_token = choose(logits)  # [1, 1]
        token_id = int(next_token)
        tokens.append(token_id)
        if step == 0:
            sync()
            first_token_seconds = time.perf_counter() - started
            decode_started = time.perf_counter()
        if on_token is not None:
            on_token(token_id)
        history = torch.cat([history, next_token], dim=-1)
        if token_id in stops:
            stop_reason = "eos"
            break
        if step + 1 == options.max_new_tokens:
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((1, 1))], dim=-1)
        logits = decode_step(model, next_token, inputs.next_position + step, attention_mask, cache)
    sync()
    decode_seconds = time.perf_counter() - decode_started if tokens else 0.0
    return GenerationResult(
        token_ids=tokens,
        prefill_logits=prefill_logits,
        prefill_seconds=prefill_seconds,
        first_token_seconds=first_token_seconds,
        decode_seconds=decode_seconds,
        stop_reason=stop_reason,
        cache_length=cache_length,
    )


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text pieces, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[self.emitted :], len(text)
        return piece

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        piece, self.emitted = text[self.emitted :], len(text)
        return piece


def iter_text(tokenizer: Any, token_ids: Iterator[int]) -> Iterator[str]:
    detok = IncrementalDetokenizer(tokenizer)
    for token_id in token_ids:
        if piece := detok.push(token_id):
            yield piece
    if rest := detok.flush():
        yield rest
