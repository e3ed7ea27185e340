"""The real ``omnizip`` process where the behaviour is about processes (issue 18): pipes, a closed
stdout, SIGTERM/SIGHUP, Ctrl-C twice, and a hostile file name reaching the terminal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
FAST = ["--model", "tiny", "--device", "cpu", "--max-frames", "8", "--min-pixels", str(64 * 28 * 28),
        "--max-pixels", str(96 * 28 * 28)]

pytestmark = pytest.mark.slow


def omnizip(*args: str, tiny_cache: Path) -> list[str]:
    return [sys.executable, "-m", "omnizip_cli", *args]


def env(tiny_cache: Path) -> dict[str, str]:
    values = {**os.environ, "OMNIZIP_CACHE": str(tiny_cache), "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    values.pop("OMNIZIP_DEBUG", None)
    return values


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("warning: ")]


def test_a_reader_that_goes_away_is_not_an_error(tiny_model, tiny_cache: Path) -> None:
    command = " ".join([*map(_quote, omnizip("ask", str(TALKING), "What is said?", *FAST, "-q",
                                             "--max-new-tokens", "64", tiny_cache=tiny_cache)), "| head -c 5"])
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                          env=env(tiny_cache), timeout=120)
    assert done.returncode == 141  # 128 + SIGPIPE, what `set -o pipefail` expects
    assert len(done.stdout) <= 5 and error_lines(done.stderr) == []


def test_a_closed_stdout_is_one_line_and_exit_1(tiny_cache: Path) -> None:
    command = " ".join([*map(_quote, omnizip("ask", str(TALKING), "What is said?", *FAST, tiny_cache=tiny_cache)),
                        ">&-"])
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env(tiny_cache), timeout=120)
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "error: standard output is closed: there is nowhere to write the answer. "
        "Hint: redirect it to a file or to /dev/null instead of closing it"]


@pytest.mark.parametrize(("signum", "code", "message"), [
    (signal.SIGTERM, 143, "error: terminated by SIGTERM"),
    (signal.SIGHUP, 129, "error: terminated by SIGHUP"),
])
def test_termination_signals_are_handled_like_ctrl_c(tiny_model, tiny_cache: Path, signum: int, code: int,
                                                     message: str) -> None:
    process = subprocess.Popen(omnizip("ask", str(TALKING), "What is said?", *FAST, "--max-new-tokens", "30000",
                                       "--temperature", "1", "--seed", "1", tiny_cache=tiny_cache),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(tiny_cache))
    first = _wait_for_output(process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code
    assert error_lines(err.decode()) == [message]
    assert (first + out).endswith(b"\n")  # the partial answer's line was finished


def test_ctrl_c_twice_gives_130_and_no_traceback(tiny_model, tiny_cache: Path) -> None:
    process = subprocess.Popen(omnizip("ask", str(TALKING), "What is said?", *FAST, "--max-new-tokens", "30000",
                                       "--temperature", "1", "--seed", "1", tiny_cache=tiny_cache),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(tiny_cache))
    err = _ctrl_c_twice(process, 0.2)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert error_lines(err) == ["error: interrupted"]


def _ctrl_c_twice(process: subprocess.Popen, pause: float) -> str:
    """Once the answer streams: Ctrl-C, then (if still running) another ``pause`` seconds later; its stderr."""
    _wait_for_output(process)
    process.send_signal(signal.SIGINT)
    time.sleep(pause)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    _, raw = process.communicate(timeout=60)
    return raw.decode()


def test_a_hostile_file_name_is_escaped_on_the_terminal(tiny_model, tiny_cache: Path, tmp_path: Path) -> None:
    hostile = tmp_path / "\x1b[2J\x1b]0;TITLE\x07clip.mp4"
    shutil.copy(TALKING, hostile)
    done = subprocess.run(omnizip("ask", str(hostile), "What is said?", *FAST, "--max-new-tokens", "4",
                                  tiny_cache=tiny_cache), capture_output=True, text=True, env=env(tiny_cache), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert "\\x1b[2J\\x1b]0;TITLE\\x07clip.mp4" in done.stderr  # shown, escaped, in the report
    assert all(ch in "\n\t" or ch.isprintable() for ch in done.stdout)
    missing = subprocess.run(omnizip("ask", str(tmp_path / "\x1b[31mnope.mp4"), "q", *FAST, tiny_cache=tiny_cache),
                             capture_output=True, text=True, env=env(tiny_cache), timeout=120)
    assert missing.returncode == 1 and "\x1b" not in missing.stderr and "\\x1b[31mnope.mp4" in missing.stderr


def _wait_for_output(process: subprocess.Popen, timeout: float = 60.0) -> bytes:
    """Until the answer has started: the first bytes on stdout (read straight from the pipe)."""
    import select

    assert process.stdout is not None
    fd = process.stdout.fileno()
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise AssertionError("no answer within the timeout")
    first = os.read(fd, 1)
    if not first:
        raise AssertionError(f"omnizip ended early: {process.stderr.read() if process.stderr else ''}")
    return first


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def test_piped_chat_leaves_on_a_second_ctrl_c_within_a_second(tiny_model, tiny_cache: Path) -> None:
    """One Ctrl-C stops an answer and the chat goes on; a second one right after leaves with 130."""
    questions = "".join(f"Question {i}?\n" for i in range(20)).encode()
    process = subprocess.Popen(omnizip("chat", str(TALKING), *FAST, "--no-cache", "--max-new-tokens", "30000",
                                       "--temperature", "1", "--seed", "1", tiny_cache=tiny_cache),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env(tiny_cache))
    assert process.stdin is not None
    process.stdin.write(questions)
    process.stdin.close()
    process.stdin = None  # written and closed: communicate() must not flush it
    err = _ctrl_c_twice(process, 0.3)
    assert process.returncode == 130, err
    assert "Traceback" not in err


def test_a_closed_stdout_is_an_error_only_where_stdout_is_written(tiny_model, tiny_cache: Path,
                                                                   tmp_path: Path) -> None:
    """``env >&-`` has nowhere to print (exit 1, one line); ``keep-map >&-`` writes a file and needs no stdout."""
    import shlex

    def closed(*args: str) -> subprocess.CompletedProcess:
        command = " ".join(shlex.quote(a) for a in omnizip(*args, tiny_cache=tiny_cache))
        return subprocess.run(["bash", "-c", f"{command} >&-"], capture_output=False, stderr=subprocess.PIPE,
                              text=True, env=env(tiny_cache), timeout=300)

    env_run = closed("env")
    assert env_run.returncode == 1 and error_lines(env_run.stderr)[-1].startswith("error: standard output is closed")
    out = tmp_path / "map.png"
    keep = closed("keep-map", str(TALKING), "-o", str(out), *FAST, "--max-new-tokens", "4")
    assert keep.returncode == 0, keep.stderr
    assert out.stat().st_size > 0
    assert closed("keep-map", str(TALKING), "-o", str(out), *FAST, "--json").returncode == 1
