"""Generative QA metrics (GLaM one-shot conventions) and the postprocessors that feed them.

Scores are percentages. `targets` are lists of gold answers (any of them counts) and
`predictions` strings, as mesh-tf's eval passes them after the task's postprocess_fn.
"""

import collections
from typing import Sequence

import numpy as np
from t5.evaluation import qa_utils
import tensorflow as tf


def normalize_answer(s: str) -> str:
  """Official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
  return qa_utils.normalize_squad(s)


def exact_match_score(prediction: str, gold_answers: Sequence[str]) -> float:
  """1.0 if the normalised prediction equals any normalised gold answer."""
  p = normalize_answer(prediction)
  return float(any(p == normalize_answer(g) for g in gold_answers))


def f1_score(prediction: str, gold_answers: Sequence[str]) -> float:
  """Best token F1 over the gold answers; an empty gold list means "no answer" (SQuADv2).

  As in the official SQuADv2 script: when the normalised gold or prediction has no token, the
  score is 1 if both are empty, else 0.
  """
  golds = [normalize_answer(g) for g in gold_answers] or [""]
  p_tokens = normalize_answer(prediction).split()
  best = 0.0
  for gold in golds:
    g_tokens = gold.split()
    if not g_tokens or not p_tokens:
      best = max(best, float(g_tokens == p_tokens))
      continue
    common = sum((collections.Counter(p_tokens) & collections.Counter(g_tokens)).values())
    if common:
      precision, recall = common / len(p_tokens), common / len(g_tokens)
      best = max(best, 2 * precision * recall / (precision + recall))
  return best


def _check(targets, predictions):
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
  if not targets:
    raise ValueError("no examples to score")


def exact_match(targets, predictions):
  """Exact match (%) with SQuAD normalisation against any gold answer (NQ, TriviaQA, WebQ)."""
  _check(targets, predictions)
  return {"exact_match": 100 * float(np.mean(
      [exact_match_score(p, t) for t, p in zip(targets, predictions)]))}


def squad_v2(targets, predictions):
  """SQuADv2 F1 and exact match (%); an empty gold list is an unanswerable question."""
  _check(targets, predictions)
  f1 = [f1_score(p, t) for t, p in zip(targets, predictions)]
  em = [exact_match_score(p, t) if t else float(not normalize_answer(p))
        for t, p in zip(targets, predictions)]
  return {"f1": 100 * float(np.mean(f1)), "exact_match": 100 * float(np.mean(em))}


def first_word(s: str) -> str:
  """The first whitespace-separated word without surrounding punctuation ("" if none)."""
  words = s.split()
  if not words:
    return ""
  return words[0].strip(".,;:!?\"'“”‘’()[]")


def lambada_accuracy(targets, predictions):
  """Last-word accuracy (%): the predicted word equals the gold last word exactly."""
  _check(targets, predictions)
  gold = [t[0] if isinstance(t, (list, tuple)) else t for t in targets]
  return {"accuracy": 100 * float(np.mean(
      [first_word(p) == g.strip() for g, p in zip(gold, predictions)]))}


def _text(s) -> str:
  return tf.compat.as_text(s)


def qa_postprocess(output, example=None, is_target=False, no_answer_text=None):
  """Decode -> its first line, stripped; a target -> the example's list of gold answers.

  With `no_answer_text`, that prediction (normalised) becomes "" (SQuADv2 "no answer") and a
  target whose answers are empty stays the empty list.
  """
  if is_target:
    return [_text(a) for a in example["answers"]]
  answer = _text(output).split("\n", 1)[0].strip()
  if no_answer_text is not None and normalize_answer(answer) == normalize_answer(no_answer_text):
    return ""
  return answer


def lambada_postprocess(output, example=None, is_target=False):
  """Decode -> its first word; target -> the gold last word."""
  if is_target:
    return _text(example["answers"][0])
  return first_word(_text(output))
