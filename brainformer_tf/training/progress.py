"""A SessionRunHook that reports training progress and keeps the loss curve.

Every `every_n_steps` steps it logs one line (step, loss, steps/s, tokens/s, ETA), appends the
same record to `<model_dir>/train_log.jsonl` (appended across restarts, so a resumed run
continues the curve) and, at the end, plots the whole log to `<model_dir>/loss_curve.png`.
`truncate_log` drops the records of steps a restart repeats (those after the restored checkpoint).
"""

import json
import os
import time

from absl import logging
import matplotlib
import matplotlib.pyplot as plt
import tensorflow.compat.v1 as tf

from brainformer_tf import atomic

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss_curve.png"


def read_log(model_dir):
  """The records of train_log.jsonl, one dict per reported step (empty if none yet)."""
  path = os.path.join(model_dir, LOG_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return [r for r in map(_parse, f) if r is not None]


def _parse(line):
  """The record on `line`, or None for a blank line or one torn by a killed writer."""
  try:
    return json.loads(line)
  except ValueError:
    return None


def final_validation(records) -> dict:
  """The last validation figure of train_log records, the one to report:
  {"val_loss", "val_step", "val_kind"} and, where routing reads the row, the leak-free
  (prefix-exact) figure with "future_information_gap". A whole-sequence figure of such a model
  (`whole_sequence`, training/loop.py) is kept as "val_loss_whole_sequence", never as val_loss.
  All None without a validation record.
  """
  val = [r for r in records if "validation_loss" in r]
  leak_free = [r for r in records if "validation_loss_leak_free" in r]
  out = {"val_loss": val[-1]["validation_loss"] if val else None,
         "val_step": val[-1]["step"] if val else None, "val_kind": "one pass, causal routing"}
  if val and val[-1].get("whole_sequence"):
    out.update(val_kind="whole-sequence (routing reads later tokens)",
               val_loss_whole_sequence=out["val_loss"], val_loss=None)
  if leak_free:
    out.update(val_loss=leak_free[-1]["validation_loss_leak_free"],
               val_kind=f"leak-free, prefix-exact ({leak_free[-1]['rows']} rows)",
               future_information_gap=leak_free[-1].get("future_information_gap"))
  return out


def truncate_log(model_dir, step):
  """Keeps only records at or before `step` (the restored checkpoint's), atomically.

  Returns how many records were dropped.
  """
  path = os.path.join(model_dir, LOG_FILE)
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line if line.endswith("\n") else line + "\n" for line in lines
          if (_parse(line) or {}).get("step", step + 1) <= step]
  atomic.write_lines(path, kept)
  return len(lines) - len(kept)


def plot_log(model_dir):
  """Plots loss against step (and validation points, if any) to loss_curve.png."""
  matplotlib.use("Agg")
  records = read_log(model_dir)
  train = [r for r in records if "loss" in r]
  valid = [r for r in records if "validation_loss" in r]
  if not train:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
  if valid:
    ax.plot([r["step"] for r in valid], [r["validation_loss"] for r in valid], "o",
            label="validation log-perplexity")
  ax.set_xlabel("step")
  ax.set_ylabel("nats / token")
  ax.set_title(os.path.basename(os.path.normpath(model_dir)))
  ax.grid(alpha=0.3)
  ax.legend()
  path = os.path.join(model_dir, PLOT_FILE)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def append_record(model_dir, record):
  path = os.path.join(model_dir, LOG_FILE)
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


class ProgressHook(tf.train.SessionRunHook):
  """Logs step, loss, steps/s, tokens/s and ETA every `every_n_steps` steps."""

  def __init__(self, model_dir, train_steps, tokens_per_step, every_n_steps=10, budget_s=None):
    """budget_s: a wall-clock budget ends training (budget.py): the ETA counts down from it."""
    self._model_dir = model_dir
    self._train_steps = train_steps
    self._budget_s = budget_s
    self._tokens_per_step = tokens_per_step
    self._every = max(1, every_n_steps)

  def begin(self):
    self._loss = tf.get_collection(tf.GraphKeys.LOSSES)[0]
    self._step = tf.train.get_global_step()
    self._last_time = None
    self._last_step = None

  def after_create_session(self, session, coord):
    self._last_step = self._current = int(session.run(self._step))
    self._last_time = self._start = time.time()

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._loss)

  def after_run(self, run_context, run_values):
    loss = run_values.results
    self._current += 1  # the global step after this update
    step = self._current
    if step % self._every and step < self._train_steps:
      return
    now = time.time()
    steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    record = {"step": step, "loss": float(loss), "steps_per_sec": steps_per_sec,
              "tokens_per_sec": steps_per_sec * self._tokens_per_step, "time": now}
    append_record(self._model_dir, record)
    if self._budget_s:
      total = f"{step}"
      remaining = max(self._budget_s - (now - self._start), 0)
    else:
      total = f"{step}/{self._train_steps}"
      remaining = max(self._train_steps - step, 0) / max(steps_per_sec, 1e-9)
    logging.info("step %s  loss %.4f  %.2f steps/s  %.0f tokens/s  eta %ds", total, loss,
                 steps_per_sec, record["tokens_per_sec"], remaining)

  def end(self, session):
    plot_log(self._model_dir)
