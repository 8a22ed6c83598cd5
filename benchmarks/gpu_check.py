"""GPU check: GLaM mini and Brainformer-1 mini trained on gpu:0, einsum vs gather dispatch.

  bash benchmarks/gpu_check.sh [VENV_DIR]          # makes a CUDA venv, then runs this module
  python -m benchmarks.gpu_check [--steps 300] [--cpu_steps 30] [--size mini]
  python -m benchmarks.gpu_check --device cpu --size tiny --steps 3 --cpu_steps 3   # on a CPU

Device runs: for each model (--models, at --size) and dispatch (--dispatch), `brainformer
train` (recipe train/cpu_mini.gin: 16 x 128 tokens per step, Adafactor, seed --seed, no final
validation) for --steps steps with layouts/gpu_1.gin (a batch:1 mesh on gpu:0). Reported:
steps/s (from step 2, benchmarks/common's clock), tokens/s, and MFU = training FLOPs/token
(`brainformer params`: 6 x activated matmul params + attention) x tokens/s / a matmul peak
measured on the device in the same run (benchmarks/peak.py, --peak_size, 4 products per timed
call), against both the bfloat16 and the float32 peak (float32 matmuls run as TF32 on Ampere
and later GPUs, TF's default, in the peak and in the training runs alike; the runs keep the
recipe's float32 activations).
CPU reference: each model once more, gather dispatch, --cpu_steps steps, the same command and
seed with the slices on the CPU (utils.run.mesh_devices = ['cpu:0']) and the GPU hidden
(CUDA_VISIBLE_DEVICES=""). Every device run's training loss at step 1 (initial weights, first
batch) and at step --cpu_steps is printed next to the reference's: same seed, same data order,
so they differ only by the device's arithmetic.
--device cpu runs the device runs on the CPU as well (the script's logic without a GPU).
Without a visible GPU (--device gpu) it prints one line and exits 2.
Writes results/gpu_check.json (--out; an absolute path goes there).
"""

import argparse
import dataclasses
import os
import sys
import time
from typing import Dict, List, Optional

# Before TensorFlow is imported (as the brainformer CLI does): its C++ start-up logs would bury
# the one line this prints without a GPU. TF_CPP_MIN_LOG_LEVEL=0 shows them (e.g. why CUDA
# did not load).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import common
from benchmarks import peak
from benchmarks import training_efficiency as te
from brainformer_tf.config import errors
from brainformer_tf.training import progress
# pylint: enable=g-import-not-at-top,wrong-import-position

LAYOUT = "layouts/gpu_1.gin"
ON_CPU = "utils.run.mesh_devices = ['cpu:0']"
HIDE_GPU = {"CUDA_VISIBLE_DEVICES": ""}
DEFAULT_PEAK_SIZE = {"gpu": 8192, "cpu": 1024}


@dataclasses.dataclass(frozen=True)
class Run:
  """One `brainformer train` run of the check."""
  model: str
  dispatch: str
  device: str        # "gpu" or "cpu": where the mesh slice is placed
  steps: int
  reference: bool    # the CPU reference run of its model

  @property
  def name(self) -> str:
    return f"{'cpu_ref' if self.reference else self.device}_{self.model}_{self.dispatch}"


def plan(models: List[str], dispatches: List[str], device: str, steps: int,
         cpu_steps: int) -> List[Run]:
  """Device runs (every model x dispatch), then one CPU reference per model (gather)."""
  runs = [Run(m, d, device, steps, False) for m in models for d in dispatches]
  return runs + [Run(m, "gather", "cpu", cpu_steps, True) for m in models]


def model_gin(model: str, size: str) -> str:
  """The zoo file of `model` (a benchmarks.common.MODELS name) at `size` (mini / tiny)."""
  return common.MODELS[model][0].replace("_mini.gin", f"_{size}.gin")


