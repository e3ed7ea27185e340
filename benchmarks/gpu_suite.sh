#!/usr/bin/env bash
# One command that proves every GPU path on one CUDA GPU (issues 19, 29); see benchmarks/README.md.
#
#   benchmarks/gpu_suite.sh OUT_DIR          # GPU: at most 9 minutes (the time budget), then a summary
#   benchmarks/gpu_suite.sh --tiny OUT_DIR   # CPU dry run: the same steps, tiny sizes (CI)
#   benchmarks/gpu_suite.sh --plan [--tiny]  # print the plan and each step's command (JSON lines); run nothing
#
# Run from the repository root. Writes into OUT_DIR one JSON-lines file per step (each line tagged
# with "bench", written and flushed as it is measured), the step's stderr as STEP.log, and
# suite.jsonl: a "plan" line (order, limits, budget), one "step" line per step (rc, timed_out,
# limit_s, seconds, output file; "skipped" with the reason for a step not run) and a closing
# "summary" line. Every step runs even when an earlier one fails; the exit status is the number of
# failed steps (0: all passed; a skipped step is not a failure, a timed-out one is).
#
# Steps, in order of value (what the first GPU run must not lose comes first), each under its own
# time limit (seconds, GPU run; `timeout`, then KILL 5 s later), all within the suite's budget:
#   model_stages        150  7B random weights, 60 s and 300 s clips: encoders, keep plan, prefill, decode, ttft
#   decode_speed         60  7B LLM decode: stock generate vs eager loop vs CUDA graph
#   session             100  5 questions on one session, cold open vs disk-cache reopen, full vs compressed
#   gpu_tests            60  the gpu-marked tests (60 s each through pytest-timeout)
#   preprocess           40  media decode + processor, CPU vs device pixel work, 60 s 720p clip
#   ask_e2e              60  omnizip ask end to end, full vs compressed, overlapped vs sequential
#   quantized            20  the tiny model with --quantization bnb-8bit/bnb-4bit/torchao-int8 (placement.py)
#   multi_gpu            15  the tiny model split over cuda:0 and cuda:1 vs one GPU (skipped under 2 GPUs)
#   model_stages_qwen3   35+ Qwen3-Omni 30B-A3B random weights, 60 s clip: 35 s plus whatever the
#                            steps before it left of the budget; skipped (with a record) when the GPU
#                            has less than about 68 GB free (benchmarks/gpu_memory.py)
# The limits add up to the budget, 540 s, so the suite and its summary end within 9.5 minutes: one
# device command of at most 10 minutes with the install (benchmarks/gpu_device.sh). A step is never
# given more than what is left of the budget. With --tiny every limit is 150 s (the budget 540 s):
# only a hang is stopped. A step killed at its limit gets rc 124 and "timed_out": true; its file
# keeps every record written before the kill.
#
# Environment: PYTHON (default python3), OMNIZIP_CACHE (default OUT_DIR/cache), PYTEST_ARGS (added to
# the gpu_tests step's pytest command), GPU_SUITE_BUDGET_S (default 540), GPU_SUITE_STEPS (run only
# these steps, names separated by spaces or commas; the suite's order is kept), GPU_SUITE_LIMITS
# (e.g. "session=150 ask_e2e=30": other limits), QWEN3_NEED_BYTES (default 68000000000).
set -u -o pipefail

tiny=0
plan=0
while [ $# -gt 0 ]; do
    case $1 in
        --tiny) tiny=1; shift ;;
        --plan) plan=1; shift ;;
        *) break ;;
    esac
