#!/usr/bin/env bash
# Wheels for the GPU machine, which has no network and whose image (Python 3.12, torch, transformers,
# safetensors, numpy, psutil, ninja, msgpack, py-cpuinfo, einops, tqdm) lacks pydantic and DeepSpeed.
# Puts into .gpu_wheels/ (git-ignored, a few MiB: the device tool carries up to 64 MiB of ignored paths):
#   - DeepSpeed built here as a pure-Python wheel (DS_BUILD_OPS=0: no compiled ops; the learner uses
#     torch's AdamW, and an op DeepSpeed wants later is JIT-built there, where nvcc and ninja are);
#   - cp312 manylinux / pure wheels of pydantic, pydantic-core and their dependencies, and hjson.
# Versions are the ones installed here, which the tests run against. On the GPU machine, before the check:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_wheels/*.whl \
#     && export PYTHONPATH=/tmp/site && timeout 470 python3 bench/gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu_wheels
version() { python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

rm -rf "$out"
mkdir -p "$out"
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation -w "$out" "deepspeed==$(version deepspeed)"
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out" \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
  "typing-extensions==$(version typing-extensions)" "hjson==$(version hjson)"
ls -l "$out"
du -sh "$out"
