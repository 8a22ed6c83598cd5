"""A fixed wall-clock training budget with the paper's early stop (Brainformer Sec. 3).

Gin (all off by default; `hooks(model_dir)` returns [] unless `seconds` is set):
  budget.settings.seconds = 60          # training time; the clock starts after warmup_steps
  budget.settings.warmup_steps = 2      # steps not counted (imports, graph building, the first
                                        # session runs and input pipeline fill are not training)
  budget.settings.check_at = 0.25       # fraction of the budget where the early stop is checked
  budget.settings.max_step_time = None  # stop at the check if mean s/step is above this
  budget.settings.max_loss = None       # stop at the check if the smoothed loss is above this
  budget.settings.smoothing_steps = 10  # the check's loss = mean of the last N training losses
  budget.settings.clock = "wall"        # or "process": CPU seconds of this process (all its
                                        # threads), robust to other jobs on a shared machine
The hook writes <model_dir>/budget.json: {"seconds", "check": {step, elapsed, step_time, loss},
"end": {step, elapsed, step_time}, "early_stop": null or the reason}; the search reads it.
"""

import collections
import json
import os
import time
from typing import Optional

import gin
import tensorflow.compat.v1 as tf

from brainformer_tf import atomic

BUDGET_FILE = "budget.json"
CLOCKS = {"wall": time.time, "process": time.process_time}


@gin.configurable(module="budget")
def settings(seconds: Optional[float] = None, check_at: float = 0.25,
             max_step_time: Optional[float] = None, max_loss: Optional[float] = None,
             smoothing_steps: int = 10, warmup_steps: int = 2, clock: str = "wall"):
  """The bound budget settings as a dict; ValueError names a bad parameter."""
  if seconds is not None and not seconds > 0:
    raise ValueError(f"budget.settings.seconds={seconds!r}: must be positive (or None = off)")
  if not 0 < check_at <= 1:
    raise ValueError(f"budget.settings.check_at={check_at!r}: must be in (0, 1]")
  if clock not in CLOCKS:
    raise ValueError(f"budget.settings.clock={clock!r}: choose one of {sorted(CLOCKS)}")
  if warmup_steps < 1:
    raise ValueError(f"budget.settings.warmup_steps={warmup_steps!r}: must be >= 1")
  if smoothing_steps < 1:
    raise ValueError(f"budget.settings.smoothing_steps={smoothing_steps!r}: must be >= 1")
  return dict(seconds=seconds, check_at=check_at, max_step_time=max_step_time,
              max_loss=max_loss, smoothing_steps=smoothing_steps, warmup_steps=warmup_steps,
              clock=clock)


def hooks(model_dir):
  """[WallClockBudgetHook] when budget.settings.seconds is bound, else []."""
  bound = settings()
  return [WallClockBudgetHook(model_dir, **bound)] if bound["seconds"] else []


def read(model_dir):
  """The budget.json a budgeted run wrote, or None."""
  path = os.path.join(model_dir, BUDGET_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class WallClockBudgetHook(tf.train.SessionRunHook):
  """Stops training after `seconds` of training time, or early at `check_at` of it."""

  def __init__(self, model_dir, seconds, check_at=0.25, max_step_time=None, max_loss=None,
               smoothing_steps=10, warmup_steps=2, clock="wall"):
    self._model_dir = model_dir
    self._seconds = float(seconds)
    self._check_at = check_at
    self._max_step_time = max_step_time
    self._max_loss = max_loss
    self._losses = collections.deque(maxlen=smoothing_steps)
    self._warmup_steps = warmup_steps
    self._clock = CLOCKS[clock]
    self._record = {"seconds": self._seconds, "clock": clock, "check": None, "end": None,
                    "early_stop": None}

  def begin(self):
    self._loss = tf.get_collection(tf.GraphKeys.LOSSES)[0]
    self._start = None
    self._steps = -self._warmup_steps

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._loss)

  def after_run(self, run_context, run_values):
    now = self._clock()
    self._losses.append(float(run_values.results))
    self._steps += 1
    if self._steps <= 0:  # warm-up; the clock starts when it ends
      self._start = now
      return
    elapsed = now - self._start
    point = {"step": self._steps, "elapsed": elapsed, "step_time": elapsed / self._steps}
    if self._record["check"] is None and elapsed >= self._check_at * self._seconds:
      point["loss"] = sum(self._losses) / len(self._losses)
      self._record["check"] = point
      reasons = []
      if self._max_step_time is not None and point["step_time"] > self._max_step_time:
        reasons.append(f"step time {point['step_time']:.4f}s > {self._max_step_time:.4f}s")
      if self._max_loss is not None and point["loss"] > self._max_loss:
        reasons.append(f"loss {point['loss']:.4f} > {self._max_loss:.4f}")
      if reasons:
        self._record["early_stop"] = "; ".join(reasons)
        self._stop(run_context, point)
        return
      self._write()
    if elapsed >= self._seconds:
      self._stop(run_context, point)

  def _stop(self, run_context, point):
    self._record["end"] = {k: point[k] for k in ("step", "elapsed", "step_time")}
    self._write()
    run_context.request_stop()

  def _write(self):
    path = os.path.join(self._model_dir, BUDGET_FILE)
    atomic.write_json(path, self._record)