def run_command(run: Run, model_dir: str, size: str, seed: int):
  """(command, extra environment) of one run: the device run's command, plus the CPU
  placement and the hidden GPU for the CPU runs."""
  extra = [f"brainformer_tf.layers.moe.MoE.dispatch = '{run.dispatch}'",
           "train_with_progress.final_eval_split = None"]
  env = {}
  if run.device == "cpu":
    extra.append(ON_CPU)
    env = dict(HIDE_GPU)
  cmd = common.train_command(model_dir, model_gin(run.model, size), te.RECIPE, steps=run.steps,
                             seed=seed, extra=list(common.MODELS[run.model][1]) + extra,
                             gin_files=[LAYOUT])
  return cmd, env


def loss_at(model_dir: str, step: int) -> Optional[float]:
  """The training loss logged at `step` (train_log.jsonl, one record per step), else None."""
  return next((r["loss"] for r in progress.read_log(model_dir)
               if r.get("step") == step and "loss" in r), None)


def visible_gpus() -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [d.name for d in tf.config.list_physical_devices("GPU")]


def peaks(device: str, size: int, repeats: int) -> Dict[str, dict]:
  """Best-of-N bfloat16 and float32 matmul peaks on the device (benchmarks/peak.py)."""
  env = HIDE_GPU if device == "cpu" else None
  return {dtype: peak.measure_in_subprocess("default", size, repeats, dtype=dtype, per_run=4,
                                            env=env) for dtype in ("bfloat16", "float32")}


def row_of(run: Run, result: dict, flops_per_token: float,
           peak_gflops: Dict[str, float]) -> dict:
  """The table row of a finished run: throughput, MFU against each peak, losses."""
  sps = result.get("steps_per_sec")
  tokens = sps * te.TOKENS_PER_STEP if sps else None
  row = {"run": run.name, "model": run.model, "dispatch": run.dispatch, "device": run.device,
         "reference": run.reference, "steps": result.get("steps"), "steps_per_sec": sps,
         "tokens_per_sec": tokens, "error": result.get("error"),
         "flops_per_token": flops_per_token, "process_s": result.get("process_s")}
  for dtype, gflops in peak_gflops.items():
    row[f"mfu_{dtype}"] = flops_per_token * tokens / (gflops * 1e9) if tokens else None
  return row


def compare(rows: List[dict], model_dirs: Dict[str, str], compare_step: int) -> None:
  """Adds each run's losses at step 1 and `compare_step`, and the CPU reference's next to them."""
  for row in rows:
    row["loss_step_1"] = loss_at(model_dirs[row["run"]], 1)
    row[f"loss_step_{compare_step}"] = loss_at(model_dirs[row["run"]], compare_step)
  refs = {r["model"]: r for r in rows if r["reference"]}
  for row in rows:
    ref = refs.get(row["model"])
    for key in ("loss_step_1", f"loss_step_{compare_step}"):
      mine, theirs = row[key], (ref or {}).get(key)
      row[f"cpu_ref_{key}"] = theirs
      row[f"{key}_minus_cpu_ref"] = (mine - theirs if mine is not None and theirs is not None
                                     else None)


