"""The GPU suite cannot waste its one run (issue 29, items 21-24), checked on the CPU.

* item 21: the ``session`` step measures the disk-cache reopen, and no doc says the disk hook
  "returns None until the cache lands";
* item 22: the steps run in order of value, each under its own time limit, all within one
  10-minute device command; a step killed at its limit gets ``rc`` 124 and ``"timed_out": true``
  and keeps every record written before the kill (a stand-in ``PYTHON`` makes the steps hang on
  purpose); the gpu tests write one line per test as it finishes, and pytest-timeout bounds each;
* item 23: the free-memory check before the Qwen3-Omni 30B-A3B step (fake numbers), and the suite's
  skipped record when the memory is short (never run with ``--tiny``);
* item 24: the documented device call names the machine kind and the carried wheels;
  ``gpu_prepare.sh --dry-run`` prints what it would download without downloading, and the device
  command's install part runs against a local folder of stand-in wheels into a throwaway folder.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
ORDER = ["model_stages", "decode_speed", "session", "gpu_tests", "preprocess", "ask_e2e", "quantized", "multi_gpu",
         "model_stages_qwen3"]
DEVICE_COMMAND_LIMIT_S = 600  # the device tool's limit for one command
KINDS = {"nvidia-h100-x1", "nvidia-h200"}


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), **extra)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plan(*flags: str) -> list[dict]:
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--plan", *flags], cwd=ROOT,
                          env=env(PYTHON=sys.executable), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


# ------------------------------------------------------------------------------------ item 21


def test_session_benchmark_reopens_through_the_disk_cache_by_default() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.session import parse_args

    assert parse_args([]).reopen == "disk" and parse_args(["--reopen", "plain"]).reopen == "plain"
    for mode in ((), ("--tiny",)):
        (session,) = [r for r in plan(*mode) if r.get("step") == "session" and r["kind"] == "command"]
        argv = session["argv"]
        assert argv[argv.index("--reopen") + 1] == "disk", argv


def test_no_stale_disk_hook_docs() -> None:
    stale = re.compile(r"returns None until|until the (disk )?cache lands|plain_fallback|DISK-CACHE HOOK", re.I)
    paths = [ROOT / "README.md", *sorted(p for p in BENCHMARKS.rglob("*") if p.suffix in (".py", ".md", ".sh"))]
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in paths for n, line in enumerate(p.read_text().splitlines(), 1)
            if stale.search(line)]
    assert not hits, hits


# ------------------------------------------------------------------------------------ item 22


def test_steps_in_order_of_value_and_limits_fit_one_device_command() -> None:
    lines = plan()
    (head,) = [r for r in lines if r["kind"] == "plan"]
    commands = [r for r in lines if r["kind"] == "command"]
    assert head["order"] == ORDER == [c["step"] for c in commands]
    assert ORDER[:2] == ["model_stages", "decode_speed"] and ORDER[-1] == "model_stages_qwen3"
    assert "--family" not in commands[0]["argv"] and "--family" in commands[-1]["argv"]
    limits = head["limits_s"]
    assert set(limits) == set(ORDER) and all(limit > 0 for limit in limits.values())
    # every step gets its own limit inside the budget; the budget, the kill grace and the summary
    # fit the device command with room for the install (gpu_device.sh runs the suite under timeout 580)
    assert sum(limits.values()) <= head["budget_s"] == 540
    assert head["budget_s"] + 5 + 30 <= 580 <= DEVICE_COMMAND_LIMIT_S - 15
    assert "timeout --kill-after=5 580 bash benchmarks/gpu_suite.sh" in (BENCHMARKS / "gpu_device.sh").read_text()
    assert head["rest_to"] == "model_stages_qwen3" and commands[-1]["gets_the_rest"]
    (tests,) = [c for c in commands if c["step"] == "gpu_tests"]
    assert tests["argv"][1:] == ["benchmarks/gpu_tests.py", "--per-test-timeout", "60"]


STAND_IN = r"""#!/usr/bin/env bash
# A stand-in for python: the suite's own snippets run on the real one; each step prints one record
# and then does what $STAND_IN_<step> says (hang, hang_ignoring_term; else it exits 0).
real=@PYTHON@
case "${1:-}" in -|-c) exec "$real" "$@" ;; esac
script=$(basename "${1%.py}")
[ "$script" = gpu_memory ] && [ -n "${STAND_IN_MEMORY:-}" ] && exec "$real" -c "$STAND_IN_MEMORY" "${@:2}"
printf '{"bench": "%s", "kind": "setup", "args": "%s"}\n' "$script" "$*"
echo "$script" >> "$STAND_IN_LOG"
step=$script
case "$*" in *"--family qwen3"*) step=model_stages_qwen3 ;; esac
var=STAND_IN_$step
case "${!var:-}" in
    hang) exec sleep 60 ;;
    hang_ignoring_term) trap '' TERM; while :; do sleep 0.2; done ;;
