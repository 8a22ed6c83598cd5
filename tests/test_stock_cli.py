"""The stock `t5_mesh_transformer` console script of the venv, with the project's Gin files and
tasks (`--module_import=brainformer_tf.stock_cli`): it imports (the compat import hook of
scripts/setup_env.sh), trains and validates with exactly the losses of `brainformer train`.

The stock command does not install the NaN guard's probes, `brainformer train` does (its
default): the guard changes no value (compat item 5 orders the updates after every gradient,
as the guard's `tf.cond` also does), so the two logs agree bit for bit."""

import importlib
import os
import subprocess
import sys

import gin
from mesh_tensorflow.transformer import utils as mtf_utils
import pytest

from brainformer_tf.training import progress
import harness


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
  records = progress.read_log(str(model_dir))
  return ({r["step"]: r["loss"] for r in records if "loss" in r},
          [r["validation_loss"] for r in records if "validation_loss" in r])


@pytest.mark.slow
@pytest.mark.timeout(1500)   # the shared run and the stock one, 600 s limit each
def test_stock_t5_mesh_transformer_trains_like_brainformer_train(glam_tiny_run, tmp_path):
  """The stock command with the shared run's flags (conftest.glam_tiny_run: GLaM tiny, the CPU
  recipe and layouts/cpu_1.gin, which the stock command needs: it has no default mesh, while
  `brainformer train` resolves one device) logs the same per-step and validation losses."""
  stock = os.path.join(os.path.dirname(sys.executable), "t5_mesh_transformer")
  if not os.path.exists(stock):
    pytest.skip("t5_mesh_transformer is not installed next to this Python")
  model_dir = str(tmp_path / "stock")
  proc = subprocess.run(
      [stock, "--module_import=brainformer_tf.stock_cli", f"--model_dir={model_dir}",
       *harness.GLAM_TINY_RUN, f"--gin_param=utils.run.train_steps = {harness.GLAM_TINY_RUN_STEPS}",
       "--gin_param=train_with_progress.final_leak_free_rows = 0"],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (stock_steps, stock_val), (our_steps, our_val) = _losses(model_dir), _losses(glam_tiny_run[0])
  assert sorted(stock_steps) == sorted(our_steps) == list(range(1, 41))
  assert len(stock_val) == len(our_val) == 1
  assert stock_steps == our_steps   # bit-identical: the same model, seed, data and update order
  assert stock_val == our_val
