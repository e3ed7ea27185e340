#!/usr/bin/env bash
# One command that proves every GPU path on one CUDA GPU (issue 19); see benchmarks/README.md.
#
#   benchmarks/gpu_suite.sh OUT_DIR          # GPU: about 8-9 minutes on an H200 (estimate)
#   benchmarks/gpu_suite.sh --tiny OUT_DIR   # CPU dry run: the same steps, tiny sizes (CI)
#
# Run from the repository root. Writes into OUT_DIR one JSON-lines file per step (each line tagged
# with "bench"), the step's stderr as STEP.log, and suite.jsonl: one "step" line per step (rc,
# seconds, output file) and a closing "summary" line. Every step runs even when an earlier one
# fails; the exit status is the number of failed steps (0: all passed).
#
# Steps: gpu_tests (the gpu-marked tests, as JSON lines), model_stages (7B random weights, 60 s and
# 300 s clips), model_stages_qwen3 (Qwen3-Omni 30B-A3B random weights, 60 s clip), decode_speed (7B LLM), session (5 questions, cold vs reopen, full vs compressed),
# preprocess (media decode + processor, CPU vs device pixel work, 60 s 720p clip) and ask_e2e
# (omnizip ask, file to first token, full vs compressed, 60 s 720p clip).
# Environment: PYTHON (default python3), OMNIZIP_CACHE (default OUT_DIR/cache), PYTEST_ARGS (added to
# the gpu_tests step's pytest command).
set -u -o pipefail

tiny=0
if [ "${1:-}" = "--tiny" ]; then tiny=1; shift; fi
if [ $# -ne 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: benchmarks/gpu_suite.sh [--tiny] OUT_DIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export OMNIZIP_CACHE=${OMNIZIP_CACHE:-$out/cache}
work="$out/clips"
suite="$out/suite.jsonl"
: > "$suite"
failed=0
suite_started=$(date +%s.%N)

if [ $tiny -eq 1 ]; then
    mode=tiny
    model_stages=(benchmarks/model_stages.py --tiny --repeats 1 --decode-tokens 4)
    model_stages_qwen3=(benchmarks/model_stages.py --family qwen3 --tiny --repeats 1 --decode-tokens 4)
    decode_speed=(benchmarks/decode_speed.py --tiny --context 256 96 --new-tokens 4 --repeats 1)
    session=(benchmarks/session.py --tiny --seconds 8 --width 320 --height 180 --repeats 1 --new-tokens 2
             --no-warmup --work-dir "$work")
    preprocess=(benchmarks/preprocess.py --tiny --work-dir "$work")
    ask=(benchmarks/ask_e2e.py --tiny --no-warmup --work-dir "$work")
else
    mode=gpu
    model_stages=(benchmarks/model_stages.py --seconds 60 300 --repeats 2)
    # Estimate (not yet measured on an H200): about 1-1.5 minutes. Building the 31.7 B random
    # parameters (63 GB in bf16) on the GPU ~10-20 s, float32 encoder copies for the equivalence
    # check, then one 60-s clip (~7.6k tokens) with every stage run 1 + 1 times; the MoE decode (16
    # tokens per run) is the slowest part. One clip, one repeat, so the whole suite stays near 8 minutes.
    model_stages_qwen3=(benchmarks/model_stages.py --family qwen3 --seconds 60 --repeats 1 --decode-tokens 16)
    decode_speed=(benchmarks/decode_speed.py --repeats 3)
    session=(benchmarks/session.py --seconds 60 --width 1280 --height 720 --repeats 2 --work-dir "$work")
    preprocess=(benchmarks/preprocess.py --seconds 60 --width 1280 --height 720 --work-dir "$work")
    ask=(benchmarks/ask_e2e.py --seconds 60 --width 1280 --height 720 --device cuda --work-dir "$work")
fi

# step NAME COMMAND...: run it with stdout in NAME.jsonl and stderr in NAME.log, record a step line.
step() {
    local name=$1
    shift
    local started ended rc
    echo "[gpu_suite] $name: $*" >&2
    started=$(date +%s.%N)
    "$@" > "$out/$name.jsonl" 2> "$out/$name.log"
    rc=$?
    ended=$(date +%s.%N)
    [ $rc -eq 0 ] || failed=$((failed + 1))
    printf '{"bench": "gpu_suite", "kind": "step", "mode": "%s", "step": "%s", "rc": %d, "seconds": %s, "output": "%s.jsonl"}\n' \
        "$mode" "$name" "$rc" "$(awk "BEGIN {print $ended - $started}")" "$name" >> "$suite"
    echo "[gpu_suite] $name: rc $rc, $(awk "BEGIN {print $ended - $started}") s" >&2
}

gpu_tests() {
    # The gpu-marked tests (skipped without CUDA), one JSON line per test from pytest's JUnit XML.
    # Only the files that hold gpu-marked tests are collected; PYTEST_ARGS adds options.
    local xml="$out/gpu_tests.xml" rc files
    files=$(grep -rlE "pytest\.mark\.gpu|mark\.gpu" tests --include='test_*.py' | sort)
    # shellcheck disable=SC2086  # PYTEST_ARGS and the file list are word lists
    "$py" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$xml" ${PYTEST_ARGS:-} $files >&2
    rc=$?
    "$py" benchmarks/junit_jsonl.py "$xml" --bench gpu_tests || return 1
    [ $rc -eq 5 ] && rc=0  # 5: no test collected (none is gpu-marked): not a failure of the suite
    return $rc
}

step gpu_tests gpu_tests
step model_stages "$py" "${model_stages[@]}"
step model_stages_qwen3 "$py" "${model_stages_qwen3[@]}"
step decode_speed "$py" "${decode_speed[@]}"
step session "$py" "${session[@]}"
step preprocess "$py" "${preprocess[@]}"
step ask_e2e "$py" "${ask[@]}"

# Issue 27: quantized and split loading of the tiny model on the sample clip, one JSON line per run.
# quantized: --quantization bnb-8bit, bnb-4bit and torchao-int8 on cuda (--tiny: torchao-int8 on the
# CPU); multi_gpu: --device-map with the language model's layers on cuda:0 and cuda:1 against one GPU
# (--tiny: the CPU plus disk offload). Where the GPU(s) or the package are missing, a "skipped" line
# says why and the step passes.
placement_step() {
    "$py" - "$1" "$mode" <<'PYEOF'
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
PYEOF
}
step quantized placement_step quantized
step multi_gpu placement_step multi_gpu

"$py" - "$suite" "$mode" "$failed" "$suite_started" <<'EOF'
import json, platform, sys, time
suite, mode, failed, started = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
record = {"bench": "gpu_suite", "kind": "summary", "mode": mode, "failed_steps": failed,
          "seconds": time.time() - started, "python": platform.python_version()}
try:
    import torch, transformers
    record.update(torch=torch.__version__, transformers=transformers.__version__, cuda=torch.version.cuda,
                  gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except Exception as exc:  # noqa: BLE001 - the summary line is written whatever is missing
    record["error"] = f"{type(exc).__name__}: {exc}"
with open(suite, "a") as f:
    f.write(json.dumps(record) + "\n")
print(json.dumps(record))
EOF
exit $failed
