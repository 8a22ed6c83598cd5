"""`utils.run.train_model_fn` replacement: mesh-tf training plus progress and final validation.

Bind it in Gin (gin/train/cpu.gin does):
  utils.run.train_model_fn = @training.train_with_progress
It trains exactly as mesh-tf's `utils.train_model` (same input pipeline, same estimator) with a
`ProgressHook` and a `nan_guard.NonFiniteHook` attached, then computes the validation log-perplexity (mean cross-entropy in
nats per target token, padding excluded) of the final checkpoint over one pass of
`final_eval_split` (at most `final_eval_steps` batches) and logs it.
Before training it makes a restart safe (see docs/reliability.md): the newest intact checkpoint
becomes the resume point (`checkpoints.recover`), log records of steps that will be repeated are
dropped, run_info.json is written, and with `seed` set the graph and the data order are seeded.
"""

import inspect
import json
import math
import os
import random
import subprocess
import sys

from absl import logging
import gin
from mesh_tensorflow.transformer import dataset as transformer_dataset
from mesh_tensorflow.transformer import utils
import numpy as np
from t5.models import mesh_transformer
import tensorflow.compat.v1 as tf

# At import (Gin parses this module): blocks registers Gin configurables, which cannot be
# added once train has finalized the config (a lazy import failed every non-block model).
from brainformer_tf.blocks import causality
from brainformer_tf.config import ginutil
from brainformer_tf.training import budget
from brainformer_tf.training import checkpoints
from brainformer_tf.training import faults
from brainformer_tf.training import nan_guard
from brainformer_tf.training import progress
from brainformer_tf.training import run_info


class _EstimatorWithHooks:
  """Delegates to an estimator, adding hooks to every `train` call."""

  def __init__(self, estimator, hooks):
    self._estimator = estimator
    self._hooks = list(hooks)

  def train(self, *args, hooks=None, **kwargs):
    return self._estimator.train(*args, hooks=list(hooks or []) + self._hooks, **kwargs)

  def __getattr__(self, name):
    return getattr(self._estimator, name)


