"""Leak-free scoring: the log-likelihood of token t computed from tokens < t only.

A decoder-only LM's attention is causal, but routing that chooses among a group's tokens is
not: plain and capped expert choice take each expert's top-k over the whole row, and
capacity-limited top-2 serves second choices after every first choice of the row, so a
token's score can depend on later tokens of its row. Two figures per token:

  whole-sequence  one forward pass over the row (what mesh-tf's eval mode computes);
  prefix-exact    the row cut after position t (the rest padding, masked out of attention
                  and routing: router.real_capacity_mask), the score of token t read from
                  that pass; one pass per token, batched.

For a model whose routing is causal (no MoE layer, or only `expert_choice_causal` ones;
`blocks.causality`) the two are equal (tests/test_leakfree.py), so one pass is run. The
future-information gap is whole-sequence minus prefix-exact loss, in nats/token: negative
means the model scores better when it can see the rest of its row.

Rows are cut from the token stream of the text (documents joined, each ending in EOS), every
row `length` tokens long, as in the usual held-out perplexity of an LM. Shapes: tokens [R, L]
int32, log-probabilities [R, L] float64 (0 where a row holds padding).
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import seqio
import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds

from brainformer_tf.blocks import causality
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.data import text
from brainformer_tf.data import vocab
from brainformer_tf.evaluation import checkpoint

EOS = 1


def stream_rows(token_lists: Sequence[Sequence[int]], length: int,
                max_rows: Optional[int] = None) -> np.ndarray:
  """Documents' ids (each given without or with a final EOS) joined with EOS and cut into
  full rows [R, length]; the incomplete tail is dropped."""
  stream: List[int] = []
  for ids in token_lists:
    ids = list(ids)
    stream += ids if ids and ids[-1] == EOS else ids + [EOS]
    if max_rows and len(stream) >= max_rows * length:
      break
  rows = len(stream) // length
  if max_rows:
    rows = min(rows, max_rows)
  return np.array(stream[:rows * length], np.int32).reshape(rows, length)


def prefix_variants(rows: np.ndarray):
  """(tokens [N, L], mask [N, L], (row, position) [N, 2]): row r cut after position t, for
  every real position t of every row; mask 1 on positions <= t."""
  tokens, masks, where = [], [], []
  length = rows.shape[1]
  for r, row in enumerate(rows):
    for t in range(int((row != 0).sum())):
      cut = np.zeros(length, np.int32)
      cut[:t + 1] = row[:t + 1]
      tokens.append(cut)
      masks.append((np.arange(length) <= t).astype(np.int32))
      where.append((r, t))
  return (np.array(tokens, np.int32).reshape(-1, length),
          np.array(masks, np.int32).reshape(-1, length), np.array(where, np.int64))


@dataclasses.dataclass
class ScoringGraph:
  """The Gin-configured LM on one CPU device: feed tokens and mask, fetch log_p [N, L]."""
  graph: tf.Graph
  model: transformer.Unitransformer
  tokens: tf.Tensor
  mask: tf.Tensor
  log_p: tf.Tensor
  saver: tf.train.Saver       # the model's master variables, by checkpoint name
  copy_to_slices: tf.Operation


def token_log_probs(model, targets: mtf.Tensor, mask: mtf.Tensor, variable_dtype) -> mtf.Tensor:
  """log p(targets[b, t] | ...) [batch, length] from one eval-mode pass of a Unitransformer.

  mask [batch, length] int32: 1 on real tokens, 0 on padding. It is the context's sequence id,
  so padding is kept out of attention and routing (Context.nonpadding); without it mesh-tf's
  score mode treats padding as real tokens.
  """
  inputs = transformer.autoregressive_inputs(targets)
  logits, _ = model.call_simple(inputs=inputs, targets=targets, compute_loss=False,
                                mode=tf.estimator.ModeKeys.EVAL, variable_dtype=variable_dtype,
                                sequence_id=mask)
  logits = mtf.cast(logits, tf.float32)
  return -mtf.layers.softmax_cross_entropy_with_logits(logits, targets, logits.shape.dims[-1])


def build_graph(batch: int, length: int, vocab_size: int) -> ScoringGraph:
  """Builds and lowers the model of the parsed Gin config (eval mode, float32)."""
  tf_graph = tf.Graph()
  with tf_graph.as_default():
    graph, mesh, model = checkpoint.one_device_lm(vocab_size, "score_mesh")
    dims = mtf.Shape([mtf.Dimension("batch", batch), mtf.Dimension("length", length)])
    tokens = tf.placeholder(tf.int32, [batch, length])
    mask = tf.placeholder(tf.int32, [batch, length])
    log_p = token_log_probs(model, mtf.import_tf_tensor(mesh, tokens, dims),
                            mtf.import_tf_tensor(mesh, mask, dims),
                            mtf.VariableDType(tf.float32, tf.float32, tf.float32))
    lowering, saver = checkpoint.lower_one_device(graph, mesh)
    return ScoringGraph(tf_graph, model, tokens, mask, lowering.export_to_tf_tensor(log_p),
                        saver, lowering.copy_masters_to_slices())


class Scorer:
  """A checkpoint's model, lowered once on one CPU device, returning per-token log p.

  `log_probs(tokens, mask)`: tokens [N, L] int32 (targets; 0 = padding), mask [N, L] (1 =
  real, 0 = padding kept out of attention and routing) -> [N, L] log p(tokens[n, t] | the
  row's real tokens before t, and for non-causal routing the real tokens after it).
  """

  def __init__(self, model_dir_or_prefix: str, length: int, batch: int = 64,
               gin_files: Sequence[str] = (), gin_params: Sequence[str] = ()):
    self.prefix, self.step = checkpoint.load_config(model_dir_or_prefix, gin_files, gin_params)
    self.length, self.batch = length, batch
    self.vocabulary = vocabulary()
    checkpoint.check_compatible(self.prefix, "lm", self.vocabulary.vocab_size,
                                allow_missing=checkpoint.LEARNED_IN_FINETUNE)
    self._g = build_graph(batch, length, self.vocabulary.vocab_size)
    self.model = self._g.model
    self._session = tf.Session(graph=self._g.graph)
    self._g.saver.restore(self._session, self.prefix)
    self._session.run(self._g.copy_to_slices)

  def log_probs(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(tokens.shape, np.float64)
    for start in range(0, len(tokens), self.batch):
      chunk = slice(start, start + self.batch)
      t, m = tokens[chunk], mask[chunk]
      pad = self.batch - len(t)
      if pad:
        t = np.concatenate([t, np.zeros((pad, self.length), np.int32)])
        m = np.concatenate([m, np.zeros((pad, self.length), np.int32)])
      got = self._session.run(self._g.log_p, {self._g.tokens: t, self._g.mask: m})
      out[chunk] = got[:len(tokens[chunk])]
    return out * (mask > 0) * (tokens > 0)

  def close(self):
    self._session.close()


def vocabulary():
  """The vocabulary of the model's training task (Gin's MIXTURE_NAME), else the project's."""
  name = ginutil.mixture_name()
  if not name:
    return vocab.DEFAULT_VOCABULARY
  try:
    return seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
  except (ValueError, KeyError, TypeError):
    return vocab.DEFAULT_VOCABULARY


