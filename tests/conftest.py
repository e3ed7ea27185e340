"""Shared fixtures: a per-session cache for the tiny checkpoints, and each tiny model loaded once.

Tests are sorted by what they need: ``tests/unit`` (no model), ``tests/model`` (the tiny model),
``tests/cli`` (the command line: a fake session for plumbing, a few real end-to-end runs);
``tests/helpers`` holds shared builders and references. Slow subprocess smokes are marked ``slow``
(they run in CI too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_prefix_cache() -> Iterator[None]:
    """The disk cache of prepared media is off (``OMNIZIP_CACHE_MAX_BYTES=0``) unless a test turns it on:
    an entry left by one test would change what another one measures."""
    patch = pytest.MonkeyPatch()
    patch.setenv("OMNIZIP_CACHE_MAX_BYTES", "0")
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``OMNIZIP_CACHE``: the caller's when set (reuse a built checkpoint), else a session temp dir."""
    if os.environ.get("OMNIZIP_CACHE"):
        yield Path(os.environ["OMNIZIP_CACHE"])
        return
    patch = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("omnizip-cache")
    patch.setenv("OMNIZIP_CACHE", str(path))
    try:
        yield path
    finally:
        patch.undo()


@pytest.fixture(scope="session")
def tiny_model(tiny_cache: Path) -> Any:
    """The tiny random Qwen2.5-Omni, built (once per cache) and loaded through the real loader."""
    from omnizip_cli import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def tiny_cpu_model(tiny_cache: Path) -> Any:
    """The tiny random Qwen2.5-Omni on the CPU in float32 (``tiny_model`` goes to a GPU when there is
    one), for the tests of CPU paths: the static KV cache without a graph, the encoders' attention."""
    from omnizip_cli.models import ModelSpec, load_model

    return load_model(ModelSpec(model="tiny", device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_cache: Path) -> Any:
    """The tiny random Qwen3-Omni thinker (``tiny-qwen3``), built (once per cache) and loaded through the
    real loader."""
    from omnizip_cli import load_model

    return load_model("tiny-qwen3")
