"""The KV cache of a prefilled prefix and of the ids after it: what a Session keeps between questions.

:class:`PrefixKV` owns one ``DynamicCache``. The prefix (the kept media tokens at their original
positions) is prefilled once, on the first :meth:`PrefixKV.prefill_turn`. Every turn after it (a
question, or a conversation's history plus its next question) is a list of token ids after the
prefix: the longest common prefix with what the cache already holds is kept, the cache is cut back
to it, and only the rest is forwarded. Positions: each id after the prefix sits at the previous
token's position + 1, starting after the prefix's last position, as stock ``generate`` continues.

What the cache holds after the prefix is known only once an answer completes
(:meth:`PrefixKV.settle`); an interrupted answer (Ctrl-C, a closed generator) leaves it unknown,
and the next turn cuts the cache back to the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .eager import cache_length, embed_ids, forward_tokens, new_cache, truncate_cache

if TYPE_CHECKING:
    from ..models.base import PrefillInputs, TextModel


@dataclass
class TurnPrefill:
    """The language model run over a turn's new ids, ready for decoding.

    logits ``[1, V]`` at the turn's last id; attention_mask ``[1, prefix + turn]``; positions
    ``[3, 1, n]`` of the ids forwarded; ``prefilled``: tokens forwarded (the prefix too when it was
    not cached yet); ``prefix_was_cached``: whether the prefix was already in the cache.
    """

    logits: torch.Tensor
    attention_mask: torch.Tensor
    next_position: torch.Tensor
    prefilled: int
    prefix_was_cached: bool


def common_length(held: list[int], turn: list[int]) -> int:
    """How many leading ids of ``turn`` the cache may keep: the common prefix with ``held``, but never
    the whole turn (its last id must be forwarded for the logits)."""
    common = 0
    limit = min(len(held), len(turn) - 1)
    while common < limit and held[common] == turn[common]:
        common += 1
    return common


def turn_positions(last_prefix_position: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Positions ``[3, 1, stop - start]`` of turn ids ``start..stop-1`` after a prefix whose last
    position is ``last_prefix_position [3, 1, 1]``: turn id ``i`` sits at that position + ``i + 1``."""
    offsets = torch.arange(start + 1, stop + 1, device=last_prefix_position.device)
    return last_prefix_position + offsets.to(last_prefix_position.dtype).view(1, 1, -1)


class PrefixKV:
    """The cache of one prefix (see the module docstring)."""

    def __init__(self, text: TextModel, prefill: PrefillInputs) -> None:
        self.text = text
        self.prefill = prefill
        self.cache: Any = None
        self.held: list[int] | None = None  # ids after the prefix known to be in the cache (None: unknown)

    @property
    def prefix_length(self) -> int:
        return self.prefill.length

    def prefill_turn(self, turn: list[int]) -> TurnPrefill:
        """Make the cache hold the prefix and ``turn`` (``len(turn) >= 1``); the logits at its last id."""
        if not turn:
            raise ValueError("a turn has at least one id")
        prefilled = 0
        cached = self.cache is not None
        if not cached:
            self.cache = new_cache(self.text)
            forward_tokens(self.text, self.prefill.embeds, self.prefill.attention_mask, self.prefill.position_ids,
                           self.cache, lm_kwargs=self.prefill.lm_kwargs)
            self.held = []
            prefilled += self.prefix_length
        common = common_length(self.held or [], turn)
        # Unknown until the answer completes: an interrupt from here on leaves an unknown tail.
        self.held = None
        truncate_cache(self.cache, self.prefix_length + common)
        pending = torch.tensor([turn[common:]], dtype=torch.long, device=self.text.device)
        positions = turn_positions(self.prefill.position_ids[:, :, -1:], common, len(turn))
        mask = self.prefill.attention_mask.new_ones((1, self.prefix_length + len(turn)))
        mask[:, : self.prefix_length] = self.prefill.attention_mask
        logits = forward_tokens(self.text, embed_ids(self.text, pending), mask, positions, self.cache)
        return TurnPrefill(logits=logits, attention_mask=mask, next_position=positions[0, 0, -1] + 1,
                           prefilled=prefilled + int(pending.shape[1]), prefix_was_cached=cached)

    def settle(self, turn: list[int]) -> None:
        """After a complete answer: the cache holds the prefix and the first ids of ``turn`` (the
        turn's ids plus the answer's; the decoders do not forward the last answer token)."""
        self.held = list(turn[: cache_length(self.cache) - self.prefix_length])

    def clear(self) -> None:
        """Forget the cache (the next turn prefills the prefix again)."""
        self.cache, self.held = None, None
