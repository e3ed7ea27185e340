"""``--quantization`` (omnizip_cli/models/quantization.py): the language model quantized through
transformers' configs, the encoders left as they are.

On the CPU: torchao int8 weight-only runs (when torchao is installed), its weights take less memory
and the prefix (encoders and keep plan) is the unquantized model's, bit for bit. bitsandbytes needs
CUDA: refused in one line without it; the ``gpu`` tests run it where there is a GPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from omnizip_cli.compression import CompressionSetting
from omnizip_cli.errors import EnvironmentProblem, UsageError
from omnizip_cli.generation import GenerationOptions, OpenOptions, Session
from omnizip_cli.models import ModelSpec, load_model
from omnizip_cli.models.quantization import tensor_bytes
from tests.helpers.synthetic import synthetic_media

GREEDY = GenerationOptions(max_new_tokens=8)


@pytest.fixture(scope="module")
def media() -> Any:
    return synthetic_media(6.0, 6.0)


def _session(loaded: Any, media: Any, decoder: str = "eager") -> Session:
    return Session.open(loaded, media, OpenOptions(compression=CompressionSetting.from_options(), cache=False,
                                                   decoder=decoder))


def test_torchao_int8_runs_with_less_weight_memory(tiny_cpu_model, media) -> None:
    pytest.importorskip("torchao")
    quantized = load_model(ModelSpec(model="tiny", device="cpu", dtype="float32", quantization="torchao-int8"))
    assert quantized.weights_bytes < quantized.unquantized_bytes == tiny_cpu_model.weights_bytes
    described = quantized.describe()
    assert described["quantization"] == "torchao-int8"
    assert "language model torchao-int8 (weights" in described["dtype"] and "MB unquantized" in described["dtype"]
    layer = quantized.model.model.language_model.layers[0].mlp.up_proj.weight
    assert type(layer) is not torch.nn.Parameter and tensor_bytes(layer) < layer.numel() * 4  # int8 data + scales
    for name in ("audio_tower", "visual"):  # the encoders are not quantized
        assert all(type(p) is torch.nn.Parameter for p in getattr(quantized.model.model, name).parameters())
    assert type(quantized.model.lm_head.weight) is torch.nn.Parameter

    session = _session(quantized, media)
    plain = _session(tiny_cpu_model, media)
    assert torch.equal(session.prefix.prefill.embeds, plain.prefix.prefill.embeds)  # the same prefix
    stats = session.answer("What is said?", GREEDY)
    assert len(stats.token_ids) == GREEDY.max_new_tokens or stats.stop_reason == "eos"
    fast = _session(quantized, media, decoder="fast").answer("What is said?", GREEDY)
    assert fast.token_ids == stats.token_ids  # the static-cache step on quantized weights


def test_the_unquantized_model_reports_equal_figures(tiny_cpu_model) -> None:
    assert tiny_cpu_model.quantization is None
    assert tiny_cpu_model.weights_bytes == tiny_cpu_model.unquantized_bytes > 0
    assert tiny_cpu_model.describe()["dtype"] == "float32"


def test_bad_or_unavailable_quantization_is_one_line(tiny_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="--quantization must be one of"):
        ModelSpec(model="tiny", quantization="int3")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="needs a CUDA GPU"):
            load_model(ModelSpec(model="tiny", device="cpu", quantization="bnb-8bit"))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(EnvironmentProblem, match="needs torchao"):
        load_model(ModelSpec(model="tiny", device="cpu", quantization="torchao-int8"))


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["bnb-8bit", "bnb-4bit", "torchao-int8"])
def test_quantized_on_a_gpu(tiny_cache, media, method: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("bitsandbytes" if method.startswith("bnb") else "torchao")
    loaded = load_model(ModelSpec(model="tiny", device="cuda", quantization=method))
    assert loaded.weights_bytes < loaded.unquantized_bytes
    stats = _session(loaded, media, decoder="auto").answer("What is said?", GREEDY)
    assert stats.token_ids
