"""The KV bookkeeping of a prefix (generation/kv.py), on a tiny stand-in language model that records
what it is asked to forward: common-prefix reuse, truncation, positions and masks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

import omnizip_cli.generation.kv as kv_module
from omnizip_cli.generation.kv import PrefixKV, common_length, turn_positions
from omnizip_cli.models.base import PrefillInputs


def test_common_length_never_takes_the_whole_turn() -> None:
    assert common_length([], [1, 2, 3]) == 0
    assert common_length([1, 2, 9], [1, 2, 3]) == 2
    assert common_length([1, 2, 3], [1, 2, 3]) == 2  # the last id is forwarded again, for its logits
    assert common_length([1, 2, 3, 4], [1, 2]) == 1


def test_turn_positions_continue_after_the_prefix() -> None:
    last = torch.tensor([[[7]], [[9]], [[8]]])
    positions = turn_positions(last, 2, 5)
    assert positions.shape == (3, 1, 3)
    assert positions[:, 0].tolist() == [[10, 11, 12], [12, 13, 14], [11, 12, 13]]


class _Cache:
    def __init__(self) -> None:
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length


def _fake_text(monkeypatch: Any, forwarded: list[tuple[int, list[int], int]]) -> Any:
    """Replace the model calls: a cache that counts tokens, a forward that records (length, positions, mask)."""
    def forward(text: Any, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: _Cache,
                **_: Any) -> torch.Tensor:
        cache.length += int(embeds.shape[1])
        forwarded.append((int(embeds.shape[1]), positions[0, 0].tolist(), int(mask.shape[1])))
        return torch.zeros(1, 4)

    def truncate(cache: _Cache, length: int) -> None:
        assert cache.length >= length
        cache.length = length

    monkeypatch.setattr(kv_module, "new_cache", lambda text: _Cache())
    monkeypatch.setattr(kv_module, "forward_tokens", forward)
    monkeypatch.setattr(kv_module, "truncate_cache", truncate)
    monkeypatch.setattr(kv_module, "cache_length", lambda cache: cache.length)
    monkeypatch.setattr(kv_module, "embed_ids", lambda text, ids: torch.zeros(1, ids.shape[1], 2))
    return SimpleNamespace(device=torch.device("cpu"))


def _prefix(length: int = 5) -> PrefillInputs:
    positions = torch.tensor([0, 1, 2, 10, 11])[:length].view(1, 1, -1).expand(3, 1, -1)
    return PrefillInputs(embeds=torch.zeros(1, length, 2), attention_mask=torch.ones(1, length, dtype=torch.long),
                         position_ids=positions)


def test_the_prefix_is_prefilled_once_and_turns_reuse_what_the_cache_holds(monkeypatch: Any) -> None:
    forwarded: list[tuple[int, list[int], int]] = []
    kv = PrefixKV(_fake_text(monkeypatch, forwarded), _prefix())
    first = kv.prefill_turn([100, 101, 102])
    assert first.prefilled == 5 + 3 and not first.prefix_was_cached
    assert forwarded == [(5, [0, 1, 2, 10, 11], 5), (3, [12, 13, 14], 8)]  # gaps kept, then last + 1
    assert first.attention_mask.shape == (1, 8) and int(first.next_position) == 15
    kv.settle([100, 101, 102, 200, 201])  # the answer's last token is not in the cache
    assert kv.held == [100, 101, 102]
    forwarded.clear()
    second = kv.prefill_turn([100, 101, 102, 200, 201, 300])  # a follow-up: only the new ids
    assert second.prefix_was_cached and second.prefilled == 3
    assert forwarded == [(3, [15, 16, 17], 11)]
    forwarded.clear()
    kv.settle([100, 101, 102, 200, 201, 300])
    third = kv.prefill_turn([400])  # an independent question: cut back to the prefix
    assert third.prefilled == 1 and forwarded == [(1, [12], 6)]


def test_an_interrupted_turn_leaves_an_unknown_tail_that_the_next_turn_cuts(monkeypatch: Any) -> None:
    forwarded: list[tuple[int, list[int], int]] = []
    kv = PrefixKV(_fake_text(monkeypatch, forwarded), _prefix())
    kv.prefill_turn([100, 101])
    assert kv.held is None  # not settled: the answer never completed
    forwarded.clear()
    kv.prefill_turn([100, 101])
    assert forwarded == [(2, [12, 13], 7)]  # nothing of the unknown tail is trusted
    kv.clear()
    assert kv.cache is None and not kv.prefill_turn([1]).prefix_was_cached
