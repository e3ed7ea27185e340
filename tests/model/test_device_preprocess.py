"""The video processor's pixel work on the model's device (``omnizip_cli.models.device_preprocess``).

* the switch: ``auto`` picks the model's device (CPU or CUDA); ``stock`` (argument or environment
  variable) keeps the stock processor path; an explicit device is taken as given;
* the device path run on the CPU device gives the stock processor's tensors (within float
  tolerance; in fact bitwise), also for an odd frame count (the processor pads the last 2-frame
  group) and for video without audio;
* on a GPU (``gpu``-marked): the pixel values come out on the device, equal to the CPU path within
  float tolerance, every other tensor identical, and a Session opens and answers from them.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from omnizip_cli.models.device_preprocess import ENV_VAR, preprocess_device, video_kwargs
from tests.helpers.synthetic import synthetic_media


def assert_same_inputs(stock: dict[str, Any], device: dict[str, Any]) -> None:
    assert stock.keys() == device.keys()
    for key, value in stock.items():
        other = device[key]
        if not isinstance(value, torch.Tensor):
            assert value == other, key
            continue
        other = other.cpu()
        assert value.shape == other.shape and value.dtype == other.dtype, key
        if key == "pixel_values_videos":
            torch.testing.assert_close(other, value, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(value, other), key


def test_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert preprocess_device("cpu") is None  # the CPU: the bounded, memory-checked chunked path
    assert preprocess_device(None) is None
    assert preprocess_device("cpu", "cpu") == "cpu"  # chosen explicitly
    assert preprocess_device("mps") is None  # anything else: the stock path
    assert preprocess_device("cuda:0", "stock") is None
    assert preprocess_device("cuda:0", "cpu") == "cpu"
    assert preprocess_device("cpu", "cuda:1") == "cuda:1"
    expected = "cuda:0" if torch.cuda.is_available() else None
    assert preprocess_device("cuda:0") == expected
    monkeypatch.setenv(ENV_VAR, "stock")
    assert preprocess_device("cpu") is None and preprocess_device("cuda:0") is None
    assert video_kwargs(None) == {}
    assert video_kwargs("cuda:0") == {"device": "cuda:0", "do_rescale": False, "do_normalize": False}


def test_device_path_on_cpu_equals_stock(tiny_model: Any) -> None:
    media = synthetic_media(6, 6, height=224, width=392)
    stock = tiny_model.adapter.prepare(tiny_model.processor, media)
    on_cpu = tiny_model.adapter.prepare(tiny_model.processor, media, device="cpu")
    assert_same_inputs(stock.tensors, on_cpu.tensors)
    assert on_cpu.tensors["pixel_values_videos"].device.type == "cpu"
    assert on_cpu.tensors["pixel_values_videos"].dtype == torch.float32


def test_device_path_on_cpu_odd_frames_and_no_audio(tiny_model: Any) -> None:
    media = synthetic_media(5, None, height=168, width=280)
    media.frames = media.frames[:-1]  # an odd count: the processor repeats the last frame
    stock = tiny_model.adapter.prepare(tiny_model.processor, media)
    on_cpu = tiny_model.adapter.prepare(tiny_model.processor, media, device="cpu")
    assert_same_inputs(stock.tensors, on_cpu.tensors)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_path_on_gpu_equals_cpu_path() -> None:
    from omnizip_cli import load_model
    from omnizip_cli.generation.sampling import GenerationOptions
    from omnizip_cli.generation.session import Session

    loaded = load_model("tiny", device="cuda", dtype="float32")
    media = synthetic_media(8, 8, height=336, width=588)
    stock = loaded.adapter.prepare(loaded.processor, media)
    on_gpu = loaded.adapter.prepare(loaded.processor, media, device=preprocess_device(loaded.device))
    assert on_gpu.tensors["pixel_values_videos"].device.type == "cuda"
    assert_same_inputs(stock.tensors, on_gpu.tensors)
    session = Session.open(loaded, media, compression="45")  # the default switch: pixels on the GPU
    assert session.prepared.tensors["pixel_values_videos"].device.type == "cuda"
    assert session.answer("What happens?", GenerationOptions(max_new_tokens=2)).generated_tokens >= 1
