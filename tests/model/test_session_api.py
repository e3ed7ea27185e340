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
