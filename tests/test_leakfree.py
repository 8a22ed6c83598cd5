"""Leak-free scoring (brainformer_tf.evaluation.leakfree) against independent references.

The reference for "the score of token t from tokens <= t only" is the model run on the
prefix alone: a graph of length t + 1 holding exactly row[:t + 1], no padding at all. The
prefix-exact scorer (one padded row of length L per token) must equal it for every gating;
the whole-sequence pass must equal it for causal routing and differ from it for expert
choice. Checkpoints are random initialisations of the tiny zoo models (saved once per model).
"""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tasks  # pylint: disable=unused-import  (registers the LM tasks the configs name)
from brainformer_tf.blocks import causality
from brainformer_tf.cli import score as score_cli
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.evaluation import driver
from brainformer_tf.evaluation import leakfree

L = 8
MODELS = {
    "dense": ["models/dense_tiny.gin"],
    "ec": ["models/brainformer1_tiny.gin"],
    "ec_causal": ["models/brainformer1_tiny.gin"],
    "top_2": ["models/glam_tiny.gin"],
}
# One repeat of each model's block (num_layers = 1): scoring reads the routing of each layer
# on its own, so a deeper stack of the same layers shows nothing more, at twice the graph.
PARAMS = {"dense": ["num_layers = 1"], "ec": ["num_layers = 1"], "top_2": ["num_layers = 1"],
          "ec_causal": ["num_layers = 1", "blocks.BlockDefaults.gating = 'expert_choice_causal'"]}


def write_random_checkpoint(directory, gin_files, gin_params=(), seed=0):
  """A model.ckpt-0 of the Gin model's random initialisation plus its operative config."""
  os.makedirs(directory, exist_ok=True)
  includes = "".join(f"include '{f}'\n" for f in list(gin_files) + ["train/cpu.gin"])
  config = includes + "".join(p + "\n" for p in gin_params)
  with open(os.path.join(directory, "operative_config.gin"), "w") as f:
    f.write(config)
  ginutil.parse_model_config([os.path.join(directory, "operative_config.gin")])
  g = leakfree.build_graph(2, L, leakfree.vocabulary().vocab_size)
  with g.graph.as_default():
    tf.random.set_random_seed(seed)
    init = tf.global_variables_initializer()
    with tf.Session(graph=g.graph) as session:
      session.run(init)
      g.saver.save(session, os.path.join(directory, "model.ckpt"), global_step=0)
  gin.clear_config()
  return directory


class _Checkpoints(dict):
  """name -> checkpoint dir of MODELS[name], written on first use (the fast tier needs two)."""

  def __init__(self, root):
    super().__init__()
    self.root = root

  def __missing__(self, name):
    self[name] = write_random_checkpoint(str(self.root / name), MODELS[name], PARAMS[name])
    return self[name]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  return _Checkpoints(tmp_path_factory.mktemp("leakfree"))


def _rows(seed, n=3):
  rng = np.random.RandomState(seed)
  rows = rng.randint(2, 400, (n, L)).astype(np.int32)
  rows[1, 5] = leakfree.EOS  # a document boundary inside a row
  return rows


POSITIONS = (0, 3, 5, 7)  # the first, middle ones, the EOS inside row 1, the last


def prefix_alone(directory, rows):
  """[R, len(POSITIONS)] log p(row[t] | row[:t]) from the model run on exactly row[:t + 1]
  (a graph of length t + 1), for t in POSITIONS."""
  out = np.zeros((len(rows), len(POSITIONS)))
  for i, t in enumerate(POSITIONS):
    scorer = leakfree.Scorer(directory, length=t + 1, batch=len(rows))
    cut = rows[:, :t + 1]
    out[:, i] = scorer.log_probs(cut, np.ones_like(cut))[:, t]
    scorer.close()
  return out


@pytest.mark.parametrize("name,causal", [
    pytest.param("dense", True, marks=pytest.mark.slow),
    pytest.param("ec_causal", True, marks=pytest.mark.slow), ("ec", False),
    pytest.param("top_2", False, marks=pytest.mark.slow)])
def test_prefix_exact_equals_the_model_run_on_each_prefix_alone(checkpoints, name, causal):
  rows = _rows(1)
  reference = prefix_alone(checkpoints[name], rows)
  scorer = leakfree.Scorer(checkpoints[name], length=L, batch=16)
  assert causality.routing_is_causal(scorer.model) == causal
  result = leakfree.score(scorer, rows, mode="prefix")
  cols = list(POSITIONS)
  np.testing.assert_allclose(result.prefix[:, cols], reference, rtol=1e-5, atol=1e-5)
  if causal:   # one pass already is leak-free
    np.testing.assert_allclose(result.whole, result.prefix, rtol=1e-5, atol=1e-5)
  summary = leakfree.score(scorer, rows).summary()
  assert summary["causal_routing"] == causal
  assert ("future_information_gap" in summary) == (not causal)
  np.testing.assert_allclose(summary["leak_free_log_ppl"], -result.prefix.mean(), rtol=1e-5)
  scorer.close()


