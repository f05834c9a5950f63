#!/usr/bin/env bash
# Create .venv and install the package with its test extras. torch is pinned through
# constraints.txt so pip never pulls a CUDA build. Safe to re-run: pip runs only when the
# environment is new or pyproject.toml / constraints.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.openofa-installed
WANT=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && .venv/bin/python -c "import openofa" 2>/dev/null; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
echo "$WANT" > "$STAMP"