esac
exit 0
"""


@pytest.fixture()
def stand_in(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "python"
    script.write_text(STAND_IN.replace("@PYTHON@", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return env(PYTHON=str(script), STAND_IN_LOG=str(tmp_path / "ran.log"))


def run_suite(out: Path, environment: dict[str, str], *flags: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "benchmarks/gpu_suite.sh", *flags, str(out)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_a_step_killed_at_its_limit_keeps_its_records_and_the_suite_goes_on(tmp_path: Path, stand_in) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    proc = run_suite(out, dict(stand_in, GPU_SUITE_STEPS="decode_speed,session,preprocess",
                               GPU_SUITE_LIMITS="decode_speed=2 preprocess=2",
                               STAND_IN_decode_speed="hang", STAND_IN_preprocess="hang_ignoring_term"), "--tiny")
    assert time.monotonic() - started < 60, "the limits did not stop the hanging steps"
    assert proc.returncode == 2, proc.stderr  # two failed (timed-out) steps
    suite = records(out / "suite.jsonl")
    steps = {r["step"]: r for r in suite if r["kind"] == "step"}
    assert list(steps) == ["decode_speed", "session", "preprocess"]  # the suite's order, not the variable's
    for name in ("decode_speed", "preprocess"):  # TERM; and TERM ignored, then KILL 5 s later
        assert steps[name]["rc"] == 124 and steps[name]["timed_out"] is True and steps[name]["limit_s"] == 2
        assert 2 <= steps[name]["seconds"] < 2 + 5 + 10
        # what the step wrote before the kill is there
        assert [r["kind"] for r in records(out / f"{name}.jsonl")] == ["setup"]
        assert "killed at its time limit of 2 s" in (out / f"{name}.log").read_text()
    assert steps["session"]["rc"] == 0 and steps["session"]["timed_out"] is False
    (summary,) = [r for r in suite if r["kind"] == "summary"]
    assert summary["failed_steps"] == 2 and summary["timed_out"] == ["decode_speed", "preprocess"]
    (head,) = [r for r in suite if r["kind"] == "plan"]
    assert head["only"] == ["decode_speed", "session", "preprocess"]


@pytest.mark.slow
def test_a_spent_budget_skips_the_steps_left_with_a_record(tmp_path: Path, stand_in) -> None:
    out = tmp_path / "out"
    proc = run_suite(out, dict(stand_in, GPU_SUITE_STEPS="model_stages decode_speed", GPU_SUITE_BUDGET_S="12",
                               STAND_IN_model_stages="hang"), "--tiny")
    assert proc.returncode == 1, proc.stderr
    steps = [r for r in records(out / "suite.jsonl") if r["kind"] == "step"]
    assert steps[0]["step"] == "model_stages" and steps[0]["timed_out"] and steps[0]["limit_s"] <= 12
    assert steps[1]["step"] == "decode_speed" and steps[1]["skipped"] is True and steps[1]["rc"] is None
    assert "time budget of 12 s is spent" in steps[1]["reason"]
    assert Path(stand_in["STAND_IN_LOG"]).read_text().split() == ["model_stages"]


def test_bad_limit_or_step_names_are_refused(tmp_path: Path) -> None:
    for variable, value in (("GPU_SUITE_LIMITS", "session=abc"), ("GPU_SUITE_LIMITS", "nope=3"),
                            ("GPU_SUITE_STEPS", "sessions")):
        proc = run_suite(tmp_path / "out", env(**{variable: value}), "--tiny")
        assert proc.returncode == 2 and variable in proc.stderr, (variable, value, proc.stderr)


FAKE_TESTS = """
import os, time
import pytest

@pytest.mark.gpu
def test_quick():
    assert True

@pytest.mark.gpu
def test_skipped():
    pytest.skip("no CUDA here")

@pytest.mark.gpu
def test_hangs():
    open(os.environ["HANG_MARKER"], "w").close()
    time.sleep(60)

