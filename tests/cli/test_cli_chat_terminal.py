"""``omnizip chat`` on a real terminal (a pseudo-terminal): the prompt, Ctrl-C during an answer
(that answer stops, the chat goes on), a second Ctrl-C at the prompt (exit 130), also after a stopped
answer, and Ctrl-D (exit 0)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TALKING = ROOT / "samples" / "talking.mp4"
FAST = ["--model", "tiny", "--device", "cpu", "--max-frames", "8", "--min-pixels", str(64 * 28 * 28),
        "--max-pixels", str(96 * 28 * 28), "--no-cache"]

pytestmark = pytest.mark.slow


class Terminal:
    """``omnizip chat`` with stdin, stdout and stderr on one pseudo-terminal."""

    def __init__(self, tiny_cache: Path, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "OMNIZIP_CACHE": str(tiny_cache), "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
               "TERM": "dumb"}
        env.pop("OMNIZIP_DEBUG", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "omnizip_cli", "chat", str(TALKING), *FAST, *args],
                                     stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.seen = ""
        self.position = 0  # what expect() has matched up to

    def expect(self, text: str, timeout: float = 120.0) -> str:
        """Read until ``text`` appears after what was already consumed; returns what was read."""
        deadline = time.monotonic() + timeout
        start = self.position
        while text not in self.seen[start:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not seen in {self.seen[start:]!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                assert data, f"the terminal closed before {text!r}: {self.seen[start:]!r}"
                self.seen += data.decode(errors="replace")
        self.position = self.seen.index(text, start) + len(text)
        return self.seen[start:self.position]

    def read_more(self, count: int, timeout: float = 60.0) -> None:
        """Read until at least ``count`` characters more than expect() matched have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.seen) - self.position < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"fewer than {count} characters after {self.seen[-200:]!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                data = os.read(self.master, 4096)
                assert data, "the terminal closed"
                self.seen += data.decode(errors="replace")
        self.position = len(self.seen)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def interrupt(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C

    def close(self) -> int:
        try:
            code = self.proc.wait(timeout=60)
        finally:
            os.close(self.master)
        return code


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(tiny_model, tiny_cache: Path) -> None:
    # sampling: random weights never choose the end token, so the answer runs for seconds
    term = Terminal(tiny_cache, "--max-new-tokens", "5000", "--temperature", "1", "--seed", "0")
    try:
        term.expect("/quit leaves")
        term.expect("> ")
        term.send(b"What is said?\r")
        term.expect("What is said?\r\n")
        term.read_more(20)  # the answer is streaming
        term.interrupt()
        term.expect("answer stopped")
        term.expect("> ")
        term.send(b"/quit\r")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_ctrl_c_at_the_prompt_after_a_stopped_answer(tiny_model, tiny_cache: Path) -> None:
    """The Ctrl-C that stopped an answer leaves a byte for the prompt's signal watcher: later Ctrl-Cs
    at the prompt must still act at once (they once waited for Enter)."""
    term = Terminal(tiny_cache, "--max-new-tokens", "5000", "--temperature", "1", "--seed", "0")
    try:
        term.expect("> ")
        term.send(b"What is said?\r")
        term.expect("What is said?\r\n")
        term.read_more(20)
        term.interrupt()
        term.expect("answer stopped")
        term.expect("> ")
        term.interrupt()
        term.expect("Ctrl-C again", timeout=20)
        term.expect("> ")
        term.interrupt()
        term.expect("error: interrupted", timeout=20)
        assert term.close() == 130
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_ctrl_c_twice_at_the_prompt_leaves_with_130(tiny_model, tiny_cache: Path) -> None:
    term = Terminal(tiny_cache, "--max-new-tokens", "3")
    try:
        term.expect("/quit leaves")
        term.expect("> ")
        term.interrupt()
        term.expect("Ctrl-C again")
        term.expect("> ")
        term.interrupt()
        term.expect("error: interrupted")
        assert term.close() == 130
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_ctrl_d_at_the_prompt_leaves_with_0(tiny_model, tiny_cache: Path) -> None:
    term = Terminal(tiny_cache, "--max-new-tokens", "3")
    try:
        term.expect("> ")
        term.send(b"/stats\r")
        term.expect("no answer yet")
        term.expect("> ")
        term.send(b"\x04")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_sigterm_at_the_prompt_ends_the_chat_at_once(tiny_model, tiny_cache: Path) -> None:
    term = Terminal(tiny_cache, "--max-new-tokens", "3")
    try:
        term.expect("> ")
        os.killpg(term.proc.pid, signal.SIGTERM)
        term.expect("error: terminated by SIGTERM", timeout=30)
        assert term.close() == 143
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
