"""The loop reference (tests/compression_reference.py) against hand-worked examples of the spec.

These pin the reference to ``shared/docs/method.md`` §3 independently of the vectorized code,
which ``tests/test_compression.py`` then compares with the reference bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch

from omnizip_cli.compression import OmniZipConfig
from tests.helpers.compression_reference import (
    AUDIO_ID,
    TEXT_ID,
    VIDEO_ID,
    consecutive_runs,
    dpc_knn_keep,
    interleaved_input_ids,
    normalise,
    novelty_keep,
    reference_keep_plan,
    video_ratios,
)


def _runs_of(ids: torch.Tensor, token: int) -> list[int]:
    positions = [i for i, t in enumerate(ids.tolist()) if t == token]
    return [e - s for s, e in consecutive_runs(positions)]


# ------------------------------------------------------------------------------ layouts


def test_interleaved_layout_chunks_like_the_processor() -> None:
    ids = interleaved_input_ids(frames=4, tokens_per_frame=3, num_audio=100)
    assert _runs_of(ids, VIDEO_ID) == [6, 6]
    assert _runs_of(ids, AUDIO_ID) == [50, 50]
    assert ids[0].item() == TEXT_ID and ids[-1].item() == TEXT_ID


def test_audio_shorter_than_video_merges_trailing_video_chunks() -> None:
    ids = interleaved_input_ids(frames=10, tokens_per_frame=2, num_audio=120)  # 5 video chunks, 3 audio
    assert _runs_of(ids, VIDEO_ID) == [4, 4, 4, 8]  # the last run spans chunks 4 and 5
    assert _runs_of(ids, AUDIO_ID) == [50, 50, 20]


def test_video_shorter_than_audio_merges_trailing_audio_chunks() -> None:
    ids = interleaved_input_ids(frames=3, tokens_per_frame=2, num_audio=210)  # 2 video chunks, 5 audio
    assert _runs_of(ids, VIDEO_ID) == [4, 2]
    assert _runs_of(ids, AUDIO_ID) == [50, 160]


def test_consecutive_runs() -> None:
    assert consecutive_runs([]) == []
    assert consecutive_runs([3]) == [(0, 1)]
    assert consecutive_runs([1, 2, 3, 7, 8, 10]) == [(0, 3), (3, 5), (5, 6)]


# -------------------------------------------------------------------------- audio step


def _audio_only_plan(scores: list[float], config: OmniZipConfig, dim: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([TEXT_ID] + [AUDIO_ID] * len(scores) + [TEXT_ID])
    embeds = torch.randn(ids.numel(), dim, generator=generator)
    plan = reference_keep_plan(
        embeds, ids, torch.tensor(scores), None, audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, config=config
    )
    return plan, embeds


def test_dominant_count_uses_bankers_rounding() -> None:
    # round((1 - 0.5) * 5) = round(2.5) = 2 (not 3); no anchors.
    plan, _ = _audio_only_plan([5, 4, 3, 2, 1], OmniZipConfig(rho_audio=0.5, anchor_ratio=0.0))
    assert plan.keep.tolist() == [True, True, True, False, False, False, True]


def test_dominant_ties_go_to_the_lowest_index() -> None:
    plan, _ = _audio_only_plan([1, 1, 1, 1], OmniZipConfig(rho_audio=0.5, anchor_ratio=0.0))
    assert plan.keep.tolist()[1:5] == [True, True, False, False]


def test_anchors_are_evenly_spaced_over_the_non_dominant_tokens() -> None:
    # N = 10, dominant round(5.0) = 5: tokens 0..4 (highest scores); C = round(0.2 * 10) = 2,
    # remaining = [5..9], step = 5 // 2 = 2, anchors = remaining[0], remaining[2] = 5, 7.
    scores = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    plan, _ = _audio_only_plan(scores, OmniZipConfig(rho_audio=0.5, anchor_ratio=0.2, merge_g=3))
    kept = [i for i, k in enumerate(plan.keep.tolist()[1:-1]) if k]
    assert kept == [0, 1, 2, 3, 4, 5, 7]


def test_no_anchors_without_merge() -> None:
    plan, _ = _audio_only_plan([4, 3, 2, 1], OmniZipConfig(rho_audio=0.5, anchor_ratio=0.5, merge_g=0))
    assert plan.keep.tolist()[1:5] == [True, True, False, False]
    assert plan.merged == {}


def test_anchor_merge_formula_without_video() -> None:
    # One anchor (token 1) and two pool tokens; without video a pool token's score is its cosine
    # to the anchor. G = 1: only the most similar token (2, parallel to the anchor) merges, w = 1.
    ids = torch.tensor([TEXT_ID, AUDIO_ID, AUDIO_ID, AUDIO_ID, AUDIO_ID])
    embeds = torch.tensor([[0.0, 0.0], [9.0, 0.0], [1.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0])  # token 0 dominant
    config = OmniZipConfig(rho_audio=0.75, anchor_ratio=0.25, merge_g=1)
    plan = reference_keep_plan(
        embeds, ids, scores, None, audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, config=config
    )
    assert plan.keep.tolist() == [True, True, True, False, False]
    assert list(plan.merged) == [2]
    assert plan.merged[2].tolist() == [(1.0 + 4.0) / 2, 0.0]  # (anchor + 1 * token) / (1 + 1)

    config_g2 = OmniZipConfig(rho_audio=0.75, anchor_ratio=0.25, merge_g=2)
    plan = reference_keep_plan(
        embeds, ids, scores, None, audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, config=config_g2
    )
    w = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # cosines of tokens 3 and 4 to the anchor
    expected = (torch.tensor([1.0, 0.0]) + w[0] * torch.tensor([4.0, 0.0]) + w[1] * torch.tensor([0.0, 1.0])) / 2
    assert torch.allclose(plan.merged[2], expected)


# ------------------------------------------------------------------ dynamic ratio, budget


def _config(**kw) -> OmniZipConfig:
    return OmniZipConfig(**kw)


def test_budget_normalisation_scales_the_middle_groups() -> None:
    base, sizes = [0.4, 0.5, 0.6, 0.45], [10, 10, 10, 10]
    out = normalise(base, sizes, target=24.0, fix_extremes=True, config=_config())
    # min (0) and max (2) fixed: scale = (24 - 4 - 6) / (5 + 4.5)
    scale = 14 / 9.5
    assert out[0] == 0.4 and out[2] == 0.6
    assert out[1] == pytest.approx(0.5 * scale) and out[3] == pytest.approx(0.45 * scale)
    assert sum(o * s for o, s in zip(out, sizes)) == pytest.approx(24.0)


def test_budget_normalisation_clamps_then_shifts_once() -> None:
    out = normalise([0.4, 0.5, 0.6, 0.45], [10] * 4, target=28.0, fix_extremes=True, config=_config())
    assert out == [0.4, 0.75, 0.6, 0.75]  # clamped at rho_max, the shift cannot help: budget missed


def test_equal_bases_fixed_group_counted_once_or_twice_with_quirks() -> None:
    base, sizes = [0.5] * 4, [10] * 4
    ours = normalise(base, sizes, target=24.0, fix_extremes=True, config=_config())
    assert ours[0] == 0.5 and ours[1] == pytest.approx(19 / 30)  # (24 - 5) / 15 * 0.5
    quirky = normalise(base, sizes, target=24.0, fix_extremes=True, config=_config(reference_quirks=True))
    # fixed = 10 (twice): scale = 14/15 -> 0.4667, total 19, then shift + 5/30
    assert quirky[1] == pytest.approx(0.5 * 14 / 15 + 5 / 30)


def test_one_guided_group_follows_rho_video_unless_quirks() -> None:
    keep = [True] * 30 + [False] * 20  # S = 0.6 -> base = 0.75 - 0.4 * 0.6 = 0.51
    ours = video_ratios(keep, [(0, 50)], [(0, 8)], 1, 8, _config(rho_video=0.6))
    assert ours == [pytest.approx(0.6)]
    quirky = video_ratios(keep, [(0, 50)], [(0, 8)], 1, 8, _config(rho_video=0.6, reference_quirks=True))
    assert quirky == [pytest.approx(0.51)]


def test_unguided_runs_use_rho_video_and_zero_turns_video_off() -> None:
    keep = [True] * 10
    ratios = video_ratios(keep, [(0, 5), (5, 10)], [(0, 4), (4, 8), (8, 20)], 2, 20, _config(rho_video=0.6))
    assert ratios[2] == 0.6
    assert video_ratios(keep, [(0, 10)], [(0, 4)], 1, 4, _config(rho_video=0.0)) == [0.0]


# ------------------------------------------------------------------------------- ISTC


def test_dpc_knn_hand_example() -> None:
    # a = b = (1, 0), c = (0, 1); k = min(5, 2) = 2. rho_a = rho_b = exp(-1/2), rho_c = exp(-1).
    # a, b have no strictly denser token: delta = their largest distance, 1. c: nearest denser at 1.
    tokens = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert dpc_knn_keep(tokens, 1, 5) == [True, False, False]  # a and b tie; lowest index wins
    assert dpc_knn_keep(tokens, 2, 5) == [True, True, False]
    assert dpc_knn_keep(tokens, 3, 5) == [True, True, True]
    assert dpc_knn_keep(tokens, 0, 5) == [False, False, False]
    assert math.isclose(math.exp(-0.5), 0.6065306597, rel_tol=1e-9)


def test_dpc_knn_single_token_frame() -> None:
    assert dpc_knn_keep(torch.ones(1, 3), 1, 5) == [True]
    assert dpc_knn_keep(torch.ones(1, 3), 0, 5) == [False]


def test_novelty_keeps_the_changed_positions() -> None:
    previous = torch.eye(4)
    current = previous.clone()
    current[2] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # position 2 changed
    assert novelty_keep(current, previous, 1) == [False, False, True, False]
    assert novelty_keep(current, previous, 2) == [True, False, True, False]  # tie: lowest index
