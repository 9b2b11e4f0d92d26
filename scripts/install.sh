#!/usr/bin/env bash
# Installs the project and everything it needs on a fresh machine (CPU by default).
# torch is pinned first so nothing later pulls a CUDA build; DeepSpeed is an sdist whose build
# imports torch, so it is built against the installed torch (no build isolation, no prebuilt ops).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q "$TORCH_SPEC"
python -m pip install -q setuptools wheel
DS_BUILD_OPS=0 python -m pip install -q --no-build-isolation "deepspeed>=0.19"
python -m pip install -q -e '.[test,loggers]'
