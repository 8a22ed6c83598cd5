#!/usr/bin/env bash
# The side-by-side demo: set up the environment, then train Brainformer-1 tiny and GLaM tiny on
# the embedded default corpus for the same wall-clock (default 240 s of training each, about
# 10 minutes in all on 2 cores), print the comparison table and write the loss plots.
# Arguments go to benchmarks/demo.py, e.g. `bash scripts/demo.sh --budget_s 20`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${BRAINFORMER_VENV:-.venv}/bin/python" -m benchmarks.demo "$@"
