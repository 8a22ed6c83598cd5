#!/usr/bin/env bash
# The main job: set up the environment, then train GLaM tiny (top-2 MoE) on the embedded
# default corpus on CPU, print progress and the final validation log-perplexity.
# Extra arguments are passed to `brainformer train` (e.g. --gin_param="utils.run.train_steps=50").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
MODEL_DIR=${MODEL_DIR:-runs/quickstart_$(date +%Y%m%d_%H%M%S)}
exec "${BRAINFORMER_VENV:-.venv}/bin/brainformer" train --model_dir="$MODEL_DIR" \
  --gin_file=models/glam_tiny.gin --gin_file=train/cpu.gin "$@"
