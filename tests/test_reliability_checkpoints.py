"""Restart safety without training: torn checkpoints, damaged state files, torn log lines,
the crash-injection hook of the kill tests, run_info.json across restarts."""

import json
import os
import platform
import re
import signal
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.python.checkpoint import checkpoint_management

import brainformer_tf
from brainformer_tf import compat
from brainformer_tf.training import checkpoints
from brainformer_tf.training import faults
from brainformer_tf.training import progress
from brainformer_tf.training import run_info


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


def test_fault_hook_kills_while_the_named_checkpoint_is_written(tmp_path, monkeypatch, capsys):
  """BRAINFORMER_FAULT=kill_before_checkpoint_state:N (training/faults.py, the slow kill tests'
  hook): the Saver's state-file update for checkpoint N SIGKILLs the process first (os.kill is
  recorded here, not sent); other checkpoints pass; unset, nothing is patched; a bad spec is
  refused."""
  update = checkpoint_management.update_checkpoint_state_internal
  monkeypatch.setattr(checkpoint_management, "update_checkpoint_state_internal", update)
  kills = []
  monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
  monkeypatch.delenv(faults.ENV, raising=False)
  faults.install()
  assert checkpoint_management.update_checkpoint_state_internal is update
  monkeypatch.setenv(faults.ENV, "kill_before_checkpoint_state:20")
  faults.install()
  _save(str(tmp_path), [10, 20, 30])
  assert kills == [(os.getpid(), signal.SIGKILL)]   # once: at checkpoint 20, not 10 or 30
  assert re.search(r"SIGKILL before the state file names \S*model\.ckpt-20\n",
                   capsys.readouterr().out)
  monkeypatch.setenv(faults.ENV, "kill_at:20")
  with pytest.raises(ValueError, match="expected kill_before_checkpoint_state:<step>"):
    faults.install()


def test_run_info_records_each_start_and_keeps_the_earlier_ones(tmp_path):
  model_dir = str(tmp_path / "model")
  run_info.write(model_dir, seed=7, restored_step=0)
  with open(run_info.write(model_dir, seed=7, restored_step=10)) as f:
    info = json.load(f)
  assert (info["seed"], info["restored_step"], info["command"]) == (7, 10, sys.argv)
  assert [(h["seed"], h["restored_step"]) for h in info["history"]] == [(7, 0)]
  assert info["versions"]["tensorflow"] == tf.__version__
  assert info["versions"]["python"] == platform.python_version()
  assert info["versions"]["brainformer_tf"] == brainformer_tf.__version__
  assert info["compat_patches"] == compat.status()
  assert info["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", info["git_commit"])
