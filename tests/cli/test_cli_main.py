"""The console-script entry point: instant --help (lazy imports), one-line usage errors."""

from __future__ import annotations

import subprocess
import sys


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omnizip_cli", *args], capture_output=True, text=True, timeout=120)


def test_importing_the_cli_imports_no_heavy_library() -> None:
    code = (
        "import sys, omnizip_cli.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'av', 'librosa', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_lists_the_commands() -> None:
    out = run_module("--help")
    assert out.returncode == 0
    for command in ("ask", "profile", "env"):
        assert command in out.stdout


def test_usage_errors_are_one_line_with_exit_code_2() -> None:
    for args in (("ask", "samples/talking.mp4", "q", "--preset", "50"), ("ask",), ("ask", "x.mp4", "q", "--fps", "abc")):
        out = run_module(*args)
        assert out.returncode == 2, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        assert out.stdout == ""


def test_version() -> None:
    out = run_module("--version")
    assert out.returncode == 0 and out.stdout.startswith("omnizip ")


def test_env_lists_versions_and_the_tested_transformers_range() -> None:
    out = run_module("env")
    assert out.returncode == 0, out.stderr
    from omnizip_cli.versions import installed_version

    assert f"transformers {installed_version('transformers')}" in out.stdout
    assert "transformers range tested: >=5.23.0,<5.26.0" in out.stdout
    assert "cuda available:" in out.stdout
    assert "device cpu:" in out.stdout and "GB memory" in out.stdout  # devices with their memory
    assert "extras installed:" in out.stdout and "quantization" in out.stdout


def test_library_chatter_is_silenced_unless_verbose() -> None:
    import logging

    from omnizip_cli.quiet import quiet_libraries as _quiet_libraries

    hub = logging.getLogger("huggingface_hub")
    transformers_logger = logging.getLogger("transformers")
    before = hub.level, transformers_logger.level
    try:
        _quiet_libraries(verbose=False)
        # e.g. the hub's "Retrying in 2s" warnings would break the one-line error contract
        assert hub.getEffectiveLevel() >= logging.ERROR
        assert transformers_logger.getEffectiveLevel() >= logging.ERROR
    finally:
        hub.setLevel(before[0])
        transformers_logger.setLevel(before[1])
