"""The ``ask`` report and JSON payload, from hand-made figures (no model needed).

The "screenshot" tests render the report on Rich's recording console as a terminal would show it,
and check the tables' content row by row.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from omnizip_cli.compression import PRESETS
from omnizip_cli.decoding import GenerationResult
from omnizip_cli.loading import LoadedModel
from omnizip_cli.media import MediaOptions, MediaSummary
from omnizip_cli.report import (
    SCHEMA_VERSION,
    TINY_NOTE,
    build_payload,
    compression_label,
    format_bytes,
    format_seconds,
    make_console,
    print_report,
)
from omnizip_cli.runner import RunResult
from omnizip_cli.stats import STAGES, ModalityCount, StageRecord, StageTimer, TokenCounts

MB = 1_000_000
STAGE_FIGURES = {  # name: (seconds, peak RSS bytes)
    "load_model": (2.5, 900 * MB),
    "media_decode": (0.25, 600 * MB),
    "preprocess": (0.5, 1000 * MB),
    "audio_encoder": (0.75, 1100 * MB),
    "vision_encoder": (1.25, 1200 * MB),
    "saliency": (0.0625, 1200 * MB),
    "keep_plan": (0.125, 1250 * MB),
    "prefill": (0.5, 1300 * MB),
    "decode": (1.5, 1400 * MB),
}


def make_media(**changes) -> MediaSummary:
    fields = dict(
        path="samples/talking.mp4", container="mov,mp4", kind="video+audio", duration_s=6.4, video_codec="h264",
        audio_codec="aac", frames_sampled=8, frame_height=196, frame_width=364, fps_used=1.25, rotation=0,
        source_width=640, source_height=360, audio_seconds=6.4, audio_truncated=False, audio_sample_rate_in=44100,
        audio_channels_in=1, decode_seconds=0.25,
    )
    fields.update(changes)
    return MediaSummary(**fields)


def make_loaded(tiny: bool = True, device: str = "cpu") -> LoadedModel:
    return LoadedModel(
        model=None, processor=None, name="tiny" if tiny else "Qwen/Qwen2.5-Omni-7B",
        path="/cache/tiny-qwen2.5-omni-v1" if tiny else "Qwen/Qwen2.5-Omni-7B", is_tiny=tiny, device=device,
        dtype="float32", attn_implementation="sdpa",
    )


def make_result(compressed: bool = True, skip: tuple[str, ...] = (), memory_kind: str = "cpu_rss") -> RunResult:
    timer = StageTimer()
    for name, (seconds, peak) in STAGE_FIGURES.items():
        if name not in skip:
            timer.stages[name] = StageRecord(seconds=seconds, peak_memory_bytes=peak, memory_kind=memory_kind)
    if compressed:
        tokens = TokenCounts(video=ModalityCount(864, 378), audio=ModalityCount(160, 120), text=ModalityCount(37, 37))
    else:
        tokens = TokenCounts(video=ModalityCount(864, 864), audio=ModalityCount(160, 160), text=ModalityCount(37, 37))
    generation = GenerationResult(
        token_ids=list(range(11)), prefill_logits=torch.zeros(4), prefill_seconds=0.5, first_token_seconds=0.5,
        decode_seconds=1.5, stop_reason="max_new_tokens", cache_length=tokens.total.after,
    )
    return RunResult(
        answer="A man says hello.", token_ids=generation.token_ids, tokens=tokens,
        compression=PRESETS["45"].to_dict() if compressed else None, timer=timer, generation=generation,
        prompt_length=tokens.total.before, prefill_length=tokens.total.after, context_length=32768,
        warnings=["--model tiny: the weights are random, so the answer is meaningless"],
    )


def make_settings() -> SimpleNamespace:
    from omnizip_cli.decoding import GenerationOptions
    from omnizip_cli.loading import ModelSpec

    return SimpleNamespace(
        media_path=Path("samples/talking.mp4"), question="What is said?", system=None,
        model=ModelSpec(model="tiny"), media=MediaOptions(max_frames=8),
        generation=GenerationOptions(max_new_tokens=11),
        stream=True,
    )


def payload(**kwargs) -> dict:
    loaded = kwargs.pop("loaded", make_loaded())
    media = kwargs.pop("media", make_media())
    result = make_result(**kwargs)
    return build_payload(result, loaded=loaded, media=media, settings=make_settings(),
                         time_to_first_token_seconds=3.5, total_seconds=5.0)


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
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION == 1
    assert set(data) == {"schema_version", "answer", "random_weights", "config", "model", "compression", "media",
                         "tokens", "generation", "timings", "memory", "warnings"}


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
                                        "memory_kind": "cpu_rss"}
    assert data["timings"]["time_to_first_token_seconds"] == 3.5
    assert data["timings"]["total_seconds"] == 5.0
    assert data["timings"]["load_model_seconds"] == 2.5
    gen = data["generation"]
    assert gen["prompt_tokens"] == 535 and gen["prompt_tokens_per_second"] == pytest.approx(535 / 0.5)
    assert gen["decode_tokens"] == 10 and gen["decode_tokens_per_second"] == pytest.approx(10 / 1.5)
    assert data["memory"] == {"kind": "cpu_rss", "label": "process RSS", "definition": data["memory"]["definition"],
                              "peak_bytes": 1400 * MB}
    assert data["compression"]["enabled"] and data["compression"]["label"].startswith("OmniZip preset 45")
    assert data["config"]["compression"] == PRESETS["45"].to_dict()
    assert data["config"]["model"]["model"] == "tiny"
    assert data["config"]["media"]["max_frames"] == 8
    assert data["config"]["generation"]["max_new_tokens"] == 11
    assert data["random_weights"] is True


def test_payload_without_wall_clock_sums_the_stages() -> None:
    result = make_result()
    data = build_payload(result, loaded=make_loaded(), media=make_media(), settings=make_settings())
    before_prefill = sum(STAGE_FIGURES[n][0] for n in STAGES if n in STAGE_FIGURES and n not in ("load_model", "prefill", "decode"))
    assert data["timings"]["time_to_first_token_seconds"] == pytest.approx(before_prefill + 0.5)
    assert data["timings"]["total_seconds"] == pytest.approx(before_prefill + 0.5 + 1.5)


def test_stages_not_run_are_marked() -> None:
    data = payload(compressed=False, skip=("saliency", "keep_plan"))
    assert data["timings"]["stages"]["saliency"] == {"ran": False, "seconds": 0.0, "peak_memory_bytes": None,
                                                     "memory_kind": "cpu_rss"}
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
    assert text.splitlines()[0] == f"note: {TINY_NOTE}"
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
    assert "peak RSS" in text and "peak RSS: process high-water resident memory at the end of each stage" in text
    assert row(text, "media decode") == ["media decode", "250.0 ms", "600 MB"]
    assert row(text, "preprocessing") == ["preprocessing", "500.0 ms", "1.00 GB"]
    assert row(text, "audio encoder") == ["audio encoder", "750.0 ms", "1.10 GB"]
    assert row(text, "vision encoder") == ["vision encoder", "1.25 s", "1.20 GB"]
    assert row(text, "saliency") == ["saliency", "62.5 ms", "1.20 GB"]
    assert row(text, "keep plan") == ["keep plan", "125.0 ms", "1.25 GB"]
    assert row(text, "prefill") == ["prefill", "500.0 ms", "1.30 GB", "535 tokens, 1070 tokens/s"]
    assert row(text, "time to first token") == ["time to first token", "3.50 s", "from media decode, load excluded"]
    assert row(text, "decode") == ["decode", "1.50 s", "1.40 GB", "10 tokens, 6.7 tokens/s"]
    assert row(text, "model load") == ["model load", "2.50 s", "900 MB", "not in the total"]
    # Model and settings.
    assert row(text, "model") == ["model", "tiny", "(random weights)"]
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
    assert row(text, "prefill") == ["prefill", "500.0 ms", "1.30 GB", "535 tokens, 1070 tokens/s"]
    assert row(text, "decode") == ["decode", "1.50 s", "1.40 GB", "10 tokens, 6.7 tokens/s"]


def test_gpu_report_labels_allocated_memory() -> None:
    data = payload(loaded=make_loaded(tiny=False, device="cuda:0"), memory_kind="cuda_allocated")
    assert data["memory"]["kind"] == "cuda_allocated" and data["memory"]["label"] == "GPU allocated"
    text = render(data)
    assert "peak GPU alloc" in text and "Peak memory: 1.400 GB (GPU allocated)" in text
    assert TINY_NOTE not in text
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