@dataclasses.dataclass
class Result:
  """Per-token log-probabilities of the rows, and the summary figures."""
  rows: np.ndarray                       # [R, L] tokens
  whole: np.ndarray                      # [R, L] log p, whole-sequence
  prefix: Optional[np.ndarray]           # [R, L] log p, prefix-exact (None: causal model)
  causal: bool
  noncausal_layers: List[str]

  @property
  def leak_free(self) -> np.ndarray:
    return self.whole if self.prefix is None else self.prefix

  def summary(self) -> Dict:
    real = self.rows > 0
    n = int(real.sum())
    out = {"rows": int(len(self.rows)), "tokens": n, "causal_routing": self.causal,
           "noncausal_layers": self.noncausal_layers,
           "leak_free_log_ppl": float(-(self.leak_free * real).sum() / n),
           "whole_sequence_log_ppl": float(-(self.whole * real).sum() / n),
           "leak_free_log_ppl_by_quarter": by_quarter(self.rows, -self.leak_free)}
    if self.prefix is not None:
      out["future_information_gap"] = gap_statistics(self.rows, self.whole, self.prefix)
    return out


def by_quarter(rows, values) -> List[float]:
  """Mean of values [R, L] over the real tokens of each quarter of the row's positions. The
  first quarter is where a prefix is a short routing group (docs/moe.md, "Caveat")."""
  real = rows > 0
  length = rows.shape[1]
  out = []
  for q in range(4):
    cols = slice(q * length // 4, (q + 1) * length // 4)
    out.append(float((values[:, cols] * real[:, cols]).sum() / max(real[:, cols].sum(), 1)))
  return out


def gap_statistics(rows, whole, prefix) -> Dict:
  """Whole-sequence minus prefix-exact loss (nats/token): pooled over tokens, with the
  standard error of the per-row means, and by quarter of the row."""
  real = rows > 0
  diff = (prefix - whole) * real          # loss_whole - loss_prefix = logp_prefix - logp_whole
  per_row = diff.sum(1) / np.maximum(real.sum(1), 1)
  length = rows.shape[1]
  quarters = []
  for q in range(4):
    cols = slice(q * length // 4, (q + 1) * length // 4)
    qr = real[:, cols]
    q_rows = diff[:, cols].sum(1) / np.maximum(qr.sum(1), 1)
    quarters.append({"mean": float(diff[:, cols].sum() / max(qr.sum(), 1)),
                     "se": _se(q_rows[qr.sum(1) > 0])})
  return {"mean": float(diff.sum() / max(real.sum(), 1)), "se": _se(per_row),
          "by_quarter": quarters,
          "mean_abs_token_change": float(np.abs(diff).sum() / max(real.sum(), 1)),
          "max_abs_token_change": float(np.abs(diff).max())}


def _se(values) -> float:
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def score(scorer: Scorer, rows: np.ndarray, mode: str = "auto", progress=None) -> Result:
  """Scores `rows` [R, L]. mode: "auto" (prefix-exact only for non-causal routing),
  "prefix" (always, e.g. to check a causal model), "whole" (one pass only, labelled)."""
  if mode not in ("auto", "prefix", "whole"):
    raise errors.UsageError(f"--mode={mode!r}: choose auto, prefix or whole")
  bad = causality.noncausal_layers(scorer.model)
  whole = scorer.log_probs(rows, (rows > 0).astype(np.int32))
  prefix = None
  if mode == "prefix" or (mode == "auto" and bad):
    tokens, masks, where = prefix_variants(rows)
    prefix = np.zeros_like(whole)
    step = scorer.batch * 8
    for start in range(0, len(tokens), step):
      got = scorer.log_probs(tokens[start:start + step], masks[start:start + step])
      for (r, t), row_log_p in zip(where[start:start + step], got):
        prefix[r, t] = row_log_p[t]
      if progress:
        progress(min(start + step, len(tokens)), len(tokens))
  return Result(rows=rows, whole=whole, prefix=prefix, causal=not bad, noncausal_layers=bad)


def rows_from_files(paths: Sequence[str], vocabulary, length: int, max_rows: int) -> np.ndarray:
  """Rows of `length` tokens from text files (paragraphs as documents), at most max_rows."""
  docs = (vocabulary.encode(p) for p in text.file_paragraphs(list(paths)))
  rows = stream_rows(docs, length, max_rows)
  if not len(rows):
    raise errors.UsageError(f"{', '.join(paths)}: fewer than {length} tokens of text")
  return rows


def rows_from_task(task_name: str, split: str, length: int, max_rows: int) -> np.ndarray:
  """Rows of `length` tokens from a registered task's split (its `targets` feature)."""
  try:
    task = seqio.get_mixture_or_task(task_name)
  except ValueError:
    raise errors.UsageError(f"unknown task or mixture {task_name!r} (see docs/tasks.md)") from None
  with tf.Graph().as_default():
    ds = task.get_dataset({"targets": length}, split=split, shuffle=False, num_epochs=1)
    docs = (ex["targets"] for ex in tfds.as_numpy(ds))
    rows = stream_rows(docs, length, max_rows)
  if not len(rows):
    raise errors.UsageError(f"task {task_name!r} split {split!r}: fewer than {length} tokens")
  return rows


def describe(summary: Dict) -> List[str]:
  """Human-readable lines of a Result.summary()."""
  lines = []
  if summary["causal_routing"]:
    lines.append(f"log-perplexity: {summary['leak_free_log_ppl']:.4f} nats/token "
                 f"(ppl {math.exp(summary['leak_free_log_ppl']):.1f}; routing is causal, "
                 "so whole-sequence = leak-free)")
    return lines
  lines.append(f"leak-free log-perplexity (prefix-exact): {summary['leak_free_log_ppl']:.4f} "
               f"nats/token (ppl {math.exp(summary['leak_free_log_ppl']):.1f})")
  lines.append(f"whole-sequence log-perplexity (sees later tokens; "
               f"{'; '.join(summary['noncausal_layers'][:2])}"
               f"{', ...' if len(summary['noncausal_layers']) > 2 else ''}): "
               f"{summary['whole_sequence_log_ppl']:.4f}")
  lines.append("leak-free by quarter of the row: " + ", ".join(
      f"{v:.4f}" for v in summary["leak_free_log_ppl_by_quarter"]) + " (the first quarter is "
      "scored in short prefix groups: docs/moe.md)")
  gap = summary.get("future_information_gap")
  if gap:
    quarters = ", ".join(f"{q['mean']:+.4f}" for q in gap["by_quarter"])
    lines.append(f"future-information gap (whole - prefix-exact): {gap['mean']:+.4f} +- "
                 f"{gap['se']:.4f} nats/token (SE over {summary['rows']} rows); by quarter "
                 f"of the row: {quarters}; mean |change| per token {gap['mean_abs_token_change']:.4f}")
  return lines