def format_table(rows: List[dict], compare_step: int) -> str:
  def f(value, fmt):
    return "-" if value is None else format(value, fmt)
  k = compare_step
  lines = [f"{'run':30s} {'steps/s':>8s} {'tokens/s':>9s} {'MFU bf16':>8s} {'MFU fp32':>8s} "
           f"{'loss@1':>7s} {'cpu@1':>7s} {f'loss@{k}':>8s} {f'cpu@{k}':>8s} {'diff':>9s}"]
  for r in rows:
    lines.append(f"{r['run']:30s} {f(r['steps_per_sec'], '8.2f')} "
                 f"{f(r['tokens_per_sec'], '9.0f')} {f(r['mfu_bfloat16'], '8.2%')} "
                 f"{f(r['mfu_float32'], '8.2%')} {f(r['loss_step_1'], '7.4f')} "
                 f"{f(r['cpu_ref_loss_step_1'], '7.4f')} {f(r[f'loss_step_{k}'], '8.4f')} "
                 f"{f(r[f'cpu_ref_loss_step_{k}'], '8.4f')} "
                 f"{f(r[f'loss_step_{k}_minus_cpu_ref'], '9.2e')}"
                 + (f"  ERROR {r['error']}" if r["error"] else ""))
  return "\n".join(lines)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                 help="where the device runs go (cpu: the same logic without a GPU)")
  p.add_argument("--models", default="glam,brainformer1")
  p.add_argument("--dispatch", default="einsum,gather")
  p.add_argument("--size", choices=("mini", "tiny"), default="mini")
  p.add_argument("--steps", type=int, default=300, help="training steps of each device run")
  p.add_argument("--cpu_steps", type=int, default=30,
                 help="steps of the CPU reference runs; losses are compared at this step")
  p.add_argument("--seed", type=int, default=1234)
  p.add_argument("--peak_size", type=int, default=None,
                 help=f"matmul size of the peaks (default {DEFAULT_PEAK_SIZE})")
  p.add_argument("--peak_repeats", type=int, default=20)
  p.add_argument("--run_dir", default="/tmp/brainformer_bench/gpu_check")
  p.add_argument("--out", default="gpu_check.json")
  args = p.parse_args(argv)
  args.models = [m for m in args.models.split(",") if m]
  args.dispatch = [d for d in args.dispatch.split(",") if d]
  unknown = set(args.models) - set(common.MODELS)
  if unknown:
    p.error(f"unknown models {sorted(unknown)}; choose from {sorted(common.MODELS)}")
  if not 1 <= args.cpu_steps <= args.steps:
    p.error("--cpu_steps must be between 1 and --steps (losses are compared at that step)")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  gpus = visible_gpus()
  if args.device == "gpu" and not gpus:
    return errors.report("gpu_check", errors.UsageError(
        "no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty): run "
        "it where `nvidia-smi` lists one, with the CUDA build (bash benchmarks/gpu_check.sh; "
        "TF_CPP_MIN_LOG_LEVEL=0 shows why CUDA did not load), or pass --device cpu"))
  start = time.time()
  machine = dict(common.machine_info(), gpus=gpus)
  peak_size = args.peak_size or DEFAULT_PEAK_SIZE[args.device]
  device_peaks = peaks(args.device, peak_size, args.peak_repeats)
  peak_gflops = {dtype: p["gflops"] for dtype, p in device_peaks.items()}
  print(f"{args.device} matmul peak (size {peak_size}): bf16 {peak_gflops['bfloat16']:.0f}, "
        f"fp32 {peak_gflops['float32']:.0f} GFLOP/s", flush=True)
  flops = {m: common.model_counts(model_gin(m, args.size), te.RECIPE,
                                  common.MODELS[m][1])["flops_per_token"] for m in args.models}
  rows, model_dirs = [], {}
  for run in plan(args.models, args.dispatch, args.device, args.steps, args.cpu_steps):
    model_dir = model_dirs[run.name] = os.path.join(args.run_dir, run.name)
    cmd, env = run_command(run, model_dir, args.size, args.seed)
    result = common.run_training(model_dir, cmd, env=env, timeout_s=1800)
    rows.append(row_of(run, result, flops[run.model], peak_gflops))
    print(f"{run.name}: {result.get('steps')} steps, {result.get('steps_per_sec') or 0:.2f} "
          f"steps/s, {result['process_s']:.0f} s" + (f"  ERROR {result['error']}"
                                                      if result.get("error") else ""), flush=True)
  compare(rows, model_dirs, args.cpu_steps)
  elapsed = time.time() - start
  print(format_table(rows, args.cpu_steps))
  data = {"benchmark": "gpu_check", "machine": machine, "device": args.device,
          "command": "python -m benchmarks.gpu_check " + " ".join(argv or sys.argv[1:]),
          "size": args.size, "steps": args.steps, "cpu_steps": args.cpu_steps, "seed": args.seed,
          "recipe": te.RECIPE, "layout": LAYOUT, "tokens_per_step": te.TOKENS_PER_STEP,
          "matmul_peak": device_peaks, "rows": rows, "elapsed_s": elapsed,
          "load_average_end": list(os.getloadavg())}
  print(f"wrote {common.write_json(args.out, data)} ({elapsed:.0f} s)")
  return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
