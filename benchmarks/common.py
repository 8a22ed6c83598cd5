"""Shared benchmark plumbing: machine record, `brainformer train` runs under a budget, logs.

A run is one `brainformer train` subprocess (the same code path users run) with
`budget.settings.seconds` (same wall-clock; brainformer_tf/training/budget.py) or a fixed
`utils.run.train_steps` (same step count). Every step is logged (log_every_n_steps = 1), so the
loss curve has one point per step; `read_run` turns the model dir into a result dict.
"""

import datetime
import glob
from importlib import metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

from benchmarks import peak
from brainformer_tf import atomic
from brainformer_tf.training import progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
# chesterton-ball.txt is not valid UTF-8 at line 4631 (the text reader rejects it); the data is
# read-only and must not be copied, so it is left out of the training files.
EXCLUDED_FILES = ("chesterton-ball.txt",)

# Zoo names -> (model gin file, extra Gin bindings). "search_top2" is the paper's Search-w-Top2
# row at mini scale: the Brainformer-1 layout with GLaM's top-2 gating, capacity factor 2.
MODELS: Dict[str, tuple] = {
    "dense": ("models/dense_mini.gin", ()),
    "glam": ("models/glam_mini.gin", ()),
    "glam_ec": ("models/glam_ec_mini.gin", ()),
    "search_top2": ("models/brainformer1_mini.gin",
                    ("blocks.BlockDefaults.gating = 'top_2'",
                     "blocks.BlockDefaults.capacity_factor = 2.0")),
    "brainformer1": ("models/brainformer1_mini.gin", ()),
    "brainformer2": ("models/brainformer2_mini.gin", ()),
    "primer": ("models/primer_mini.gin", ()),
    # d_model 512 (issue 19): MFU where the matmuls are not tiny
    "glam_small": ("models/glam_small.gin", ()),
    "brainformer1_small": ("models/brainformer1_small.gin", ()),
}


def train_files(shared: str = SHARED) -> List[str]:
  """Gutenberg books (minus EXCLUDED_FILES) + WikiText-2 valid: the item-1 training text."""
  books = sorted(f for f in glob.glob(os.path.join(shared, "gutenberg_nltk", "*.txt"))
                 if os.path.basename(f) not in EXCLUDED_FILES)
  return books + [os.path.join(shared, "wikitext-2", "raw", "valid.txt")]


def validation_files(shared: str = SHARED) -> List[str]:
  return [os.path.join(shared, "wikitext-2", "raw", "test.txt")]


def machine_info(onednn: Optional[str] = None) -> dict:
  """CPU model, its SIMD flags and kind (machine_kind), cores, date (UTC), load average, TF
  version, oneDNN setting of the runs."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
  flags = cpu_flags()
  return {"cpu": cpu, "cpu_flags": flags, "kind": machine_kind(flags), "cores": os.cpu_count(),
          "platform": platform.platform(), "python": platform.python_version(),
          "tensorflow": _tf_version(),
          "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "load_average": list(os.getloadavg()),
          "onednn": onednn or ("default (on: TF 2.15 x86 Linux)" if env is None else
                               ("on" if env == "1" else "off"))}


def cpu_flags() -> List[str]:
  """The SIMD flags that decide TF's matmul speed here (AVX2, AVX-512 ...)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
  except OSError:
    return []
  return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))


def machine_kind(flags: Sequence[str]) -> str:
  """"avx512" or "avx2" (or "other"): the CPU kinds whose matmul speed (and oneDNN's kernels)
  differ here, so every target is reported per kind (benchmarks/summary.py)."""
  if any(f.startswith("avx512") for f in flags):
    return "avx512"
  return "avx2" if "avx2" in flags else "other"


def alternating(cells: Sequence, rounds: int) -> list:
  """[(round, cell)]: every cell once per round, the order reversed on every other round, so
  drift of the machine's speed hits all cells alike."""
  return [(r, cell) for r in range(rounds)
          for cell in (cells if r % 2 == 0 else list(reversed(cells)))]


