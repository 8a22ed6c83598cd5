"""`brainformer params` accounting against hand-derived closed forms and the papers' tables.

Closed form (pre-norm, no biases; d = d_model, A = heads x d_kv, T = sequence length):
  a   4 d A matmul + heads x 32 relative-bias buckets + d norm (+ 9 A dconv taps with dconv=3)
  f   m d H matmul (m = 3 gated, 2 plain) + d norm
  g   d E router + E m d H experts + d norm; activated experts: ept / E of them
  stack: repeats x block + d final norm;  FLOPs = 6 x activated matmul + 12 T A per attention.
"""

import json

import pytest

from brainformer_tf.analysis import accounting
from brainformer_tf.analysis import symbolic
from brainformer_tf.cli import main

BUCKETS = 32


def closed_form(spec, repeats, d, heads, d_kv, ffn_hidden=0, ffn_mats=3, moe_hidden=0,
                moe_mats=2, experts=0, ept=0.0, dconv=0, seq=1024):
  """(total, activated, flops) of a stack of `repeats` x spec (a string of a/f/g letters)."""
  a_dim = heads * d_kv
  total = activated = matmul = attn = 0
  for letter in spec:
    if letter == "a":
      mm = 4 * d * a_dim
      extra = heads * BUCKETS + d + (3 * dconv * a_dim)
      total += mm + extra
      activated += mm + extra
      matmul += mm
      attn += a_dim
    elif letter == "f":
      mm = ffn_mats * d * ffn_hidden
      total += mm + d
      activated += mm + d
      matmul += mm
    elif letter == "g":
      router, expert = d * experts, moe_mats * d * moe_hidden
      total += router + experts * expert + d
      activated += router + ept * expert + d
      matmul += router + ept * expert
  total, activated = repeats * total + d, repeats * activated + d
  flops = 6 * repeats * matmul + 12 * seq * repeats * attn
  return total, activated, flops


def _check(counts, expected):
  total, activated, flops = expected
  assert counts.total_params == total
  assert counts.activated_params == pytest.approx(activated, rel=1e-9)
  assert counts.flops_per_token == pytest.approx(flops, rel=1e-9)


def test_tiny_mesh_tf_layer_list_model():
  """glam_tiny: mesh-tf SelfAttention / DenseReluDense (GLU) / MoE1D top-2, no block machinery."""
  counts = accounting.count(["models/glam_tiny.gin"])
  _check(counts, closed_form("afag", 2, d=64, heads=4, d_kv=16, ffn_hidden=256, moe_hidden=256,
                             experts=8, ept=2))
  assert counts.embedding_params == 2 * 64 * 256000   # unshared input embedding + softmax
  assert counts.sequence_length == 1024


def test_tiny_brainformer_expert_choice_and_overrides():
  counts = accounting.count(["models/brainformer1_tiny.gin"],
                            ["d_model = 32", "num_experts = 4"], sequence_length=256)
  _check(counts, closed_form("agfagfgf", 2, d=32, heads=4, d_kv=16, ffn_hidden=128,
                             moe_hidden=128, moe_mats=3, experts=4, ept=1.0, seq=256))


def test_recipe_sequence_length_is_used():
  counts = accounting.count(["models/dense_tiny.gin", "train/cpu.gin"])
  assert counts.sequence_length == 128
  _check(counts, closed_form("af", 4, d=64, heads=4, d_kv=16, ffn_hidden=256, ffn_mats=2,
                             seq=128))


# Paper rows: (model file, closed-form kwargs, paper total, paper activated, tolerance or the
# documented reason the row cannot match; see docs/zoo.md).
ZERO_ONE = dict(d=768, heads=12, d_kv=64, ffn_hidden=3072, moe_hidden=3072)
ONE_SEVEN = dict(d=2048, heads=16, d_kv=128, ffn_hidden=8192, moe_hidden=8192)
EIGHT = dict(d=4096, heads=32, d_kv=128, ffn_hidden=16384, moe_hidden=16384)
BF = {"100m": dict(d=1024, heads=20, d_kv=128, ffn_hidden=2048, moe_hidden=2048),
      "1b": dict(d=2048, heads=40, d_kv=128, ffn_hidden=4096, moe_hidden=4096),
      "8b": dict(d=4096, heads=80, d_kv=128, ffn_hidden=8192, moe_hidden=8192)}
