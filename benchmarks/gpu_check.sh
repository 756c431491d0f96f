#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) from a fresh checkout: makes .venv from requirements.txt when there is none.
set -euo pipefail; cd "$(dirname "$0")/.."; [ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt -e .; }; exec .venv/bin/python -m benchmarks.gpu_check "$@"
