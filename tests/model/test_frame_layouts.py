"""Frames, not runs: the keep plan on the processor's audio-in-video layouts from 0.25 to 2 fps.

Below 1 fps the processor's chunking splits a frame's tokens over two or more runs; the plan prunes
whole frame-major frames, each in the time group that holds most of its tokens (see the deviations
in ``omnizip_cli/compression/plan.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from omnizip_cli.compression import PRESETS, OmniZipConfig, build_keep_plan
from omnizip_cli.compression.groups import derive_layout, frame_groups, runs_of_consecutive
from tests.helpers.compression_reference import (
    AUDIO_ID,
    VIDEO_ID,
    SyntheticCase,
    processor_case,
    processor_input_ids,
)
from tests.unit.test_compression import assert_identical

FPS_VALUES = [0.25, 0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def processor() -> Any:
    from tests.helpers.processor import tiny_processor

    return tiny_processor()


@pytest.mark.parametrize("fps", [0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0])
def test_layout_builder_matches_the_real_processor(processor: Any, fps: float) -> None:
    from tests.helpers.processor import build_inputs
    from tests.helpers.synthetic import synthetic_media

    media = synthetic_media(40.0, 40.0, fps=fps, height=56, width=84, seed=3)
    ids = build_inputs(processor, media, "What happens?").input_ids[0]
    grid_steps = media.frames.shape[0] // 2
    num_audio = int((ids == processor.audio_token_id).sum())
    assert num_audio == 1000
    body = ids[(ids == processor.video_token_id) | (ids == processor.audio_token_id)]
    ours = processor_input_ids(grid_steps, 2 * 3, num_audio, fps=fps)
    ours_body = ours[(ours == VIDEO_ID) | (ours == AUDIO_ID)]
    expected = torch.where(ours_body == VIDEO_ID, processor.video_token_id, processor.audio_token_id)
    assert torch.equal(body, expected)


def test_frames_straddle_runs_below_one_fps() -> None:
    # 0.5 fps, 4 tokens per frame: video chunks [f0] [1 token of f1] [3 of f1] [1 of f2] [3 of f2] ...
    ids = processor_input_ids(4, 4, 400, fps=0.5)
    video = torch.nonzero(ids == VIDEO_ID).flatten()
    runs = runs_of_consecutive(video)
    sizes = (runs[:, 1] - runs[:, 0]).tolist()
    assert sizes == [4, 1, 3, 1, 3, 1, 3]
    assert frame_groups(runs, 4, 4).tolist() == [0, 2, 4, 6]
    # 0.25 fps: one token per chunk until the counter catches up with the frame's time.
    ids = processor_input_ids(3, 5, 600, fps=0.25)
    runs = runs_of_consecutive(torch.nonzero(ids == VIDEO_ID).flatten())
    assert (runs[:, 1] - runs[:, 0]).tolist() == [5, 1, 1, 1, 2, 1, 1, 1, 2]
    assert frame_groups(runs, 3, 5).tolist() == [0, 4, 8]


def test_frame_groups_ties_go_to_the_earliest_run() -> None:
    runs = torch.tensor([[0, 1], [1, 2], [2, 4]])
    assert frame_groups(runs, 2, 2).tolist() == [0, 2]


@pytest.mark.parametrize("fps", [1.0, 1.5, 2.0, 1.92])
def test_frame_major_equals_run_local_where_frames_do_not_straddle(fps: float) -> None:
    ids = processor_input_ids(50, 6, 2600, fps=fps)
    kwargs = dict(audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, video_grid_thw=(50, 4, 6), spatial_merge_size=2)
    frame_major = derive_layout(ids, frame_major=True, **kwargs)
    run_local = derive_layout(ids, frame_major=False, **kwargs)
    for name in frame_major.__dataclass_fields__:
        a, b = getattr(frame_major, name), getattr(run_local, name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name


@pytest.mark.parametrize("fps", [0.25, 0.5, 0.75, 1.0, 2.0])
@pytest.mark.parametrize("config_name", ["45", "35", "quirks"])
def test_vectorized_equals_reference_on_processor_layouts(fps: float, config_name: str) -> None:
    config = OmniZipConfig(reference_quirks=True) if config_name == "quirks" else PRESETS[config_name]
    case = processor_case(torch.Generator().manual_seed(int(fps * 100)), seconds=40, fps=fps, height=4, width=6, dim=8)
    assert_identical(case, config)


def _long_case(fps: float) -> SyntheticCase:
    # 10 minutes, 36 tokens per frame, 25 audio tokens per second.
    return processor_case(torch.Generator().manual_seed(0), seconds=600, fps=fps, height=12, width=12, dim=8)


def _video_retention(case: SyntheticCase, config: OmniZipConfig) -> float:
    plan = build_keep_plan(**case.kwargs(config))
    return plan.video_kept / plan.video_total


@pytest.mark.parametrize("preset", ["45", "35"])
def test_presets_keep_their_video_retention_at_every_frame_rate(preset: str) -> None:
    config = PRESETS[preset]
    at_two_fps = _video_retention(_long_case(2.0), config)
    assert abs(at_two_fps - (1 - config.rho_video)) <= 0.02  # keep counts are floored per frame
    for fps in FPS_VALUES[:-1]:
        case = _long_case(fps)
        retention = _video_retention(case, config)
        assert abs(retention - at_two_fps) <= 0.03, (fps, retention, at_two_fps)
        plan = build_keep_plan(**case.kwargs(config))
        # audio selection does not depend on the video layout
        assert plan.audio_kept == build_keep_plan(**_long_case(2.0).kwargs(config)).audio_kept


def test_run_local_frames_keep_almost_everything_below_one_fps() -> None:
    # The reference's behaviour (reference_quirks): frames split over runs are never pruned.
    case = _long_case(0.5)
    assert _video_retention(case, OmniZipConfig(reference_quirks=True)) > 0.95
    assert _video_retention(case, PRESETS["45"]) < 0.45


def test_every_frame_below_one_fps_keeps_its_group_count() -> None:
    case = _long_case(0.5)
    config = PRESETS["45"]
    plan = build_keep_plan(**case.kwargs(config))
    layout = derive_layout(
        case.input_ids, audio_token_id=AUDIO_ID, video_token_id=VIDEO_ID, video_grid_thw=case.video_grid_thw,
        spatial_merge_size=2,
    )
    tpf = layout.tokens_per_frame
    video = layout.video_positions.view(-1, tpf)
    groups = frame_groups(layout.video_runs, video.shape[0], tpf)
    ratios = plan.groups.video_drop_ratio[groups].numpy()
    kept = plan.keep[video].sum(1).numpy()
    assert np.array_equal(kept, np.floor(tpf * (1 - ratios)).astype(np.int64))
