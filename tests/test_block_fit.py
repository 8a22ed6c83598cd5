"""brainformer_tf.analysis.block_fit: its closed form against accounting.py's graph-based count
(the independent reference), the papers' rows it must reproduce, and its claims about
Brainformer-2 (Table 3) checked by graph counts and by the scaling argument of its docstring."""

import pytest

from brainformer_tf.analysis import accounting
from brainformer_tf.analysis import block_fit
from brainformer_tf.analysis.block_fit import Block

# (block, order, d_model, experts, stacks): tiny blocks covering every term of the count.
TINY_BLOCKS = [
    (Block(2, 3, 3, 4, 48, 40), "a g f a g f g f", 32, 4, 2),                   # Block 1 layout
    (Block(2, 1, 5, 2, 64, 24, 2, 3, "expert_choice", 2.0, d_kv=8), "a g f a g g g g", 24, 8, 1),
    (Block(2, 1, 1, 4, 96, 64, 3, 2, "top_2", 2.0, d_kv=16), "a f a g", 32, 8, 3),   # GLaM
    (Block(1, 3, 4, 3, 40, 72, 2, 2, "expert_choice", 3.0, d_kv=8), "f g a g f g g f", 16, 4, 2),
    (Block(4, 0, 4, 2, 0, 32, 3, 2, "top_2", 2.0, d_kv=8), "g a a g a g g a", 16, 2, 1),
]


def _graph_count(block, order, d_model, experts, stacks):
  return accounting.count(["models/brainformer2_tiny.gin"], [
      f"blocks.block_layers.spec = '{block.spec(order, experts)}'", f"d_model = {d_model}",
      f"num_layers = {stacks}", f"num_experts = {experts}"])


@pytest.mark.parametrize("block,order,d_model,experts,stacks", TINY_BLOCKS,
                         ids=[b[1].replace(" ", "") for b in TINY_BLOCKS])
def test_closed_form_equals_graph_count(block, order, d_model, experts, stacks):
  counts = _graph_count(block, order, d_model, experts, stacks)
  total, activated = block_fit.count(block, d_model, experts, stacks)
  assert counts.total_params == total
  assert counts.activated_params == pytest.approx(activated, rel=1e-12)


@pytest.mark.parametrize("row", block_fit.REFERENCE_ROWS,
                         ids=[r[0] for r in block_fit.REFERENCE_ROWS])
def test_reference_rows_reproduce_the_papers(row):
  """The counted blocks are the zoo's model files, and they land within TOLERANCE of the paper."""
  label, block, d_model, experts, stacks, paper_total, paper_activated = row
  model = {"GLaM 1.7B/64E (Table 2)": "glam_1.7b_64e", "GLaM 8B/64E (Table 2)": "glam_8b_64e",
           "Brainformer-1 1B64E (Table 3)": "brainformer1_1b_64e",
           "Brainformer-1 8B64E (Table 3)": "brainformer1_8b_64e"}[label]
  counts = accounting.count([f"models/{model}.gin"])
  total, activated = block_fit.count(block, d_model, experts, stacks)
  assert (counts.total_params, counts.activated_params) == pytest.approx((total, activated),
                                                                         rel=1e-12)
  assert total == pytest.approx(paper_total, rel=block_fit.TOLERANCE)
  assert activated == pytest.approx(paper_activated, rel=block_fit.TOLERANCE)


def test_brainformer2_files_are_the_chosen_block():
  for name, model in (("100M32E", "brainformer2_100m_32e"), ("1B64E", "brainformer2_1b_64e"),
                      ("8B64E", "brainformer2_8b_64e")):
    counts = accounting.count([f"models/{model}.gin"])
    expected = block_fit.count_at(block_fit.CHOSEN, block_fit.CHOSEN_D_MODEL,
                                  block_fit.SCALES[name])
    assert (counts.total_params, counts.activated_params) == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def summary():
  return block_fit.summary(block_fit.candidates())


def test_no_block_fits_both_brainformer2_rows(summary):
  """Docstring argument: every term of activated scales by 8 from 100M32E to 1B64E except the
  norms (x 4) and relative biases (x 4), which are < 0.1% of it; the paper's ratio is 4.9."""
  low, high = summary["ratio_range"]
  assert 7.99 < low <= high <= 8.0
  assert summary["all_four"] == []
  # activated >= total x ept / E: with ept >= 2 at 64 experts, 52B means >= 1.625B activated.
  assert all(c.block.experts_per_token < 2 for c in summary["miss_100m_activated"])


def test_a_reported_fit_holds_in_the_graph_count(summary):
  """The first block the solver says fits both totals and the 100M activated count, built."""
  fit = summary["miss_1b_activated"][0]
  order = " ".join("a" * fit.block.attention + "f" * fit.block.ffn + "g" * fit.block.moe)
  for name, index in (("100M32E", 0), ("1B64E", 2)):
    scale = block_fit.SCALES[name]
    counts = _graph_count(fit.block.scaled(scale.width), order, fit.d_model * scale.width,
                          scale.experts, scale.stacks)
    paper_total, paper_activated = block_fit.PAPER_BRAINFORMER2[name]
    assert counts.total_params == pytest.approx(paper_total, rel=block_fit.TOLERANCE)
    if index == 0:
      assert counts.activated_params == pytest.approx(paper_activated, rel=block_fit.TOLERANCE)


def test_chosen_block_agrees_with_the_text_and_is_among_the_nearest(summary):
  chosen = block_fit.Candidate(block_fit.CHOSEN, block_fit.CHOSEN_D_MODEL,
                               block_fit.gaps(block_fit.CHOSEN, block_fit.CHOSEN_D_MODEL))
  assert chosen.agrees_with_text
  assert chosen in summary["text_nearest"][:3]
  # Block 1's widths: only the composition and the capacity factor differ.
  assert (block_fit.CHOSEN.heads, block_fit.CHOSEN.ffn_hidden, block_fit.CHOSEN.moe_hidden) == (
      block_fit.BLOCK1.heads, block_fit.BLOCK1.ffn_hidden, block_fit.BLOCK1.moe_hidden)


def test_main_prints_the_tables(capsys):
  block_fit.main()
  out = capsys.readouterr().out
  assert "Fit all four numbers (within 5% unless nearest): 0" in out
  assert f"Chosen ({block_fit.CHOSEN_ORDER})" in out
