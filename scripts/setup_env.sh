#!/usr/bin/env bash
# Creates the virtual environment (default .venv) with the pinned Mesh-TF/T5 stack and this
# package installed in editable mode. Idempotent: a second run with unchanged requirements
# returns at once. Needs Python 3.11 (TF 2.15 has no wheels for 3.12) and the package index.
#   PYTHON=/path/to/python3.11 BRAINFORMER_VENV=/path/to/venv bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${BRAINFORMER_VENV:-.venv}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "setup_env.sh: Python 3.11 not found (TensorFlow 2.15 needs it); set PYTHON=..." >&2
  exit 2
fi

stamp="$VENV/.brainformer-requirements"
want=$(cat requirements/*.txt setup.py scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup_env.sh: installing the pinned stack into $VENV (a few minutes the first time)..."
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -r requirements/base.txt -r requirements/test.txt
pip install --no-deps -r requirements/nodeps.txt
pip install --no-deps -r requirements/search_vizier.txt  # optional: multi-machine search
pip install --no-deps -e .
# The compat import hook for every Python of the venv, the stock t5_mesh_transformer included
# (brainformer_tf/compat.py: mesh-tf 0.1.21 cannot be imported on TF 2.15 without it). Named
# to sort after easy-install.pth, which puts this (editable) package on sys.path. Importing
# brainformer_tf installs the hook; BRAINFORMER_COMPAT_HOOK=0 skips it (stock behaviour).
"$VENV/bin/python" - <<'PY'
import os, sysconfig
with open(os.path.join(sysconfig.get_paths()["purelib"], "zz_brainformer_tf_compat.pth"), "w") as f:
  f.write("import os; os.environ.get('BRAINFORMER_COMPAT_HOOK') == '0' or __import__('brainformer_tf')\n")
PY
"$VENV/bin/python" -c "import mesh_tensorflow, t5.models, seqio"  # through the import hook alone
echo "$want" > "$stamp"
echo "setup_env.sh: ready: $VENV"
