"""The vectorized keep plan: identical to the loop reference, plus properties of the method.

Equivalence: seeded sweeps and hypothesis examples over layouts (lengths, frame sizes, audio
longer/shorter than video, separate layouts), ratios, G, k, quirks, float32 and bfloat16 assert
IDENTICAL keep masks, merged embeddings, per-group ratios and counts.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnizip_cli.compression import (
    PRESETS,
    OmniZipConfig,
    apply_keep_plan,
    build_keep_plan,
    config_for_retention,
    expected_retention,
)
from omnizip_cli.compression import video as video_module
from omnizip_cli.compression.video import exact_cosine, gather_grid_units
from omnizip_cli.errors import UsageError
from tests.helpers.compression_reference import (
    AUDIO_ID,
    VIDEO_ID,
    SyntheticCase,
    consecutive_runs,
    reference_keep_plan,
    synthetic_case,
)

DTYPES = [torch.float32, torch.bfloat16]


def _plans(case: SyntheticCase, config: OmniZipConfig):
    return build_keep_plan(**case.kwargs(config)), reference_keep_plan(**case.kwargs(config))


def assert_identical(case: SyntheticCase, config: OmniZipConfig) -> None:
    plan, ref = _plans(case, config)
    assert torch.equal(plan.keep, ref.keep), "keep masks differ"
    merged = case.embeds.clone()
    merged[plan.merged_positions] = plan.merged_embeds
    assert torch.equal(merged, ref.merged_embeds(case.embeds)), "merged embeddings differ"
    assert plan.merged_embeds.dtype == case.embeds.dtype
    runs = len(ref.video_ratios)
    assert plan.groups.video_drop_ratio[:runs].tolist() == ref.video_ratios
    assert plan.groups.video_kept[:runs].tolist() == ref.video_kept_per_run
    assert plan.groups.audio_kept[: len(ref.audio_kept_per_run)].tolist() == ref.audio_kept_per_run
    assert plan.audio_kept == sum(ref.audio_kept_per_run)


def random_case(seed: int) -> tuple[SyntheticCase, OmniZipConfig]:
    rnd = random.Random(seed)
    frames = rnd.choice([0, 1, 2, 3, 4, 5, 7, 10])
    num_audio = rnd.choice([0, 1, 3, 12, 40, 75, 160])
    if frames == 0 and num_audio == 0:
        num_audio = 20
    case = synthetic_case(
        torch.Generator().manual_seed(seed),
        frames=frames,
        height=rnd.choice([2, 3, 4, 6, 8]),
        width=rnd.choice([2, 4, 5, 6]),
        num_audio=num_audio,
        dim=rnd.choice([3, 8, 16, 40]),
        dtype=DTYPES[seed % 2],
        audio_per_chunk=rnd.choice([4, 10, 25, 50]),
        layout=rnd.choice(["interleaved"] * 5 + ["separate"]),
        ties=rnd.random() < 0.25,
    )
    rho_min = rnd.choice([0.0, 0.2, 0.35])
    config = OmniZipConfig(
        rho_audio=rnd.choice([0.0, 0.1, 0.3, 0.4, 0.7, 0.95]),
        rho_video=rnd.choice([0.0, 0.2, 0.6, 0.7, 0.9]),
        anchor_ratio=rnd.choice([0.0, 0.05, 0.1, 0.3]),
        merge_g=rnd.choice([0, 1, 2, 3, 7]),
        rho_min=rho_min,
        rho_max=rnd.choice([rho_min, 0.75, 0.9]),
        knn_k=rnd.choice([1, 2, 5, 8]),
        reference_quirks=rnd.random() < 0.25,
    )
    return case, config


# ------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("seed", range(160))
def test_vectorized_equals_reference_sweep(seed: int) -> None:
    case, config = random_case(seed)
    assert_identical(case, config)


SCENARIOS = {
    # name: (frames, height, width, num_audio, audio_per_chunk, layout)
    "paper_like_chunks": (6, 8, 8, 150, 50, "interleaved"),
    "video_only": (5, 6, 6, 0, 50, "interleaved"),
    "audio_only": (0, 4, 4, 120, 50, "interleaved"),
    "audio_shorter": (9, 4, 6, 60, 25, "interleaved"),
    "audio_longer": (3, 4, 4, 200, 25, "interleaved"),
    "odd_frames_trailing_partial_group": (7, 4, 4, 90, 25, "interleaved"),
    "single_frame": (1, 6, 6, 30, 50, "interleaved"),
    "one_token_per_frame": (8, 2, 2, 100, 25, "interleaved"),
    "odd_grid_sides": (4, 5, 7, 60, 25, "interleaved"),
    "separate_layout": (4, 4, 4, 80, 50, "separate"),
    "two_guided_groups": (4, 4, 4, 50, 25, "interleaved"),
}
CONFIGS = {
    "preset45": PRESETS["45"],
    "preset35_quirks": OmniZipConfig(rho_audio=0.4, rho_video=0.7, reference_quirks=True),
    "big_g_k1": OmniZipConfig(rho_audio=0.5, rho_video=0.5, anchor_ratio=0.2, merge_g=15, knn_k=1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_vectorized_equals_reference_scenarios(scenario: str, config_name: str, dtype: torch.dtype) -> None:
    frames, height, width, num_audio, per_chunk, layout = SCENARIOS[scenario]
    for ties in (False, True):
        case = synthetic_case(
            torch.Generator().manual_seed(7),
            frames=frames,
            height=height,
            width=width,
            num_audio=num_audio,
            dim=12,
            dtype=dtype,
            audio_per_chunk=per_chunk,
            layout=layout,
            ties=ties,
        )
        assert_identical(case, CONFIGS[config_name])


def test_chunked_similarities_give_the_same_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    case = synthetic_case(torch.Generator().manual_seed(3), frames=8, height=6, width=6, num_audio=200, dim=24)
    config = OmniZipConfig(rho_audio=0.5, anchor_ratio=0.1)
    whole = build_keep_plan(**case.kwargs(config))
    monkeypatch.setattr(video_module, "CPU_SCRATCH_ELEMENTS", 50)  # one frame / a few tokens per chunk
    chunked = build_keep_plan(**case.kwargs(config))
    assert torch.equal(whole.keep, chunked.keep)
    assert torch.equal(whole.merged_embeds, chunked.merged_embeds)
    assert_identical(case, config)


layouts = st.fixed_dictionaries(
    {
        "frames": st.integers(0, 9),
        "height": st.integers(2, 7),
        "width": st.integers(2, 7),
        "num_audio": st.integers(0, 130),
        "audio_per_chunk": st.sampled_from([3, 10, 25, 50]),
        "layout": st.sampled_from(["interleaved", "interleaved", "separate"]),
        "dim": st.sampled_from([2, 5, 16]),
        "ties": st.booleans(),
        "bf16": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)
configs = st.builds(
    OmniZipConfig,
    rho_audio=st.floats(0, 0.99),
    rho_video=st.floats(0, 0.99),
    anchor_ratio=st.floats(0, 0.5),
    merge_g=st.integers(0, 6),
    knn_k=st.integers(1, 7),
    reference_quirks=st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts, config=configs)
def test_vectorized_equals_reference_hypothesis(layout: dict, config: OmniZipConfig) -> None:
    if layout["frames"] == 0 and layout["num_audio"] == 0:
        layout["num_audio"] = 5
    case = synthetic_case(
        torch.Generator().manual_seed(layout.pop("seed")),
        dtype=torch.bfloat16 if layout.pop("bf16") else torch.float32,
        **layout,
    )
    assert_identical(case, config)
    check_properties(case, config)


# -------------------------------------------------------------------------- properties


def _video_runs(case: SyntheticCase) -> list[list[int]]:
    positions = torch.nonzero(case.input_ids == VIDEO_ID).flatten().tolist()
    return [positions[s:e] for s, e in consecutive_runs(positions)]


def check_properties(case: SyntheticCase, config: OmniZipConfig) -> None:
    plan = build_keep_plan(**case.kwargs(config))
    ids = case.input_ids
    media = (ids == AUDIO_ID) | (ids == VIDEO_ID)
    assert plan.keep[~media].all(), "a text/special token was dropped"
    assert int(plan.keep[ids == AUDIO_ID].sum()) == plan.audio_kept
    assert plan.video_kept == int(plan.keep[ids == VIDEO_ID].sum())
    assert plan.keep[plan.merged_positions].all(), "a merged anchor was dropped"
    # Kept tokens per frame: int(tpf * (1 - ratio)) in every full frame of a run.
    if case.video_grid_thw is not None:
        _, height, width = case.video_grid_thw
        tpf = (height // 2) * (width // 2)
        for run_index, run in enumerate(_video_runs(case)):
            ratio = plan.groups.video_drop_ratio[run_index].item()
            for t in range(len(run) // tpf):
                kept = int(plan.keep[run[t * tpf : (t + 1) * tpf]].sum())
                assert kept == int(tpf * (1 - ratio))
    out = apply_keep_plan(case.embeds, plan)
    assert out.shape == (int(plan.keep.sum()), case.embeds.shape[1])


@pytest.mark.parametrize("seed", range(12))
def test_properties_sweep(seed: int) -> None:
    check_properties(*random_case(1000 + seed))


@pytest.mark.parametrize("seed", range(6))
def test_rho_zero_keeps_everything_and_changes_nothing(seed: int) -> None:
    case, _ = random_case(2000 + seed)
    config = OmniZipConfig(rho_audio=0.0, rho_video=0.0, anchor_ratio=0.2, merge_g=5)
    assert config.is_identity
    plan = build_keep_plan(**case.kwargs(config))
    assert plan.keep.all()
    assert plan.merged_positions.numel() == 0
    assert torch.equal(apply_keep_plan(case.embeds, plan), case.embeds)
    assert plan.retention == 1.0


def test_rho_video_zero_with_quirks_still_prunes_guided_groups() -> None:
    case = synthetic_case(
        torch.Generator().manual_seed(0), frames=8, height=4, width=4, num_audio=200, dim=8, audio_per_chunk=50
    )
    quirky = OmniZipConfig(rho_audio=0.0, rho_video=0.0, reference_quirks=True)
    assert not quirky.is_identity
    plan = build_keep_plan(**case.kwargs(quirky))
    assert plan.video_kept < plan.video_total


def test_video_only_drops_rho_video_in_every_frame() -> None:
    case = synthetic_case(torch.Generator().manual_seed(1), frames=6, height=8, width=8, num_audio=0, dim=8)
    plan = build_keep_plan(**case.kwargs(OmniZipConfig(rho_video=0.6)))
    assert len(plan.groups) == 1 and not plan.groups.guided.any()
    assert plan.groups.video_drop_ratio.tolist() == [0.6]
    assert plan.video_kept == 6 * int(16 * (1 - 0.6))
    assert plan.merged_positions.numel() == 0


def test_audio_only_selects_audio_and_keeps_the_rest() -> None:
    case = synthetic_case(torch.Generator().manual_seed(2), frames=0, height=4, width=4, num_audio=100, dim=8)
    plan = build_keep_plan(**case.kwargs(OmniZipConfig(rho_audio=0.3, anchor_ratio=0.05)))
    assert plan.audio_kept == 70 + 5 == int(plan.keep.sum()) - int((case.input_ids != AUDIO_ID).sum())
    assert plan.video_total == 0 and plan.merged_positions.numel() == 5


def test_one_guided_group_meets_rho_video() -> None:
    # One 2-s chunk: a single guided group, where the reference would ignore rho_video.
    case = synthetic_case(torch.Generator().manual_seed(4), frames=2, height=20, width=20, num_audio=50, dim=8)
    plan = build_keep_plan(**case.kwargs(OmniZipConfig(rho_video=0.6)))
    assert plan.groups.video_drop_ratio[0].item() == pytest.approx(0.6)
    assert plan.video_kept == 2 * int(100 * (1 - plan.groups.video_drop_ratio[0].item()))


def test_ties_keep_the_lowest_positions() -> None:
    frames, tpf = 2, 9
    ids = torch.tensor([0] + [VIDEO_ID] * (frames * tpf) + [AUDIO_ID] * 10 + [0])
    embeds = torch.ones(ids.numel(), 4)  # every token identical: all scores tie
    config = OmniZipConfig(rho_audio=0.5, anchor_ratio=0.0, rho_video=0.6)
    plan = build_keep_plan(
        embeds, ids, torch.zeros(10), (frames, 6, 6), audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, config=config
    )
    video = plan.keep[1 : 1 + frames * tpf].view(frames, tpf)
    n_keep = int(tpf * (1 - plan.groups.video_drop_ratio[0].item()))
    assert video[:, :n_keep].all() and not video[:, n_keep:].any()
    assert plan.keep[1 + frames * tpf : -1].tolist() == [True] * 5 + [False] * 5


@pytest.mark.parametrize("quirks", [False, True])
def test_frames_straddling_runs_are_frame_major_unless_quirks(quirks: bool) -> None:
    # Not a processor layout: 3 frames of 4 tokens laid out as video runs of 6 tokens, audio in
    # between. Run-local frames (quirks, the reference): each run holds one full frame plus 2 tokens of
    # a partial one, which the reference drops. Frame-major (default): frame 1 (video tokens 4-7) has
    # 2 tokens in each run and goes to the first; every frame is pruned whole.
    ids = torch.tensor([0] + [VIDEO_ID] * 6 + [AUDIO_ID] * 8 + [VIDEO_ID] * 6 + [AUDIO_ID] * 8 + [0])
    generator = torch.Generator().manual_seed(0)
    case = SyntheticCase(
        embeds=torch.randn(ids.numel(), 8, generator=generator),
        input_ids=ids,
        audio_scores=torch.rand(16, generator=generator),
        video_grid_thw=(3, 4, 4),
    )
    config = OmniZipConfig(rho_video=0.5, reference_quirks=quirks)
    assert_identical(case, config)
    plan = build_keep_plan(**case.kwargs(config))
    if quirks:
        assert plan.keep[torch.tensor([5, 6, 19, 20])].tolist() == [False] * 4
        return
    assert plan.groups.video_tokens.tolist() == [8, 4]
    frames = [[1, 2, 3, 4], [5, 6, 15, 16], [17, 18, 19, 20]]
    groups = [0, 0, 1]
    for frame, group in zip(frames, groups):
        ratio = plan.groups.video_drop_ratio[group].item()
        assert int(plan.keep[torch.tensor(frame)].sum()) == int(4 * (1 - ratio))


def test_plan_is_deterministic() -> None:
    case, config = random_case(7)
    first, second = build_keep_plan(**case.kwargs(config)), build_keep_plan(**case.kwargs(config))
    assert torch.equal(first.keep, second.keep) and torch.equal(first.merged_embeds, second.merged_embeds)


def test_apply_keep_plan_writes_merged_rows_and_leaves_input_alone() -> None:
    case = synthetic_case(torch.Generator().manual_seed(5), frames=4, height=4, width=4, num_audio=100, dim=8)
    before = case.embeds.clone()
    plan = build_keep_plan(**case.kwargs(OmniZipConfig(rho_audio=0.5, anchor_ratio=0.1)))
    out = apply_keep_plan(case.embeds, plan)
    assert torch.equal(case.embeds, before)
    expected = case.embeds.clone()
    expected[plan.merged_positions] = plan.merged_embeds
    assert torch.equal(out, expected[plan.keep])
    assert plan.merged_positions.numel() == 10


@pytest.mark.parametrize(("height", "width"), [(24, 24), (16, 28)], ids=["144_per_s", "112_per_s"])
@pytest.mark.parametrize(("name", "paper"), [("45", 0.45), ("35", 0.35)])
def test_preset_retention_on_a_60_s_clip(height: int, width: int, name: str, paper: float) -> None:
    case = synthetic_case(
        torch.Generator().manual_seed(0), frames=60, height=height, width=width, num_audio=1500, dim=8
    )
    plan = build_keep_plan(**case.kwargs(PRESETS[name]))
    tokens_per_second = (height // 2) * (width // 2)
    # Every plan lands within 1 point of its nominal retention at the clip's token rates ...
    assert abs(plan.retention - expected_retention(PRESETS[name], 25, tokens_per_second)) <= 0.01
    if tokens_per_second == 144:  # ... which is the paper's 45 % / 35 % at its budget of 144 tokens/s.
        assert abs(plan.retention - paper) <= 0.01
    else:  # At 112 tokens/s the paper's ratios keep 46.4 % / 36.4 % nominally (see config_for_retention).
        assert abs(plan.retention - paper) <= 0.015


@pytest.mark.parametrize("target", [0.45, 0.35])
@pytest.mark.parametrize(("height", "width"), [(16, 28), (24, 24)])
def test_retention_target_on_a_60_s_clip(height: int, width: int, target: float) -> None:
    # 112 or 144 video tokens per second; the presets are tuned for 144 (paper budget).
    case = synthetic_case(
        torch.Generator().manual_seed(0), frames=60, height=height, width=width, num_audio=1500, dim=8
    )
    config = config_for_retention(target, video_tokens_per_second=(height // 2) * (width // 2))
    plan = build_keep_plan(**case.kwargs(config))
    assert abs(plan.retention - target) <= 0.01


def test_group_stats_add_up() -> None:
    # 9 frames = 5 chunks (the last with one grid step); 80 audio tokens = 4 chunks: the 5th video
    # chunk has no audio and forms an unguided group.
    case = synthetic_case(
        torch.Generator().manual_seed(6), frames=9, height=4, width=4, num_audio=80, dim=8, audio_per_chunk=25
    )
    plan = build_keep_plan(**case.kwargs(PRESETS["45"]))
    rows = plan.groups.to_rows()
    assert sum(r["audio_tokens"] for r in rows) == plan.audio_total
    assert sum(r["video_tokens"] for r in rows) == plan.video_total
    assert sum(r["audio_kept"] for r in rows) == plan.audio_kept
    assert sum(r["video_kept"] for r in rows) == plan.video_kept
    assert [r["guided"] for r in rows] == [True] * 4 + [False]
    assert rows[-1]["video_drop_ratio"] == 0.6 and rows[-1]["audio_tokens"] == 0


# ---------------------------------------------------------------------- input checking


def test_mismatched_inputs_raise() -> None:
    case = synthetic_case(torch.Generator().manual_seed(0), frames=2, height=4, width=4, num_audio=10, dim=4)
    kwargs = case.kwargs(PRESETS["45"])
    with pytest.raises(ValueError, match="video tokens"):
        build_keep_plan(**{**kwargs, "video_grid_thw": (3, 4, 4)})
    with pytest.raises(ValueError, match="video_grid_thw is None"):
        build_keep_plan(**{**kwargs, "video_grid_thw": None})
    with pytest.raises(ValueError, match="audio_scores"):
        build_keep_plan(**{**kwargs, "audio_scores": None})
    with pytest.raises(ValueError, match="embeds must be"):
        build_keep_plan(**{**kwargs, "embeds": case.embeds[None]})
    with pytest.raises(ValueError, match="one video"):
        build_keep_plan(**{**kwargs, "video_grid_thw": torch.tensor([[2, 4, 4], [2, 4, 4]])})
    as_tensor = build_keep_plan(**{**kwargs, "video_grid_thw": torch.tensor([[2, 4, 4]])})
    assert torch.equal(as_tensor.keep, build_keep_plan(**kwargs).keep)


def test_text_only_sequence_keeps_everything() -> None:
    ids = torch.tensor([5, 6, 7])
    plan = build_keep_plan(
        torch.randn(3, 4), ids, None, None, audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, config=PRESETS["35"]
    )
    assert plan.keep.all() and len(plan.groups) == 0 and plan.retention == 1.0


# ------------------------------------------------------------------- exact similarities


def _units(x: torch.Tensor) -> torch.Tensor:
    return gather_grid_units(x, torch.arange(x.shape[0]))


def test_exact_cosine_does_not_depend_on_order_or_batching() -> None:
    generator = torch.Generator().manual_seed(0)
    a = _units(torch.randn(37, 3584, generator=generator))
    b = _units(torch.randn(53, 3584, generator=generator))
    assert a.abs().max() <= 2**12 and (a.double().norm(dim=-1) <= 2**12).all()
    full = exact_cosine(a, b)
    permutation = torch.randperm(3584, generator=generator)
    assert torch.equal(full, exact_cosine(a[:, permutation], b[:, permutation]))
    assert torch.equal(full[5:9], exact_cosine(a[5:9], b))
    assert torch.equal(full[:, 11:12], exact_cosine(a, b[11:12]))
    batched = exact_cosine(a[None].expand(3, -1, -1), b[None].expand(3, -1, -1))
    assert torch.equal(batched, full[None].expand(3, -1, -1))
    scale = 4064.0  # grid_scale(3584)
    assert torch.equal(full, (a.double() @ b.double().T).float() * (1.0 / scale**2))


def test_exact_cosine_is_close_to_the_true_cosine() -> None:
    x = torch.randn(20, 3584, dtype=torch.float64)
    cos = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(x, dim=-1).T
    assert torch.allclose(exact_cosine(_units(x), _units(x)).double(), cos, atol=5e-4)


# ------------------------------------------------------------------------------ config


def test_config_defaults_and_presets() -> None:
    config = OmniZipConfig()
    assert (config.rho_audio, config.rho_video, config.anchor_ratio, config.merge_g) == (0.3, 0.6, 0.05, 3)
    assert (config.rho_min, config.rho_max, config.knn_k) == (0.35, 0.75, 5)
    assert PRESETS["45"].to_dict()["rho_video"] == 0.6 and PRESETS["35"].rho_audio == 0.4
    assert expected_retention(PRESETS["45"]) == pytest.approx(0.4518, abs=1e-4)
    assert expected_retention(PRESETS["35"]) == pytest.approx(0.3518, abs=1e-4)
    assert not config.is_identity and OmniZipConfig(rho_audio=0, rho_video=0).is_identity


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rho_audio": 1.0},
        {"rho_audio": -0.1},
        {"rho_video": 1.5},
        {"rho_video": float("nan")},
        {"anchor_ratio": 1.0},
        {"merge_g": -1},
        {"merge_g": 2.5},
        {"merge_g": True},
        {"knn_k": 0},
        {"rho_min": 0.8, "rho_max": 0.7},
        {"rho_max": 1.0},
        {"rho_audio": "0.3"},
        {"reference_quirks": 1},
    ],
)
def test_invalid_config_values_raise_usage_error(kwargs: dict) -> None:
    with pytest.raises(UsageError) as error:
        OmniZipConfig(**kwargs)
    assert error.value.exit_code == 2
    assert next(iter(kwargs)) in str(error.value)


def test_config_coerces_whole_floats_and_ints() -> None:
    config = OmniZipConfig(rho_audio=0, merge_g=3.0)
    assert config.rho_audio == 0.0 and isinstance(config.rho_audio, float) and config.merge_g == 3


def test_config_for_retention_matches_presets() -> None:
    for retention, preset in ((0.45, PRESETS["45"]), (0.35, PRESETS["35"])):
        config = config_for_retention(retention)
        assert abs(config.rho_audio - preset.rho_audio) < 0.005
        assert abs(config.rho_video - preset.rho_video) < 0.005
        assert expected_retention(config) == pytest.approx(retention, abs=1e-3)


def test_config_for_retention_is_monotone_and_reaches_identity() -> None:
    targets = [0.07, 0.1, 0.2, 0.35, 0.45, 0.6, 0.72, 0.74, 0.8, 0.95, 1.0]
    configs = [config_for_retention(t) for t in targets]
    for earlier, later in itertools.pairwise(configs):
        assert later.rho_audio <= earlier.rho_audio and later.rho_video <= earlier.rho_video
    for target, config in zip(targets, configs):
        assert expected_retention(config) == pytest.approx(target, abs=2e-4)
        assert config.rho_min <= config.rho_video <= config.rho_max
    assert configs[-1].is_identity


def test_config_for_retention_overrides_and_errors() -> None:
    config = config_for_retention(0.4, merge_g=0, knn_k=3, rho_max=0.7)
    assert config.merge_g == 0 and config.knn_k == 3 and config.rho_max == 0.7
    assert expected_retention(config) == pytest.approx(0.4, abs=1e-3)
    for bad in (0.0, -0.2, 1.01, float("nan")):
        with pytest.raises(UsageError):
            config_for_retention(bad)
    with pytest.raises(UsageError, match="below"):
        config_for_retention(0.01)
    with pytest.raises(UsageError, match="rho_audio"):
        config_for_retention(0.4, rho_audio=0.2)
    with pytest.raises(UsageError, match="unknown"):
        config_for_retention(0.4, rho=0.2)
    with pytest.raises(UsageError):
        config_for_retention(0.4, audio_tokens_per_second=0, video_tokens_per_second=0)


# ---------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_plan_is_sync_free_deterministic_and_matches_the_cpu_counts() -> None:
    case = synthetic_case(torch.Generator().manual_seed(0), frames=10, height=24, width=24, num_audio=250, dim=256)
    cpu_plan = build_keep_plan(**case.kwargs(PRESETS["45"]))
    kwargs = case.kwargs(PRESETS["45"])
    kwargs["embeds"] = case.embeds.cuda()
    kwargs["audio_scores"] = case.audio_scores.cuda()
    build_keep_plan(**kwargs)  # warm-up (lazy CUDA init, pinned-memory pool)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        first = build_keep_plan(**kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    second = build_keep_plan(**kwargs)
    assert torch.equal(first.keep, second.keep) and torch.equal(first.merged_embeds, second.merged_embeds)
    assert first.audio_kept == cpu_plan.audio_kept
    assert abs(first.video_kept - cpu_plan.video_kept) <= 10  # same counts up to ulp-level ties
