#!/usr/bin/env bash
# Create .venv and install the package with its test extras. torch is pinned through
# constraints.txt so pip never pulls a CUDA build. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