def _num_batches(dataset_fn, batch_size, max_batches):
  """Batches in one pass of the dataset, counting no further than max_batches."""
  with tf.Graph().as_default():
    count = dataset_fn().take(max_batches * batch_size).reduce(
        tf.constant(0, tf.int64), lambda n, _: n + 1)
    with tf.Session() as session:
      count = int(session.run(count))
  return max(1, -(-count // batch_size))


def validation_log_perplexity(estimator, mixture_or_task_name, vocabulary, sequence_length,
                              batch_size, split, max_batches):
  """{task name: log-perplexity} over one pass of `split` for the task(s) of the mixture."""
  eval_datasets = mesh_transformer.mesh_eval_dataset_fn(
      mixture_or_task_name=mixture_or_task_name, sequence_length=sequence_length,
      dataset_split=split, vocabulary=vocabulary, pack=True)
  results = {}
  for eval_dataset in eval_datasets:
    def input_fn(params, eval_dataset=eval_dataset):
      del params
      ds = eval_dataset.dataset_fn().map(utils._filter_features)  # pylint: disable=protected-access
      ds = transformer_dataset.pad_dataset_with_zeroed_out_examples(ds)
      return ds.batch(batch_size, drop_remainder=True)
    steps = _num_batches(eval_dataset.dataset_fn, batch_size, max_batches)
    metrics = estimator.evaluate(input_fn=input_fn, steps=steps,
                                 name=f"final_{eval_dataset.name}_{split}")
    results[eval_dataset.name] = (-float(metrics["neg_log_perplexity"]),
                                  int(metrics["global_step"]), steps)
  return results


def _seeded(dataset_fn, seed):
  """`dataset_fn` that also seeds the graph (it runs in the training graph before the model)."""
  takes_seed = "seed" in inspect.signature(dataset_fn).parameters

  def seeded_dataset_fn(*args, **kwargs):
    tf.random.set_random_seed(seed)
    return dataset_fn(*args, **kwargs, **({"seed": seed} if takes_seed else {}))
  return seeded_dataset_fn


def leak_free_validation(model_dir, vocabulary, split, rows, length):
  """For a model whose routing reads its row when scoring (blocks.causality), the leak-free
  log-perplexity of the final checkpoint on `rows` rows of `split` (`brainformer score` in a
  subprocess: its own graph and Gin config); None for causal routing or rows = 0."""
  if not rows or causality.routing_is_causal(ginutil.build_model("lm", vocabulary.vocab_size)):
    return None
  out = os.path.join(model_dir, f"leak_free_{split}.json")
  cmd = [sys.executable, "-m", "brainformer_tf.cli.main", "score", f"--checkpoint={model_dir}",
         f"--task={ginutil.mixture_name()}", f"--split={split}", f"--rows={rows}",
         f"--sequence_length={length}", f"--json={out}"]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode:
    print(f"leak-free validation failed: {(proc.stderr.strip().splitlines() or [''])[-1]}",
          flush=True)
    return None
  with open(out) as f:
    return json.load(f)


def prepare_restart(model_dir, seed):
  """Recovers the newest intact checkpoint, trims the log to it, writes run_info.json."""
  step = checkpoints.recover(model_dir)
  faults.install()
  dropped = progress.truncate_log(model_dir, step)
  if step or dropped:
    print(f"resuming from step {step} ({dropped} log records after it dropped)", flush=True)
  run_info.write(model_dir, seed, step)
  return step


@gin.configurable
def train_with_progress(estimator, vocabulary, sequence_length, batch_size, train_dataset_fn,
                        train_steps, ensemble_inputs, log_every_n_steps=10,
                        final_eval_split="validation", final_eval_steps=50, seed=None,
                        profile_every_n_steps=None, final_leak_free_rows=16, **kwargs):
  """Trains like `utils.train_model`, reporting progress, then validates the last checkpoint.

  Args (Gin): log_every_n_steps: steps between progress lines; final_eval_split: split whose
    log-perplexity is computed after training (None: skip); final_eval_steps: at most this
    many batches are evaluated; seed: graph seed (initialisers, random ops) and data shuffle
    seed, None for a random run; profile_every_n_steps: also write a TF timeline (Chrome
    trace, model_dir/timeline-<step>.json) of every n-th step (None: no profiling);
    final_leak_free_rows: for a model whose routing reads later tokens of its row (expert
    choice, capacity-limited top-2), also score this many rows of the split leak-free
    (prefix-exact, `brainformer score`); 0 skips it and the whole-sequence figure stands
    alone, labelled.
  """
  model_dir = estimator.model_dir
  prepare_restart(model_dir, seed)
  if seed is not None:
    random.seed(seed)
    np.random.seed(seed)
    train_dataset_fn = _seeded(train_dataset_fn, seed)
  tokens_per_step = batch_size * sequence_length["targets"]
  hooks = [progress.ProgressHook(model_dir, train_steps, tokens_per_step, log_every_n_steps,
                                 budget_s=budget.settings()["seconds"])]
  if nan_guard.settings().policy != "off":
    hooks.append(nan_guard.NonFiniteHook(model_dir))
  hooks += budget.hooks(model_dir)  # wall-clock budget + early stop (search trials)
  if profile_every_n_steps:
    hooks.append(tf.estimator.ProfilerHook(save_steps=profile_every_n_steps,
                                           output_dir=model_dir))
  with nan_guard.replacing_estimator_nan_hook():
    utils.train_model(_EstimatorWithHooks(estimator, hooks), vocabulary, sequence_length,
                      batch_size, train_dataset_fn, train_steps, ensemble_inputs, **kwargs)
  if not final_eval_split:
    return
  results = validation_log_perplexity(estimator, ginutil.mixture_name(), vocabulary, sequence_length, batch_size,
                                      final_eval_split, final_eval_steps)
  leak_free = leak_free_validation(model_dir, vocabulary, final_eval_split,
                                   final_leak_free_rows, sequence_length["targets"])
  for task, (loss, step, steps) in results.items():
    progress.append_record(model_dir, {"step": step, "validation_loss": loss, "task": task,
                                       "split": final_eval_split,
                                       "whole_sequence": leak_free is not None})
    logging.info("validation log-perplexity of %s at step %d (%s, %d batches): %.4f",
                 task, step, final_eval_split, steps, loss)
    label = (" (whole-sequence: this model's routing reads later tokens of its row)"
             if leak_free else "")
    print(f"{task} {final_eval_split} log-perplexity at step {step}: {loss:.4f} nats/token "
          f"(perplexity {math.exp(loss):.1f}, {steps} batches){label}", flush=True)
  if leak_free:
    gap = leak_free["future_information_gap"]
    progress.append_record(model_dir, {
        "step": leak_free["step"], "validation_loss_leak_free": leak_free["leak_free_log_ppl"],
        "split": final_eval_split, "rows": leak_free["rows"],
        "validation_loss_whole_sequence_same_rows": leak_free["whole_sequence_log_ppl"],
        "future_information_gap": gap["mean"], "future_information_gap_se": gap["se"]})
    print(f"{final_eval_split} leak-free log-perplexity at step {leak_free['step']}: "
          f"{leak_free['leak_free_log_ppl']:.4f} nats/token ({leak_free['rows']} rows, "
          f"prefix-exact; whole-sequence on the same rows "
          f"{leak_free['whole_sequence_log_ppl']:.4f}, future-information gap "
          f"{gap['mean']:+.4f} +- {gap['se']:.4f})", flush=True)
  progress.plot_log(model_dir)
  print(f"model dir: {model_dir}", flush=True)
