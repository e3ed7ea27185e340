"""Quantized and split loading of the tiny model on the sample clip (issue 27): one JSON line per run.

``python benchmarks/placement.py quantized|multi_gpu MODE`` (MODE ``gpu`` or ``tiny``), run by
``benchmarks/gpu_suite.sh`` as its ``quantized`` and ``multi_gpu`` steps.

* quantized: ``--quantization`` bnb-8bit, bnb-4bit and torchao-int8 on cuda (``tiny``: torchao-int8
  on the CPU).
* multi_gpu: ``--device-map`` with the language model's layers on cuda:0 and cuda:1 against one GPU
  (``tiny``: the CPU plus disk offload); exit 1 when the tokens differ.

Where the GPU(s) or the package are missing, a ``skipped`` line says why and the step passes.
"""

import json, sys, time

import torch

from omnizip_cli.generation import GenerationOptions, OpenOptions, Session
from omnizip_cli.models import ModelSpec, load_model

what, mode = sys.argv[1], sys.argv[2]
bench = what
greedy = GenerationOptions(max_new_tokens=16)


def emit(**record):
    print(json.dumps({"bench": bench, "mode": mode, **record}), flush=True)


def answer(loaded):
    started = time.perf_counter()
    session = Session.open(loaded, "samples/talking.mp4", OpenOptions(cache=False))
    stats = session.answer("What is said?", greedy)
    return stats, time.perf_counter() - started


gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
if what == "quantized":
    methods = ["torchao-int8"] if mode == "tiny" else ["bnb-8bit", "bnb-4bit", "torchao-int8"]
    device = "cpu" if mode == "tiny" else "cuda"
    for method in methods:
        package = "bitsandbytes" if method.startswith("bnb") else "torchao"
        from importlib.util import find_spec

        if device == "cuda" and gpus == 0:
            emit(kind="skipped", method=method, reason="no CUDA GPU")
            continue
        if find_spec(package) is None:
            emit(kind="skipped", method=method, reason=f"{package} is not installed (pip install {package})")
            continue
        loaded = load_model(ModelSpec(model="tiny", device=device, quantization=method))
        stats, seconds = answer(loaded)
        emit(kind="quantized", method=method, device=loaded.device, weights_bytes=loaded.weights_bytes,
             unquantized_bytes=loaded.unquantized_bytes, tokens=len(stats.token_ids), decoder=stats.decoder,
             seconds=seconds)
else:
    lm = "model.language_model"
    if mode == "tiny":
        first, second, one_device = "cpu", "disk", "cpu"
    elif gpus < 2:
        emit(kind="skipped", reason=f"needs 2 CUDA GPUs, {gpus} visible")
        sys.exit(0)
    else:
        first, second, one_device = 0, 1, "cuda:0"
    placement = {"model.audio_tower": first, "model.visual": first, f"{lm}.embed_tokens": first,
                 f"{lm}.layers.0": first, f"{lm}.layers.1": second, f"{lm}.norm": second,
                 f"{lm}.rotary_emb": second, "lm_head": second}
    one = load_model(ModelSpec(model="tiny", device=one_device, dtype="float32"))
    split = load_model(ModelSpec(model="tiny", dtype="float32", device_map=json.dumps(placement)))
    expected, one_seconds = answer(one)
    got, split_seconds = answer(split)
    emit(kind="multi_gpu", devices=split.weights_per_device, same_tokens=got.token_ids == expected.token_ids,
         decoder=got.decoder, notes=got.notes, seconds=split_seconds, one_device_seconds=one_seconds)
    if got.token_ids != expected.token_ids:
        sys.exit(1)
