"""``omnizip ask`` end to end on the tiny random model and the shipped samples (in-process CLI runs).

stdout and stderr are asserted apart (click >= 8.2's runner keeps them separate; ``output`` has
both, interleaved in the order they were written).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from omnizip_cli.cli import app
from omnizip_cli.measure import STAGES
from omnizip_cli.terminal import sanitize_answer

TINY_NOTE = "--model tiny: the weights are random, so the answer is meaningless"

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TALKING = SAMPLES / "talking.mp4"
SILENT = SAMPLES / "silent.mp4"
SPEECH = SAMPLES / "speech.wav"
QUESTION = "What is said?"
NEW_TOKENS = 6
# Few, small frames keep each run around a second on 2 CPU cores.
FAST = [
    "--model", "tiny", "--device", "cpu", "--max-new-tokens", str(NEW_TOKENS),
    "--fps", "2", "--max-frames", "8", "--min-pixels", str(64 * 28 * 28), "--max-pixels", str(96 * 28 * 28),
]
WARNING_TINY = f"warning: {TINY_NOTE}"


@pytest.fixture(autouse=True)
def _plain_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited colour forcing; a wide console so no report line wraps."""
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "OMNIZIP_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture(scope="module", autouse=True)
def _reuse_the_tiny_model(tiny_model: Any) -> Any:
    """Every run but one (``test_a_real_run_loads_the_model``) reuses the session's loaded tiny model."""
    import omnizip_cli.generation.opening

    patch = pytest.MonkeyPatch()
    patch.setattr(omnizip_cli.generation.opening, "load_model", lambda spec: tiny_model)
    yield
    patch.undo()


