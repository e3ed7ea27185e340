"""The keep map: its pixels say what the plan kept (patches, audio tokens, groups), at bounded size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnizip_cli.errors import UsageError
from omnizip_cli.report.keep_map import (
    ANCHOR,
    AUDIO_ANCHOR,
    AUDIO_DROPPED,
    AUDIO_KEPT,
    BACKGROUND,
    DIM_KEEP,
    DIM_TARGET,
    DROPPED,
    EDGE,
    KEPT,
    NOTE_INK,
    STATE_COLOURS,
    GroupRow,
    KeepMapData,
    compute_keep_map_layout,
    grid_step_spans,
    keep_map_data_from_plan,
    render_keep_map,
    save_keep_map,
)

PX = 28  # input pixels per token side (Qwen2.5-Omni)


def solid_token_frames(grid_t: int, grid_h: int, grid_w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames where every token's 28 x 28 square is one colour: ``([2 grid_t, H, W, 3], colours [t, h, w, 3])``."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(70, 256, size=(grid_t, grid_h, grid_w, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(colours, PX, axis=1), PX, axis=2)
    return np.repeat(frames, 2, axis=0), colours


def audio_states(count: int) -> tuple[np.ndarray, np.ndarray]:
    """A known pattern: every third token dropped, four separated anchors."""
    kept = np.arange(count) % 3 != 0
    anchor = np.zeros(count, dtype=bool)
    anchor[[4, 20, 50, 77]] = True
    assert kept[anchor].all()
    return kept, anchor


def av_data(is_random_model: bool = False, grid: tuple[int, int, int] = (4, 5, 8)) -> tuple[KeepMapData, np.ndarray]:
    """4 s of video (4 grid steps at 2 fps) and 100 audio tokens, with known kept tokens."""
    grid_t, grid_h, grid_w = grid
    frames, colours = solid_token_frames(*grid)
    rng = np.random.default_rng(1)
    video_keep = rng.random(grid_t * grid_h * grid_w) < 0.45
    kept, anchor = audio_states(100)
    audio = (0.5 * np.sin(np.arange(64000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    per_step = grid_h * grid_w
    groups = [
        GroupRow(0.0, 2.0, 50, int(kept[:50].sum()), 2 * per_step, int(video_keep[: 2 * per_step].sum()), 0.55, True),
        GroupRow(2.0, 4.0, 50, int(kept[50:].sum()), 2 * per_step, int(video_keep[2 * per_step :].sum()), 0.45, True),
    ]
    data = KeepMapData(
        title="clip.mp4",
        setting="OmniZip preset 45",
        frames=frames,
        frame_times=np.arange(2 * grid_t) * 0.5,
        grid=grid,
        video_keep=video_keep,
        audio=audio,
        audio_kept=kept,
        audio_anchor=anchor,
        groups=groups,
        is_random_model=is_random_model,
    )
    return data, colours


def pixel(image: Image.Image, x: float, y: float) -> np.ndarray:
    return np.asarray(image.getpixel((int(x), int(y))), dtype=int)


def dimmed(colour: np.ndarray) -> np.ndarray:
    return np.round(DIM_KEEP * colour + (1 - DIM_KEEP) * np.asarray(DIM_TARGET)).astype(int)


def test_dropped_patches_are_dimmed_and_kept_ones_clear() -> None:
    data, colours = av_data()
    image = render_keep_map(data)
    layout = compute_keep_map_layout(data)
    grid_t, grid_h, grid_w = data.grid
    keep = data.video_keep.reshape(data.grid)
    assert layout.cell >= 8 and layout.tile_size == (grid_w * layout.cell, grid_h * layout.cell)
    checked = {True: 0, False: 0}
    for tile, step in enumerate(layout.shown_steps):
        for token in range(grid_h * grid_w):
            row, col = divmod(token, grid_w)
            x0, y0, x1, y1 = layout.token_box(tile, token)
            assert (x1 - x0, y1 - y0) == (layout.cell, layout.cell)
            got = pixel(image, (x0 + x1) / 2, (y0 + y1) / 2)
            source = colours[step, row, col].astype(int)
            if keep[step, row, col]:
                assert np.abs(got - source).max() <= 2, (step, token)
            else:
                assert np.abs(got - dimmed(source)).max() <= 2, (step, token)
                assert got.sum() < 0.5 * source.sum()
            checked[bool(keep[step, row, col])] += 1
    assert checked[True] > 20 and checked[False] > 20


def test_token_geometry_follows_the_raster_order() -> None:
    """Token j of step t is row j // grid_w, column j % grid_w: one dropped token lands where expected."""
    grid = (2, 3, 5)
    frames = np.full((4, 3 * PX, 5 * PX, 3), 200, dtype=np.uint8)
    video_keep = np.ones(30, dtype=bool)
    video_keep[15 + 7] = False  # step 1, row 1, column 2
    data = KeepMapData(title="t", frames=frames, frame_times=np.arange(4) * 0.5, grid=grid, video_keep=video_keep)
    image = render_keep_map(data)
    layout = compute_keep_map_layout(data)
    assert layout.shown_steps == (0, 1)
    x0, y0, x1, y1 = layout.token_box(1, 7)
    assert x0 == layout.tile_origins[1][0] + 2 * layout.cell and y0 == layout.tile_origins[1][1] + layout.cell
    tile = np.asarray(image)[layout.tile_origins[1][1] :, layout.tile_origins[1][0] :][
        : layout.tile_size[1], : layout.tile_size[0]
    ]
    ox, oy = layout.tile_origins[1]
    changed = (tile != 200).any(axis=2)  # the dropped token: dimmed, outlined on its own border pixels
    rows, cols = np.nonzero(changed)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (y0 - oy, y1 - oy, x0 - ox, x1 - ox)
    cell = tile[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    assert (cell[1:-1, 1:-1] == dimmed(np.full(3, 200))).all()
    assert (cell[0] == EDGE).all() and (cell[:, 0] == EDGE).all()
    first = np.asarray(image)[layout.tile_origins[0][1] :, layout.tile_origins[0][0] :][
        : layout.tile_size[1], : layout.tile_size[0]
    ]
    assert (first == 200).all()  # step 0 keeps everything


def test_number_of_frames_drawn_matches() -> None:
    data, colours = av_data(grid=(6, 5, 8))
    image = render_keep_map(data)
    layout = compute_keep_map_layout(data)
    assert layout.shown_steps == tuple(range(6)) and layout.step_stride == 1
    # Count the tiles on the scanline through the first row of tiles: runs of tile-wide non-white pixels.
    y = layout.tile_origins[0][1] + layout.tile_size[1] // 2
    line = np.asarray(image)[y, :, :]
    non_white = (line != np.asarray(BACKGROUND)).any(axis=1)
    edges = np.diff(np.concatenate([[0], non_white.astype(int), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    tile_runs = [r for r in runs if abs(r - layout.tile_size[0]) <= 2]  # the 1-px frame around each tile
    assert len(tile_runs) == 6


def test_many_frames_show_every_kth_step() -> None:
    data, _ = av_data(grid=(20, 5, 8))
    layout = compute_keep_map_layout(data, max_frames_shown=6)
    assert layout.step_stride == 4 and layout.shown_steps == (0, 4, 8, 12, 16)
    assert len(layout.tile_origins) == 5
    image = render_keep_map(data, max_frames_shown=6)
    assert image.size == (layout.width, layout.height)


def test_audio_markers_match_the_plan() -> None:
    data, _ = av_data()
    image = render_keep_map(data)
    layout = compute_keep_map_layout(data)
    box = layout.token_lane_box
    assert box is not None
    y = (box[1] + box[3]) // 2
    states = np.where(data.audio_anchor, ANCHOR, np.where(data.audio_kept, KEPT, DROPPED))
    seen = {KEPT: 0, ANCHOR: 0, DROPPED: 0}
    for index, (start, end) in enumerate(data.audio_token_times):
        c0, c1 = layout.column_span(start, end)
        assert c1 - c0 >= 2  # 100 tokens over 4 s of ~1180 px
        got = tuple(pixel(image, (c0 + c1 - 1) // 2, y))
        assert got == STATE_COLOURS[states[index]], index
        seen[states[index]] += 1
    assert seen == {KEPT: int((data.audio_kept & ~data.audio_anchor).sum()), ANCHOR: 4, DROPPED: 34}
    # The anchors are marked as 4 separate runs of the anchor colour along the lane.
    lane = np.asarray(image)[y, box[0] : box[2]]
    is_anchor = (lane == np.asarray(AUDIO_ANCHOR)).all(axis=1).astype(int)
    assert int((np.diff(np.concatenate([[0], is_anchor])) == 1).sum()) == 4
    dropped_columns = (lane == np.asarray(AUDIO_DROPPED)).all(axis=1).sum()
    kept_columns = (lane == np.asarray(AUDIO_KEPT)).all(axis=1).sum()
    assert kept_columns > dropped_columns > 0


def test_waveform_is_coloured_by_token_state() -> None:
    data, _ = av_data()
    image = render_keep_map(data)
    layout = compute_keep_map_layout(data)
    box = layout.waveform_box
    middle = (box[1] + box[3]) // 2 - 3  # inside the sine's envelope, off the centre line
    for index in (4, 5, 6, 20, 21):
        c0, c1 = layout.column_span(*data.audio_token_times[index])
        state = ANCHOR if data.audio_anchor[index] else (KEPT if data.audio_kept[index] else DROPPED)
        assert tuple(pixel(image, (c0 + c1 - 1) // 2, middle)) == STATE_COLOURS[state]


def test_group_lanes_show_retention_and_drop_ratio() -> None:
    data, _ = av_data()
    image = np.asarray(render_keep_map(data))
    layout = compute_keep_map_layout(data)
    for box, values in (
        (layout.group_audio_box, [g.audio_retention for g in data.groups]),
        (layout.group_video_box, [g.video_drop_ratio for g in data.groups]),
    ):
        height = box[3] - box[1]
        for group, value in zip(data.groups, values):
            c0, c1 = layout.column_span(group.start_s, group.end_s)
            column = image[box[1] : box[3], c0 + 3]
            filled = (column != column[0]).any(axis=1).sum()  # bar pixels differ from the lane background
            assert abs(filled - round(value * height)) <= 1


def test_size_stays_bounded_for_a_768_frame_300_s_clip() -> None:
    grid = (384, 13, 23)  # 768 frames at 644 x 364, 2 frames per grid step
    frame = np.random.default_rng(0).integers(0, 256, size=(13 * PX, 23 * PX, 3), dtype=np.uint8)
    frames = np.broadcast_to(frame, (768, *frame.shape))
    rng = np.random.default_rng(2)
    audio_kept = rng.random(7500) < 0.7
    per_step = 13 * 23
    video_keep = rng.random(384 * per_step) < 0.4
    groups = [
        GroupRow(2.0 * i, 2.0 * (i + 1), 50, int(audio_kept[50 * i : 50 * (i + 1)].sum()), 2 * per_step,
                 int(video_keep[2 * per_step * i : 2 * per_step * (i + 1)].sum()), 0.6, True)
        for i in range(150)
    ]
    data = KeepMapData(
        title="long.mp4",
        frames=frames,
        frame_times=np.arange(768) * (300 / 768),
        grid=grid,
        video_keep=video_keep,
        audio=rng.standard_normal(300 * 16000).astype(np.float32) * 0.1,
        audio_kept=audio_kept,
        audio_anchor=audio_kept & (np.arange(7500) % 20 == 0),
        groups=groups,
        is_random_model=True,
    )
    layout = compute_keep_map_layout(data)
    image = render_keep_map(data)
    assert image.size == (layout.width, layout.height)
    assert image.width <= 2400 and image.height <= 3000
    assert 1 < len(layout.shown_steps) <= 48 and layout.step_stride == -(-384 // len(layout.shown_steps))
    assert layout.cell >= 6  # patches stay visible


def test_video_only_renders_without_audio_lanes() -> None:
    frames, _ = solid_token_frames(3, 5, 8)
    video_keep = np.arange(120) % 2 == 0
    per_step = 40
    data = KeepMapData(
        title="silent.mp4",
        frames=frames,
        frame_times=np.arange(6) * 0.5,
        grid=(3, 5, 8),
        video_keep=video_keep,
        groups=[GroupRow(0.0, 3.0, 0, 0, 3 * per_step, 60, 0.5, False)],
    )
    layout = compute_keep_map_layout(data)
    assert layout.waveform_box is None and layout.token_lane_box is None and layout.group_audio_box is None
    assert layout.video_lane_box is not None and layout.group_video_box is not None
    image = render_keep_map(data)
    assert image.size == (layout.width, layout.height) and len(layout.shown_steps) == 3


def test_audio_only_renders_without_a_contact_sheet() -> None:
    kept, anchor = audio_states(100)
    audio = (0.3 * np.sin(np.arange(64000) / 40)).astype(np.float32)
    data = KeepMapData(
        title="speech.wav",
        audio=audio,
        audio_kept=kept,
        audio_anchor=anchor,
        groups=[GroupRow(0.0, 4.0, 100, int(kept.sum()), 0, 0, 0.0, False)],
    )
    layout = compute_keep_map_layout(data)
    assert layout.shown_steps == () and layout.video_lane_box is None and layout.group_video_box is None
    image = render_keep_map(data)
    box = layout.token_lane_box
    c0, c1 = layout.column_span(*data.audio_token_times[4])
    assert tuple(pixel(image, (c0 + c1 - 1) // 2, (box[1] + box[3]) // 2)) == AUDIO_ANCHOR
    assert image.height < 700


def test_random_model_note_is_drawn() -> None:
    with_note = render_keep_map(av_data(is_random_model=True)[0])
    layout = compute_keep_map_layout(av_data(is_random_model=True)[0])
    without = render_keep_map(av_data(is_random_model=False)[0])
    assert layout.note_box is not None
    assert compute_keep_map_layout(av_data()[0]).note_box is None

    def red_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> int:
        region = np.asarray(image.crop(box)).astype(int)
        return int((np.abs(region - np.asarray(NOTE_INK)).max(axis=2) <= 40).sum())

    assert red_pixels(with_note, layout.note_box) > 200  # the frame and the text
    assert red_pixels(without, (0, 0, without.width, layout.note_box[3] + 40)) == 0


def test_builder_reads_an_interleaved_plan() -> None:
    """input_ids laid out like the processor: text, then 2 x [video of 2 steps][50 audio], then text."""
    video_id, audio_id = 9, 8
    grid_h, grid_w = 2, 3
    per_step = grid_h * grid_w
    ids = [1] * 5 + ([video_id] * (2 * per_step) + [audio_id] * 50) * 2 + [1] * 4
    ids = np.asarray(ids)
    rng = np.random.default_rng(3)
    keep = np.ones(ids.size, dtype=bool)
    keep[ids == video_id] = rng.random(4 * per_step) < 0.5
    keep[ids == audio_id] = np.arange(100) % 4 != 0
    audio_positions = np.flatnonzero(ids == audio_id)
    merged = audio_positions[[1, 61]]
    video_keep = keep[ids == video_id]
    rows = [
        {"audio_tokens": 50, "audio_kept": int(keep[audio_positions[:50]].sum()), "video_tokens": 2 * per_step,
         "video_kept": int(video_keep[: 2 * per_step].sum()), "video_drop_ratio": 0.5, "guided": True},
        {"audio_tokens": 50, "audio_kept": int(keep[audio_positions[50:]].sum()), "video_tokens": 2 * per_step,
         "video_kept": int(video_keep[2 * per_step :].sum()), "video_drop_ratio": 0.4, "guided": True},
    ]
    frames, _ = solid_token_frames(4, grid_h, grid_w)
    data = keep_map_data_from_plan(
        ids[None, :],
        keep,
        audio_token_id=audio_id,
        video_token_id=video_id,
        merged_positions=merged,
        video_grid_thw=[[4, 2 * grid_h, 2 * grid_w]],  # in patches, as the processor gives it
        frames=frames,
        frame_times=np.arange(8) * 0.5,
        audio=np.zeros(64000, dtype=np.float32),
        group_rows=rows,
        title="clip.mp4",
        is_random_model=True,
    )
    assert data.grid == (4, grid_h, grid_w) and data.token_pixels == 28
    assert np.array_equal(data.step_keep().reshape(-1), video_keep)
    assert np.array_equal(data.audio_kept, np.arange(100) % 4 != 0)
    assert np.flatnonzero(data.audio_anchor).tolist() == [1, 61]
    assert data.text_tokens == 9
    assert [(g.start_s, g.end_s) for g in data.groups] == [(0.0, 2.0), (2.0, 4.0)]
    assert data.audio_token_times[25].tolist() == [1.0, 1.04]
    render_keep_map(data)


def test_builder_rejects_inconsistent_inputs() -> None:
    ids = np.asarray([1, 9, 9, 9, 9, 8, 8, 1])
    keep = np.ones(8, dtype=bool)
    with pytest.raises(ValueError, match="gives 2 tokens"):
        keep_map_data_from_plan(ids, keep, audio_token_id=8, video_token_id=9, video_grid_thw=(2, 2, 2))
    with pytest.raises(ValueError, match="video_grid_thw is None"):
        keep_map_data_from_plan(ids, keep, audio_token_id=8, video_token_id=9)
    rows = [{"audio_tokens": 1, "audio_kept": 1, "video_tokens": 4, "video_kept": 4, "video_drop_ratio": 0.0,
             "guided": True}]
    with pytest.raises(ValueError, match="groups hold"):
        keep_map_data_from_plan(ids, keep, audio_token_id=8, video_token_id=9, video_grid_thw=(4, 2, 2),
                                group_rows=rows)
    with pytest.raises(ValueError, match="anchor must be kept"):
        KeepMapData(title="x", audio_kept=[True, False], audio_anchor=[False, True])


def test_grid_step_spans_use_the_first_frame_of_each_step() -> None:
    spans = grid_step_spans(np.asarray([0.0, 0.56, 1.16, 1.72, 2.28, 2.88]), 3, 2)
    np.testing.assert_allclose(spans, [[0.0, 1.16], [1.16, 2.28], [2.28, 2.28 + 2 * 0.56]])


def test_save_writes_a_png_and_reports_unwritable_paths(tmp_path: Path) -> None:
    image = Image.new("RGB", (10, 10), (1, 2, 3))
    target = save_keep_map(image, tmp_path / "map.png")
    with Image.open(target) as reread:
        assert reread.format == "PNG" and reread.getpixel((5, 5)) == (1, 2, 3)
    with pytest.raises(UsageError, match="does not exist"):
        save_keep_map(image, tmp_path / "missing" / "map.png")
    with pytest.raises(UsageError, match="is a folder"):
        save_keep_map(image, tmp_path)
    with pytest.raises(UsageError, match="cannot write the keep map") as info:
        save_keep_map(image, tmp_path / ("x" * 300 + ".png"))  # the OS refuses the name
    assert "\n" not in info.value.one_line()


def test_import_is_light() -> None:
    code = (
        "import sys, omnizip_cli.report.keep_map; "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


