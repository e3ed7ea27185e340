"""Every way ``omnizip ask`` can fail: exit code 1 (runtime), 2 (usage) or 130 (Ctrl-C), one line.

A failure prints exactly one line, ``error: ...``, last on stderr and nothing on stdout (warnings
printed before the failure, e.g. the tiny model's, may precede it); ``--debug`` or
``OMNIZIP_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from omnizip_cli.cli import app
from omnizip_cli.errors import MediaError

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TALKING = SAMPLES / "talking.mp4"
SPEECH = SAMPLES / "speech.wav"
FAST = [
    "--model", "tiny", "--device", "cpu", "--max-new-tokens", "4",
    "--fps", "2", "--max-frames", "4", "--min-pixels", str(64 * 28 * 28), "--max-pixels", str(64 * 28 * 28),
]
OOM_HINT = "lower --max-pixels, --max-frames or --fps, or compress harder"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNIZIP_DEBUG", raising=False)


def ask(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(app, ["ask", *(str(a) for a in args)])


def one_line_error(result: Result, code: int, *fragments: str) -> str:
    """Assert the exit code, an empty stdout and a single ``error:`` line holding ``fragments``.

    The error line is the last line of stderr; any line before it is a one-line ``warning:``.
    """
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines, "nothing on stderr"
    line = lines[-1]
    assert line.startswith("error: "), line
    assert all(x.startswith("warning: ") for x in lines[:-1]), result.stderr
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert "Traceback" not in result.stderr
    return line


# ----------------------------------------------------------------------------- media (exit 1)
def test_missing_file(tmp_path: Path) -> None:
    one_line_error(ask(tmp_path / "nope.mp4", "q", *FAST), 1, "no such file", "nope.mp4")


def test_directory(tmp_path: Path) -> None:
    one_line_error(ask(tmp_path, "q", *FAST), 1, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    one_line_error(ask(path, "q", *FAST), 1, "empty")


def test_non_media_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"not": "a video", "values": list(range(200))}))
    one_line_error(ask(path, "q", *FAST), 1, "data.json", "not a media file")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a video\n" * 20)
    one_line_error(ask(path, "q", *FAST), 1, "notes.txt")


def test_random_bytes_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(os.urandom(64 * 1024))
    one_line_error(ask(path, "q", *FAST), 1, "garbage.mp4")


def test_truncated_video(tmp_path: Path) -> None:
    path = tmp_path / "truncated.mp4"
    path.write_bytes(TALKING.read_bytes()[:4096])
    one_line_error(ask(path, "q", *FAST), 1, "truncated.mp4")


def test_audio_only_file_with_no_audio(tmp_path: Path) -> None:
    one_line_error(ask(SPEECH, "q", *FAST, "--no-audio"), 1, "no video track", "Hint: drop --no-audio")


def test_media_is_checked_before_the_model(tmp_path: Path) -> None:
    one_line_error(ask(tmp_path / "nope.mp4", "q", "--model", str(tmp_path / "no-model")), 1, "no such file")


# ----------------------------------------------------------------------------- model (exit 1)
def test_model_folder_missing(tmp_path: Path) -> None:
    one_line_error(ask(TALKING, "q", *FAST, "--model", tmp_path / "no-model"), 1, "no-model", "does not exist")


def test_model_folder_not_qwen_omni(tmp_path: Path) -> None:
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    one_line_error(ask(TALKING, "q", *FAST, "--model", folder), 1, "not a supported checkpoint", "'llama'")


def test_model_folder_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    one_line_error(ask(TALKING, "q", *FAST, "--model", folder), 1, "no config.json")


def test_unknown_hub_id_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # --offline sets these; register them so they are restored after the test.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    one_line_error(ask(TALKING, "q", *FAST, "--model", "nobody/no-such-model", "--offline"), 1,
                   "cannot load nobody/no-such-model", "offline")


# ----------------------------------------------------------------------------- usage (exit 2)
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--rho-audio", "1.5"], "--rho-audio must be in [0, 1), got 1.5"),
        (["--rho-video", "-0.1"], "--rho-video must be in [0, 1)"),
        (["--retention", "0"], "--retention must be in (0, 1]"),
        (["--preset", "45", "--retention", "0.4"], "either --preset or --retention"),
        (["--no-compress", "--preset", "35"], "--no-compress cannot be combined"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--dtype", "int3"], "--dtype must be one of"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--fps", "0"], "--fps must be a number greater than 0"),
        (["--merge-g", "-1"], "--merge-g must be >= 0"),
        (["--retention", "0.01"], "--retention 0.01 is below what OmniZip reaches"),
    ],
)
def test_bad_values_are_usage_errors(args: list[str], fragment: str) -> None:
    one_line_error(ask(TALKING, "q", *FAST, *args), 2, fragment)


def test_cuda_asked_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    one_line_error(ask(TALKING, "q", *FAST, "--device", "cuda"), 2, "no CUDA GPU is available")


def test_unknown_preset_is_rejected_by_the_parser() -> None:
    result = ask(TALKING, "q", *FAST, "--preset", "50")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--preset" in result.stderr


# ----------------------------------------------------------------------------- out of memory (exit 1)
def _raise(exc: BaseException) -> Any:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raiser


def test_out_of_memory_in_the_encoders(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    from omnizip_cli.models.qwen2_5_omni import Qwen25OmniAdapter

    message = "CUDA out of memory. Tried to allocate 334.76 GiB. GPU 0 has a total capacity of 79.19 GiB\nof which ..."
    monkeypatch.setattr(Qwen25OmniAdapter, "encode", _raise(torch.OutOfMemoryError(message)))
    line = one_line_error(ask(TALKING, "q", *FAST), 1, "out of memory", "Tried to allocate 334.76 GiB", OOM_HINT)
    assert line.startswith("error: out of memory: CUDA out of memory")


def test_out_of_memory_while_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import omnizip_cli.generation.opening

    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", _raise(torch.OutOfMemoryError("CUDA out of memory.")))
    one_line_error(ask(TALKING, "q", *FAST), 1, "out of memory", OOM_HINT)


def test_runtime_error_saying_out_of_memory(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    from omnizip_cli.models.qwen2_5_omni import Qwen25OmniAdapter

    monkeypatch.setattr(Qwen25OmniAdapter, "encode", _raise(RuntimeError("CUDA error: out of memory")))
    one_line_error(ask(TALKING, "q", *FAST), 1, "out of memory", OOM_HINT)


def test_host_memory_error(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    from omnizip_cli.models.qwen2_5_omni import Qwen25OmniAdapter

    monkeypatch.setattr(Qwen25OmniAdapter, "encode", _raise(MemoryError()))
    line = one_line_error(ask(TALKING, "q", *FAST), 1, OOM_HINT)
    assert line.startswith("error: out of memory. Hint:")


def test_unexpected_error_is_one_line_with_the_debug_hint(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    from omnizip_cli.models.qwen2_5_omni import Qwen25OmniAdapter

    monkeypatch.setattr(Qwen25OmniAdapter, "encode", _raise(ValueError("boom\nsecond line")))
    line = one_line_error(ask(TALKING, "q", *FAST), 1, "ValueError: boom", "--debug")
    assert "second line" not in line


# ----------------------------------------------------------------------------- Ctrl-C (exit 130)
def test_ctrl_c_before_the_answer(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    from omnizip_cli.models.qwen2_5_omni import Qwen25OmniAdapter

    monkeypatch.setattr(Qwen25OmniAdapter, "encode", _raise(KeyboardInterrupt()))
    one_line_error(ask(TALKING, "q", *FAST), 130, "interrupted")


def test_ctrl_c_while_streaming_ends_the_answer_line(monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    from omnizip_cli.generation.eager import EagerDecoder

    monkeypatch.setattr(EagerDecoder, "step", _raise(KeyboardInterrupt()))
    result = ask(TALKING, "q", *FAST)
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "error: interrupted"
    assert all(x.startswith(("warning: ", "error: ")) for x in result.stderr.splitlines())
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1  # the partial answer, line ended


@pytest.mark.parametrize("overlap", ["0", "1"])
def test_ctrl_c_while_loading(monkeypatch: pytest.MonkeyPatch, overlap: str) -> None:
    """Also while the media decodes beside the load (OMNIZIP_OVERLAP=1): the decoding is cancelled."""
    import omnizip_cli.generation.opening

    monkeypatch.setenv("OMNIZIP_OVERLAP", overlap)
    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", _raise(KeyboardInterrupt()))
    one_line_error(ask(TALKING, "q", *FAST), 130, "interrupted")


def test_ctrl_c_with_debug_shows_the_traceback_and_keeps_130(monkeypatch: pytest.MonkeyPatch) -> None:
    import omnizip_cli.generation.opening

    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", _raise(KeyboardInterrupt()))
    result = ask(TALKING, "q", *FAST, "--debug")
    assert result.exit_code == 130
    assert "Traceback (most recent call last)" in result.stderr and "KeyboardInterrupt" in result.stderr


# ----------------------------------------------------------------------------- --debug / OMNIZIP_DEBUG
def test_debug_env_var_raises_instead_of_one_line(tmp_path: Path) -> None:
    result = ask(tmp_path / "nope.mp4", "q", *FAST, env={"OMNIZIP_DEBUG": "1"})
    assert result.exit_code == 1
    assert isinstance(result.exception, MediaError)
    assert "error: no such file" not in result.stderr


def test_debug_flag_raises_instead_of_one_line(tmp_path: Path) -> None:
    result = ask(tmp_path / "nope.mp4", "q", *FAST, "--debug")
    assert isinstance(result.exception, MediaError)


def test_debug_shows_the_traceback_in_a_real_process(tmp_path: Path) -> None:
    """Outside the test runner the traceback reaches stderr (one subprocess: imports take seconds)."""
    env = {**os.environ, "OMNIZIP_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "omnizip_cli", "ask", str(tmp_path / "nope.mp4"), "q"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback (most recent call last)" in proc.stderr
    assert "MediaError: no such file" in proc.stderr


def test_max_new_tokens_beyond_the_context_is_refused_before_the_media_work(
        monkeypatch: pytest.MonkeyPatch, tiny_model: Any) -> None:
    """Not an allocator error after decoding and encoding: exit 2 right after the model load."""
    import omnizip_cli.generation.opening
    from omnizip_cli.models.qwen2_5_omni import Qwen25OmniAdapter

    monkeypatch.setattr(omnizip_cli.generation.opening, "load_model", lambda spec: tiny_model)
    monkeypatch.setattr(Qwen25OmniAdapter, "encode", _raise(AssertionError("the encoders ran")))
    one_line_error(ask(TALKING, "q", *FAST, "--max-new-tokens", "10000000000"), 2,
                   "--max-new-tokens 10000000000 is not below the model's context")


def test_a_hub_model_without_a_network_fails_within_seconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no --offline, not downloaded: one line at once (no hub client retries; the probe is
    replaced here, so the test itself contacts nothing)."""
    import socket
    import time

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing downloaded
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    one_line_error(ask(TALKING, "q", *FAST, "--model", "Qwen/Qwen2.5-Omni-7B"), 1,
                   "cannot reach the Hugging Face hub", "--offline")
    assert time.perf_counter() - started < 10
