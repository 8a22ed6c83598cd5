"""One trial: the candidate as a Gin model file, trained by a `brainformer train` subprocess.

The subprocess trains the proxy (the block stacked `space.stack` times) with the recipe for a
fixed wall-clock budget (`training.budget`) under the search's early-stop thresholds, then
validates; the result comes from its budget.json and train_log.jsonl. It dies with its parent
(PR_SET_PDEATHSIG), so a killed search leaves no orphan; `cores` pins it to CPU cores and as
many TF threads. For the tests, BRAINFORMER_SEARCH_FAULT=kill_after_start:<trial dir name>
(e.g. trial_0000) SIGKILLs the search right after that trial's subprocess started.
"""

import ctypes
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

from brainformer_tf.blocks import spec as spec_lib
from brainformer_tf.search import space as space_lib
from brainformer_tf.training import budget as budget_lib
from brainformer_tf.training import progress

MODEL_GIN = "model.gin"
LOG = "train.log"
FAULT = "BRAINFORMER_SEARCH_FAULT"


def model_gin(space: space_lib.SearchSpace, candidate: space_lib.Candidate,
              stack: Optional[int] = None, scale: int = 1, title: str = "") -> str:
  """A Gin model file for the candidate: block_base + widths; the block stacked `stack` times.

  `stack` is StackNTimes (default: the space's proxy depth); scale > 1 is ScaleModelDim:
  d_model, every hidden size and the head size times `scale` (heads are kept).
  """
  scaled = space_lib.Candidate(candidate.d_model * scale, spec_lib.BlockSpec(tuple(
      dataclasses.replace(l, hidden=l.hidden * scale) if l.hidden else l
      for l in candidate.block.layers), candidate.block.groups))
  ffn = [l.hidden for l in scaled.block.layers if l.kind == "f"]
  heads = [l.heads for l in scaled.block.layers if l.kind == "a"]
  lines = [
      "# -*-Python-*-",
      f"# {title or 'Block found by brainformer search'} (space {space.name!r}; "
      f"docs/search.md).",
      "include 'models/includes/block_base.gin'",
      "",
      f"d_model = {scaled.d_model}",
      f"d_kv = {space.d_kv * scale}",
      f"num_layers = {stack or space.stack}  # StackNTimes: the block is repeated this many times",
      f"num_experts = {space.num_experts}"
      + ("  # the proxy's; the paper uses 64 at 1B and 8B scale" if scale > 1 else ""),
      "# d_ff and num_heads are lm_base macros; every sub-layer of the block sets its own.",
      f"d_ff = {ffn[0] if ffn else space.base_hidden * scale}",
      f"num_heads = {heads[0] if heads else space.base_heads}",
      f'blocks.block_layers.spec = "{scaled.block}"',
      "",
  ]
  return "\n".join(lines)


def command(trial_dir: str, config: dict, max_step_time=None, max_loss=None):
  """The `brainformer train` command line of a trial whose model.gin is in trial_dir."""
  params = [f"budget.settings.seconds = {config['budget_s']}",
            f"budget.settings.clock = '{config['clock']}'"]
  for name, value in (("max_step_time", max_step_time), ("max_loss", max_loss)):
    if value is not None:
      params.append(f"budget.settings.{name} = {value}")
  train, valid = ([os.path.abspath(f) for f in config[key]]
                  for key in ("train_files", "validation_files"))
  if train:
    params += ["MIXTURE_NAME = 'local_text_lm'", f"local_text_files.train = {train!r}",
               f"vocabulary_settings.train_files = {train!r}"]
  if valid:
    params.append(f"local_text_files.validation = {valid!r}")
  params += list(config["gin_params"])
  return ([sys.executable, "-m", "brainformer_tf.cli.main", "train",
           f"--model_dir={os.path.join(trial_dir, 'model')}",
           f"--gin_file={os.path.join(trial_dir, MODEL_GIN)}", f"--gin_file={config['recipe']}"]
          + [f"--gin_param={p}" for p in params])


def thread_env(threads):
  """Environment that limits TF (and OpenMP) in a trial subprocess to `threads` threads."""
  return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
          "OMP_NUM_THREADS": str(threads)}


def run(trial_dir: str, candidate: space_lib.Candidate, config: dict,
        max_step_time: Optional[float] = None, max_loss: Optional[float] = None,
        cores: Optional[Sequence[int]] = None) -> dict:
  """Trains the candidate from scratch in trial_dir as the search `config` says (budget_s,
  clock, recipe, train/validation files, gin_params; timeout_s, default 4x budget + 10 min);
  returns read_result's dict with "wall_s", and "error" if the trial failed."""
  shutil.rmtree(trial_dir, ignore_errors=True)
  os.makedirs(trial_dir)
  pathlib.Path(trial_dir, MODEL_GIN).write_text(
      model_gin(space_lib.get(config["space"]), candidate, title=str(candidate)))
  cmd = command(trial_dir, config, max_step_time, max_loss)
  timeout = config["timeout_s"] or 4 * config["budget_s"] + 600
  start = time.time()

  def preexec():  # in the child: SIGKILL when its parent dies (PR_SET_PDEATHSIG), run on cores
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    if cores:
      os.sched_setaffinity(0, cores)
  with open(os.path.join(trial_dir, LOG), "w") as log:
    print(" ".join(cmd), file=log, flush=True)
    env = dict(os.environ, **thread_env(len(cores))) if cores else None
    with subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=trial_dir, env=env,
                          preexec_fn=preexec) as proc:
      if os.environ.get(FAULT) == f"kill_after_start:{os.path.basename(trial_dir)}":
        print(f"fault injection: SIGKILL the search during {trial_dir}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
      try:
        returncode = proc.wait(timeout=timeout)
      except subprocess.TimeoutExpired:
        proc.kill()  # leaving the with statement waits for it
        returncode = f"killed after {timeout:.0f}s"
  result = read_result(os.path.join(trial_dir, "model"))
  result["wall_s"] = time.time() - start
  if returncode != 0 or result["status"] == "failed":
    result["status"] = "failed"
    result["error"] = f"exit status {returncode}: " + _tail(os.path.join(trial_dir, LOG))
  return result


def read_result(model_dir: str) -> dict:
  """From budget.json and train_log.jsonl: {"status": "done" | "early_stop" | "failed", "val_loss"
  (leak-free if routing reads the row), "step_time", "steps", "check", "early_stop" (why)}."""
  record = budget_lib.read(model_dir) or {}
  end = record.get("end") or {}
  val = progress.final_validation(progress.read_log(model_dir))["val_loss"]
  status = ("failed" if not end or val is None
            else "early_stop" if record.get("early_stop") else "done")
  return {"status": status, "val_loss": val, "step_time": end.get("step_time"),
          "steps": end.get("step"), "check": record.get("check"),
          "early_stop": record.get("early_stop")}


def _tail(path: str, lines: int = 5) -> str:
  with open(path, errors="replace") as f:
    text = [l.strip() for l in f.readlines()[-200:] if l.strip()]
  errors = [l for l in text if "Error" in l or "error:" in l]
  return " | ".join((errors or text)[-lines:])[-1000:]