def test_expert_choice_whole_sequence_reads_the_future(checkpoints):
  rows = _rows(2, n=4)
  scorer = leakfree.Scorer(checkpoints["ec"], length=L, batch=16)
  result = leakfree.score(scorer, rows)
  scorer.close()
  changed = np.abs(result.whole - result.prefix)
  assert changed[:, -1].max() < 1e-5      # the last token has no future in its row
  assert changed.max() > 1e-4             # earlier tokens' scores moved with later ones
  gap = result.summary()["future_information_gap"]
  per_token = (result.prefix - result.whole).mean()
  np.testing.assert_allclose(gap["mean"], per_token, rtol=1e-6)


def test_stream_rows_and_prefix_variants():
  rows = leakfree.stream_rows([[5, 6, 7], [8, 1], [9, 10, 11, 12]], length=4)
  np.testing.assert_array_equal(rows, [[5, 6, 7, 1], [8, 1, 9, 10]])
  tokens, masks, where = leakfree.prefix_variants(np.array([[5, 6, 0]], np.int32))
  np.testing.assert_array_equal(tokens, [[5, 0, 0], [5, 6, 0]])
  np.testing.assert_array_equal(masks, [[1, 0, 0], [1, 1, 0]])
  np.testing.assert_array_equal(where, [[0, 0], [0, 1]])


def test_gap_statistics_by_hand():
  rows = np.array([[3, 3, 3, 3], [3, 3, 3, 3]])
  whole = np.array([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0]])
  prefix = whole - np.array([[0.4, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.8]])
  gap = leakfree.gap_statistics(rows, whole, prefix)
  assert gap["mean"] == pytest.approx(-0.15)             # (-0.4 - 0.8) / 8
  assert gap["se"] == pytest.approx(np.std([-0.1, -0.2], ddof=1) / np.sqrt(2))
  assert [q["mean"] for q in gap["by_quarter"]] == pytest.approx([-0.2, 0, 0, -0.4])
  assert leakfree.by_quarter(rows, -whole) == pytest.approx([1.5, 1.5, 1.5, 1.5])
  assert leakfree.by_quarter(rows, -prefix) == pytest.approx([1.7, 1.5, 1.5, 1.9])


@pytest.mark.parametrize("params,refused", [
    # the gating from a block spec's own flag
    (["blocks.block_layers.spec = 'a g[ec,c=2] f'", "num_experts = 4"], True),
    # no gating bound anywhere: the MoE layer's default (expert choice)
    (["blocks.block_layers.spec = 'a g f'", "num_experts = 4"], True),
    (["blocks.block_layers.spec = 'a g[gate=expert_choice_causal] f'", "num_experts = 4"], False),
    (["blocks.block_layers.spec = 'a g[gate=top_2] f'", "num_experts = 4"], False),
])
def test_eval_guard_reads_the_layers_built(params, refused):
  ginutil.parse_model_config(["models/dense_tiny.gin"], params)
  if refused:
    with pytest.raises(errors.UsageError, match="routes with non-causal expert choice"):
      driver.check_causal(["rank"], "lm", 512)
  else:
    driver.check_causal(["rank"], "lm", 512)


@pytest.mark.parametrize("name", [   # top-2 at the layer level: test_moe_layer.py (fast)
    pytest.param("top_2", marks=pytest.mark.slow), "ec"])
def test_a_rows_scores_ignore_its_padding_and_its_batch(checkpoints, name):
  """The shared scoring pass (Scorer, rank.score_fn): a sequence scores the same with more
  padding after it and next to other rows (the padding is masked out of routing)."""
  rows = _rows(3)
  short = leakfree.Scorer(checkpoints[name], length=L, batch=3)
  alone = short.log_probs(rows, np.ones_like(rows))
  short.close()
  long_ = leakfree.Scorer(checkpoints[name], length=L + 5, batch=4)
  padded = np.concatenate([rows, np.zeros((3, 5), np.int32)], axis=1)
  companions = np.concatenate([padded[:1], np.random.RandomState(4).randint(
      2, 400, (3, L + 5)).astype(np.int32)])
  got = long_.log_probs(padded, (padded > 0).astype(np.int32))
  got_companions = long_.log_probs(companions, np.ones_like(companions) * (companions > 0))
  long_.close()
  np.testing.assert_allclose(got[:, :L], alone, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_companions[0, :L], alone[0], rtol=1e-5, atol=1e-5)


def test_score_command_on_a_text_file(checkpoints, tmp_path, capsys):
  """`brainformer score` in-process: rows from a text file, the labelled lines, the JSON; bad
  input is a UsageError (one line, exit 2 in `run`)."""
  text = tmp_path / "held_out.txt"
  text.write_text("\n\n".join(f"Paragraph {i} talks about routing tokens to experts." * 3
                              for i in range(6)))
  out = tmp_path / "score.json"
  args = score_cli.parser().parse_args(
      ["--checkpoint", checkpoints["ec"], "--text_files", str(text), "--rows", "2",
       "--sequence_length", str(L), "--batch", "8", "--json", str(out)])
  summary = score_cli.main(args)
  printed = capsys.readouterr().out
  assert "leak-free log-perplexity (prefix-exact)" in printed
  assert "whole-sequence log-perplexity (sees later tokens" in printed
  assert json.loads(out.read_text())["leak_free_log_ppl"] == pytest.approx(
      summary["leak_free_log_ppl"])
  assert summary["rows"] == 2 and summary["tokens"] == 2 * L
  args.text_files = str(tmp_path / "missing.txt")
  with pytest.raises(errors.UsageError, match="missing.txt is not a file"):
    score_cli.main(args)
