"""Rank classification: score every label string as the continuation, predict the argmax.

Runs through mesh-tf's `score_from_dataset` mode (Gin, set by evaluation.driver):
  score_from_dataset.score_dataset_fn = @rank.score_dataset_fn       (examples x candidates)
  score_from_dataset.score_with_estimator_fn = @rank.score_with_estimator
  score_from_dataset.score_postprocess_fn = @rank.keep_scores
Two formats, matching how the model was trained:
  delimited  ([inputs EOS candidate EOS], model_type "delimited_lm", a fine-tuned model): the
             score is mesh-tf's log p(candidate EOS | inputs EOS).
  continue   (model_type "lm", a pretrained LM): one sequence [prompt candidate EOS]; mesh-tf
             scores the whole sequence, log p(prompt) + log p(candidate EOS | prompt). log
             p(prompt) is the same for every candidate, so the argmax is the conditional one.
Candidates are the task's label strings (t5's GLUE/SuperGLUE postprocessor `label_classes`).
After `utils.run` returns, `results()` gives per task the scores, predictions and metrics.
"""

import dataclasses
import functools
from typing import Any, Dict, List

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import dataset as transformer_dataset
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import utils
import numpy as np
import seqio
from t5.models import mesh_transformer
import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds

from brainformer_tf.config import errors
from brainformer_tf.evaluation import leakfree

EOS = 1


def label_classes(task) -> List[str]:
  """The label strings of a classification task; UsageError for a task without a label set."""
  labels = getattr(task.postprocessor, "keywords", {}).get("label_classes")
  if not labels:
    raise errors.UsageError(f"task {task.name!r} has no label set to rank (rank "
                            "classification needs a GLUE/SuperGLUE-style task); use decode")
  return list(labels)


def _trim(ids):
  ids = [int(i) for i in ids]
  return ids[:ids.index(0)] if 0 in ids else ids


def candidate_features(inputs, candidates, sequence_length, continue_prompt):
  """Token features of every (example, candidate) pair, example-major.

  inputs: token ids per example (trailing EOS and padding allowed); candidates: token ids
  per label without EOS. Returns {"inputs", "targets"} (delimited) or {"targets"}
  (continue) int32 arrays padded to sequence_length; the candidate keeps its EOS, a long
  prompt loses its beginning.
  """
  t_len = sequence_length["targets"]
  rows = {"inputs": [], "targets": []}
  for prompt in inputs:
    prompt = _trim(prompt)
    for cand in candidates:
      cand = list(cand)[:t_len - 1] + [EOS]
      if continue_prompt:
        prompt_ids = prompt[:-1] if prompt and prompt[-1] == EOS else prompt
        seq = (prompt_ids + cand)[-t_len:]
        rows["targets"].append(seq + [0] * (t_len - len(seq)))
      else:
        rows["inputs"].append(prompt + [0] * (sequence_length["inputs"] - len(prompt)))
        rows["targets"].append(cand + [0] * (t_len - len(cand)))
  return {k: np.array(v, np.int32) for k, v in rows.items() if v}


@dataclasses.dataclass
class _Pending:
  task: Any
  labels: List[str]
  examples: List[Dict[str, Any]]


_PENDING: List[_Pending] = []
_SCORES: List[float] = []


def _materialize(eval_dataset):
  with tf.Graph().as_default():
    return list(tfds.as_numpy(eval_dataset.dataset_fn()))


def _from_features(features, sequence_length=None):
  del sequence_length  # already padded
  return tf.data.Dataset.from_tensor_slices(features)


