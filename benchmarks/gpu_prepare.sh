#!/usr/bin/env bash
# Download the wheels the GPU machine lacks for benchmarks/gpu_suite.sh into .whl/ (git-ignored).
#
#   benchmarks/gpu_prepare.sh            # on a machine with the package index, from the repository root
#   benchmarks/gpu_prepare.sh --dry-run  # print what it would download and the device call; no network
#
# The GPU machines the device tool lends (nvidia-h100-x1: one H100 80 GB; nvidia-h200: one H200;
# no network) have Python 3.12 with torch 2.11, torchvision 0.26, transformers 5.17, tokenizers,
# huggingface_hub, safetensors, typer, rich, numpy, pytest, pytest-timeout and hypothesis
# preinstalled. The suite needs two more (benchmarks/gpu_wheels.txt): transformers 5.23.0 (the
# version omnizip pins; pure Python, about 13 MB; its requirements are all there) and PyAV (media
# decode and the generated clips; about 36 MB with its bundled FFmpeg). librosa is not needed
# (omnizip imports it only for a rare fallback). About 49 MB in all, under the 64 MiB the device tool
# carries. The wheels are for the device's Python, not this one: cp312, manylinux x86_64.
# It prints the device tool's call at the end (benchmarks/README.md explains it).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
if [ $# -ne 0 ]; then
    echo "usage: benchmarks/gpu_prepare.sh [--dry-run]" >&2
    exit 2
fi
mapfile -t wheels < <(grep -vE '^\s*(#|$)' benchmarks/gpu_wheels.txt)
download=("$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}")

if [ $dry_run -eq 1 ]; then
    echo "dry run: nothing is downloaded. It would run, from $(pwd):"
    echo
    echo "  rm -rf .whl && mkdir .whl"
    echo "  ${download[*]}"
    echo
    echo "wheels for the device's Python (3.12, manylinux x86_64), installed there with --no-deps:"
    for wheel in "${wheels[@]}"; do echo "  $wheel"; done
    # what each needs at run time, where this Python has the same version (the device must have them)
    "$py" - "${wheels[@]}" <<'PY' || true
import importlib.metadata as metadata, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        here = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue
    if here == version:
        needs = [r for r in (metadata.requires(name) or []) if "extra ==" not in r]
        print(f"  {pin} requires (preinstalled on the device): {', '.join(needs) or 'nothing'}")
PY
else
    rm -rf .whl
    mkdir .whl
    "${download[@]}"
    ls -l .whl
    du -sh .whl
fi
cat <<'TEXT'

Device tool call (kind "nvidia-h100-x1" or "nvidia-h200", carry [".whl"], timeout_s 600):

bash benchmarks/gpu_device.sh nvidia-h100-x1
TEXT
