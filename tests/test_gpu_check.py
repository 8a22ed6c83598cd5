"""benchmarks/gpu_check.{sh,py}: the plan, the no-GPU exit and (slow) the whole check's logic
on the CPU. No timed assertions."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import common
from benchmarks import gpu_check

SCRIPT = os.path.join(common.ROOT, "benchmarks", "gpu_check.sh")


def test_shell_script_parses():
  subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_plan_pairs_every_device_run_with_a_same_seed_cpu_reference(tmp_path):
  runs = gpu_check.plan(["glam", "brainformer1"], ["einsum", "gather"], "gpu", 300, 30)
  assert [r.name for r in runs] == [
      "gpu_glam_einsum", "gpu_glam_gather", "gpu_brainformer1_einsum",
      "gpu_brainformer1_gather", "cpu_ref_glam_gather", "cpu_ref_brainformer1_gather"]
  device_cmd, device_env = gpu_check.run_command(runs[1], str(tmp_path / "a"), "mini", 7)
  ref_cmd, ref_env = gpu_check.run_command(runs[4], str(tmp_path / "b"), "mini", 7)
  assert device_env == {} and ref_env == {"CUDA_VISIBLE_DEVICES": ""}
  for cmd in (device_cmd, ref_cmd):
    assert "--gin_file=models/glam_mini.gin" in cmd
    assert "--gin_file=layouts/gpu_1.gin" in cmd
    assert "--gin_param=train_with_progress.seed = 7" in cmd
    assert "--gin_param=brainformer_tf.layers.moe.MoE.dispatch = 'gather'" in cmd
  # the reference is the device run's command with the slices on the CPU, nothing else
  assert [c for c in ref_cmd if c not in device_cmd] == [
      f"--model_dir={tmp_path / 'b'}", "--gin_param=utils.run.train_steps = 30",
      f"--gin_param={gpu_check.ON_CPU}"]
  assert gpu_check.model_gin("brainformer1", "tiny") == "models/brainformer1_tiny.gin"


def test_gpu_1_layout_is_one_slice_on_gpu_0():
  with open(os.path.join(common.ROOT, "gin", gpu_check.LAYOUT)) as f:
    text = f.read()
  assert 'utils.run.mesh_shape = "batch:1"' in text
  assert 'utils.run.mesh_devices = ["gpu:0"]' in text


@pytest.mark.slow  # a process that imports TensorFlow
def test_no_gpu_is_one_line_and_exit_2():
  """As a user runs it (TF's log level left to the module), with any GPU hidden."""
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=common.ROOT,
                        env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stdout == ""
  assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
  assert proc.stderr.startswith("gpu_check: error: no GPU visible to TensorFlow")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_check_runs_on_the_cpu(tmp_path):
  """The whole check with the device run on the CPU (tiny GLaM, 3 steps, einsum dispatch; the
  reference dispatches by gather): it trains, measures both peaks, writes the JSON, and the
  same-seed runs agree."""
  out = tmp_path / "gpu_check.json"
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--size", "tiny",
       "--models", "glam", "--dispatch", "einsum", "--steps", "3", "--cpu_steps", "3",
       "--peak_size", "128", "--peak_repeats", "3", "--run_dir", str(tmp_path / "runs"),
       "--out", str(out)],
      cwd=common.ROOT, capture_output=True, text=True, timeout=1100, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  data = json.loads(out.read_text())
  assert [r["run"] for r in data["rows"]] == ["cpu_glam_einsum", "cpu_ref_glam_gather"]
  assert set(data["matmul_peak"]) == {"bfloat16", "float32"}
  for row in data["rows"]:
    assert row["error"] is None and row["steps"] == 3
    assert 0 < row["mfu_bfloat16"] and 0 < row["mfu_float32"]
    # same seed and data; einsum and gather dispatch are the same arithmetic up to rounding
    assert abs(row["loss_step_1_minus_cpu_ref"]) < 1e-4
    assert abs(row["loss_step_3_minus_cpu_ref"]) < 1e-4
  assert "cpu_ref_glam_gather" in proc.stdout and "MFU bf16" in proc.stdout
