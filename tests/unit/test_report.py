"""The ``ask`` report and JSON payload, from hand-made figures (no model needed).

The "screenshot" tests render the report on Rich's recording console as a terminal would show it,
and check the tables' content row by row.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from omnizip_cli.compression import PRESETS
from omnizip_cli.generation import collect
from omnizip_cli.measure import STAGES, StageRecord
from omnizip_cli.report import SCHEMA_VERSION, make_console
from omnizip_cli.report.ask_view import print_report
from omnizip_cli.report.payload import answer_payload, compression_label
from omnizip_cli.report.units import format_bytes, format_seconds
from tests.helpers.fakes import MB, FakeLoaded, FakeSession, make_media

CONFIG = {"media_path": "samples/talking.mp4", "system": None, "model": {"model": "tiny"},
          "media": {"max_frames": 8}, "generation": {"max_new_tokens": 11, "stream": True}}


def payload(compressed: bool = True, skip: tuple[str, ...] = (), memory_kind: str = "cpu_rss", **kwargs) -> dict:
    session = FakeSession(compressed=compressed, skip=skip, memory_kind=memory_kind,
                          loaded=kwargs.pop("loaded", FakeLoaded()), media_summary=kwargs.pop("media", make_media()))
    stats = collect(session.ask("What is said?"))
    session.timer.stages["load_model"] = StageRecord(seconds=2.5, peak_memory_bytes=900 * MB, memory_kind=memory_kind)
    return answer_payload(session, stats, question="What is said?", config=CONFIG)


def render(data: dict, *, terminal: bool = True, width: int = 100) -> str:
    console = Console(record=True, width=width, force_terminal=terminal, file=io.StringIO(), highlight=False)
    print_report(console, data)
    return console.export_text()


def row(text: str, label: str) -> list[str]:
    """The cells of the first report line starting with ``label`` (box characters dropped)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"\s{2,}|│|┃", line.strip(" │┃")) if c.strip()]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


# ----------------------------------------------------------------------------- payload
def test_payload_is_strict_json_with_the_schema_version() -> None:
    data = payload()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION == 2
    assert set(data) == {"schema_version", "answer", "question", "random_weights", "config", "model", "compression",
                         "media", "tokens", "generation", "timings", "memory", "context", "prefix_cache", "warnings"}


def test_payload_token_counts_add_up() -> None:
    tokens = payload()["tokens"]
    for name in ("video", "audio", "text", "audio_video", "total"):
        t = tokens[name]
        assert t["after"] + t["dropped"] == t["before"]
        assert t["retention"] == pytest.approx(t["after"] / t["before"])
    assert tokens["total"]["before"] == tokens["prompt"] == 864 + 160 + 37
    assert tokens["total"]["after"] == tokens["prefill"] == 378 + 120 + 37
    assert tokens["generated"] == 11


def test_payload_figures() -> None:
    data = payload()
    stages = data["timings"]["stages"]
    assert list(stages) == list(STAGES)
    assert stages["vision_encoder"] == {"ran": True, "seconds": 1.25, "peak_memory_bytes": 1200 * MB,
                                        "memory_kind": "cpu_rss", "overlapped_with_media_decode": False}
    assert data["timings"]["time_to_first_token_seconds"] == 3.5
    assert data["timings"]["total_seconds"] == 5.0
    assert data["timings"]["load_model_seconds"] == 2.5
    gen = data["generation"]
    assert gen["prompt_tokens"] == 535 and gen["prompt_tokens_per_second"] == pytest.approx(535 / 0.5)
    assert gen["prefilled_tokens"] == 535 and gen["prefix_source"] == "fresh"
    assert gen["decode_tokens"] == 10 and gen["decode_tokens_per_second"] == pytest.approx(10 / 1.5)
    assert data["memory"] == {"kind": "cpu_rss", "label": "process RSS", "definition": data["memory"]["definition"],
                              "peak_bytes": 1400 * MB}
    assert data["compression"]["enabled"] and data["compression"]["label"].startswith("OmniZip preset 45")
    assert data["config"]["compression"] == PRESETS["45"].to_dict()
    assert data["config"]["model"]["model"] == "tiny"
    assert data["config"]["media"]["max_frames"] == 8
    assert data["config"]["generation"]["max_new_tokens"] == 11
    assert data["random_weights"] is True
    assert data["question"] == data["config"]["question"] == "What is said?"