def _tf_version() -> str:
  try:
    return metadata.version("tensorflow")
  except Exception:  # pylint: disable=broad-except
    return "unknown"


def onednn_env(onednn: str) -> dict:
  env = dict(os.environ)
  env.pop("TF_ENABLE_ONEDNN_OPTS", None)
  if onednn in ("on", "off"):
    env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
  return env


def train_command(model_dir: str, model_gin: str, recipe: str, *, budget_s: Optional[float] = None,
                  steps: Optional[int] = None, seed: int = 1234, extra: Sequence[str] = (),
                  train: Sequence[str] = (), validation: Sequence[str] = (),
                  final_eval_steps: int = 50, lr_warmup_steps: Optional[int] = None,
                  gin_files: Sequence[str] = ()) -> List[str]:
  """The `brainformer train` command line of one benchmark run (gin_files: more Gin files
  after the recipe, e.g. a layout)."""
  if (budget_s is None) == (steps is None):
    raise ValueError("give exactly one of budget_s and steps")
  params = [f"train_with_progress.seed = {seed}", "train_with_progress.log_every_n_steps = 1",
            f"train_with_progress.final_eval_steps = {final_eval_steps}",
            # one checkpoint, at the end (the final validation reads it)
            "utils.run.save_checkpoints_steps = 100000000", "utils.run.keep_checkpoint_max = 1"]
  if budget_s is not None:
    params += [f"budget.settings.seconds = {budget_s}", "utils.run.train_steps = 100000000"]
  else:
    params += [f"utils.run.train_steps = {steps}"]
  if lr_warmup_steps is not None:
    params.append(f"learning_rate_schedule_noam.warmup_steps = {lr_warmup_steps}")
  if train:
    files = [os.path.abspath(f) for f in train]
    params += ["MIXTURE_NAME = 'local_text_lm'", f"local_text_files.train = {files!r}",
               f"vocabulary_settings.train_files = {files!r}"]
  if validation:
    params.append(f"local_text_files.validation = {[os.path.abspath(f) for f in validation]!r}")
  params += list(extra)
  return ([sys.executable, "-m", "brainformer_tf.cli.main", "train", f"--model_dir={model_dir}",
           f"--gin_file={model_gin}", f"--gin_file={recipe}"]
          + [f"--gin_file={f}" for f in gin_files] + [f"--gin_param={p}" for p in params])


def run_training(model_dir: str, command: List[str], onednn: str = "default",
                 timeout_s: float = 3600, on_line=None, env: Optional[dict] = None) -> dict:
  """Runs `command` (from train_command) from scratch in model_dir; returns `read_run`'s dict.

  The output goes to <model_dir>.log; on_line(line), if given, also sees every line as it comes.
  env: variables set for the run on top of this process's environment.
  """
  if os.path.exists(model_dir):
    shutil.rmtree(model_dir)
  os.makedirs(model_dir)
  log_path = os.path.join(model_dir, "..", os.path.basename(model_dir) + ".log")
  start = time.time()
  load = os.getloadavg()[0]
  with open(log_path, "w") as log:
    log.write(" ".join(command) + "\n")
    log.flush()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**onednn_env(onednn), "TF_CPP_MIN_LOG_LEVEL": "1",
                                 **(env or {})}, text=True,
                            errors="replace")
    watchdog = threading.Timer(timeout_s, proc.kill)  # a hung run is killed, as run(timeout)
    watchdog.start()
    try:
      for line in proc.stdout:
        log.write(line)
        if on_line:
          on_line(line)
      proc.wait()
    finally:
      watchdog.cancel()
  result = read_run(model_dir)
  result.update(process_s=time.time() - start, load_average_start=load,
                load_average_end=os.getloadavg()[0], returncode=proc.returncode,
                onednn=onednn, log=os.path.relpath(log_path, ROOT))
  if proc.returncode != 0:
    with open(log_path, errors="replace") as f:
      result["error"] = " | ".join(l.strip() for l in f.readlines()[-5:])[-800:]
  return result


