"""``--device-map``: the tiny thinker split by accelerate (omnizip_cli/models/placement.py).

On the CPU the split that runs is the CPU plus disk offload: the language model's second layer and
the head are offloaded to the disk (their weights on ``meta``, brought in by accelerate's hooks at
each forward). The greedy tokens equal the one-device model's, compressed and uncompressed, for
questions and a conversation; the static-cache decoder falls back to the eager loop with a note; the
description names each device and its weights. A two-GPU split runs where there are two GPUs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from omnizip_cli.compression import CompressionSetting
from omnizip_cli.errors import ModelLoadError, UsageError
from omnizip_cli.generation import GenerationOptions, OpenOptions, Session
from omnizip_cli.models import ModelSpec, load_model
from omnizip_cli.models.placement import parse_device_map
from tests.helpers.synthetic import synthetic_media

pytest.importorskip("accelerate")

GREEDY = GenerationOptions(max_new_tokens=10)
QUESTIONS = ("What is said?", "Describe it.")
LM = "model.language_model"


def _map(**overrides: Any) -> str:
    placement: dict[str, Any] = {"model.audio_tower": "cpu", "model.visual": "cpu", f"{LM}.embed_tokens": "cpu",
                                 f"{LM}.layers.0": "cpu", f"{LM}.layers.1": "disk", f"{LM}.norm": "cpu",
                                 f"{LM}.rotary_emb": "cpu", "lm_head": "disk"}
    placement.update(overrides)
    return json.dumps(placement)


@pytest.fixture(scope="module")
def split_model(tiny_cache) -> Any:
    return load_model(ModelSpec(model="tiny", dtype="float32", device_map=_map()))


@pytest.fixture(scope="module")
def media() -> Any:
    return synthetic_media(6.0, 6.0)


def _script(loaded: Any, media: Any, compression: Any, decoder: str) -> tuple[list[list[int]], Session]:
    session = Session.open(loaded, media, OpenOptions(compression=compression, cache=False, decoder=decoder))
    tokens = [session.answer(q, GREEDY).token_ids for q in QUESTIONS]
    chat = session.conversation()
    tokens += [chat.answer(q, GREEDY).token_ids for q in QUESTIONS]
    return tokens, session


@pytest.mark.parametrize("compression", [CompressionSetting.from_options(), None], ids=["preset45", "off"])
def test_cpu_and_disk_split_gives_the_one_device_tokens(tiny_cpu_model, split_model, media, compression) -> None:
    assert split_model.spans_devices and set(split_model.weights_per_device) == {"cpu", "disk"}
    assert split_model.model.model.language_model.layers[1].mlp.up_proj.weight.device.type == "meta"  # offloaded
    expected, one = _script(tiny_cpu_model, media, compression, "eager")
    got, split = _script(split_model, media, compression, "eager")
    assert got == expected
    assert torch.equal(split.prefix.prefill.embeds, one.prefix.prefill.embeds)  # encoders and keep plan alike


def test_the_static_decoder_falls_back_with_a_note(tiny_cpu_model, split_model, media) -> None:
    expected, _ = _script(tiny_cpu_model, media, CompressionSetting.from_options(), "fast")
    session = Session.open(split_model, media, OpenOptions(cache=False, decoder="fast"))
    stats = session.answer(QUESTIONS[0], GREEDY)
    assert stats.token_ids == expected[0] and stats.decoder == "eager"
    assert any("split over cpu, offloaded (--device-map)" in note for note in stats.notes)


def test_the_description_names_every_device_and_its_weights(split_model) -> None:
    described = split_model.describe()
    assert described["device"].startswith("cpu ") and " + disk " in described["device"]
    assert described["device_map"] == _map()
    weights = described["weights_per_device"]
    total = sum(p.numel() * p.element_size() for p in split_model.model.parameters())
    assert weights["disk"] > 0 and sum(weights.values()) >= total


def test_a_strategy_on_a_cpu_only_machine_is_one_device(tiny_cache) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    loaded = load_model(ModelSpec(model="tiny", dtype="float32", device_map="sequential"))
    assert loaded.device == "cpu" and not loaded.spans_devices


@pytest.mark.parametrize("value", ["everywhere", "{", "[1, 2]", '{"lm_head": "tpu"}', '{"lm_head": -1}', "{}"])
def test_bad_maps_are_usage_errors(value: str) -> None:
    with pytest.raises(UsageError, match="--device-map"):
        ModelSpec(model="tiny", device_map=value)


def test_a_map_file_and_its_conflicts(tmp_path) -> None:
    path = tmp_path / "map.json"
    path.write_text('{"": "cpu"}')
    assert parse_device_map(str(path)) == {"": "cpu"}
    with pytest.raises(UsageError, match="not both"):
        ModelSpec(model="tiny", device="cpu", device_map="auto")


def test_a_missing_gpu_or_an_offloaded_embedding_is_one_line(tiny_cache) -> None:
    with pytest.raises(UsageError, match="CUDA device"):
        load_model(ModelSpec(model="tiny", device_map=_map(lm_head=7)))
    with pytest.raises(ModelLoadError, match="offloads the token embedding"):
        load_model(ModelSpec(model="tiny", dtype="float32", device_map=_map(**{f"{LM}.embed_tokens": "disk"})))


def test_the_cli_refuses_a_bad_map_with_exit_2() -> None:
    from omnizip_cli.cli import app

    result = CliRunner().invoke(app, ["ask", "samples/talking.mp4", "Q?", "--model", "tiny", "--device-map", "{"])
    assert result.exit_code == 2 and "--device-map" in result.output and "Traceback" not in result.output


@pytest.mark.gpu
def test_two_gpu_split_gives_the_one_gpu_tokens(tiny_cache, media) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    one = load_model(ModelSpec(model="tiny", device="cuda:0", dtype="float32"))
    split = load_model(ModelSpec(model="tiny", dtype="float32", device_map=_map(
        **{"model.audio_tower": 0, "model.visual": 1, f"{LM}.embed_tokens": 0, f"{LM}.layers.0": 0,
           f"{LM}.layers.1": 1, f"{LM}.norm": 1, f"{LM}.rotary_emb": 1, "lm_head": 1})))
    assert set(split.weights_per_device) == {"cuda:0", "cuda:1"}
    compression = CompressionSetting.from_options()
    assert _script(split, media, compression, "auto")[0] == _script(one, media, compression, "eager")[0]
