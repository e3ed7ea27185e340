"""The baselines of issue 26: METHOD@R settings, the matching rule of frames@R / pixels@R, the random
drop of random@R, and their exactness on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnizip_cli.errors import UsageError
from omnizip_cli.evaluation.baselines import ClipLayout, match_media, random_keep_mask, seed_for
from omnizip_cli.evaluation.protocol import Setting, parse_settings
from omnizip_cli.generation.sampling import GenerationOptions
from omnizip_cli.media import MediaOptions, sizing

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
NEW_TOKENS = 6
GREEDY = GenerationOptions(max_new_tokens=NEW_TOKENS)


# ------------------------------------------------------------------------------------ settings


def test_method_settings_parse_with_keys_labels_and_methods() -> None:
    settings = parse_settings(["full", "45", "frames@0.45", "pixels@0.45", "random@0.45", "omnizip@0.45", "0.45"],
                              presets={"45", "35"})
    assert [s.key for s in settings] == ["full", "preset-45", "frames@0.45", "pixels@0.45", "random@0.45",
                                         "omnizip@0.45", "retention-0.45"]
    assert [s.family for s in settings] == ["full", "omnizip", "frames", "pixels", "random", "omnizip", "omnizip"]
    assert settings[2].label == "frames 45 %" and settings[2].target_retention == 0.45
    assert settings[2].reopens and settings[3].reopens and not settings[4].reopens
    assert len({s.label for s in settings}) == len(settings)


def test_methods_expand_the_grid_retentions_outer() -> None:
    settings = parse_settings(["full"], [0.25, 0.35], methods=["omnizip", "frames"], presets={"45"})
    assert [s.key for s in settings] == ["full", "omnizip@0.25", "frames@0.25", "omnizip@0.35", "frames@0.35"]


@pytest.mark.parametrize("values, retentions, methods, message", [
    (["blur@0.4"], [], [], "unknown method 'blur'"),
    (["frames@x"], [], [], "write METHOD@R"),
    (["frames@1.5"], [], [], r"retention must be in \(0, 1\]"),
    (["full"], [], ["frames"], "--methods needs at least one --retention"),
    (["frames@0.4", "frames@0.40"], [], [], "asked for twice"),
])
def test_bad_method_settings_are_usage_errors(values, retentions, methods, message) -> None:
    with pytest.raises(UsageError, match=message):
        parse_settings(values, retentions, presets={"45"}, methods=methods)


def test_settings_without_a_method_keep_their_old_config_form() -> None:
    """config.json of a run from before the methods stays equal, so it still resumes."""
    old = parse_settings(["full", "45"], presets={"45"})
    assert all("method" not in s.to_dict() for s in old)
    new = parse_settings(["frames@0.4"])[0]
    assert new.to_dict()["method"] == "frames" and Setting.from_dict(new.to_dict()) == new


# ------------------------------------------------------------------------------------ matching rule


def _layout(seconds: float, media: MediaOptions, source: tuple[int, int] = (720, 1280)) -> ClipLayout:
    """A Qwen2.5-Omni layout computed with the media package's own sizing: 25 audio tokens a second."""
    frames = sizing.count_frames(seconds, media.fps, available=int(seconds * 30), max_frames=media.max_frames)
    budget = sizing.frame_pixel_budget(frames, media.min_pixels, media.max_pixels, media.effective_total_pixels)
    height, width = sizing.smart_resize(*source, 28, media.min_pixels, budget)
    return ClipLayout(audio_tokens=int(seconds * 25), video_tokens=(frames // 2) * (height // 28) * (width // 28),
                      frames=frames, frame_height=height, frame_width=width, source_height=source[0],
                      source_width=source[1], token_pixels=28)


@pytest.mark.parametrize("seconds", [60.0, 300.0])
@pytest.mark.parametrize("method", ["frames", "pixels"])
@pytest.mark.parametrize("retention", [0.25, 0.35, 0.45, 0.55])
def test_matching_rule_lands_within_five_points(seconds: float, method: str, retention: float) -> None:
    media = MediaOptions()
    layout = _layout(seconds, media)
    match = match_media(layout, media, method, retention)
    assert abs(match.predicted_retention - retention) <= 0.05
    if method == "pixels":
        assert match.frames == layout.frames and match.options.max_frames == media.max_frames
    else:
        assert match.options.max_pixels == media.max_pixels and match.frames < layout.frames
    # the prediction is the media package's own sizing of those options
    budget = sizing.frame_pixel_budget(match.frames, match.options.min_pixels, match.options.max_pixels,
                                       match.options.effective_total_pixels)
    assert sizing.smart_resize(720, 1280, 28, match.options.min_pixels, budget) == (match.frame_height,
                                                                                     match.frame_width)


def test_sixty_second_layout_by_hand() -> None:
    """60 s of 1280x720 at 2 fps: 120 frames of 560x1008 (20 x 36 cells), 43,200 video and 1,500 audio
    tokens. frames@0.45: (0.45 * 44,700 - 1,500) / 720 = 25.85 frame pairs -> 26 pairs, 52 frames."""
    layout = _layout(60.0, MediaOptions())
    assert (layout.frames, layout.frame_height, layout.frame_width) == (120, 560, 1008)
    assert (layout.video_tokens, layout.audio_tokens) == (43_200, 1_500)
    match = match_media(layout, MediaOptions(), "frames", 0.45)
    assert match.frames == 52 and match.options.max_frames == 52
    assert match.predicted_tokens == 1_500 + 26 * 720


def test_audio_above_the_target_takes_the_smallest_candidate() -> None:
    layout = ClipLayout(audio_tokens=900, video_tokens=288, frames=4, frame_height=336, frame_width=336,
                        token_pixels=28)  # 12 x 12 cells a frame pair
    match = match_media(layout, MediaOptions(), "frames", 0.25)
    assert match.frames == 2 and match.predicted_tokens == 900 + 144


# ------------------------------------------------------------------------------------ random drop


def test_random_keep_mask_keeps_exact_counts_and_all_text() -> None:
    ids = torch.tensor([1, 5, 5, 5, 5, 2, 7, 7, 7, 7, 7, 7, 3])  # audio 5, video 7
    mask = random_keep_mask(ids, audio_token_id=5, video_token_id=7, audio_kept=2, video_kept=3, seed=11)
    assert mask.dtype == torch.bool and mask.shape == ids.shape
    assert int(mask[ids == 5].sum()) == 2 and int(mask[ids == 7].sum()) == 3
    assert bool(mask[(ids != 5) & (ids != 7)].all())
    again = random_keep_mask(ids, audio_token_id=5, video_token_id=7, audio_kept=2, video_kept=3, seed=11)
    assert torch.equal(mask, again)
    draws = {tuple(random_keep_mask(ids, audio_token_id=5, video_token_id=7, audio_kept=2, video_kept=3,
                                    seed=s).tolist()) for s in range(20)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="cannot keep 5 of 4 audio"):
        random_keep_mask(ids, audio_token_id=5, video_token_id=7, audio_kept=5, video_kept=0, seed=0)


def test_seed_is_stable() -> None:
    assert seed_for("talking.mp4", "random@0.45") == seed_for("talking.mp4", "random@0.45")
    assert seed_for("talking.mp4", "random@0.45") != seed_for("talking.mp4", "random@0.35")
    assert 0 <= seed_for("a", "b") < 2 ** 63


# ------------------------------------------------------------------------------------ on the tiny model


@pytest.fixture(scope="module")
def talking(tiny_cpu_model):
    from omnizip_cli.evaluation.session_answerer import SessionAnswerer

    answerer = SessionAnswerer(tiny_cpu_model, MediaOptions(), max_new_tokens=NEW_TOKENS)
    video = answerer.open(SAMPLES / "talking.mp4")
    yield video
    video.close()


@pytest.mark.parametrize("name", ["talking.mp4", "silent.mp4"])
@pytest.mark.parametrize("method", ["frames", "pixels"])
def test_matched_media_realizes_the_retention_on_the_shipped_samples(tiny_cpu_model, name: str, method: str) -> None:
    from omnizip_cli.evaluation.session_answerer import SessionAnswerer

    video = SessionAnswerer(tiny_cpu_model, MediaOptions(), max_new_tokens=2).open(SAMPLES / name)
    try:
        prediction = video.answer("What happens?", parse_settings([f"{method}@0.45"])[0])
    finally:
        video.close()
    realized = prediction.tokens_after / prediction.tokens_before
    assert abs(realized - 0.45) <= 0.05 + 1e-9, (name, method, realized)
    assert prediction.media is not None and prediction.media["frames"] > 0


def test_frames_and_pixels_open_once_per_distinct_media(talking) -> None:
    frames, pixels, frames_again = parse_settings(["frames@0.45", "pixels@0.45", "frames@0.44"])
    first = talking._session(frames)
    assert talking._session(pixels) is not first
    assert talking._session(frames_again) is first  # matched to the same options: the same opening
    assert len(talking.openings) == 2


def test_random_keeps_exactly_omnizips_counts_per_modality(talking) -> None:
    random, omnizip = parse_settings(["random@0.45", "omnizip@0.45"])
    ours, theirs = talking._session(random), talking._session(omnizip)
    assert ours.tokens.audio.after == theirs.tokens.audio.after
    assert ours.tokens.video.after == theirs.tokens.video.after
    assert ours.prefill.length == theirs.prefill.length
    assert not torch.equal(ours.plan.keep, theirs.plan.keep)  # another draw of the same counts


@pytest.mark.parametrize("key", ["random@0.45", "omnizip@0.45"])
def test_pruned_prefixes_equal_the_stock_language_model(talking, key: str) -> None:
    from tests.helpers.model_paths import manual_greedy, session_sequence

    session = talking._session(parse_settings([key])[0])
    plan = session.plan
    assert session.prefill.length == int(plan.keep.sum()) < session.prefix_length
    assert torch.equal(session.prefill.position_ids, session.encoded.position_ids[:, :, plan.keep])
    stops = {int(i) for i in session.text.generation_config.eos_token_id}
    question = "What colour is the ball?"
    stats = session.answer(question, GREEDY)
    embeds, positions = session_sequence(session, session.question_ids(question))
    by_hand, by_hand_logits = manual_greedy(session.text, embeds, positions, NEW_TOKENS, stops)
    assert stats.token_ids == by_hand
    torch.testing.assert_close(stats.prefill_logits, by_hand_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("key", ["frames@0.45", "pixels@0.45"])
def test_reopened_media_equal_stock_generate_on_their_inputs(talking, key: str) -> None:
    from tests.helpers.model_paths import full_prompt, stock_generate

    session = talking._session(parse_settings([key])[0])
    assert session.plan is None  # no compression: other frames only
    question = "What colour is the ball?"
    stock_tokens, stock_logits = stock_generate(session.loaded, full_prompt(session.loaded, session.media, question),
                                                NEW_TOKENS)
    stats = session.answer(question, GREEDY)
    assert stats.token_ids == stock_tokens
    torch.testing.assert_close(stats.prefill_logits, stock_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--setting", "blur@0.4"], "error: unknown method 'blur'"),
    (["--retention", "0.4", "--methods", "frames,zoom"], "error: unknown method 'zoom'"),
    (["--methods", "frames"], "error: --methods needs at least one --retention"),
    (["--setting", "frames@2"], r"error: a retention must be in (0, 1], got 2.0"),
])
def test_bad_settings_on_the_command_line_are_one_line_usage_errors(tmp_path: Path, args, message) -> None:
    from typer.testing import CliRunner

    from omnizip_cli.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(SAMPLES / "eval_example.jsonl"), "--model", "tiny",
                                      "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[0] == message or result.stderr.strip().startswith(message)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
