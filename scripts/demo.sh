#!/usr/bin/env bash
# Set up .venv (if needed) and run caption, VQA and grounding on the example image.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ofa demo "$@"
