"""A tiny program using omnizip_cli.cli.signals the way the CLI does; driven by tests/cli/test_signals.py.

Usage: python tests/helpers/signals_demo.py MODE READY_FILE [CLEANUP_SECONDS]
  work   print a partial answer line, then "work" until a signal; a slow cleanup after it
  flood  write numbered lines to stdout forever (for a reader that goes away)
  answer require stdout up front, then write one answer line
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omnizip_cli.cli.signals import (
    protect_standard_fds,
    report_interrupt,
    require_stdout,
    stdout_guard,
    terminate_as_interrupt,
    write_stdout,
)
from omnizip_cli.errors import OmnizipError


def main() -> int:
    protect_standard_fds()
    mode, ready = sys.argv[1], Path(sys.argv[2])
    try:
        with terminate_as_interrupt(), stdout_guard():
            try:
                require_stdout()
                if mode == "work":
                    write_stdout("partial answer")
                    ready.touch()
                    while True:
                        time.sleep(0.01)
                elif mode == "flood":
                    ready.touch()
                    for n in range(10_000_000):
                        write_stdout(f"line {n}\n", flush=n % 100 == 0)
                elif mode == "answer":
                    ready.touch()
                    time.sleep(0.1)
                    write_stdout("the answer\n")
                return 0
            except KeyboardInterrupt as exc:
                code = report_interrupt(exc)
                ready.with_suffix(".cleanup").touch()
                time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0.1)  # a second Ctrl-C may land here
                return code
    except OmnizipError as exc:
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
