"""One training run per model dir (training/lock.py, issue #17 item 6): a live owner blocks a
second run; a killed run's lock is taken over so a resume is never blocked."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from brainformer_tf.training import lock
import harness


def _write_lock(model_dir, pid, host=None):
  with open(os.path.join(model_dir, lock.LOCK_FILE), "w") as f:
    json.dump({"pid": pid, "host": host or socket.gethostname(), "started": "earlier"}, f)


def test_acquire_writes_this_process_and_release_removes_it(tmp_path):
  path = lock.acquire(str(tmp_path / "m"))   # creates the model dir
  with open(path) as f:
    assert json.load(f)["pid"] == os.getpid()
  lock.release(path)
  assert not os.path.exists(path)


def test_a_live_owner_blocks_and_a_dead_one_is_taken_over(tmp_path):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _write_lock(tmp_path, sleeper.pid)
    with pytest.raises(lock.ModelDirInUse, match=f"in use by another training run \\(pid "
                                                 f"{sleeper.pid}"):
      lock.acquire(str(tmp_path))
  finally:
    sleeper.kill()
    sleeper.wait()
  path = lock.acquire(str(tmp_path))   # the owner is gone (killed): stale, taken over
  with open(path) as f:
    assert json.load(f)["pid"] == os.getpid()
  lock.release(path)


def test_another_hosts_lock_is_named_with_the_file_to_remove(tmp_path):
  _write_lock(tmp_path, 1, host="tpu-worker-7")
  with pytest.raises(lock.ModelDirInUse, match=r"locked by pid 1 on host tpu-worker-7 .*remove "
                                               + str(tmp_path / lock.LOCK_FILE)):
    lock.acquire(str(tmp_path))


def test_release_leaves_someone_elses_lock(tmp_path):
  _write_lock(tmp_path, os.getpid() + 1)
  lock.release(str(tmp_path / lock.LOCK_FILE))
  assert (tmp_path / lock.LOCK_FILE).exists()


@pytest.mark.slow
def test_second_train_on_a_busy_model_dir_exits_2_and_leaves_it_alone(tmp_path):
  model_dir = tmp_path / "m"
  args = ["train", f"--model_dir={model_dir}", "--gin_file=models/glam_tiny.gin",
          "--gin_file=train/cpu.gin", "--gin_param=utils.run.train_steps = 100000",
          "--gin_param=train_with_progress.final_eval_steps = 0"]
  first = subprocess.Popen([sys.executable, "-m", "brainformer_tf.cli.main", *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
  try:
    deadline = time.time() + 300   # the lock is taken after the checks, before the graph
    while not (model_dir / lock.LOCK_FILE).exists() and time.time() < deadline:
      time.sleep(0.5)
    assert (model_dir / lock.LOCK_FILE).exists()
    second = harness.brainformer(*args, timeout=300, cwd=tmp_path)
    assert second.returncode == 2
    assert f"in use by another training run (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
  finally:
    first.kill()
    first.wait()
  with open(model_dir / lock.LOCK_FILE) as f:
    assert json.load(f)["pid"] == first.pid   # left by the killed run: the next start takes it
