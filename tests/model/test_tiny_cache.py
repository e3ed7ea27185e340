"""The cached tiny checkpoint: concurrent first runs (real processes) and corrupt/incomplete caches.

Issue 18, cases 1 and 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnizip_cli.integrity import MANIFEST_NAME, manifest_problem
from omnizip_cli.models.qwen2_5_omni import ADAPTER
from omnizip_cli.models.tiny import ensure_tiny_checkpoint as ensure_any
from omnizip_cli.models.tiny import tiny_checkpoint_problem, tiny_lock_path
from omnizip_cli.models.tiny import tiny_model_dir as model_dir_of


def ensure_tiny_checkpoint(cache_dir=None):
    return ensure_any(ADAPTER, cache_dir)


def tiny_model_dir(cache_dir=None):
    return model_dir_of(ADAPTER, cache_dir)

REPO = Path(__file__).resolve().parents[2]

# One "first run". Every worker goes through ensure_tiny_checkpoint (the code under test), then reads
# the folder it got: "full" workers load it through the real loader (transformers, ~9 s of CPU each),
# "light" ones read every file with safetensors/tokenizers and check it against the manifest (~0.3 s),
# which keeps six processes x two rounds affordable on two cores. Each prints the folder's inode:
# all must be equal (the checkpoint was built once and never replaced under a reader).
WORKER = r"""
import os, sys
from omnizip_cli.models.qwen2_5_omni import ADAPTER
from omnizip_cli.models.tiny import ensure_tiny_checkpoint, tiny_checkpoint_problem
path = ensure_tiny_checkpoint(ADAPTER)
inode = os.stat(path).st_ino
if sys.argv[1] == "full":
    from omnizip_cli.models import ModelSpec, load_model
    loaded = load_model(ModelSpec(model="tiny", device="cpu"))
    tokenizer = loaded.processor.tokenizer
    assert loaded.model.config.get_text_config().vocab_size == len(tokenizer), "tokenizer/model mismatch"
    assert tokenizer.convert_tokens_to_ids("<|AUDIO|>") == loaded.model.config.audio_token_index
else:
    import json
    from safetensors import safe_open
    from tokenizers import Tokenizer
    assert Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id("<|AUDIO|>") is not None
    with safe_open(str(path / "model.safetensors"), "np") as weights:
        assert sum(weights.get_tensor(name).size for name in weights.keys()) > 0
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen2_5_omni"
assert tiny_checkpoint_problem(path) is None, tiny_checkpoint_problem(path)
assert os.stat(path).st_ino == inode, "the folder was replaced while this process read it"
print("ok", inode)
"""


def _start_workers(cache: Path, modes: list[str], stagger: float) -> list[subprocess.Popen[str]]:
    env = dict(os.environ, OMNIZIP_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    workers = []
    for mode in modes:
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, mode],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        time.sleep(stagger)
    return workers


@pytest.mark.slow
def test_six_concurrent_first_runs_on_an_empty_cache_all_succeed(tmp_path: Path) -> None:
    """Six processes started 0.2 s apart on an empty cache, twice: all get the same complete folder."""
    rounds = [["light", "light", "full", "light", "light", "light"], ["light"] * 6]
    for round_, modes in enumerate(rounds):
        cache = tmp_path / f"round{round_}"
        workers = _start_workers(cache, modes, stagger=0.2)
        failures, inodes = [], set()
        for worker in workers:
            try:
                out, err = worker.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                worker.kill()
                out, err = worker.communicate()
            if worker.returncode != 0 or not out.startswith("ok "):
                failures.append(f"rc={worker.returncode}: {err.strip().splitlines()[-3:]}")
            else:
                inodes.add(out.split()[1])
        assert not failures, f"round {round_}: {len(failures)} of 6 failed: {failures}"
        assert len(inodes) == 1, f"round {round_}: the checkpoint was built {len(inodes)} times"
        path = tiny_model_dir(cache)
        assert tiny_checkpoint_problem(path) is None
        assert str(os.stat(path).st_ino) in inodes
        # Built into place; no staging or stale folders left behind; the lock file stays.
        assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, tiny_lock_path(path).name])


@pytest.fixture
def own_cache(tmp_path: Path, tiny_cache: Path) -> Path:
    """A private cache holding a copy of the session's tiny checkpoint (so corrupting it is harmless)."""
    import shutil

    source = ensure_tiny_checkpoint(tiny_cache)
    cache = tmp_path / "cache"
    shutil.copytree(source, tiny_model_dir(cache))
    return cache


