#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, make a venv with the CUDA build of the pinned
# TensorFlow and run benchmarks/gpu_check.py: GLaM mini and Brainformer-1 mini on gpu:0
# (layouts/gpu_1.gin), einsum vs gather dispatch, steps/s, MFU against a bf16 and an fp32
# matmul peak measured in the same run, and the training loss next to a same-seed CPU run's.
# The python part takes about 5-8 minutes (first install of the venv: a few minutes more).
#   bash benchmarks/gpu_check.sh [VENV_DIR] [gpu_check flags, e.g. --steps 200]
# VENV_DIR defaults to $BRAINFORMER_GPU_VENV or ~/.cache/brainformer_tf/gpu_venv (not .venv:
# the CUDA wheels add about 3 GB). Without network, point pip at a wheel folder
# (PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels). Results: benchmarks/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${BRAINFORMER_GPU_VENV:-$HOME/.cache/brainformer_tf/gpu_venv}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  VENV=$1; shift
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  echo "gpu_check.sh: nvidia-smi not found; the check needs an NVIDIA GPU and its driver" >&2
fi

# The project's pinned stack (requirements/*.txt, the editable package, the compat import hook)
# into $VENV, exactly as for CPU work; a no-op when it is already there.
BRAINFORMER_VENV=$VENV bash scripts/setup_env.sh
# Then the CUDA build of the same TensorFlow. `pip install --dry-run --report` on top of
# base.txt: tensorflow[and-cuda]==2.15.1 changes no installed package and adds only NVIDIA's
# CUDA 12.2 user-space libraries as wheels (the driver must come with the machine):
#   nvidia-cublas-cu12 12.2.5.6, nvidia-cuda-cupti-cu12 12.2.142, nvidia-cuda-nvcc-cu12
#   12.2.140, nvidia-cuda-nvrtc-cu12 12.2.140, nvidia-cuda-runtime-cu12 12.2.140,
#   nvidia-cudnn-cu12 8.9.4.25, nvidia-cufft-cu12 11.0.8.103, nvidia-curand-cu12 10.3.3.141,
#   nvidia-cusolver-cu12 11.5.2.141, nvidia-cusparse-cu12 12.1.2.141, nvidia-nccl-cu12 2.16.5,
#   nvidia-nvjitlink-cu12 12.2.140 (no TensorRT).
"$VENV/bin/python" -m pip --disable-pip-version-check -q install "tensorflow[and-cuda]==2.15.1"

# No GPU visible to TensorFlow: one line and exit 2 (benchmarks/gpu_check.py).
exec "$VENV/bin/python" -m benchmarks.gpu_check "$@"
