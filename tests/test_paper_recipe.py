"""The paper's training recipe, gin/train/glam.gin (GLaM Sec. 5 / Brainformer Sec. 5): its learning
rate and optimizer as mesh-tf builds them from Gin, against the papers' formulas, and a CPU
smoke run of `brainformer train` with it on a tiny model."""

import functools
import math
import pathlib

import gin
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from brainformer_tf.config import ginutil
import harness

RECIPE = ["models/glam_tiny.gin", "train/glam.gin"]


def paper_learning_rate(step):
  """GLaM: 0.01 (= 1/sqrt(10^4)) for the first 10K steps, then inverse square root decay."""
  return 0.01 if step <= 10_000 else 1.0 / math.sqrt(step)


def recipe_schedule():
  """utils.run's learning-rate function as mesh-tf's utils.run makes it (run(): a callable
  schedule gets total_train_steps bound, then is called with the global step)."""
  ginutil.parse_model_config(RECIPE)
  schedule = gin.query_parameter("utils.run.learning_rate_schedule").scoped_configurable_fn
  return functools.partial(schedule, total_train_steps=gin.query_parameter(
      "utils.run.train_steps"))


def test_learning_rate_is_constant_for_10k_steps_then_inverse_square_root():
  steps = [1, 5_000, 10_000, 10_001, 40_000, 250_000]
  with tf.Graph().as_default():
    step = tf.placeholder(tf.int64, [])
    rate = recipe_schedule()(step=step)
    with tf.Session() as session:
      got = [session.run(rate, {step: s}) for s in steps]
  want = [paper_learning_rate(s) for s in steps]
  assert got == pytest.approx(want, rel=1e-6)
  assert got[0] == pytest.approx(0.01) and got[4] == pytest.approx(0.005)   # steps 1 and 40K


def test_optimizer_is_glam_adafactor():
  """beta1 = 0, factored second moments, update clipping 1.0, decay 1 - t^-0.8 (t: 1-based)."""
  ginutil.parse_model_config(RECIPE)
  with tf.Graph().as_default():
    global_step = tf.train.get_or_create_global_step()
    optimizer = gin.query_parameter("utils.run.optimizer").scoped_configurable_fn()
    assert optimizer._beta1 == 0.0   # pylint: disable=protected-access
    assert optimizer._factored and optimizer._clipping_threshold == 1.0  # pylint: disable=protected-access
    with tf.Session() as session:
      for step in (0, 9, 999):
        session.run(global_step.assign(step))
        decay = session.run(optimizer._decay_rate)   # pylint: disable=protected-access
        assert decay == pytest.approx(1.0 - (step + 1) ** -0.8, rel=1e-6)


def test_recipe_dtypes_and_shapes_are_the_papers():
  ginutil.parse_model_config(RECIPE)
  assert ginutil.query("utils.get_variable_dtype.master_dtype") == "float32"
  assert ginutil.query("utils.get_variable_dtype.activation_dtype") == "bfloat16"
  assert ginutil.query("utils.run.sequence_length") == {"targets": 1024}
  assert ginutil.query("utils.run.batch_size") == ("sequences_per_batch", 1024)


CPU_SIZE = ["MIXTURE_NAME = 'default_corpus_lm'",    # C4 (TFDS) is not on this machine
            "utils.run.sequence_length = {'targets': 64}", "Unitransformer.max_length = 64",
            "utils.run.batch_size = ('sequences_per_batch', 4)",
            "utils.run.train_steps = 3", "utils.run.save_checkpoints_steps = 3",
            "utils.run.iterations_per_loop = 1"]


def _scalars(model_dir, tag):
  """{step: value} of a scalar summary in the model dir's event files."""
  values = {}
  for path in sorted(pathlib.Path(model_dir).glob("events.out.tfevents.*")):
    for event in tf.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = value.simple_value
  return values


@pytest.mark.slow
def test_paper_recipe_trains_a_few_steps_on_cpu(tmp_path):
  """train/glam.gin as is, sized for a CPU (sequence 64, batch 4, 3 steps) and on a local task;
  `brainformer train` runs bfloat16 activations in float32 off TPU (utils.get_variable_dtype)."""
  model_dir = tmp_path / "glam"
  result = harness.brainformer("train", f"--model_dir={model_dir}",
                               *[f"--gin_file={f}" for f in RECIPE],
                               *[f"--gin_param={p}" for p in CPU_SIZE], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert (model_dir / "model.ckpt-3.index").exists()
  operative = " ".join((model_dir / "operative_config.gin").read_text().replace(
      "\\\n", " ").split())   # Gin wraps long values with a backslash
  for binding in ("activation_dtype = 'float32'", "master_dtype = 'float32'",
                  "decay_rate = @optimize.adafactor_decay_rate_pow()",
                  "factors = [@learning_rate_schedules.truncated_rsqrt]",
                  "warmup_steps = 10000"):
    assert binding in operative, binding
  rates = _scalars(model_dir, "learning_rate")
  assert rates and all(v == pytest.approx(paper_learning_rate(s)) for s, v in rates.items())
  losses = _scalars(model_dir, "loss")
  assert losses and all(np.isfinite(v) for v in losses.values())