def parse_records(records: List[dict], budget: Optional[dict] = None, warmup_steps: int = 2):
  """Curve and throughput from train_log records (one per step) and budget.json.

  Wall-clock is measured like the budget clock: from the end of step `warmup_steps` (graph
  building, the first session runs and the input pipeline fill are not training time).
  Returns {"curve": [[step, seconds, loss], ...], "steps", "train_s", "steps_per_sec",
  "tokens_per_sec" (None without a token count), "val_loss", "val_step", "val_kind"}:
  val_loss is leak-free (the prefix-exact figure where routing reads the row, else the one
  pass); a whole-sequence-only figure is kept as val_loss_whole_sequence, never as val_loss.
  """
  train = [r for r in records if "loss" in r and "time" in r]
  out = {"curve": [], "steps": None, "train_s": None, "steps_per_sec": None,
         **progress.final_validation(records)}
  if not train:
    return out
  t0_records = [r for r in train if r["step"] == warmup_steps]
  t0 = t0_records[0]["time"] if t0_records else train[0]["time"]
  s0 = t0_records[0]["step"] if t0_records else train[0]["step"]
  out["curve"] = [[r["step"], r["time"] - t0, r["loss"]] for r in train if r["step"] >= s0]
  last = train[-1]
  steps, seconds = last["step"] - s0, last["time"] - t0
  if budget and budget.get("end"):  # the budget hook's own clock, when there is one
    steps, seconds = budget["end"]["step"], budget["end"]["elapsed"]
  out.update(steps=last["step"], train_s=seconds,
             steps_per_sec=steps / seconds if seconds > 0 else None)
  return out


def read_run(model_dir: str) -> dict:
  budget = None
  path = os.path.join(model_dir, "budget.json")
  if os.path.exists(path):
    with open(path) as f:
      budget = json.load(f)
  return parse_records(progress.read_log(model_dir), budget)


def smooth(values: Sequence[float], window: int = 10) -> List[float]:
  """Trailing mean over `window` points (the first points average what there is)."""
  out, total = [], 0.0
  for i, v in enumerate(values):
    total += v
    if i >= window:
      total -= values[i - window]
    out.append(total / min(i + 1, window))
  return out


def time_to_loss(curve: Sequence[Sequence[float]], target: float, window: int = 10):
  """First wall-clock second at which the smoothed training loss is <= target, else None."""
  losses = smooth([c[2] for c in curve], window)
  for (_, seconds, _), loss in zip(curve, losses):
    if loss <= target:
      return seconds
  return None


def loss_at_step(curve: Sequence[Sequence[float]], step: int, window: int = 10):
  """Smoothed training loss at `step` (mean of the `window` records up to it), else None."""
  points = [c[2] for c in curve if c[0] <= step]
  if not points or curve[-1][0] < step:
    return None
  return sum(points[-window:]) / len(points[-window:])


def model_counts(model_gin: str, recipe: str, extra: Sequence[str] = ()) -> dict:
  """`brainformer params --json` of the model under the recipe (its sequence length)."""
  cmd = [sys.executable, "-m", "brainformer_tf.cli.main", "params", f"--gin_file={model_gin}",
         f"--gin_file={recipe}", "--json"] + [f"--gin_param={p}" for p in extra]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  return json.loads(out.stdout.strip().splitlines()[-1])


def peaks(size: int = 1024, repeats: int = 30) -> dict:
  """Best-of-N fp32 matmul GFLOP/s with oneDNN on and off (benchmarks/peak.py)."""
  return {mode: peak.measure_in_subprocess(mode, size, repeats) for mode in ("on", "off")}


def write_json(name: str, data: dict) -> str:
  """Writes results/<name> (name may hold a sub-directory); returns its path."""
  path = os.path.join(RESULTS, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic.write_json(path, data)
  return path