def ask(*args: Any) -> Result:
    return CliRunner().invoke(app, ["ask", *(str(a) for a in args)], catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def json_run(tiny_model: Any) -> Result:
    """With media decoding overlapping model work (the default only from 4 cores on)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMNIZIP_OVERLAP", "1")
        return ok(ask(TALKING, QUESTION, *FAST, "--json"))


@pytest.fixture(scope="module")
def payload(json_run: Result) -> dict[str, Any]:
    return json.loads(json_run.stdout)


@pytest.fixture(scope="module")
def stream_run(tiny_model: Any) -> Result:
    return ok(ask(TALKING, QUESTION, *FAST))


# ----------------------------------------------------------------------------- --json
def test_json_is_one_object_on_stdout_and_nothing_on_stderr(json_run: Result, payload: dict[str, Any]) -> None:
    assert json_run.stderr == ""
    assert json_run.stdout.count("\n{") == 0 and json_run.stdout.startswith("{")
    assert payload["schema_version"] == 2
    assert isinstance(payload["answer"], str)
    assert payload["random_weights"] is True
    assert TINY_NOTE in payload["warnings"]


def test_json_token_counts_add_up(payload: dict[str, Any]) -> None:
    tokens = payload["tokens"]
    for name in ("video", "audio", "text", "audio_video", "total"):
        t = tokens[name]
        assert t["after"] + t["dropped"] == t["before"], name
        assert t["retention"] == pytest.approx(t["after"] / t["before"]), name
    for key in ("before", "after", "dropped"):
        assert tokens["total"][key] == sum(tokens[m][key] for m in ("video", "audio", "text"))
        assert tokens["audio_video"][key] == tokens["video"][key] + tokens["audio"][key]
    assert tokens["video"]["before"] > 0 and tokens["audio"]["before"] > 0
    assert tokens["video"]["dropped"] > 0 and tokens["audio"]["dropped"] > 0  # the default 45 % preset
    assert tokens["text"]["dropped"] == 0
    assert tokens["prompt"] == tokens["total"]["before"] == payload["generation"]["prompt_tokens_before_compression"]
    assert tokens["prefill"] == tokens["total"]["after"] == payload["generation"]["prompt_tokens"]
    assert 1 <= tokens["generated"] == payload["generation"]["generated_tokens"] <= NEW_TOKENS
    assert tokens["context_length"] == 32768


def test_json_carries_the_configuration(payload: dict[str, Any]) -> None:
    config = payload["config"]
    assert config["media_path"] == str(TALKING)
    assert config["question"] == QUESTION and config["system"] is None
    assert config["model"] == {"model": "tiny", "device": "cpu", "dtype": "auto", "attn_implementation": "sdpa",
                               "offline": False, "revision": None}
    assert config["media"]["max_frames"] == 8 and config["media"]["fps"] == 2.0 and config["media"]["use_audio"]
    assert config["compression"]["rho_audio"] == 0.3 and config["compression"]["rho_video"] == 0.6
    assert config["generation"] == {"max_new_tokens": NEW_TOKENS, "temperature": 0.0, "top_p": None, "top_k": None,
                                    "seed": None, "stop": [], "stream": False}
    assert payload["compression"]["enabled"] is True
    assert payload["compression"]["label"].startswith("OmniZip preset 45")
    model = payload["model"]
    assert (model["model"], model["device"], model["dtype"], model["attn_implementation"]) == (
        "tiny", "cpu", "float32", "sdpa")


def test_json_carries_every_figure_of_the_report(payload: dict[str, Any]) -> None:
    media = payload["media"]
    assert media["kind"] == "video+audio"
    assert media["frames_sampled"] == 8 and media["frame_width"] % 28 == 0 and media["frame_height"] % 28 == 0
    for key in ("duration_s", "fps_used", "audio_seconds", "decode_seconds"):
        assert media[key] > 0, key
    assert media["audio_truncated"] is False

    timings = payload["timings"]
    stages = timings["stages"]
    assert list(stages) == list(STAGES)
    for name in STAGES:
        if name in ("decode_warmup", "content_hash"):  # only the CUDA-graph decoder has a warm-up; the
            assert not stages[name]["ran"]  # file is hashed only with the disk cache on (off in tests)
            continue
        assert stages[name]["ran"], name
        assert stages[name]["memory_kind"] == "cpu_rss"
        assert stages[name]["peak_memory_bytes"] > 0, name
    # The audio track was encoded while the video decoded (and the decode ran beside the model load).
    assert stages["audio_encoder"]["overlapped_with_media_decode"] is True
    assert stages["saliency"]["overlapped_with_media_decode"] is True
    assert not stages["vision_encoder"]["overlapped_with_media_decode"]
    # TTFT is wall time from media decode to the first token: it covers every stage up to the prefill
    # that was waited for (not the ones that ran beside the decoding).
    up_to_prefill = sum(stages[n]["seconds"] for n in STAGES
                        if n not in ("load_model", "decode") and not stages[n]["overlapped_with_media_decode"])
    assert timings["time_to_first_token_seconds"] >= up_to_prefill * 0.99
    assert timings["total_seconds"] >= timings["time_to_first_token_seconds"]
    assert "model loading excluded" in timings["time_to_first_token_definition"]
    gen = payload["generation"]
    assert gen["decode_tokens"] == gen["generated_tokens"] - 1
    assert gen["prompt_tokens_per_second"] > 0
    assert gen["decoder"] and gen["stop_reason"] in ("eos", "max_new_tokens")
    memory = payload["memory"]
    assert memory["kind"] == "cpu_rss" and memory["label"] == "process RSS"
    assert memory["peak_bytes"] == max(s["peak_memory_bytes"] for s in stages.values() if s["ran"])


def test_sequential_opening_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch, payload: dict[str, Any]) -> None:
    """OMNIZIP_OVERLAP=0: decode, then load, then encode everything on one thread; same tokens."""
    monkeypatch.setenv("OMNIZIP_OVERLAP", "0")
    sequential = json.loads(ok(ask(TALKING, QUESTION, *FAST, "--json")).stdout)
    assert not any(stage["overlapped_with_media_decode"] for stage in sequential["timings"]["stages"].values())
    assert sequential["answer"] == payload["answer"]
    assert sequential["tokens"] == payload["tokens"]


# ----------------------------------------------------------------------------- streaming and the report
def test_stream_puts_only_the_answer_on_stdout(stream_run: Result, payload: dict[str, Any]) -> None:
    assert stream_run.stdout == sanitize_answer(payload["answer"]) + "\n"


def test_no_stream_prints_the_same_answer_once(payload: dict[str, Any]) -> None:
    result = ok(ask(TALKING, QUESTION, *FAST, "--no-stream"))
    assert result.stdout == sanitize_answer(payload["answer"]) + "\n"
    assert "Prompt:" in result.stderr


def test_warnings_come_before_the_answer_and_the_report_after(stream_run: Result, payload: dict[str, Any]) -> None:
    output = stream_run.output
    warning_at = output.index(WARNING_TINY)
    answer = sanitize_answer(payload["answer"])
    answer_at = output.index(answer) if answer else len(output)
    report_at = output.index("Tokens")
    assert warning_at < report_at and warning_at <= answer_at
    assert stream_run.stderr.startswith(WARNING_TINY)


def test_report_on_stderr_shows_every_field(stream_run: Result, payload: dict[str, Any]) -> None:
    err = stream_run.stderr
    tokens = payload["tokens"]
    lines = err.splitlines()

    def line(label: str, containing: str = "") -> str:
        found = [x for x in lines if x.split("  ")[0].strip() == label and containing in x]
        assert found, f"no {label!r} line in:\n{err}"
        return " ".join(found[0].split())

    for name in ("video", "audio", "text", "total"):
        t = tokens[name]
        assert line(name).startswith(f"{name} {t['before']} {t['after']} {t['dropped']} {t['retention'] * 100:.1f} %")
    assert line("file") == f"file {TALKING} (video+audio)"
    media = payload["media"]
    assert line("duration").startswith("duration ")
    assert line("frames sampled") == (
        f"frames sampled 8 at {media['frame_width']}x{media['frame_height']} px, {media['fps_used']:.2f} fps")
    assert line("audio length").endswith("s (not truncated)")
    assert line("decode time").startswith("decode time ")
    for label in ("media decode", "preprocessing", "audio encoder", "vision encoder", "saliency", "keep plan",
                  "prefill", "decode", "model load"):
        assert not line(label).endswith("not run"), label
        assert " µs " in line(label) or " ms " in line(label) or " s " in line(label), label
        assert " MB" in line(label) or " GB" in line(label), label
    assert line("total", "load excluded").endswith("to the last token, load excluded")
    assert "tokens/s" in line("prefill") and "tokens/s" in line("decode")
    assert line("time to first token").endswith("from media decode, load excluded")
    assert "peak RSS: high-water resident memory of the whole process" in err
    assert line("model") == "model tiny (random weights: the answer is meaningless)"
    assert line("family") == "family Qwen2.5-Omni"
    assert line("path").startswith("path ") and line("path").endswith("tiny-qwen2.5-omni-v1")
    assert line("device") == "device cpu"
    assert line("dtype") == "dtype float32"
    assert line("attention") == "attention sdpa"
    assert line("compression").startswith("compression OmniZip preset 45: rho_audio 0.3, rho_video 0.6")
    assert line("decoder").startswith("decoder eager")
    assert f"Prompt: {tokens['prefill']} tokens, " in err and f"({tokens['prompt']} before compression" in err
    assert f"Generation: {tokens['generated']} tokens, " in err
    assert "Time to first token: " in err
    assert "Peak memory: " in err and "GB (process RSS)" in err
    # Not a terminal: plain text, no colours and no box drawing.
    assert "\x1b[" not in err and "─" not in err


def test_quiet_keeps_the_answer_and_warnings_only(payload: dict[str, Any]) -> None:
    result = ok(ask(TALKING, QUESTION, *FAST, "-q"))
    assert result.stdout == sanitize_answer(payload["answer"]) + "\n"
    lines = result.stderr.splitlines()
    assert WARNING_TINY in lines and all(x.startswith("warning: ") for x in lines)


# ----------------------------------------------------------------------------- other inputs and settings
def test_no_compress_keeps_every_token(tiny_model: Any) -> None:
    data = json.loads(ok(ask(TALKING, QUESTION, *FAST, "--json", "--no-compress")).stdout)
    for name in ("video", "audio", "text", "total"):
        assert data["tokens"][name]["dropped"] == 0 and data["tokens"][name]["retention"] == 1.0
    assert data["compression"] == {"enabled": False, "label": "off", "groups": []}
    assert data["config"]["compression"] is None
    assert not data["timings"]["stages"]["keep_plan"]["ran"] and not data["timings"]["stages"]["saliency"]["ran"]


def test_retention_option_reaches_the_payload(tiny_model: Any) -> None:
    data = json.loads(ok(ask(TALKING, QUESTION, *FAST, "--json", "--retention", "0.35")).stdout)
    assert data["compression"]["label"].startswith("OmniZip custom")
    from omnizip_cli.compression import config_for_retention

    tokens = data["tokens"]
    solved = config_for_retention(0.35, tokens["audio"]["before"], tokens["video"]["before"])
    assert data["config"]["compression"]["rho_video"] == pytest.approx(solved.rho_video)
    assert data["config"]["compression"]["rho_audio"] == pytest.approx(solved.rho_audio)
    assert tokens["audio_video"]["dropped"] > 0


def test_silent_video_has_no_audio_tokens(tiny_model: Any) -> None:
    result = ok(ask(SILENT, QUESTION, *FAST))
    assert "note:" not in result.stdout and "Tokens" not in result.stdout
    data = json.loads(ok(ask(SILENT, QUESTION, *FAST, "--json")).stdout)
    assert data["media"]["kind"] == "video" and data["media"]["audio_seconds"] == 0
    assert data["tokens"]["audio"]["before"] == 0 and data["tokens"]["video"]["before"] > 0
    assert not data["timings"]["stages"]["audio_encoder"]["ran"]
    assert "audio encoder" in result.stderr and "not run" in result.stderr
    assert [" ".join(x.split()) for x in result.stderr.splitlines() if x.startswith("audio length")] == [
        "audio length none"]


def test_audio_only_file(tiny_model: Any) -> None:
    data = json.loads(ok(ask(SPEECH, QUESTION, *FAST, "--json")).stdout)
    assert data["media"]["kind"] == "audio" and data["media"]["frames_sampled"] == 0
    assert data["tokens"]["video"]["before"] == 0 and data["tokens"]["audio"]["before"] > 0
    assert data["tokens"]["audio"]["dropped"] > 0
    assert not data["timings"]["stages"]["vision_encoder"]["ran"]


# ----------------------------------------------------------------------------- context-length warning
def test_prompt_longer_than_the_context_is_refused_with_the_cause(monkeypatch: pytest.MonkeyPatch,
                                                                    tiny_model: Any) -> None:
    from omnizip_cli.models import LoadedModel

    monkeypatch.setattr(LoadedModel, "context_length", property(lambda self: 64))
    result = ask(TALKING, QUESTION, *FAST, "--no-compress")
    assert result.exit_code == 1 and result.stdout == ""
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: the prompt has") and "--max-prompt-tokens 58" in error  # 64 - 6 new tokens
    assert "drop --no-compress" in error


def test_a_prompt_over_budget_is_compressed_to_fit(tiny_model: Any) -> None:
    data = json.loads(ok(ask(TALKING, QUESTION, *FAST, "--json", "--max-prompt-tokens", "300")).stdout)
    assert data["tokens"]["prefill"] <= 300 < data["tokens"]["prompt"]
    context = data["context"]
    assert context["max_prompt_tokens"] == 300 and context["setting_changed"]
    assert "chosen to fit" in context["reason"] and any("chosen to fit" in w for w in data["warnings"])
    assert context["frames_fit_uncompressed"] < context["frames_sampled"] == data["media"]["frames_sampled"]


# ----------------------------------------------------------------------------- progress (terminal only)
class _Spy:
    """Records the spinner messages ``run_ask`` shows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
        import omnizip_cli.cli.progress
        import omnizip_cli.report

        self.messages: list[str] = []
        self.file = io.StringIO()
        console = Console(file=self.file, force_terminal=terminal, width=100)
        monkeypatch.setattr(omnizip_cli.report, "make_console", lambda no_color=False: console)
        original = omnizip_cli.cli.progress.Spinner.update
        spy = self

        def update(progress: Any, message: str) -> None:
            if progress._status is not None:
                spy.messages.append(message)
            original(progress, message)

        monkeypatch.setattr(omnizip_cli.cli.progress.Spinner, "update", update)


def test_progress_on_a_terminal_names_the_stages(monkeypatch: pytest.MonkeyPatch, payload: dict[str, Any]) -> None:
    monkeypatch.setenv("OMNIZIP_OVERLAP", "1")
    spy = _Spy(monkeypatch, terminal=True)
    result = ok(ask(TALKING, QUESTION, *FAST))
    assert result.stdout == sanitize_answer(payload["answer"]) + "\n"  # the spinner never touches stdout
    joined = "\n".join(spy.messages)
    for expected in ("decoding", "loading tiny while decoding", "preprocessing", "encoding video",
                     "planning compression", "prefilling"):
        assert expected in joined, joined
    assert "encoding audio" not in joined  # encoded on a worker while the video decoded: no spinner line
    assert "Tokens" in spy.file.getvalue()  # the report went to the (terminal) console


@pytest.mark.parametrize("flag", ["--json", "-q"])
def test_no_progress_with_json_or_quiet(monkeypatch: pytest.MonkeyPatch, flag: str, tiny_model: Any) -> None:
    spy = _Spy(monkeypatch, terminal=True)
    ok(ask(TALKING, QUESTION, *FAST, flag))
    assert spy.messages == []
    if flag == "--json":
        assert spy.file.getvalue() == ""


def test_no_progress_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    spy = _Spy(monkeypatch, terminal=False)
    ok(ask(SPEECH, QUESTION, *FAST))
    assert spy.messages == []


def test_retention_is_solved_for_the_clips_own_token_mix(tiny_model: Any) -> None:
    from omnizip_cli.compression import config_for_retention

    payload = json.loads(ok(ask(SPEECH, QUESTION, *FAST, "--retention", "0.5", "--json")).stdout)
    used = payload["config"]["compression"]
    paper_mix = config_for_retention(0.5)  # 25 audio : 144 video tokens per second
    assert (used["rho_audio"], used["rho_video"]) != (paper_mix.rho_audio, paper_mix.rho_video)
    # audio only: the whole budget is audio, so the target is met to rounding
    assert payload["tokens"]["audio_video"]["retention"] == pytest.approx(0.5, abs=0.02)


def test_report_says_which_encoder_attention_ran(json_run: Result) -> None:
    model = json.loads(json_run.stdout)["model"]
    assert model["fast_encoder_attention"] is False  # CPU: the stock path
    assert "cpu" in model["encoder_attention_note"]
    err = ok(ask(TALKING, QUESTION, *FAST)).stderr
    assert "encoders" in err and "stock per-window attention" in err
