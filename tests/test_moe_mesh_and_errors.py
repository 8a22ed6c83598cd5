"""MoE on a 4-device CPU mesh (experts split) equals 1 device; bad settings are named."""

import numpy as np
import pytest

import harness
from brainformer_tf.layers.moe import MoE


@pytest.mark.parametrize("gating,dispatch", [
    ("expert_choice", "gather"),
    pytest.param("expert_choice", "einsum", marks=pytest.mark.slow),
    ("top_2", "gather"),
    pytest.param("expert_choice_capped", "einsum", marks=pytest.mark.slow),
    ("expert_choice_causal", "gather")])   # fast: EC, top-2 and the stateful causal gating
def test_four_device_mesh_with_split_experts_matches_one_device(gating, dispatch):
  x = np.random.RandomState(0).randn(4, 8, 6).astype(np.float32)
  args = dict(num_experts=8, hidden_size=5, gating=gating, dispatch=dispatch, group_size=8,
              capacity_factor=2.0)
  # Training mode (summaries, EMA updates) only where routing differs from evaluation.
  mode = harness.TRAIN if gating == "expert_choice_causal" else harness.EVAL
  single = harness.run_layer(MoE(**args), x, dy=np.ones_like(x), mode=mode)
  split = harness.run_layer(MoE(**args), x, mesh_shape="batch:4", mode=mode,
                            layout="batch:batch,experts:batch", variables=single.variables,
                            dy=np.ones_like(x))
  np.testing.assert_allclose(split.y, single.y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(split.grads["router/kernel"], single.grads["router/kernel"],
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(split.losses, single.losses, rtol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    ({"capacity_factor": 0.0}, "MoE.capacity_factor=0.0"),
    ({"capacity_factor": -1.0}, "MoE.capacity_factor=-1.0"),
    ({"gating": "top_3"}, "MoE.gating='top_3'"),
    ({"activation": "swishy"}, "MoE.activation='swishy'"),
    ({"dispatch": "scatter"}, "MoE.dispatch='scatter'"),
    ({"second_policy": "none"}, "MoE.second_policy='none'"),
    ({"gating": "expert_choice_capped", "capacity_factor": 2.0, "max_experts_per_token": 1.0},
     "MoE.max_experts_per_token=1.0 < MoE.capacity_factor=2.0"),
])
def test_bad_settings_are_rejected_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    MoE(num_experts=4, hidden_size=4, **kwargs)


@pytest.mark.parametrize("gating", ["expert_choice", "top_2", "expert_choice_capped"])
def test_k_rounding_to_zero_is_rejected_when_the_graph_is_built(gating):
  x = np.zeros((1, 8, 4), np.float32)
  layer = MoE(num_experts=64, hidden_size=4, gating=gating, capacity_factor=2.0, group_size=8,
              max_experts_per_token=2.0)
  with pytest.raises(ValueError, match=r"MoE 'layer': capacity_factor=2.0 .* group of 8 tokens "
                                       r"and num_experts=64 .* = 0 tokens per expert"):
    harness.run_layer(layer, x)


def test_experts_not_divisible_by_their_mesh_dimension_are_rejected():
  x = np.zeros((4, 8, 4), np.float32)
  with pytest.raises(ValueError, match=r"MoE 'layer': num_experts=6 \(dimension 'experts'\) is "
                                       r"split over mesh dimension 'batch' of size 4"):
    harness.run_layer(MoE(num_experts=6, hidden_size=4), x, mesh_shape="batch:4",
                      layout="batch:batch,experts:batch")
