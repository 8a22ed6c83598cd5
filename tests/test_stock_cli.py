"""The stock `t5_mesh_transformer` console script of the venv, with the project's Gin files and
tasks (`--module_import=brainformer_tf.stock_cli`): it imports (the compat import hook of
scripts/setup_env.sh), trains and validates with exactly the losses of `brainformer train`.

The stock command does not install the NaN guard's probes, `brainformer train` does (its
default): the guard changes no value (compat item 5 orders the updates after every gradient,
as the guard's `tf.cond` also does), so the two logs agree bit for bit."""

import importlib
import json
import os
import subprocess
import sys

import gin
from mesh_tensorflow.transformer import utils as mtf_utils
import pytest

# The stock command has no default mesh (mesh-tf's defaults ask for a TPU topology; `brainformer
# train` resolves it to one device), so it takes layouts/cpu_1.gin, as the README says; both
# runs get it, so both build the same graph on cpu:0.
FLAGS = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin",
         "--gin_file=layouts/cpu_1.gin",
         "--gin_param=utils.run.train_steps = 6", "--gin_param=train_with_progress.log_every_n_steps = 1",
         "--gin_param=train_with_progress.final_eval_steps = 2",
         "--gin_param=train_with_progress.final_leak_free_rows = 0"]


def test_module_import_sets_up_the_project_in_process(monkeypatch):
  """What --module_import=brainformer_tf.stock_cli does, in this process (the stock command's
  training run is the slow test below): the project's Gin files resolve by their names under
  gin/, and mesh-tf's per-step loss print is switched off."""
  monkeypatch.setattr(gin.config, "_LOCATION_PREFIXES", [""])   # gin's default; restored after
  monkeypatch.setattr(mtf_utils.tf, "quiet", False)
  monkeypatch.delitem(sys.modules, "brainformer_tf.stock_cli", raising=False)
  with pytest.raises(IOError, match="models/glam_tiny.gin"):
    gin.parse_config_file("models/glam_tiny.gin")
  importlib.import_module("brainformer_tf.stock_cli")
  gin.parse_config_file("models/glam_tiny.gin")
  assert gin.query_parameter("%num_experts") == 8
  assert mtf_utils.tf.quiet


def _losses(model_dir):
  with open(os.path.join(model_dir, "train_log.jsonl")) as f:
    records = [json.loads(l) for l in f]
  return ({r["step"]: r["loss"] for r in records if "loss" in r},
          [r["validation_loss"] for r in records if "validation_loss" in r])


@pytest.mark.slow
@pytest.mark.timeout(1900)   # two training runs, 900 s limit each
def test_stock_t5_mesh_transformer_trains_like_brainformer_train(tmp_path):
  bin_dir = os.path.dirname(sys.executable)
  stock = os.path.join(bin_dir, "t5_mesh_transformer")
  if not os.path.exists(stock):
    pytest.skip("t5_mesh_transformer is not installed next to this Python")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  runs = {"stock": [stock, "--module_import=brainformer_tf.stock_cli"],
          "ours": [sys.executable, "-m", "brainformer_tf.cli.main", "train"]}
  results = {}
  for name, cmd in runs.items():
    model_dir = str(tmp_path / name)
    proc = subprocess.run(cmd + [f"--model_dir={model_dir}"] + FLAGS, cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[name] = _losses(model_dir)
  (stock_steps, stock_val), (our_steps, our_val) = results["stock"], results["ours"]
  assert sorted(stock_steps) == sorted(our_steps) == list(range(1, 7))
  assert len(stock_val) == len(our_val) == 1
  assert stock_steps == our_steps   # bit-identical: the same model, seed, data and update order
  assert stock_val == our_val