def test_stages_not_run_are_marked() -> None:
    data = payload(compressed=False, skip=("saliency", "keep_plan"))
    assert data["timings"]["stages"]["saliency"] == {"ran": False, "seconds": 0.0, "peak_memory_bytes": None,
                                                     "memory_kind": "cpu_rss", "overlapped_with_media_decode": False}
    assert data["compression"] == {"enabled": False, "label": "off", "groups": []}
    assert data["config"]["compression"] is None


def test_compression_labels() -> None:
    assert compression_label(None) == "off"
    assert compression_label(PRESETS["35"].to_dict()).startswith("OmniZip preset 35: rho_audio 0.4, rho_video 0.7")
    custom = {**PRESETS["45"].to_dict(), "rho_audio": 0.5}
    assert compression_label(custom).startswith("OmniZip custom: rho_audio 0.5")


def test_formatting() -> None:
    assert format_seconds(0.0125) == "12.5 ms"
    assert format_seconds(2.5) == "2.50 s"
    assert format_seconds(None) == "-"
    assert format_bytes(1_300_000_000) == "1.30 GB"
    assert format_bytes(875_000_000) == "875 MB"
    assert format_bytes(None) == "-"


# ----------------------------------------------------------------------------- terminal "screenshot"
def test_terminal_report_screenshot() -> None:
    text = render(payload())
    assert "note:" not in text  # the random-weights warning went to stderr before the answer, once
    # Tokens per modality: before, after, dropped, kept.
    assert row(text, "video") == ["video", "864", "378", "486", "43.8 %"]
    assert row(text, "audio") == ["audio", "160", "120", "40", "75.0 %"]
    assert row(text, "text") == ["text", "37", "37", "0", "100.0 %"]
    assert row(text, "total") [:5] == ["total", "1061", "535", "526", "50.4 %"]
    # Media.
    assert row(text, "file") == ["file", "samples/talking.mp4 (video+audio)"]
    assert row(text, "duration") == ["duration", "6.40 s"]
    assert row(text, "frames sampled") == ["frames sampled", "8 at 364x196 px, 1.25 fps"]
    assert row(text, "audio length") == ["audio length", "6.40 s (not truncated)"]
    assert row(text, "decode time") == ["decode time", "250.0 ms"]
    # Time and memory per stage (process RSS on the CPU).
    assert "peak RSS" in text and "peak RSS: high-water resident memory of the whole process" in text
    assert row(text, "media decode") == ["media decode", "250.0 ms", "600 MB"]
    assert row(text, "preprocessing") == ["preprocessing", "500.0 ms", "1.00 GB"]
    assert row(text, "audio encoder") == ["audio encoder", "750.0 ms", "1.10 GB"]
    assert row(text, "vision encoder") == ["vision encoder", "1.25 s", "1.20 GB"]
    assert row(text, "saliency") == ["saliency", "62.5 ms", "1.20 GB"]
    assert row(text, "keep plan") == ["keep plan", "125.0 ms", "1.25 GB"]
    assert row(text, "prefill") == ["prefill", "500.0 ms", "1.30 GB", "535 of 535 tokens, 1070 tokens/s"]
    assert row(text, "time to first token") == ["time to first token", "3.50 s", "from media decode, load excluded"]
    assert row(text, "decode") == ["decode", "1.50 s", "1.40 GB", "10 tokens, 6.7 tokens/s"]
    assert row(text, "model load") == ["model load", "2.50 s", "900 MB", "not in the total"]
    # Model and settings.
    assert row(text, "model") == ["model", "tiny", "(random weights: the answer is meaningless)"]
    assert row(text, "family") == ["family", "Qwen2.5-Omni"]
    assert row(text, "path") == ["path", "/cache/tiny-qwen2.5-omni-v1"]
    assert row(text, "device") == ["device", "cpu"]
    assert row(text, "dtype") == ["dtype", "float32"]
    assert row(text, "attention") == ["attention", "sdpa"]
    assert row(text, "compression") == [
        "compression", "OmniZip preset 45: rho_audio 0.3, rho_video 0.6, anchors 0.05, G 3"]
    assert row(text, "decoder") == ["decoder", "eager, stopped by max_new_tokens"]
    # mlx-lm wording.
    assert "Prompt: 535 tokens, 1070.000 tokens-per-sec (1061 before compression, 50.4 % kept)" in text
    assert "Generation: 11 tokens, 6.667 tokens-per-sec" in text
    assert "Time to first token: 3.500 s" in text
    assert "Peak memory: 1.400 GB (process RSS)" in text
    # On a terminal: box-drawn tables and colours.
    assert "─" in text


