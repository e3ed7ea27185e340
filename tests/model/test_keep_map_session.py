"""The keep map of a real sample: the Session's plan through the builder and the renderer (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from omnizip_cli.report.keep_map import compute_keep_map_layout, render_keep_map, save_keep_map
from tests.unit.test_keep_map import dimmed

ROOT = Path(__file__).resolve().parents[2]


def test_keep_map_of_a_real_sample_with_the_tiny_model(tiny_model, tmp_path: Path) -> None:
    """talking.mp4 through the real processor, encoders and keep plan, then the builder and the renderer."""
    from omnizip_cli.generation import Session
    from omnizip_cli.report.keep_map import keep_map_for_session

    session = Session.open(tiny_model, ROOT / "samples" / "talking.mp4", compression="45")
    media, plan = session.media, session.plan
    data = keep_map_for_session(session)
    assert data.title == "talking.mp4" and data.is_random_model
    assert data.grid == (6, 9, 16)  # 12 frames of 448 x 252: 9 x 16 tokens of 28 px per 2 frames
    assert int(data.video_keep.sum()) == plan.video_kept and int(data.audio_kept.sum()) == plan.audio_kept
    assert int(data.audio_anchor.sum()) == plan.merged_positions.numel() > 0
    assert [g.video_tokens for g in data.groups] == [288, 288, 288]
    layout = compute_keep_map_layout(data)
    assert layout.shown_steps == tuple(range(6)) and layout.note_box is not None
    image = render_keep_map(data)
    # Every kept token of step 2 shows the frame's own (resized) pixels; every dropped one is dimmed.
    frame = Image.fromarray(media.frames[4]).resize(layout.tile_size, Image.Resampling.BICUBIC)
    source = np.asarray(frame).astype(int)
    keep = data.step_keep()[2]
    x, y = layout.tile_origins[2]
    for token in range(9 * 16):
        x0, y0, x1, y1 = layout.token_box(2, token)
        inner = np.asarray(image)[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].astype(int)
        expected = source[y0 + 1 - y : y1 - 1 - y, x0 + 1 - x : x1 - 1 - x]
        if keep.reshape(-1)[token]:
            assert np.array_equal(inner, expected)
        else:
            assert np.abs(inner - dimmed(expected)).max() <= 1
    path = save_keep_map(image, tmp_path / "talking-keep-map.png")
    assert path.stat().st_size < 300_000


def test_keep_map_draws_the_plan_ask_gets_under_the_same_budget(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """A video that the prompt budget re-fits is drawn as re-fitted (not the preset's plan), with the warning."""
    import json

    from typer.testing import CliRunner

    import omnizip_cli.generation.opening
    from omnizip_cli.cli import app

    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", lambda spec: tiny_model)
    talking = str(ROOT / "samples" / "talking.mp4")
    fast = ["--model", "tiny", "--device", "cpu", "--fps", "2", "--max-frames", "8", "--min-pixels",
            str(64 * 28 * 28), "--max-pixels", str(96 * 28 * 28), "--json"]

    def keep_map(*extra: str) -> dict:
        result = CliRunner().invoke(app, ["keep-map", talking, "-o", str(tmp_path / "map.png"), *fast, *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    preset = keep_map()
    refit = keep_map("--max-prompt-tokens", "380")
    assert refit["tokens"]["total"]["after"] + 128 <= 380 < preset["tokens"]["total"]["after"] + 128
    # the same budget and reserve through the library: the plan ask's opening builds
    from omnizip_cli.generation import OpenOptions, Session
    from omnizip_cli.media import MediaOptions

    session = Session.open(tiny_model, talking, OpenOptions(
        media=MediaOptions(fps=2, max_frames=8, min_pixels=64 * 28 * 28, max_pixels=96 * 28 * 28),
        max_prompt_tokens=380, question_reserve=128, cache=False))
    assert session.context_fit.changed and session.tokens.total.after == refit["tokens"]["total"]["after"]