PAPER_0_1B = "0.1B/100M rows fit no simple count (paper-internal)"
ROWS = [
    ("dense_0.1b", ("af", 12, ZERO_ONE, {}), 130e6, 130e6, PAPER_0_1B),
    ("dense_1.7b", ("af", 24, ONE_SEVEN, {}), 1.7e9, 1.7e9,
     "paper's round 1.7B label: 24 x 67.1M = 1.61B (-5.3%)"),
    ("dense_8b", ("af", 32, EIGHT, {}), 8.7e9, 8.7e9, 0.03),
    ("glam_0.1b_32e", ("afag", 6, ZERO_ONE, dict(experts=32, ept=2)), 1.0e9, 145e6, PAPER_0_1B),
    ("glam_0.1b_64e", ("afag", 6, ZERO_ONE, dict(experts=64, ept=2)), 1.9e9, 145e6, PAPER_0_1B),
    ("glam_1.7b_64e", ("afag", 12, ONE_SEVEN, dict(experts=64, ept=2)), 27e9, 1.879e9, 0.05),
    ("glam_8b_64e", ("afag", 16, EIGHT, dict(experts=64, ept=2)), 143e9, 9.8e9, 0.03),
    ("glam_ec_8b_64e", ("afag", 16, EIGHT, dict(experts=64, ept=2)), 143e9, 9.8e9, 0.03),
    ("brainformer1_100m_32e", ("agfagfgf", 3, BF["100m"], dict(experts=32, ept=1, moe_mats=3)),
     3.19e9, 156e6, PAPER_0_1B),
    ("brainformer2_100m_32e", ("agfagggg", 3, BF["100m"], dict(experts=32, ept=2, moe_mats=3)),
     3.33e9, 266e6, "no block fits both Brainformer-2 rows (docs/zoo.md): -6.8% / +1.9%"),
    ("brainformer1_1b_64e", ("agfagfgf", 6, BF["1b"], dict(experts=64, ept=1, moe_mats=3)),
     30e9, 1.38e9, 0.05),
    ("brainformer2_1b_64e", ("agfagggg", 6, BF["1b"], dict(experts=64, ept=2, moe_mats=3)),
     52e9, 1.31e9, "c = 2 cannot give 1.31B at 52B (docs/zoo.md): -5.8% / +65.5%"),
    ("brainformer1_8b_64e", ("agfagfgf", 8, BF["8b"], dict(experts=64, ept=1, moe_mats=3)),
     158e9, 7.4e9, 0.03),
    ("brainformer2_8b_64e", ("agfagggg", 8, BF["8b"], dict(experts=64, ept=2, moe_mats=3)),
     None, None, "no paper row"),
    ("primer_1b", ("af", 24, ONE_SEVEN, dict(ffn_mats=2, dconv=3)), None, None,
     "the paper gives no Primer size"),
]


@pytest.mark.parametrize("model,form,paper_total,paper_activated,tolerance", ROWS,
                         ids=[r[0] for r in ROWS])
def test_paper_row(model, form, paper_total, paper_activated, tolerance):
  spec, repeats, dims, extra = form
  counts = accounting.count([f"models/{model}.gin"])
  _check(counts, closed_form(spec, repeats, **dims, **extra))
  if isinstance(tolerance, float):
    assert counts.total_params == pytest.approx(paper_total, rel=tolerance)
    assert counts.activated_params == pytest.approx(paper_activated, rel=tolerance)


def test_paper_rows_listed_for_the_cli():
  listed = {row[0]: (row[2], row[3]) for row in accounting.PAPER_ROWS}
  for model, _, total, activated, _ in ROWS:
    if total is not None:
      assert listed[model] == (total, activated)


def test_cli_json_and_bad_input(capsys):
  assert main.main(["brainformer", "params", "--gin_file=models/dense_tiny.gin", "--json",
                    "--gin_param=num_layers = 1"]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  total, activated, flops = closed_form("af", 1, d=64, heads=4, d_kv=16, ffn_hidden=256,
                                        ffn_mats=2)
  assert result["total_params"] == total
  assert result["activated_params"] == activated
  assert result["flops_per_token"] == flops
  assert main.main(["brainformer", "params", "--gin_file=models/no_such_model.gin"]) == 2
  error_lines = [l for l in capsys.readouterr().err.splitlines()
                 if l.startswith("brainformer params: error")]
  assert len(error_lines) == 1 and "no_such_model.gin" in error_lines[0]
  assert "models/glam_8b_64e.gin" in error_lines[0]


def test_model_that_does_not_build_is_one_line_error():
  # named by the same built-model check `brainformer validate` runs, before any graph
  with pytest.raises(symbolic.AnalysisError,
                     match=r"^d_model = 0 \(Unitransformer.d_model\): must be a positive integer$"):
    accounting.count(["models/dense_tiny.gin"], ["d_model = 0"])
