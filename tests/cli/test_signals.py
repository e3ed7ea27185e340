"""Signals, pipes and a closed stdout with real processes (issue 18, cases 3, 4 and 11).

Each test runs tests/helpers/signals_demo.py (the pieces of omnizip_cli.cli.signals wired as the CLI wires them)
in a child process and checks its exit code, its stdout and that stderr is one line, no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "tests" / "helpers" / "signals_demo.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def _start(mode: str, tmp_path: Path, cleanup_s: float = 0.1) -> tuple[subprocess.Popen[str], Path]:
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, str(DEMO), mode, str(ready), str(cleanup_s)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, ready


def _assert_one_line(stderr: str, expected: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr == expected + "\n", stderr


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [
        (signal.SIGINT, 130, "error: interrupted"),
        (signal.SIGTERM, 143, "error: terminated by SIGTERM"),
        (signal.SIGHUP, 129, "error: terminated by SIGHUP"),
    ],
)
def test_a_signal_ends_the_partial_line_and_prints_one_line(tmp_path, signum, code, message) -> None:
    process, ready = _start("work", tmp_path)
    _wait_for(ready, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == code
    assert out == "partial answer\n"  # the half-written line is finished with a newline
    _assert_one_line(err, message)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_interrupt_during_cleanup_exits_at_once_without_traceback(tmp_path, second) -> None:
    process, ready = _start("work", tmp_path, cleanup_s=3.0)
    _wait_for(ready, process)
    process.send_signal(signal.SIGINT)
    _wait_for(ready.with_suffix(".cleanup"), process)  # the first one is being handled
    time.sleep(0.2)
    sent = time.monotonic()
    process.send_signal(second)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130  # the first interrupt's code
    assert time.monotonic() - sent < 2.5  # did not wait for the 3 s cleanup
    assert out == "partial answer\n"
    _assert_one_line(err, "error: interrupted")


def test_two_ctrl_c_0_2_s_apart(tmp_path) -> None:
    """The issue's reproduction, without waiting for the cleanup marker in between."""
    process, ready = _start("work", tmp_path, cleanup_s=1.0)
    _wait_for(ready, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    _assert_one_line(err, "error: interrupted")


def test_sighup_stays_ignored_under_nohup(tmp_path) -> None:
    """A signal ignored when the program starts (nohup) is not turned into an interrupt."""
    ready, pid_file = tmp_path / "ready", tmp_path / "pid"
    launcher = (
        "import signal, subprocess, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        "child = subprocess.Popen(sys.argv[2:]); open(sys.argv[1], 'w').write(str(child.pid)); "
        "sys.exit(child.wait())"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, str(pid_file), sys.executable, str(DEMO), "work", str(ready)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for(ready, process)
    _wait_for(pid_file, process)
    demo_pid = int(pid_file.read_text())
    os.kill(demo_pid, signal.SIGHUP)
    time.sleep(0.3)
    assert process.poll() is None  # ignored: still working
    os.kill(demo_pid, signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143
    _assert_one_line(err, "error: terminated by SIGTERM")


def test_broken_pipe_is_a_quiet_exit_141(tmp_path) -> None:
    """``demo flood | head -c 5``: head's 5 bytes, exit 141 (128 + SIGPIPE), nothing on stderr."""
    ready = tmp_path / "ready"
    err_file = tmp_path / "stderr"
    script = f'"{sys.executable}" "{DEMO}" flood "{ready}" 2>"{err_file}" | head -c 5; echo " rc=${{PIPESTATUS[0]}}"'
    result = subprocess.run(["bash", "-c", script], env=ENV, capture_output=True, text=True, timeout=60)
    assert result.stdout == "line  rc=141\n"
    stderr = err_file.read_text()
    assert stderr == "", stderr


def test_closed_stdout_is_a_one_line_error(tmp_path) -> None:
    ready = tmp_path / "ready"
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" "{DEMO}" answer "{ready}" >&-'],
        env=ENV, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    _assert_one_line(
        result.stderr,
        "error: standard output is closed: there is nowhere to write the answer. "
        "Hint: redirect it to a file or to /dev/null instead of closing it",
    )
    assert not ready.exists()  # refused up front, before any work


def test_protect_standard_fds_keeps_fd_1_from_being_reused(tmp_path) -> None:
    code = (
        "import os, sys; from omnizip_cli.cli.signals import protect_standard_fds; "
        "closed = protect_standard_fds(); f = open(sys.argv[1], 'w'); "
        "sys.stderr.write(f'{sorted(closed)} {f.fileno()}\\n')"
    )
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -c "{code}" "{tmp_path / "x"}" >&-'],
        env=ENV, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    closed, fd = result.stderr.split("] ")
    assert closed == "[1" and int(fd) > 2


def test_handlers_are_restored_after_the_block() -> None:
    from omnizip_cli.cli.signals import Terminated, terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as info:
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before