def test_not_gpu():
    raise AssertionError("deselected: never runs")
"""


def fake_gpu_tests(tmp_path: Path) -> Path:
    folder = tmp_path / "tests"
    folder.mkdir()
    (folder / "test_fake_gpu.py").write_text(FAKE_TESTS)
    return folder


@pytest.mark.slow
def test_gpu_tests_writes_each_test_as_it_finishes(tmp_path: Path) -> None:
    """Killed while a test hangs: the lines of the tests before it are already in the file."""
    folder, marker, output = fake_gpu_tests(tmp_path), tmp_path / "hanging", tmp_path / "gpu_tests.jsonl"
    with output.open("w") as stdout:
        proc = subprocess.Popen([sys.executable, "benchmarks/gpu_tests.py", "--per-test-timeout", "0",
                                 "--tests-dir", str(folder)], cwd=ROOT,
                                env=env(HANG_MARKER=str(marker)), stdout=stdout, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no hang"
            os.killpg(proc.pid, signal.SIGTERM)  # what the suite's `timeout` does
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.stderr.close()
    lines = records(output)
    outcomes = {r["test"].rsplit("::", 1)[1]: r["outcome"] for r in lines}
    assert outcomes == {"test_quick": "passed", "test_skipped": "skipped"}
    assert all(r["bench"] == "gpu_tests" and r["kind"] == "test" for r in lines)


@pytest.mark.slow
def test_gpu_tests_per_test_timeout(tmp_path: Path) -> None:
    """With pytest-timeout (the test extra), a hanging test fails at its limit and the run goes on."""
    pytest.importorskip("pytest_timeout")
    folder = fake_gpu_tests(tmp_path)
    proc = subprocess.run([sys.executable, "benchmarks/gpu_tests.py", "--per-test-timeout", "2", "--tests-dir",
                           str(folder)], cwd=ROOT, env=env(HANG_MARKER=str(tmp_path / "hanging")),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]  # one test failed
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    tests = {r["test"].rsplit("::", 1)[1]: r for r in lines if r["kind"] == "test"}
    assert tests["test_hangs"]["outcome"] == "failed" and "Timeout" in tests["test_hangs"]["message"]
    assert tests["test_quick"]["outcome"] == "passed" and "test_not_gpu" not in tests
    (summary,) = [r for r in lines if r["kind"] == "tests"]
    assert summary["per_test_timeout_s"] == 2 and (summary["passed"], summary["failed"], summary["skipped"]) == (1, 1, 1)


def test_records_are_flushed_as_they_are_emitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every benchmark prints its records through ``json_lines_output``: each line reaches the file at once."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.jsonlines import json_lines_output

    path = tmp_path / "out.jsonl"
    with path.open("wb") as raw:
        stdout = io.TextIOWrapper(raw, write_through=False)  # block-buffered, as stdout to a file is
        monkeypatch.setattr(sys, "stdout", stdout)
        _log, emit = json_lines_output("x")
        emit({"kind": "a"})
        emit({"kind": "b"})
        assert [r["kind"] for r in records(path)] == ["a", "b"]  # in the file while the process runs
        monkeypatch.undo()
        stdout.detach()
    # and the suite's benchmarks print nothing else on stdout (progress goes to stderr)
    for name in ("model_stages", "decode_speed", "session", "preprocess", "ask_e2e", "gpu_tests"):
        tree = ast.parse((BENCHMARKS / f"{name}.py").read_text())
        prints = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name) and node.func.id == "print"]
        assert all(any(k.arg == "file" for k in node.keywords) for node in prints), name
        if name != "gpu_tests":  # gpu_tests writes and flushes its own lines (JsonLinesReporter.write)
            assert any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "json_lines_output"
                       for node in ast.walk(tree)), name


# ------------------------------------------------------------------------------------ item 23


def test_memory_check_with_fake_numbers() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_memory import QWEN3_30B_A3B_NEEDED_BYTES, memory_check

    assert QWEN3_30B_A3B_NEEDED_BYTES == 68 * 10**9
    enough, lines = memory_check(140 * 10**9, 150 * 10**9, QWEN3_30B_A3B_NEEDED_BYTES, step="model_stages_qwen3",
                                 gpu="NVIDIA H200")
    assert enough and [r["kind"] for r in lines] == ["memory_check"] and lines[0]["reason"] is None
    assert memory_check(68 * 10**9, None, 68 * 10**9, step="s")[0]  # exactly enough is enough
    enough, (check, skipped) = memory_check(60 * 10**9, 85 * 10**9, 68 * 10**9, step="model_stages_qwen3",
                                            gpu="NVIDIA H100 80GB HBM3")
    assert not enough and check["enough"] is False
    assert skipped["kind"] == "step" and skipped["skipped"] is True and skipped["step"] == "model_stages_qwen3"
    assert (skipped["free_bytes"], skipped["needed_bytes"]) == (60 * 10**9, 68 * 10**9)
    assert "60.0 GB free of 85.0 GB on NVIDIA H100 80GB HBM3" in skipped["reason"] and "68.0 GB" in skipped["reason"]


def test_memory_check_command(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_memory

    assert gpu_memory.main(["--step", "q"], probe=lambda _d: (50 * 10**9, 85 * 10**9, "H100")) == 3
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in lines] == ["memory_check", "step"] and lines[1]["skipped"]
    assert gpu_memory.main(["--step", "q"], probe=lambda _d: (90 * 10**9, 143 * 10**9, "H200")) == 0

    def no_gpu(_device: int) -> tuple[int, int, str]:
        raise RuntimeError("no CUDA GPU visible to torch")

    assert gpu_memory.main(["--step", "q"], probe=no_gpu) == 2
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()[-1:]]
    assert line["enough"] is None and "no CUDA" in line["error"]


MEMORY = ("import sys; sys.path.insert(0, '.'); from benchmarks import gpu_memory; "
          "sys.exit(gpu_memory.main(sys.argv[1:], probe=lambda d: ({free}, 85 * 10**9, 'NVIDIA H100 80GB HBM3')))")


@pytest.mark.slow
@pytest.mark.parametrize("free_gb", [60, 80])
def test_suite_skips_qwen3_when_the_gpu_memory_is_short(tmp_path: Path, stand_in, free_gb: int) -> None:
    out = tmp_path / "out"
    proc = run_suite(out, dict(stand_in, GPU_SUITE_STEPS="model_stages_qwen3",
                               STAND_IN_MEMORY=MEMORY.format(free=free_gb * 10**9)))
    assert proc.returncode == 0, proc.stderr  # a skipped step is not a failure
    suite = records(out / "suite.jsonl")
    (check,) = [r for r in suite if r["kind"] == "memory_check"]
    assert check["free_bytes"] == free_gb * 10**9 and check["needed_bytes"] == 68 * 10**9
    (step,) = [r for r in suite if r["kind"] == "step"]
    (summary,) = [r for r in suite if r["kind"] == "summary"]
    ran = Path(stand_in["STAND_IN_LOG"])
    if free_gb < 68:
        assert step["skipped"] is True and step["free_bytes"] == 60 * 10**9 and "68.0 GB" in step["reason"]
        assert summary["skipped"] == ["model_stages_qwen3"] and summary["failed_steps"] == 0
        assert not ran.exists()  # the step never started
    else:
        assert step["rc"] == 0 and "skipped" not in step
        assert ran.read_text().split() == ["model_stages"]


@pytest.mark.slow
def test_tiny_suite_runs_no_memory_check(tmp_path: Path, stand_in) -> None:
    out = tmp_path / "out"
    failing_check = "import sys; sys.exit(3)"  # would skip the step if it were asked
    proc = run_suite(out, dict(stand_in, GPU_SUITE_STEPS="model_stages_qwen3", STAND_IN_MEMORY=failing_check),
                     "--tiny")
    assert proc.returncode == 0, proc.stderr
    suite = records(out / "suite.jsonl")
    assert not [r for r in suite if r["kind"] == "memory_check"]
    (step,) = [r for r in suite if r["kind"] == "step"]
    assert step["step"] == "model_stages_qwen3" and step["rc"] == 0


# ------------------------------------------------------------------------------------ item 24


def documented_device_call() -> dict:
    """The device tool call documented in benchmarks/README.md (a JSON block after the marker line)."""
    text = (BENCHMARKS / "README.md").read_text()
    match = re.search(r"<!-- device-call -->\s*```json\n(.*?)```", text, re.S)
    assert match, "benchmarks/README.md documents no device call"
    return json.loads(match.group(1))


def test_documented_device_call_names_the_kind_and_the_wheels() -> None:
    call = documented_device_call()
    assert call["kind"] in KINDS and call["carry"] == [".whl"] and call["timeout_s"] == DEVICE_COMMAND_LIMIT_S
    assert len(call["command"]) <= 2000
    assert call["command"] == f"bash benchmarks/gpu_device.sh {call['kind']}"
    readme = (BENCHMARKS / "README.md").read_text()
    pins = [line for line in (BENCHMARKS / "gpu_wheels.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins == ["transformers==5.23.0", "av==18.1.0"]
    for pin in pins:  # each carried wheel is named for the device's Python
        name, version = pin.split("==")
        assert re.search(rf"`{name}-{re.escape(version)}-[^`]*\.whl`", readme), pin
    assert "Python 3.12" in readme
    # gpu_prepare.sh prints the same call
    proc = subprocess.run(["bash", "benchmarks/gpu_prepare.sh", "--dry-run"], cwd=ROOT, env=env(PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert call["command"] in proc.stdout.splitlines()


def test_prepare_dry_run_prints_what_it_would_download(tmp_path: Path) -> None:
    before = (ROOT / ".whl").exists() and sorted(p.name for p in (ROOT / ".whl").iterdir())
    proc = subprocess.run(["bash", "benchmarks/gpu_prepare.sh", "--dry-run"], cwd=ROOT, env=env(PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "nothing is downloaded" in text
    assert "pip download" in text and "--python-version 3.12" in text and "--no-deps" in text
    assert "transformers==5.23.0" in text and "av==18.1.0" in text
    assert "nvidia-h100-x1" in text and "nvidia-h200" in text and 'carry [".whl"]' in text
    after = (ROOT / ".whl").exists() and sorted(p.name for p in (ROOT / ".whl").iterdir())
    assert before == after  # nothing downloaded, nothing removed


def stand_in_wheel(folder: Path, name: str, version: str, tag: str) -> Path:
    """A minimal valid wheel (one module) named as the real one is."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"__version__ = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                              f"{'true' if tag.startswith('py3') else 'false'}\nTag: {tag}\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(body.encode())}" for path, body in files.items()]
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, body in files.items():
            archive.writestr(member, body)
    return path


