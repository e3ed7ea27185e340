#!/usr/bin/env bash
# The GPU suite on a machine lent by the device tool, in one command (benchmarks/README.md).
#
#   bash benchmarks/gpu_device.sh KIND              # there: KIND is nvidia-h100-x1 or nvidia-h200
#   bash benchmarks/gpu_device.sh --dry-run [KIND]  # anywhere: the install part alone, into a throwaway folder
#
# 1. Install: the wheels of benchmarks/gpu_wheels.txt, carried in .whl/ (benchmarks/gpu_prepare.sh
#    downloads them), are checked (one wheel per pin, fit for the device's Python: CPython 3.12,
#    manylinux x86_64), installed with pip --no-index --no-deps into $SITE (default /tmp/site; the
#    dry run: a temporary folder, removed after) and their versions checked there.
# 2. (not in the dry run) PYTHONPATH=$SITE, a "device" line (the kind asked for, the GPU seen, its
#    free memory, the Python), then benchmarks/gpu_suite.sh into $SUITE_OUT (default /tmp/suite)
#    under `timeout 580` (the suite keeps itself within 575 s), then every JSON line into
#    $OUT/gpu_suite.jsonl and the logs into $OUT/gpu_suite_logs.tgz (clips and caches stay behind).
#    Exit status: the suite's (the number of failed steps), or 2 when the install fails.
#
# Environment: PYTHON (default python3, the device's), WHEEL_DIR (default .whl), SITE, SUITE_OUT, OUT
# (the device tool's folder of files to bring back; unset: the records stay in SUITE_OUT).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
kind=${1:-}
case "$kind" in
    nvidia-h100-x1) expect_gpu=H100 ;;
    nvidia-h200) expect_gpu=H200 ;;
    "") [ $dry_run -eq 1 ] || { echo "usage: benchmarks/gpu_device.sh [--dry-run] nvidia-h100-x1|nvidia-h200" >&2; exit 2; }
        expect_gpu= ;;
    *) echo "gpu_device: unknown machine kind '$kind' (nvidia-h100-x1 or nvidia-h200)" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
wheel_dir=${WHEEL_DIR:-.whl}
mapfile -t pins < <(grep -vE '^\s*(#|$)' benchmarks/gpu_wheels.txt)
device_tags=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
             --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
             --platform manylinux1_x86_64)

fail() { echo "gpu_device: $*" >&2; exit 2; }

# The install part: the carried wheels, checked, installed into $1, their versions checked there.
install_wheels() {
    local target=$1 pin name version found stray
    [ -d "$wheel_dir" ] || fail "no $wheel_dir folder: run benchmarks/gpu_prepare.sh where pip works, and carry $wheel_dir"
    for pin in "${pins[@]}"; do
        name=${pin%%==*} version=${pin#*==}
        found=$(find "$wheel_dir" -maxdepth 1 -iname "${name//-/_}-${version}-*.whl" | wc -l)
        [ "$found" -eq 1 ] || fail "$wheel_dir holds $found wheels of $pin (one is needed): rerun benchmarks/gpu_prepare.sh"
        stray=$(find "$wheel_dir" -maxdepth 1 -iname "${name//-/_}-*.whl" ! -iname "${name//-/_}-${version}-*.whl")
        [ -z "$stray" ] || fail "$wheel_dir also holds another version of $name ($stray): two versions stop the install"
    done
    echo "[gpu_device] wheels: $(cd "$wheel_dir" && echo *.whl)" >&2
    # fit for the device's Python (CPython 3.12, manylinux x86_64), whatever Python runs this
    if ! "$py" -m pip install --isolated --dry-run --quiet --no-index --no-deps --only-binary=:all: \
        "${device_tags[@]}" --target "$target/.tag-check" --find-links "$wheel_dir" "${pins[@]}"; then
        [ $dry_run -eq 0 ] || fail "the wheels in $wheel_dir do not fit the device's Python 3.12 (see pip's message)"
        # there, the install below is the real test (an old pip may lack --dry-run): do not lose the run
        echo "[gpu_device] the tag check failed (see pip's message); installing all the same" >&2
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" \
        "$wheel_dir"/*.whl || fail "pip could not install $wheel_dir/*.whl into $target"
    for pin in "${pins[@]}"; do
        name=${pin%%==*} version=${pin#*==}
        [ -d "$target/${name//-/_}-${version}.dist-info" ] || fail "$pin is not in $target after the install"
    done
    echo "[gpu_device] installed into $target: ${pins[*]}" >&2
}

if [ $dry_run -eq 1 ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    install_wheels "$scratch/site"
    echo "dry run: ${pins[*]} from $wheel_dir install for the device's Python (${kind:-any kind}); nothing else was run"
    exit 0
fi

site=${SITE:-/tmp/site}
suite_out=${SUITE_OUT:-/tmp/suite}
install_wheels "$site"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L >&2 || true
gpu_line=$(nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits 2>/dev/null | head -1)
mkdir -p "$suite_out" || fail "cannot make $suite_out"
"$py" - "$kind" "$expect_gpu" "$gpu_line" "$suite_out/device.jsonl" "${pins[@]}" <<'PY'
import json, platform, sys
kind, expect, line, path, pins = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
fields = [f.strip() for f in line.split(",")] if line else []
gpu = fields[0] if fields else None
record = {"bench": "gpu_device", "kind": "device", "machine_kind": kind, "gpu": gpu,
          "gpu_memory_total_mib": int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None,
          "gpu_memory_free_mib": int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None,
          "gpu_matches_kind": None if gpu is None else expect in gpu, "python": platform.python_version(),
          "carried_wheels": pins}
if gpu is not None and expect not in gpu:
    print(f"[gpu_device] asked for {kind} but the GPU is {gpu}: the suite runs on it all the same", file=sys.stderr)
with open(path, "w") as f:
    f.write(json.dumps(record) + "\n")
print(json.dumps(record))
PY

OMNIZIP_CACHE=${OMNIZIP_CACHE:-/tmp/omz} timeout --kill-after=5 580 bash benchmarks/gpu_suite.sh "$suite_out"
rc=$?
if [ -n "${OUT:-}" ]; then
    # one file of every record (device, plan, steps, summary, then each step's records) and the logs
    { cat "$suite_out/device.jsonl" "$suite_out/suite.jsonl" 2>/dev/null
      find "$suite_out" -maxdepth 1 -name '*.jsonl' ! -name suite.jsonl ! -name device.jsonl -print0 | sort -z \
          | xargs -0 -r cat; } > "$OUT/gpu_suite.jsonl"
    tar czf "$OUT/gpu_suite_logs.tgz" --exclude=clips --exclude=cache -C "$(dirname "$suite_out")" \
        "$(basename "$suite_out")"
fi
exit $rc