done
if { [ $plan -eq 0 ] && [ $# -ne 1 ]; } || { [ $plan -eq 1 ] && [ $# -ne 0 ]; } || { [ $# -eq 1 ] && [ "${1#-}" != "$1" ]; }; then
    echo "usage: benchmarks/gpu_suite.sh [--tiny] OUT_DIR  |  benchmarks/gpu_suite.sh --plan [--tiny]" >&2
    exit 2
fi
if [ $plan -eq 1 ]; then
    out=OUT_DIR
    suite=
else
    out=$1
    mkdir -p "$out" || exit 2
    out=$(cd "$out" && pwd)
    suite="$out/suite.jsonl"
    : > "$suite"
fi
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export OMNIZIP_CACHE=${OMNIZIP_CACHE:-$out/cache}
work="$out/clips"
suite_started=$(date +%s.%N)
suite_start_s=$(date +%s)

order=(model_stages decode_speed session gpu_tests preprocess ask_e2e quantized multi_gpu model_stages_qwen3)
declare -A limit
if [ $tiny -eq 1 ]; then
    mode=tiny
    for name in "${order[@]}"; do limit[$name]=150; done
else
    mode=gpu
    # quantized and multi_gpu (issue 27) load the tiny model only; they come before the 30B-A3B step,
    # which gets whatever the steps before it left of the budget (its own 35 s is only a floor)
    limit=([model_stages]=150 [decode_speed]=60 [session]=100 [gpu_tests]=60 [preprocess]=40 [ask_e2e]=60
           [quantized]=20 [multi_gpu]=15 [model_stages_qwen3]=35)
fi
rest_step=model_stages_qwen3  # the last step also gets what the steps before it left unused
budget=${GPU_SUITE_BUDGET_S:-540}
kill_grace=5
min_step_s=10
qwen3_need=${QWEN3_NEED_BYTES:-68000000000}
for pair in ${GPU_SUITE_LIMITS:-}; do
    name=${pair%%=*} value=${pair#*=}
    if [ -z "${limit[$name]+set}" ] || ! [[ $value =~ ^[0-9]+$ ]] || [ "$value" -lt 1 ]; then
        echo "gpu_suite: GPU_SUITE_LIMITS: '$pair' is not STEP=SECONDS with a step of: ${order[*]}" >&2
        exit 2
    fi
    limit[$name]=$value
done
if ! [[ $budget =~ ^[0-9]+$ ]]; then echo "gpu_suite: GPU_SUITE_BUDGET_S must be whole seconds" >&2; exit 2; fi
wanted=()
steps_wanted=${GPU_SUITE_STEPS:-}
for name in ${steps_wanted//,/ }; do
    if [ -z "${limit[$name]+set}" ]; then
        echo "gpu_suite: GPU_SUITE_STEPS: unknown step '$name' (steps: ${order[*]})" >&2
        exit 2
    fi
    wanted+=("$name")
done
deadline=$((suite_start_s + budget))

if [ $tiny -eq 1 ]; then
    model_stages=(benchmarks/model_stages.py --tiny --repeats 1 --decode-tokens 4)
    model_stages_qwen3=(benchmarks/model_stages.py --family qwen3 --tiny --repeats 1 --decode-tokens 4)
    decode_speed=(benchmarks/decode_speed.py --tiny --context 256 96 --new-tokens 4 --repeats 1)
    session=(benchmarks/session.py --tiny --seconds 8 --width 320 --height 180 --repeats 1 --new-tokens 2
             --no-warmup --reopen disk --work-dir "$work")
    preprocess=(benchmarks/preprocess.py --tiny --work-dir "$work")
    ask=(benchmarks/ask_e2e.py --tiny --no-warmup --work-dir "$work")
else
    model_stages=(benchmarks/model_stages.py --seconds 60 300 --repeats 2)
    # Estimate (not yet measured on a GPU): about 1-1.5 minutes. Building the 31.7 B random
    # parameters (63 GB in bf16) on the GPU ~10-20 s, float32 encoder copies for the equivalence
    # check, then one 60-s clip (~7.6k tokens) with every stage run 1 + 1 times; the MoE decode (16
    # tokens per run) is the slowest part.
    model_stages_qwen3=(benchmarks/model_stages.py --family qwen3 --seconds 60 --repeats 1 --decode-tokens 16)
    decode_speed=(benchmarks/decode_speed.py --repeats 3)
    session=(benchmarks/session.py --seconds 60 --width 1280 --height 720 --repeats 2 --reopen disk
             --work-dir "$work")
    preprocess=(benchmarks/preprocess.py --seconds 60 --width 1280 --height 720 --work-dir "$work")
    # one repeat: nine fresh processes (about 10 s each) would not fit the step's minute
    ask=(benchmarks/ask_e2e.py --seconds 60 --width 1280 --height 720 --device cuda --repeats 1 --work-dir "$work")
fi

failed_steps=()
timed_out_steps=()
skipped_steps=()

json_list() {  # the arguments as a JSON list of strings (names: letters, digits, _)
    local first=1 item
    printf '['
    for item in "$@"; do
        [ $first -eq 1 ] || printf ', '
        printf '"%s"' "$item"
        first=0
    done
    printf ']'
}

suite_line() {  # stdin to suite.jsonl (to stdout with --plan)
    if [ $plan -eq 1 ]; then cat; else cat >> "$suite"; fi
}

skip_record() {  # skip_record NAME REASON: a "step" line for a step that was not run
    printf '{"bench": "gpu_suite", "kind": "step", "mode": "%s", "step": "%s", "skipped": true, "rc": null, "timed_out": false, "seconds": 0, "reason": "%s"}\n' \
        "$mode" "$1" "$2" | suite_line
    skipped_steps+=("$1")
    echo "[gpu_suite] $1: skipped: $2" >&2
}

# step NAME COMMAND...: run it under its time limit with stdout in NAME.jsonl and stderr in NAME.log,
# then write its "step" line.
step() {
    local name=$1
    shift
    local started ended seconds rc timed_out=false now remaining own
    now=$(date +%s)
    remaining=$((deadline - now))
    own=${limit[$name]}
    if [ $plan -eq 1 ]; then  # the command as JSON (argv) with its own limit
        "$py" -c 'import json, sys; print(json.dumps({"bench": "gpu_suite", "kind": "command", "mode": sys.argv[1],
            "step": sys.argv[2], "limit_s": int(sys.argv[3]), "gets_the_rest": sys.argv[4] == sys.argv[2],
            "argv": sys.argv[5:]}))' "$mode" "$name" "$own" "$rest_step" "$@"
        return
    fi
    if [ "$remaining" -lt "$min_step_s" ]; then
        skip_record "$name" "the suite's time budget of $budget s is spent ($remaining s left)"
        return
    fi
    if [ "$name" = "$rest_step" ] && [ "$remaining" -gt "$own" ]; then own=$remaining; fi
    if [ "$own" -gt "$remaining" ]; then own=$remaining; fi
    echo "[gpu_suite] $name (limit $own s): $*" >&2
    started=$(date +%s.%N)
    timeout --kill-after="$kill_grace" "$own" "$@" > "$out/$name.jsonl" 2> "$out/$name.log"
    rc=$?
    ended=$(date +%s.%N)
    seconds=$(awk "BEGIN {print $ended - $started}")
    if { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && awk "BEGIN {exit !($seconds >= $own)}"; then
        timed_out=true
        rc=124
        timed_out_steps+=("$name")
        echo "[gpu_suite] $name: killed at its time limit of $own s; the records written before are kept" \
            >> "$out/$name.log"
    fi
    [ $rc -eq 0 ] || failed_steps+=("$name")
    printf '{"bench": "gpu_suite", "kind": "step", "mode": "%s", "step": "%s", "rc": %d, "timed_out": %s, "limit_s": %d, "seconds": %s, "output": "%s.jsonl"}\n' \
        "$mode" "$name" "$rc" "$timed_out" "$own" "$seconds" "$name" >> "$suite"
    echo "[gpu_suite] $name: rc $rc$([ "$timed_out" = true ] && echo ' (timed out)'), $seconds s" >&2
}

# Before the 30B-A3B step on a GPU: enough free memory? (0: yes, run; 3: no, a skipped record is
# written; anything else: the check could not read it, and the step runs and says why itself.)
qwen3_memory_ok() {
    local rc
    [ $tiny -eq 1 ] && return 0  # the CPU run has no GPU memory to check
    [ $plan -eq 1 ] && return 0
    timeout --kill-after="$kill_grace" 60 "$py" benchmarks/gpu_memory.py --step model_stages_qwen3 \
        --need-bytes "$qwen3_need" >> "$suite" 2>> "$out/model_stages_qwen3.log"
    rc=$?
    if [ $rc -eq 3 ]; then
        skipped_steps+=(model_stages_qwen3)
        echo "[gpu_suite] model_stages_qwen3: skipped: not enough free GPU memory (see suite.jsonl)" >&2
        return 1
    fi
    [ $rc -eq 0 ] || echo "[gpu_suite] model_stages_qwen3: the free memory could not be read (rc $rc); running it" >&2
    return 0
}

run_step() {
    case $1 in
        model_stages) step model_stages "$py" "${model_stages[@]}" ;;
        decode_speed) step decode_speed "$py" "${decode_speed[@]}" ;;
        session) step session "$py" "${session[@]}" ;;
        # the gpu-marked tests, one JSON line per test as it finishes; PYTEST_ARGS adds options
        # shellcheck disable=SC2086  # PYTEST_ARGS is a word list
        gpu_tests) step gpu_tests "$py" benchmarks/gpu_tests.py --per-test-timeout 60 ${PYTEST_ARGS:-} ;;
        preprocess) step preprocess "$py" "${preprocess[@]}" ;;
        ask_e2e) step ask_e2e "$py" "${ask[@]}" ;;
        quantized) step quantized "$py" benchmarks/placement.py quantized "$mode" ;;
        multi_gpu) step multi_gpu "$py" benchmarks/placement.py multi_gpu "$mode" ;;
        model_stages_qwen3) qwen3_memory_ok && step model_stages_qwen3 "$py" "${model_stages_qwen3[@]}" ;;
    esac
}