@gin.configurable(module="rank")
def score_dataset_fn(sequence_length, vocabulary, dataset_split,
                     mixture_or_task_name=gin.REQUIRED, num_eval_examples=-1,
                     continue_prompt=False):
  """mesh-tf `score_dataset_fn`: each eval example once per label of its task."""
  del vocabulary
  _PENDING.clear()
  _SCORES.clear()
  inputs_length = sequence_length.get("inputs", sequence_length["targets"])
  task_lengths = {"inputs": inputs_length, "targets": sequence_length["targets"]}
  out = []
  for eval_dataset in mesh_transformer.mesh_eval_dataset_fn(
      mixture_or_task_name, task_lengths, dataset_split, num_eval_examples=num_eval_examples):
    task = seqio.get_mixture_or_task(eval_dataset.name)
    labels = label_classes(task)
    vocab = task.output_features["targets"].vocabulary
    examples = _materialize(eval_dataset)
    features = candidate_features([ex["inputs"] for ex in examples],
                                  [vocab.encode(label) for label in labels],
                                  sequence_length, continue_prompt)
    _PENDING.append(_Pending(task, labels, examples))
    out.append(transformer_dataset.EvalDataset(
        task.name, functools.partial(_from_features, features), None, None))
  return out


@gin.configurable(module="rank")
def score_with_estimator(estimator, input_fn, eval_checkpoint_step, model_dir, vocabulary,
                         score_postprocess_fn):
  """mesh-tf's `score_with_estimator` told how many rows are real (the rest is batch padding)."""
  total = sum(len(p.examples) * len(p.labels) for p in _PENDING)
  return utils.score_with_estimator(estimator, input_fn, eval_checkpoint_step, model_dir,
                                    vocabulary, score_postprocess_fn, num_examples=total)


def score_fn(model, features, variable_dtype, delimited=False):
  """mesh-tf score-mode `predict_fn`: log p of each sequence [batch] with its padding kept out
  of attention and routing (mesh-tf's own score mode passes no sequence id, so padding would
  take MoE slots and a score would depend on the batch's padding). delimited: count only
  the targets after the inputs' EOS, as mesh-tf does for "delimited_lm"."""
  targets = features["targets"]
  real = mtf.cast(mtf.greater(targets, 0), tf.int32)
  log_p = leakfree.token_log_probs(model, targets, real, variable_dtype)
  keep = mtf.cast(real, log_p.dtype)
  if delimited:
    keep *= mtf.cast(mtf.logical_not(transformer.delimited_lm_inputs_mask(targets)),
                     log_p.dtype)
  return mtf.reduce_sum(log_p * keep, reduced_dim=targets.shape.dims[-1])


@gin.configurable(module="rank")
def keep_scores(results, vocabulary):
  """mesh-tf `score_postprocess_fn`: keeps the log-likelihoods for `results()`."""
  del vocabulary
  _SCORES[:] = [float(r["scores"]) for r in results]
  return list(_SCORES)


def _text(x):
  return x.decode("utf-8") if isinstance(x, bytes) else x


def results():
  """{task: {"metrics", "records"}} from the last scoring run (metrics as mesh-tf's eval)."""
  out, offset = {}, 0
  for pending in _PENDING:
    n, c = len(pending.examples), len(pending.labels)
    scores = np.array(_SCORES[offset:offset + n * c]).reshape(n, c)
    offset += n * c
    post = pending.task.postprocess_fn
    targets = [post(_text(ex["targets_pretokenized"]), example=ex, is_target=True)
               for ex in pending.examples]
    chosen = [pending.labels[i] for i in scores.argmax(axis=1)]
    predictions = [post(label, example=ex) for label, ex in zip(chosen, pending.examples)]
    metrics = {}
    for metric_fn in pending.task.metric_fns:
      metrics.update(metric_fn(targets, predictions))
    records = [{"index": i, "inputs": _text(ex["inputs_pretokenized"]),
                "target": _text(ex["targets_pretokenized"]), "candidates": pending.labels,
                "log_likelihoods": [round(float(s), 4) for s in row], "prediction": label}
               for i, (ex, row, label) in enumerate(zip(pending.examples, scores, chosen))]
    out[pending.task.name] = {"metrics": {k: float(v) for k, v in metrics.items()},
                              "records": records}
  return out
