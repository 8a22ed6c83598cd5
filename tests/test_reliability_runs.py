"""Real `brainformer train` runs: determinism, SIGKILL + resume, the NaN guard.

The shared uninterrupted seeded 40-step run (conftest.glam_tiny_run) is the reference every
other run is compared with. Runs use its command (the shipped GLaM tiny model and CPU recipe,
every step logged), keeping every checkpoint and skipping the final validation.
"""

import glob
import json
import os
import signal
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from brainformer_tf.training import progress
import harness

# end to end: training runs killed and resumed (up to two 400 s runs per test, fixtures included)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1000)]

STEPS = harness.GLAM_TINY_RUN_STEPS   # 40, checkpoints every 10
COMMON = [*harness.GLAM_TINY_RUN, "--gin_param=utils.run.keep_checkpoint_max = 10",
          "--gin_param=train_with_progress.final_eval_split = None"]


def train(model_dir, steps=STEPS, *params, env=None, expect=0):
  proc = harness.brainformer("train", f"--model_dir={model_dir}", *COMMON,
                             f"--gin_param=utils.run.train_steps = {steps}",
                             *[f"--gin_param={p}" for p in params], cwd=os.path.dirname(model_dir),
                             timeout=400, env=dict(os.environ, **(env or {})))
  assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def losses(model_dir):
  return {r["step"]: r["loss"] for r in progress.read_log(model_dir) if "loss" in r}


def steps_logged(model_dir):
  return [r["step"] for r in progress.read_log(model_dir) if "loss" in r]


@pytest.fixture(scope="module")
def reference(glam_tiny_run):
  return str(glam_tiny_run[0])


@pytest.fixture(scope="module")
def crashed(reference, tmp_path_factory):
  """A second seeded run of the same command, SIGKILLed after checkpoint 30's files are on
  disk but before the `checkpoint` state file names it."""
  model_dir = str(tmp_path_factory.mktemp("reliability") / "crashy")
  proc = train(model_dir, env={"BRAINFORMER_FAULT": "kill_before_checkpoint_state:30"},
               expect=-signal.SIGKILL)
  assert "SIGKILL before the state file names" in proc.stdout
  return model_dir


def test_same_seed_same_losses_and_run_info(reference, crashed):
  first, second = losses(reference), losses(crashed)
  assert sorted(second) == list(range(1, 30))  # killed during step 30
  assert [second[s] for s in range(1, 21)] == [first[s] for s in range(1, 21)]
  with open(os.path.join(crashed, "run_info.json")) as f:
    info = json.load(f)
  assert info["seed"] == 1234 and info["restored_step"] == 0
  assert info["versions"]["tensorflow"] == tf.__version__
  assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
  for package in ("mesh-tensorflow", "t5", "seqio", "gin-config", "numpy", "brainformer_tf"):
    assert info["versions"][package]
  assert f"--gin_param=utils.run.train_steps = {STEPS}" in info["command"]
  with open(os.path.join(crashed, "operative_config.gin")) as f:
    assert "train_with_progress.seed = 1234" in f.read()


def test_kill_during_checkpoint_write_then_between_checkpoints_then_resume(reference, crashed):
  """After the kill during checkpoint 30's write, the resumed run (which adopts checkpoint 30)
  is SIGKILLed at a fixed step through the same fault hook, 40, and checkpoint 40's files are
  dropped: the model dir is then as a kill during step 40 before its save leaves it, with
  steps 31-39 logged past checkpoint 30, the newest. Resumed to the end, those steps are
  replaced, not repeated, and every logged loss equals the uninterrupted reference's (float32
  checkpoints, skip_seen_data)."""
  model_dir = crashed
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-20")  # state not updated
  second = train(model_dir, env={"BRAINFORMER_FAULT": "kill_before_checkpoint_state:40"},
                 expect=-signal.SIGKILL)
  assert "SIGKILL before the state file names" in second.stdout
  assert set(range(31, STEPS)) <= set(steps_logged(model_dir))
  for path in glob.glob(os.path.join(model_dir, f"model.ckpt-{STEPS}.*")):
    os.remove(path)
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-30")

  proc = train(model_dir)
  assert "resuming from step" in proc.stdout
  assert tf.train.latest_checkpoint(model_dir).endswith(f"model.ckpt-{STEPS}")
  steps = steps_logged(model_dir)
  assert steps == sorted(set(steps)) and steps[-1] == STEPS  # no repeats, no going back
  assert set(range(31, STEPS + 1)) <= set(steps)
  ref = losses(reference)
  assert {s: ref[s] for s in steps} == losses(model_dir)
  with open(os.path.join(model_dir, "run_info.json")) as f:
    assert json.load(f)["history"]  # earlier starts are kept


def _trainable(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if "slot" not in n and n != "global_step"}


def test_nan_stop_names_step_and_layer_and_keeps_checkpoints_finite(tmp_path):
  model_dir = str(tmp_path / "nan_stop")
  proc = train(model_dir, 12, "utils.run.save_checkpoints_steps = 4", "nan_guard.fault_step = 8",
               "nan_guard.fault_layer = 'block_001/layer_001'", expect=1)
  assert ("error: non-finite loss at step 8 (loss nan); first non-finite layer output: "
          "transformer/block_001/layer_001 (DenseReluDense)") in proc.stderr
  assert "step, tf_loss" not in proc.stderr  # mesh-tf's per-step tf.Print is silenced
  assert max(steps_logged(model_dir)) == 8 and np.isnan(losses(model_dir)[8])
  for prefix in tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths:
    for name, value in _trainable(os.path.join(model_dir, prefix)).items():
      assert np.isfinite(value).all(), (prefix, name)


def test_nan_skip_leaves_parameters_unchanged_and_continues(tmp_path):
  model_dir = str(tmp_path / "nan_skip")
  train(model_dir, 8, "utils.run.save_checkpoints_steps = 1", "nan_guard.policy = 'skip'",
        "nan_guard.fault_step = 6", "nan_guard.fault_layer = 'block_000/layer_002'")
  skipped = [r for r in progress.read_log(model_dir) if "skipped" in r]
  assert [r["step"] for r in skipped] == [6]
  assert "transformer/block_000/layer_002 (SelfAttention)" in skipped[0]["skipped"]
  before, at, after = (_trainable(os.path.join(model_dir, f"model.ckpt-{s}")) for s in (5, 6, 7))
  assert all(np.array_equal(before[n], at[n]) for n in before)  # the NaN batch moved nothing
  assert any(not np.array_equal(at[n], after[n]) for n in at)   # training went on
  assert all(np.isfinite(v).all() for v in after.values())
  assert all(np.isfinite(losses(model_dir)[s]) for s in (7, 8))
