"""The public library API: ``from omnizip_cli import Session, load_model`` and its tested docstring example."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_public_api_names() -> None:
    import omnizip_cli
    from omnizip_cli import GenerationOptions, OmniZipConfig, Session, load_model  # noqa: F401

    assert set(omnizip_cli.__all__) >= {"Session", "load_model", "OmniZipConfig", "PRESETS", "GenerationOptions"}
    with pytest.raises(AttributeError):
        omnizip_cli.NoSuchThing  # noqa: B018


def test_session_docstring_example_runs(monkeypatch: pytest.MonkeyPatch, tiny_cache: Path) -> None:
    """The example in ``omnizip_cli.generation.session``: a session on samples/talking.mp4, two questions."""
    import omnizip_cli.generation.session as module

    monkeypatch.chdir(ROOT)
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert results.attempted >= 6 and results.failed == 0


def test_load_model_takes_a_name_and_options(tiny_model) -> None:
    from omnizip_cli import ModelSpec, load_model

    with pytest.raises(TypeError, match="not both"):
        load_model(ModelSpec(model="tiny"), device="cpu")


def test_session_with_another_compression_shares_the_encoding(tiny_model) -> None:
    from omnizip_cli import GenerationOptions, Session
    from tests.helpers.synthetic import synthetic_media

    full = Session.open(tiny_model, synthetic_media(4.0, 4.0), compression=None, record_saliency=True)
    compressed = full.with_compression("35")
    assert compressed.encoded is full.encoded
    assert compressed.prefill.length < full.prefill.length
    assert compressed.answer("What is said?", GenerationOptions(max_new_tokens=3)).token_ids
    without_saliency = Session.open(tiny_model, synthetic_media(4.0, 4.0), compression=None)
    with pytest.raises(ValueError, match="record_saliency=True"):
        without_saliency.with_compression("45")


def test_two_answers_interleaved_on_one_thread_are_refused(tiny_model) -> None:
    """A second answer started while the first still streams would corrupt the shared cache: refused."""
    from omnizip_cli import GenerationOptions, Session
    from omnizip_cli.generation import SessionBusy, collect
    from tests.helpers.synthetic import synthetic_media

    session = Session.open(tiny_model, synthetic_media(3.0, 3.0), compression="45")
    options = GenerationOptions(max_new_tokens=4)
    expected = session.answer("What is said?", options).token_ids
    first = session.ask("What is said?", options)
    next(first)
    with pytest.raises(SessionBusy, match="still streaming"):
        collect(session.ask("Who speaks?", options))
    assert collect(first).token_ids == expected  # the first answer is not disturbed
    assert session.answer("What is said?", options).token_ids == expected


def test_threads_sharing_a_session_take_turns(tiny_model) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from omnizip_cli import GenerationOptions, Session
    from tests.helpers.synthetic import synthetic_media

    session = Session.open(tiny_model, synthetic_media(3.0, 3.0), compression="45")
    options = GenerationOptions(max_new_tokens=4)
    questions = ["What is said?", "Who speaks?", "Where is it?", "Describe it."]
    expected = [session.answer(q, options).token_ids for q in questions]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: session.answer(q, options).token_ids, questions))
    assert got == expected


OPEN_AND_ANSWER = """
import json, sys
from omnizip_cli import GenerationOptions, Session, load_model
session = Session.open(load_model("tiny"), sys.argv[1])
stats = session.answer("What is said?", GenerationOptions(max_new_tokens=6))
print(json.dumps({"source": stats.prefix_source, "tokens": stats.token_ids,
                  "logits": stats.prefill_logits[:16].tolist(), "cache": session.prefix_cache}))
"""


@pytest.mark.slow
def test_the_library_opens_through_the_disk_cache_across_processes(tiny_cache: Path, tmp_path: Path) -> None:
    """``Session.open(load_model("tiny"), path)`` in two processes: the second reads the prefix from disk
    (the library uses the cache by default, as the CLI) and answers with the same tokens and logits."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMNIZIP_CACHE": str(tiny_cache),
           "OMNIZIP_CACHE_MAX_BYTES": "1G", "OMNIZIP_OVERLAP": "0"}
    # a cache folder of this test's own (the checkpoint stays in the shared one)
    env["OMNIZIP_CACHE"] = str(tmp_path)
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", OPEN_AND_ANSWER, str(ROOT / "samples" / "talking.mp4")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["source"] == "fresh" and first["cache"]["stored"]
    assert second["source"] == "disk" and second["cache"]["source"] == "disk"
    assert second["tokens"] == first["tokens"] and second["logits"] == first["logits"]
