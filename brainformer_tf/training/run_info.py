"""`<model_dir>/run_info.json`: what produced a run (versions, commit, seed, command, which
mesh-tf patches of brainformer_tf/compat.py were on).

Written at the start of every (re)start of training; earlier starts are kept under "history"
so a resumed run shows every process that contributed. mesh-tf writes the operative Gin config
next to it (operative_config.gin, by gin.tf.GinConfigSaverHook).
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import brainformer_tf
from brainformer_tf import compat

from brainformer_tf import atomic

FILE = "run_info.json"
PACKAGES = ("tensorflow", "tensorflow-cpu", "tensorflow-estimator", "mesh-tensorflow", "t5",
            "seqio", "gin-config", "numpy", "sentencepiece")


def package_versions():
  """{distribution: version} of the stack that matters for reproducing a run."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  versions["brainformer_tf"] = brainformer_tf.__version__
  versions["python"] = platform.python_version()
  return versions


def git_commit():
  """The checkout's commit (with "+dirty" if it has local changes), or None outside git."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(brainformer_tf.__file__)))
  try:
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


def write(model_dir, seed, restored_step):
  """Writes run_info.json for this start of training; returns its path."""
  path = os.path.join(model_dir, FILE)
  history = []
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    history = previous.pop("history", []) + [previous]
  info = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
          "seed": seed, "restored_step": restored_step, "git_commit": git_commit(),
          "versions": package_versions(), "compat_patches": compat.status(),
          "history": history}
  os.makedirs(model_dir, exist_ok=True)
  atomic.write_json(path, info)
  return path
