"""NonFiniteHook's skip policy on a toy graph: consecutive skips are bounded, finite steps
reset the count, Inf counts as non-finite, and skipped steps are logged."""

import math

import gin
import pytest
import tensorflow.compat.v1 as tf

from brainformer_tf.training import nan_guard
from brainformer_tf.training import progress


def _run(model_dir, values):
  """Runs one session step per value of the loss; returns the steps completed."""
  done = 0
  with tf.Graph().as_default():
    step = tf.train.get_or_create_global_step()
    loss = tf.placeholder(tf.float32, [])
    tf.add_to_collection(tf.GraphKeys.LOSSES, loss)
    train_op = tf.assign_add(step, 1)
    hook = nan_guard.NonFiniteHook(model_dir)
    with tf.train.MonitoredSession(hooks=[hook]) as session:
      for value in values:
        session.run(train_op, {loss: value})
        done += 1
  return done


@pytest.fixture
def skip_policy():
  with gin.unlock_config():
    gin.bind_parameter("nan_guard.policy", "skip")
    gin.bind_parameter("nan_guard.max_consecutive_skips", 2)
  yield
  gin.clear_config()


def test_skips_are_logged_and_reset_by_a_finite_step(tmp_path, skip_policy):
  values = [1.0, math.nan, math.inf, 1.0, math.nan, math.nan, 1.0]
  assert _run(str(tmp_path), values) == len(values)
  assert [r["step"] for r in progress.read_log(str(tmp_path))] == [2, 3, 5, 6]


def test_too_many_consecutive_skips_stop(tmp_path, skip_policy):
  with pytest.raises(nan_guard.NonFiniteError, match="non-finite loss at step 4 .*2 consecutive"):
    _run(str(tmp_path), [1.0, math.nan, math.nan, math.nan, 1.0])


def test_stop_policy_stops_on_inf(tmp_path):
  gin.clear_config()
  with pytest.raises(nan_guard.NonFiniteError, match="non-finite loss at step 2 \\(loss inf\\)"):
    _run(str(tmp_path), [1.0, math.inf])