def device_dry_run(wheels: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "benchmarks/gpu_device.sh", "--dry-run", *args], cwd=ROOT,
                          env=env(PYTHON=sys.executable, WHEEL_DIR=str(wheels)), capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.slow
def test_device_install_part_dry_run(tmp_path: Path) -> None:
    """The device command's install part, offline, into a throwaway folder: stand-in wheels named as
    the real ones (the real ones are 49 MB, not downloaded in CI)."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    stand_in_wheel(wheels, "transformers", "5.23.0", "py3-none-any")
    stand_in_wheel(wheels, "av", "18.1.0", "cp311-abi3-manylinux_2_28_x86_64")
    proc = device_dry_run(wheels, "nvidia-h100-x1")
    assert proc.returncode == 0, proc.stderr
    assert "install for the device's Python" in proc.stdout and "transformers==5.23.0 av==18.1.0" in proc.stdout

    # a wheel the device's CPython 3.12 cannot load is refused before anything is installed
    (wheels / "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl").unlink()
    stand_in_wheel(wheels, "av", "18.1.0", "cp313-cp313-manylinux_2_28_x86_64")
    proc = device_dry_run(wheels)
    assert proc.returncode == 2 and "do not fit the device's Python 3.12" in proc.stderr, proc.stderr
    # a missing wheel names the command that fetches it; two versions of one are refused
    (wheels / "av-18.1.0-cp313-cp313-manylinux_2_28_x86_64.whl").unlink()
    proc = device_dry_run(wheels)
    assert proc.returncode == 2 and "gpu_prepare.sh" in proc.stderr
    stand_in_wheel(wheels, "av", "18.1.0", "cp311-abi3-manylinux_2_28_x86_64")
    stand_in_wheel(wheels, "av", "17.0.0", "cp311-abi3-manylinux_2_28_x86_64")
    proc = device_dry_run(wheels)
    assert proc.returncode == 2 and "another version of av" in proc.stderr


def test_device_command_needs_a_known_kind(tmp_path: Path) -> None:
    for args in ((), ("nvidia-a100",)):
        proc = subprocess.run(["bash", "benchmarks/gpu_device.sh", *args], cwd=ROOT, env=env(WHEEL_DIR=str(tmp_path)),
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 2 and "nvidia-h100-x1" in proc.stderr, proc.stderr
