"""Per-device memory estimate (brainformer_tf/analysis/memory.py, `brainformer params --mesh`) and the
layout checks, against sizes derived by hand from the models' widths."""

import json

import pytest

from brainformer_tf.analysis import memory
from brainformer_tf.cli import params as params_cli

TINY = ["num_layers = 1", "utils.run.sequence_length = {'targets': 16}",
        "utils.get_variable_dtype.master_dtype = 'float32'"]  # 4 bytes per parameter
RULES = "batch:batch,experts:batch,heads:model,d_ff:model,expert_hidden:model,vocab:model"


def _tiny(mesh, rules=RULES, extra=()):
  return memory.estimate(["models/glam_tiny.gin"], TINY + list(extra), mesh, rules,
                         sequences_per_batch=8, vocab_size=64)


def test_expert_parallelism_divides_only_the_expert_weights():
  # glam_tiny: 8 ReLU experts of 64 x 256 (wi) and 256 x 64 (wo), one MoE layer at num_layers 1
  expert_params = 8 * 2 * 64 * 256
  replicated = _tiny("batch:4", "batch:batch")
  split = _tiny("batch:4", "batch:batch,experts:batch")
  assert replicated.bytes["parameters"] - split.bytes["parameters"] == 4 * expert_params * 3 / 4


def test_data_parallelism_divides_activations_by_the_batch_split():
  one, four = _tiny(""), _tiny("batch:4", "batch:batch")
  for kind in ("residual", "attention", "ffn", "output"):
    assert four.activations_by_kind[kind] * 4 == one.activations_by_kind[kind], kind
  assert four.bytes["parameters"] == one.bytes["parameters"]


def test_first_moment_adds_one_slot_per_parameter():
  base = _tiny("batch:2,model:2")
  with_m = _tiny("batch:2,model:2", extra=["AdafactorOptimizer.beta1 = 0.9"])
  params = base.bytes["gradients"] / 4   # float32 slices
  assert with_m.bytes["optimizer"] - base.bytes["optimizer"] == params * 4


def test_glam_8b_parameters_on_512_chips_match_the_widths():
  est = memory.estimate(["models/glam_8b_64e.gin"], ['utils.get_variable_dtype.master_dtype = '
                                                     '"float32"'], "tpu_v4_512")
  d, ff, hk, vocab = 4096, 16384, 32 * 128, 256000
  per_block = (2 * 4 * d * hk / 8          # two attention layers, heads split 8-way
               + 3 * d * ff / 8            # GLU dense FFN, d_ff split 8-way
               + 64 * 2 * d * ff / 512)    # 64 experts over batch:64, hidden over model:8
  expected = 16 * per_block + 2 * vocab * d / 8
  assert est.bytes["parameters"] / 4 == pytest.approx(expected, rel=0.005)
  assert est.num_devices == 512


@pytest.mark.parametrize("mesh,rules,message", [
    ("batch:2,model:3", "batch:batch,d_ff:model", r"utils.run.mesh_shape / utils.run.layout_rules: .*d_ff=256 "
                               r"\(dimension 'd_ff'\) is split over mesh dimension 'model' of size 3"),
    ("batch:2", "batch:batch,expert:batch", r"utils.run.layout_rules=.*'expert' is not a "
                                            r"dimension of this model"),
    ("batch:2", "batch:batch,experts:expert", r"mesh dimension 'expert' is not in "
                                              r"utils.run.mesh_shape='batch:2'"),
    ("batch:2", "batch:batch,expert_unsplit:batch", r"'expert_unsplit' is a MoE routing "
                                                    r"dimension and must stay whole"),
    ("batch:two", RULES, r"utils.run.mesh_shape='batch:two'"),
])
def test_bad_layouts_name_the_gin_parameter(mesh, rules, message):
  with pytest.raises(memory.LayoutError, match=message):
    _tiny(mesh, rules)


def test_params_cli_mesh_option(capsys):
  assert params_cli.run(["brainformer params", "--gin_file=models/glam_tiny.gin",
                         "--mesh=cpu_2x2", "--json", "--batch_size=8", "--vocab_size=64",
                         "--sequence_length=16", "--gin_param=num_layers = 1"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["mesh_shape"] == "batch:2,model:2" and out["num_devices"] == 4 and out["fits"]
  assert out["total_gib"] > 0
  assert params_cli.run(["brainformer params", "--gin_file=models/glam_tiny.gin",
                         "--mesh=batch:2,model:3"]) == 2
  assert "model' of size 3" in capsys.readouterr().err