limits_json=$(for name in "${order[@]}"; do printf '"%s": %d, ' "$name" "${limit[$name]}"; done)
printf '{"bench": "gpu_suite", "kind": "plan", "mode": "%s", "order": %s, "limits_s": {%s}, "rest_to": "%s", "budget_s": %d, "only": %s}\n' \
    "$mode" "$(json_list "${order[@]}")" "${limits_json%, }" "$rest_step" "$budget" \
    "$([ ${#wanted[@]} -gt 0 ] && json_list "${wanted[@]}" || echo null)" | suite_line

for name in "${order[@]}"; do
    if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then continue; fi
    run_step "$name"
done

[ $plan -eq 1 ] && exit 0
failed=${#failed_steps[@]}
timeout 30 "$py" - "$suite" "$mode" "$suite_started" "$budget" "$(json_list "${failed_steps[@]}")" \
    "$(json_list "${timed_out_steps[@]}")" "$(json_list "${skipped_steps[@]}")" <<'EOF'
import json, platform, sys, time
suite, mode, started, budget = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
failed, timed_out, skipped = (json.loads(arg) for arg in sys.argv[5:8])
record = {"bench": "gpu_suite", "kind": "summary", "mode": mode, "failed_steps": len(failed), "failed": failed,
          "timed_out": timed_out, "skipped": skipped, "seconds": time.time() - started, "budget_s": budget,
          "python": platform.python_version()}
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
exit "$failed"
