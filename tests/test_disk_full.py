"""A full disk during training (issue #17 item 4): one line naming the file that did not fit,
exit 2, the earlier checkpoints kept, the partial save's temp dir removed, and the same command
resumes once there is space. The disk is a real one: a 42 MB tmpfs (so the test needs root and
skips elsewhere) that holds the run's graph, events and first checkpoint (~35 MB for
glam_tiny) but not its second (~13 MB more)."""

import os
import subprocess

import pytest

import harness

FLAGS = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin",
         "--gin_param=utils.run.train_steps = 4", "--gin_param=utils.run.save_checkpoints_steps = 2",
         "--gin_param=train_with_progress.final_eval_steps = 1",
         "--gin_param=train_with_progress.final_leak_free_rows = 0"]


@pytest.fixture
def small_disk(tmp_path):
  mount = tmp_path / "disk"
  mount.mkdir()
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root")
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=42m", "tmpfs", str(mount)],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _train(model_dir):
  return harness.brainformer("train", f"--model_dir={model_dir}", *FLAGS, timeout=900,
                             cwd=os.path.dirname(model_dir))


@pytest.mark.slow
@pytest.mark.timeout(1900)
def test_full_disk_is_one_line_keeps_checkpoints_and_resumes(small_disk):
  model_dir = small_disk / "run"
  proc = _train(model_dir)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if ": error: " in l]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert f"no space left on device: {model_dir}/model.ckpt-2_temp/" in errors[0]
  assert "newest checkpoint kept: model.ckpt-0" in errors[0]
  names = set(os.listdir(model_dir))
  assert {"model.ckpt-0.index", "model.ckpt-0.meta", "checkpoint"} <= names
  assert not [n for n in names if "_temp" in n or n.startswith("model.ckpt-2")]
  assert "train.lock" not in names
  # more space, the same command: resumes from step 0's checkpoint and finishes
  subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
  again = _train(model_dir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert {"model.ckpt-4.index", "model.ckpt-2.index"} <= set(os.listdir(model_dir))