def test_a_truncated_safetensors_file_is_detected_and_rebuilt(own_cache: Path) -> None:
    path = tiny_model_dir(own_cache)
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    assert tiny_checkpoint_problem(path) == f"model.safetensors has {len(original) // 2} bytes, expected {len(original)}"
    assert ensure_tiny_checkpoint(own_cache) == path
    assert tiny_checkpoint_problem(path) is None
    assert weights.read_bytes() == original  # the build is deterministic


def test_a_same_size_corruption_is_caught_by_the_hash(own_cache: Path) -> None:
    path = tiny_model_dir(own_cache)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert tiny_checkpoint_problem(path) == "model.safetensors does not match its recorded SHA-256"
    ensure_tiny_checkpoint(own_cache)
    assert tiny_checkpoint_problem(path) is None


def test_a_missing_tokenizer_is_detected_and_rebuilt_then_loads(own_cache: Path, monkeypatch) -> None:
    from omnizip_cli.models import ModelSpec, load_model

    path = tiny_model_dir(own_cache)
    (path / "tokenizer.json").unlink()
    assert tiny_checkpoint_problem(path) == "tokenizer.json is missing"
    monkeypatch.setenv("OMNIZIP_CACHE", str(own_cache))
    loaded = load_model(ModelSpec(model="tiny", device="cpu"))
    assert (path / "tokenizer.json").is_file()
    assert loaded.model.config.get_text_config().vocab_size == len(loaded.processor.tokenizer)


def test_a_folder_without_manifest_is_an_unfinished_build(own_cache: Path) -> None:
    path = tiny_model_dir(own_cache)
    (path / MANIFEST_NAME).unlink()
    assert manifest_problem(path) == (MANIFEST_NAME, "is missing (the build did not finish)")
    ensure_tiny_checkpoint(own_cache)
    assert manifest_problem(path) is None


def test_leftovers_of_a_killed_builder_are_cleaned_up(own_cache: Path) -> None:
    path = tiny_model_dir(own_cache)
    leftover = own_cache / f".{path.name}-build-killed"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    (path / "config.json").unlink()
    ensure_tiny_checkpoint(own_cache)
    assert not leftover.exists()
    assert tiny_checkpoint_problem(path) is None


def test_an_intact_cache_is_not_rebuilt_nor_locked(own_cache: Path) -> None:
    """The fast path: an intact folder is returned as is, even while another process holds the lock."""
    from omnizip_cli.filelock import exclusive_lock

    path = tiny_model_dir(own_cache)
    before = (path / "model.safetensors").stat().st_mtime_ns
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f,fcntl.LOCK_EX); "
         "print('locked',flush=True); time.sleep(30)", str(tiny_lock_path(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        assert ensure_tiny_checkpoint(own_cache) == path
        assert time.monotonic() - started < 2
        # ... and the lock is really held by the other process.
        from omnizip_cli.filelock import LockTimeout

        with pytest.raises(LockTimeout, match="another omnizip process"):
            with exclusive_lock(tiny_lock_path(path), timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert (path / "model.safetensors").stat().st_mtime_ns == before


def test_a_read_only_cache_is_a_one_line_error(tmp_path: Path) -> None:
    """No writable cache: a ModelLoadError naming the folder and OMNIZIP_CACHE (works as root too)."""
    from omnizip_cli.errors import ModelLoadError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(ModelLoadError, match="cannot build the tiny checkpoint in .*not-a-folder") as info:
        ensure_tiny_checkpoint(blocker)
    assert "OMNIZIP_CACHE" in info.value.one_line() and "\n" not in info.value.one_line()
