"""The language model driven by hand: prefill (possibly pruned, possibly onto a cached prefix) and
the plain one-token-at-a-time decoder.

Prefill reproduces stock ``forward`` with two differences invisible in the tokens:

* the language-model head runs on the last prompt position only (stock ``forward`` computes logits
  for every prompt position, 0.3 MB per token for the 7B vocabulary); BLAS picks another kernel for
  one row than for many, so those logits can differ from stock in the last bit (1e-6 in float32)
  while the hidden state is bitwise identical. ``head_on_all_positions=True`` runs the head on every
  position, as stock does (bitwise identical logits); the exactness tests use it;
* the prefill may be pruned (OmniZip): the KV cache then holds only the kept tokens, which keep
  their original positions.

The eager decoder forwards one token per step through a ``DynamicCache``; each new token sits at the
position after the previous one (the first after the last prompt token's position, as stock
``generate`` continues).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..models.base import TextModel



def new_cache(text: TextModel) -> Any:
    """An empty ``DynamicCache`` for the language model."""
    from transformers import DynamicCache

    return DynamicCache(config=text.config)


def cache_length(cache: Any) -> int:
    return int(cache.get_seq_length())


def truncate_cache(cache: Any, length: int) -> None:
    """Drop every cached token after the first ``length`` (rolls a turn back to the prefix).

    Each layer is cropped to ``length`` on its own: after an interrupt inside a forward pass the
    layers may hold different numbers of tokens (the first ones updated, the later ones not).
    """
    length = int(length)
    if cache_length(cache) < length:
        raise ValueError(f"cannot truncate a cache of {cache_length(cache)} tokens to {length}")
    for layer in cache.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


@torch.no_grad()
def forward_tokens(
    text: TextModel,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any,
    *,
    lm_kwargs: dict[str, Any] | None = None,
    head_on_all_positions: bool = False,
) -> torch.Tensor:
    """Run ``embeds [1, n, D]`` at ``position_ids [3, 1, n]`` onto ``cache``; logits ``[1, V]`` of the last one.

    ``attention_mask [1, cache + n]`` covers the cached tokens and the new ones.
    """
    out = text.language_model(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        **(lm_kwargs or {}),
    )
    hidden = out.last_hidden_state if head_on_all_positions else out.last_hidden_state[:, -1:, :]
    # a thinker split with --device-map: the head may sit on another device than the inputs
    return text.lm_head(hidden)[:, -1, :].to(embeds.device)


def embed_ids(text: TextModel, ids: torch.Tensor) -> torch.Tensor:
    """Token embeddings of ``ids [1, n]``: ``[1, n, D]``."""
    with torch.no_grad():
        return text.embed_tokens(ids.to(text.device))


class EagerDecoder:
    """One token per step through the ``DynamicCache`` (the stock path; also the CPU path).

    Tokens it forwards stay in the cache, so a conversation continues from it.
    """

    name = "eager"
    pipelined = False

    def __init__(self, text: TextModel, cache: Any, attention_mask: torch.Tensor, next_position: torch.Tensor) -> None:
        self.text = text
        self.cache = cache
        self.attention_mask = attention_mask
        self.position = next_position.reshape(1, 1, 1).expand(3, 1, 1).clone()
        self.notes: list[str] = []
        self.warmup_seconds = 0.0

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Forward ``token [1, 1]``; logits ``[1, V]`` of the next one."""
        self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones((1, 1))], dim=-1)
        logits = forward_tokens(self.text, embed_ids(self.text, token), self.attention_mask, self.position, self.cache)
        self.position = self.position + 1
        return logits


def decode_loop(decoder: Any, chooser: Any, logits: torch.Tensor, max_new_tokens: int) -> Iterator[int]:
    """Choose, yield and forward tokens until an end token or ``max_new_tokens``: the one loop of both decoders.

    A pipelined decoder (CUDA graph) gets the next step queued **before** the current id is read on
    the host, so the GPU never waits for Python; the step queued after an end token is discarded
    (its KV slot is never attended to). The first id is read before anything is queued, so the time
    to the first token is exact.
    """
    device = logits.device
    is_cuda = device.type == "cuda"
    host_ids = torch.empty((max(max_new_tokens, 1),), dtype=torch.long, pin_memory=is_cuda)
    copied = torch.cuda.Event() if is_cuda else None
    for step in range(max_new_tokens):
        token = chooser.choose(logits, step)  # [1, 1], on the device
        last = step + 1 == max_new_tokens
        if copied is not None:
            host_ids[step : step + 1].copy_(token.view(1), non_blocking=True)
            copied.record()
        launched = decoder.pipelined and step > 0 and not last
        if launched:
            logits = decoder.step(token)
        if copied is not None:
            copied.synchronize()
            token_id = int(host_ids[step])
        else:
            token_id = int(token)
        yield token_id
        if token_id in chooser.stops or last:
            return
        if not launched:
            logits = decoder.step(token)


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
