#!/usr/bin/env bash
# Download the wheels the GPU machine lacks for benchmarks/gpu_suite.sh into .whl/ (git-ignored).
#
#   benchmarks/gpu_prepare.sh          # on a machine with the package index, from the repository root
#
# The GPU machine (one H200, no network) has Python 3.12 with torch 2.11, torchvision 0.26,
# transformers 5.17, tokenizers, huggingface_hub, safetensors, typer, rich, numpy, pytest and
# hypothesis preinstalled. The suite needs two more: transformers 5.23.0 (the version omnizip pins;
# pure Python, about 13 MB; its requirements are all there) and PyAV (media decode and the
# generated clips; about 36 MB with its bundled FFmpeg). librosa is not needed (omnizip imports it
# only for a rare fallback). About 49 MB in all, under the 64 MiB the device tool carries.
# It prints the device tool's command line at the end (benchmarks/README.md explains it).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
wheels=(transformers==5.23.0 av==18.1.0)

rm -rf .whl
mkdir .whl
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
ls -l .whl
du -sh .whl
cat <<'TEXT'

Device tool call (carry [".whl"], timeout_s 600):

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; nvidia-smi -L; OMNIZIP_CACHE=/tmp/omz timeout 560 bash benchmarks/gpu_suite.sh /tmp/suite; rc=$?; cat /tmp/suite/*.jsonl > $OUT/gpu_suite.jsonl; tar czf $OUT/gpu_suite_logs.tgz --exclude=clips --exclude=cache -C /tmp suite; exit $rc
TEXT