def test_terminal_report_is_coloured_and_plain_report_is_not() -> None:
    console = Console(record=True, width=100, force_terminal=True, file=io.StringIO(), color_system="standard")
    print_report(console, payload())
    assert "\x1b[" in console.export_text(styles=True)

    written = io.StringIO()
    plain = Console(record=True, width=100, force_terminal=False, file=written)
    print_report(plain, payload())
    text = written.getvalue()
    assert "\x1b[" not in text and plain.export_text(styles=True) == text
    assert not set("─━│┃┏┓┗┛") & set(text)
    assert row(text, "video") == ["video", "864", "378", "486", "43.8 %"]


def test_no_color_gives_the_plain_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    written = io.StringIO()
    console = Console(record=True, width=100, force_terminal=True, file=written)
    print_report(console, payload())
    text = written.getvalue()
    assert "\x1b[3" not in text and "\x1b[1" not in text and "─" not in text
    assert row(text, "audio") == ["audio", "160", "120", "40", "75.0 %"]


def test_report_fits_80_columns_without_wrapping_rows() -> None:
    text = render(payload(), terminal=False, width=80)
    assert row(text, "prefill") == ["prefill", "500.0 ms", "1.30 GB", "535 of 535 tokens, 1070 tokens/s"]
    assert row(text, "decode") == ["decode", "1.50 s", "1.40 GB", "10 tokens, 6.7 tokens/s"]


def test_gpu_report_labels_allocated_memory() -> None:
    data = payload(loaded=FakeLoaded(is_tiny=False, device="cuda:0", name="Qwen/Qwen2.5-Omni-7B"),
                   memory_kind="cuda_allocated")
    assert data["memory"]["kind"] == "cuda_allocated" and data["memory"]["label"] == "GPU allocated"
    text = render(data)
    assert "peak GPU alloc" in text and "Peak memory: 1.400 GB (GPU allocated)" in text
    assert "random weights" not in text
    assert row(text, "model") == ["model", "Qwen/Qwen2.5-Omni-7B"]
    assert "path" not in [line.split()[0] for line in text.splitlines() if line.strip()]


def test_stages_not_run_and_no_audio_in_the_report() -> None:
    media = make_media(kind="video", audio_codec=None, audio_seconds=0.0)
    text = render(payload(compressed=False, skip=("audio_encoder", "saliency", "keep_plan"), media=media))
    assert row(text, "audio encoder") == ["audio encoder", "-", "-", "not run"]
    assert row(text, "keep plan") == ["keep plan", "-", "-", "not run"]
    assert row(text, "audio length") == ["audio length", "none"]
    assert row(text, "compression") == ["compression", "off"]


def test_truncated_audio_and_audio_only_media() -> None:
    media = make_media(kind="audio", frames_sampled=0, frame_height=0, frame_width=0, fps_used=0.0,
                       audio_truncated=True)
    text = render(payload(media=media))
    assert row(text, "frames sampled") == ["frames sampled", "0 (no video)"]
    assert row(text, "audio length") == ["audio length", "6.40 s (truncated)"]


def test_make_console_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    console = make_console(no_color=True)
    console.print("hello")
    captured = capsys.readouterr()
    assert captured.out == "" and "hello" in captured.err
    assert console.no_color
