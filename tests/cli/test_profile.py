"""``omnizip profile`` on the tiny random model: the JSON object, the ratios, the files of ``--out``.

One CLI run (full + ``--preset 45`` + ``--retention 0.35``, 2 timed runs each) is shared by most
tests; everything is recomputed here from the figures the JSON reports.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from typer.testing import CliRunner

from omnizip_cli.cli import app
from omnizip_cli.evaluation.profile import FIGURES, build_settings, first_difference
from omnizip_cli.measure.flops import prefill_flops

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "talking.mp4"
REPEATS = 2
# Small frames and few of them keep the run short on 2 CPU cores.
MEDIA_ARGS = ["--fps", "2", "--max-frames", "8", "--min-pixels", str(64 * 28 * 28), "--max-pixels", str(96 * 28 * 28)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``samples/talking.mp4``, or a generated clip with video and audio when the sample is missing."""
    if SAMPLE.is_file():
        return SAMPLE
    from tests.helpers.media_factory import AudioTrack, VideoSpec, write_media

    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    return write_media(path, VideoSpec(width=320, height=240, fps=10, seconds=4), [AudioTrack(seconds=4)])


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def profiled(tiny_cache: Path, clip: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("profile-out") / "run"
    result = invoke(
        [
            "profile", str(clip), "What is said?", "--model", "tiny", "--device", "cpu",
            "--preset", "45", "--retention", "0.35", "--repeats", str(REPEATS), "--max-new-tokens", "8",
            "--json", "--out", str(out), *MEDIA_ARGS,
        ]
    )
    assert result.exit_code == 0, result.stderr
    return SimpleNamespace(payload=json.loads(result.stdout), out=out, result=result)


def column(payload: dict, key: str) -> dict:
    return next(c for c in payload["settings"] if c["key"] == key)


# ----------------------------------------------------------------------------- the JSON object
def test_json_has_every_figure_for_every_setting(profiled) -> None:
    payload = profiled.payload
    assert payload["kind"] == "profile" and payload["repeats"] == REPEATS and payload["reference"] == "full"
    assert [c["key"] for c in payload["settings"]] == ["full", "preset-45", "retention-0.35"]
    assert [c["label"] for c in payload["settings"]] == ["full", "45 %", "35 %"]
    for c in payload["settings"]:
        for name in FIGURES:
            figure = c["figures"][name]
            assert len(figure["values"]) == REPEATS
            assert all(math.isfinite(v) and v >= 0 for v in figure["values"])
            assert figure["min"] <= figure["median"] <= figure["max"]
            assert figure["median"] == pytest.approx(statistics.median(figure["values"]))
        f = {name: c["figures"][name]["median"] for name in FIGURES}
        assert 0 < f["prefill_seconds"] <= f["ttft_seconds"] <= f["e2e_seconds"]
        assert f["peak_memory_bytes"] > 0 and 1 <= f["generated_tokens"] <= 8
        for modality in ("video", "audio", "text", "audio_video", "total"):
            assert set(c["tokens"][modality]) >= {"before", "after", "dropped", "retention"}
        assert c["prefill_length"] == c["tokens"]["total"]["after"]
        assert c["prompt_length"] == c["tokens"]["total"]["before"]
        assert set(c["stages"]) >= {"audio_encoder", "vision_encoder", "prefill", "decode"}
        flops = c["prefill_flops"]
        assert flops["tokens"] == c["prefill_length"]
        assert flops["total"] == flops["linear"] + flops["attention"] + flops["lm_head"] > 0
        assert set(c["answer"]) >= {"text", "token_ids", "tokens", "stop_reason", "stable_across_runs"}
        assert c["answer"]["stable_across_runs"] is True
    assert column(payload, "preset-45")["stages"]["keep_plan"]["median"] > 0
    assert payload["memory_kind"] == "cpu_rss"  # one vocabulary of memory kinds with ask
    assert payload["representative"] is False and any("CPU" in n for n in payload["notes"])
    assert set(payload["shared"]) == {"load_model_seconds", "media_decode_seconds", "preprocess_seconds"}


def test_token_counts_and_retention_match_the_settings(profiled) -> None:
    """Measured tokens per modality against what each setting's ratios allow.

    The method's guarantees: audio keeps ``round((1 - rho_audio) N_a)`` dominant tokens plus
    ``round(anchor_ratio N_a)`` anchors; each video group drops a ratio inside
    ``[rho_min, rho_max]`` (budget-normalised towards ``rho_video``; the clamp can leave the budget
    missed when the clip has few time groups), applied per frame as ``floor(tpf (1 - ratio))``.
    """
    payload = profiled.payload
    full = column(payload, "full")
    n_audio, n_video = full["tokens"]["audio"]["before"], full["tokens"]["video"]["before"]
    assert n_audio > 0 and n_video > 0, "the clip must have both audio and video tokens"
    for modality in ("video", "audio", "text"):
        assert full["tokens"][modality]["after"] == full["tokens"][modality]["before"]
    assert full["retention"]["audio_video"] == 1.0
    media = payload["media"]
    tokens_per_frame = (media["frame_height"] // 28) * (media["frame_width"] // 28)
    frames = n_video // tokens_per_frame
    assert frames * tokens_per_frame == n_video
    for c in payload["settings"][1:]:
        tokens, config = c["tokens"], c["compression"]
        for modality in ("video", "audio", "text"):
            assert tokens[modality]["before"] == full["tokens"][modality]["before"]
        assert tokens["text"]["after"] == tokens["text"]["before"]
        av_after = tokens["audio"]["after"] + tokens["video"]["after"]
        assert tokens["audio_video"]["after"] == av_after
        assert c["retention"]["audio_video"] == pytest.approx(av_after / (n_audio + n_video))
        assert c["retention"]["audio"] == pytest.approx(tokens["audio"]["after"] / n_audio)
        assert c["retention"]["video"] == pytest.approx(tokens["video"]["after"] / n_video)
        anchors = config["anchor_ratio"] if config["merge_g"] > 0 else 0.0
        audio_expected = min(1.0, 1.0 - config["rho_audio"] + anchors) * n_audio
        assert abs(tokens["audio"]["after"] - audio_expected) <= 2
        low = frames * math.floor(tokens_per_frame * (1.0 - config["rho_max"]))
        high = frames * math.floor(tokens_per_frame * (1.0 - config["rho_min"]))
        assert low <= tokens["video"]["after"] <= high
        # The nominal retention is what the ratios give at this clip's mix without rounding or clamps.
        video_keep = 1.0 - config["rho_video"]
        assert c["retention"]["nominal"] == pytest.approx(
            (min(1.0, 1.0 - config["rho_audio"] + anchors) * n_audio + video_keep * n_video) / (n_audio + n_video)
        )
        for group in c["groups"]:  # when the runner reports its time groups: each keeps what its ratio says
            ratio = group["video_drop_ratio"]
            if group["guided"]:
                assert config["rho_min"] - 1e-6 <= ratio <= config["rho_max"] + 1e-6
            elif group["video_tokens"]:
                assert ratio == pytest.approx(config["rho_video"])
            group_frames = group["video_tokens"] // tokens_per_frame
            assert group["video_kept"] == group_frames * math.floor(tokens_per_frame * (1.0 - ratio))
            assert group["audio_kept"] <= group["audio_tokens"]
        if c["groups"]:
            assert sum(g["video_kept"] for g in c["groups"]) == tokens["video"]["after"]
            assert sum(g["audio_kept"] for g in c["groups"]) == tokens["audio"]["after"]
    preset = column(payload, "preset-45")
    assert (preset["compression"]["rho_audio"], preset["compression"]["rho_video"]) == (0.3, 0.6)
    assert preset["retention"]["target"] == 0.45
    # --retention is solved for this clip's own audio/video mix: the nominal retention meets it.
    derived = column(payload, "retention-0.35")
    assert derived["retention"]["target"] == 0.35
    assert derived["retention"]["nominal"] == pytest.approx(0.35, abs=1e-3)
    assert derived["prefill_length"] < preset["prefill_length"] < full["prefill_length"]


def test_ratios_are_computed_from_the_medians(profiled) -> None:
    payload = profiled.payload
    full = column(payload, "full")
    assert full["vs_full"] is None
    med = lambda c, name: c["figures"][name]["median"]  # noqa: E731
    for c in payload["settings"][1:]:
        vs = c["vs_full"]
        assert vs["reference"] == "full"
        assert vs["speedup_prefill"] == pytest.approx(med(full, "prefill_seconds") / med(c, "prefill_seconds"))
        assert vs["speedup_ttft"] == pytest.approx(med(full, "ttft_seconds") / med(c, "ttft_seconds"))
        assert vs["speedup_e2e"] == pytest.approx(med(full, "e2e_seconds") / med(c, "e2e_seconds"))
        saved = med(full, "peak_memory_bytes") - med(c, "peak_memory_bytes")
        assert vs["memory_saved_bytes"] == pytest.approx(saved)
        assert vs["memory_saved_fraction"] == pytest.approx(saved / med(full, "peak_memory_bytes"))
        assert vs["flops_ratio"] == pytest.approx(c["prefill_flops"]["total"] / full["prefill_flops"]["total"])
        assert 0 < vs["flops_ratio"] < 1
        assert vs["prefill_tokens_ratio"] == pytest.approx(c["prefill_length"] / full["prefill_length"])


def test_answers_are_compared_token_by_token_and_by_character(profiled) -> None:
    payload = profiled.payload
    full = column(payload, "full")
    for c in payload["settings"][1:]:
        vs = c["vs_full"]
        ids, ref_ids = c["answer"]["token_ids"], full["answer"]["token_ids"]
        assert vs["answer_identical"] is (ids == ref_ids)
        if ids == ref_ids:
            assert vs["first_differing_token"] is None
        else:
            index = vs["first_differing_token"]
            assert ids[:index] == ref_ids[:index]
            assert index == min(len(ids), len(ref_ids)) or ids[index] != ref_ids[index]
        text, ref_text = c["answer"]["text"], full["answer"]["text"]
        assert vs["first_differing_char"] == first_difference(text, ref_text)
        assert c["answer"]["tokens"] == len(ids)


# ----------------------------------------------------------------------------- --out
def test_out_writes_metrics_config_and_a_readable_png(profiled) -> None:
    out = profiled.out
    assert json.loads((out / "metrics.json").read_text()) == profiled.payload
    config = json.loads((out / "config.json").read_text())
    assert config == profiled.payload["config"]
    assert config["repeats"] == REPEATS and config["model"]["requested"]["model"] == "tiny"
    assert [s["key"] for s in config["settings"]] == ["full", "preset-45", "retention-0.35"]
    assert config["settings"][2]["compression"]["rho_audio"] > 0  # resolved, not left open
    assert {"torch", "transformers", "omnizip"} <= set(config["versions"])
    assert config["device"]["device"] == "cpu" and config["media_options"]["max_frames"] == 8

    png = out / "timings.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 200_000
    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
        assert 800 <= width <= 2000 and 400 <= height <= 1200
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 8, "the chart looks blank"
        # The bars use the stage colours: prefill green and decode blue must be there.
        present = {rgb for _, rgb in colours}
        assert (0, 158, 115) in present and (0, 114, 178) in present


# ----------------------------------------------------------------------------- the report and errors
def test_report_goes_to_stderr_and_says_cpu_figures_are_not_representative(tiny_cache: Path, clip: Path) -> None:
    result = invoke(
        ["profile", str(clip), "--question", "What is said?", "-m", "tiny", "--device", "cpu", "--preset", "35",
         "--repeats", "1", "--max-new-tokens", "4", *MEDIA_ARGS]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    for text in ("full", "35 %", "time to first token", "speedup", "answer vs full", "not representative"):
        assert text in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--repeats", "0"], "repeats"),
        (["--retention", "1.5"], "retention"),
        (["--preset", "45", "--preset", "45"], "twice"),
        (["What is said?", "--question", "Who speaks?"], "question"),
    ],
)
def test_bad_options_are_usage_errors(clip: Path, args: list[str], message: str) -> None:
    result = invoke(["profile", str(clip), "-m", "tiny", *args])
    assert result.exit_code == 2
    assert message in result.stderr


# ----------------------------------------------------------------------------- pure helpers
def test_default_settings_are_full_45_and_35() -> None:
    settings = build_settings(None, None)
    assert [s.key for s in settings] == ["full", "preset-45", "preset-35"]
    assert [s.key for s in build_settings(["35"], [0.5], include_full=False)] == ["preset-35", "retention-0.5"]


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert first_difference("abc", "abd") == 2
    assert first_difference("", "") is None


def test_flops_formula_matches_the_7b_figures_in_the_performance_notes() -> None:
    """Qwen2.5-Omni-7B's LLM: about 13.05 GFLOP per token plus 2.0e5 * N^2 (shared/docs/performance.md)."""
    config = SimpleNamespace(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                             intermediate_size=18944, vocab_size=152064, head_dim=None)
    one = prefill_flops(config, 1)
    assert one["linear"] / 1e9 == pytest.approx(13.05, abs=0.01)
    n = 8280
    big = prefill_flops(config, n)
    assert big["attention"] / n**2 == pytest.approx(2.0e5, rel=0.01)
    assert big["lm_head"] == 2 * 3584 * 152064
    assert big["total"] == big["linear"] + big["attention"] + big["lm_head"]


# ----------------------------------------------------------------------------- issue 29: --out, escapes
def test_out_refuses_a_folder_of_the_users_files_before_any_work(clip: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": 1}')
    result = invoke(["profile", str(clip), "-m", "tiny", "--out", str(mine)])
    assert result.exit_code == 2
    assert "not an omnizip results folder" in result.stderr
    assert (mine / "metrics.json").read_text() == '{"mine": 1}'


def test_report_shows_the_file_model_and_answer_escaped_and_not_as_markup(profiled) -> None:
    import copy
    import io

    from rich.console import Console

    from omnizip_cli.report.profile_view import print_profile_report

    payload = copy.deepcopy(profiled.payload)
    payload["media"]["path"] = "/videos/[bold]clip\x1b[2J.mp4"
    payload["model"]["model"] = "/models/\x1b]0;title\x07omni"
    for column in payload["settings"]:
        column["answer"]["text"] = "[/]\x1b[31mred"
    buffer = io.StringIO()
    print_profile_report(Console(file=buffer, width=200, force_terminal=True, color_system=None), payload)
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "[bold]clip\\x1b[2J.mp4" in text and "/models/\\x1b]0;title\\x07omni" in text
    assert "[/]\\x1b[31mred" in text
