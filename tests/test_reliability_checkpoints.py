"""Restart safety without training: torn checkpoints, damaged state files, torn log lines."""

import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

from brainformer_tf.training import checkpoints
from brainformer_tf.training import progress


def _save(model_dir, steps, sharded=True):
  """Checkpoints at `steps` of a 2-variable graph, as mesh-tf's (sharded, relative) Saver."""
  with tf.Graph().as_default():
    with tf.device("cpu:0"):
      a = tf.Variable(np.arange(50000, dtype=np.float32), name="a")
    step = tf.Variable(0, dtype=tf.int64, name="global_step")
    saver = tf.train.Saver(sharded=sharded, max_to_keep=10, save_relative_paths=True)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      for s in steps:
        session.run([a.assign_add(tf.ones_like(a)), step.assign(s)])
        saver.save(session, os.path.join(model_dir, "model.ckpt"), global_step=s)


def _data_file(model_dir, step):
  files = sorted(f for f in os.listdir(model_dir) if f.startswith(f"model.ckpt-{step}.data"))
  return os.path.join(model_dir, max(files, key=lambda f: os.path.getsize(
      os.path.join(model_dir, f))))


def test_torn_latest_checkpoint_falls_back_and_is_quarantined(tmp_path):
  model_dir = str(tmp_path)
  _save(model_dir, [10, 20, 30])
  path = _data_file(model_dir, 30)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-30")  # TF would pick it
  assert checkpoints.recover(model_dir) == 20
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-20")
  assert checkpoints.check(tf.train.latest_checkpoint(model_dir)) is None
  assert os.path.basename(path) in os.listdir(tmp_path / checkpoints.QUARANTINE_DIR)
  with open(os.path.join(model_dir, "checkpoint")) as f:  # relative, like mesh-tf's Saver
    assert f.read().splitlines() == ['model_checkpoint_path: "model.ckpt-20"',
                                     'all_model_checkpoint_paths: "model.ckpt-10"',
                                     'all_model_checkpoint_paths: "model.ckpt-20"']


def test_flipped_bytes_are_caught_by_the_crc(tmp_path):
  model_dir = str(tmp_path)
  _save(model_dir, [10, 20])
  path = _data_file(model_dir, 20)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(b"\xff\x00\xff\x00")
  assert "Checksum does not match" in checkpoints.check(os.path.join(model_dir, "model.ckpt-20"))
  assert checkpoints.recover(model_dir) == 10


def test_missing_index_and_garbage_state_file(tmp_path):
  model_dir = str(tmp_path)
  _save(model_dir, [10, 20])
  os.remove(os.path.join(model_dir, "model.ckpt-20.index"))
  with open(os.path.join(model_dir, "checkpoint"), "w") as f:
    f.write("model_checkpoint_path: \"model.ckpt-2")  # torn text proto
  assert checkpoints.recover(model_dir) == 10
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-10")


def test_no_intact_checkpoint_starts_from_scratch(tmp_path):
  model_dir = str(tmp_path)
  _save(model_dir, [10])
  os.remove(os.path.join(model_dir, "model.ckpt-10.index"))
  assert checkpoints.recover(model_dir) == 0
  assert tf.train.latest_checkpoint(model_dir) is None


def test_log_is_trimmed_to_the_restored_step_and_torn_lines_dropped(tmp_path):
  model_dir = str(tmp_path)
  for step in range(1, 8):
    progress.append_record(model_dir, {"step": step, "loss": 1.0 / step})
  progress.append_record(model_dir, {"step": 4, "validation_loss": 2.0})
  with open(os.path.join(model_dir, progress.LOG_FILE), "a") as f:
    f.write('{"step": 8, "lo')  # killed mid-write
  assert progress.truncate_log(model_dir, 5) == 3
  records = progress.read_log(model_dir)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 4]
  with open(os.path.join(model_dir, progress.LOG_FILE)) as f:
    assert all(json.loads(line) for line in f)
