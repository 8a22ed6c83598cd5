"""MoE layer outputs, losses and gradients against the numpy references of the equations."""

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.layers.moe import MoE
from brainformer_tf.layers.moe import dispatch as dispatch_lib

B, L, M, E, H = 2, 8, 6, 4, 5


def _x(seed=0, batch=B):
  return np.random.RandomState(seed).randn(batch, L, M).astype(np.float32)


def _padding(batch=B):
  seq = np.ones((batch, L), np.int32)
  seq[0, -3:] = 0
  return seq


def _run(x, sequence_id=None, **kwargs):
  layer = MoE(num_experts=E, hidden_size=H, **kwargs)
  return harness.run_layer(layer, x, sequence_id=sequence_id, dy=np.ones_like(x)), layer


@pytest.mark.parametrize("dispatch", ["gather", "einsum"])
@pytest.mark.parametrize("group_size,activation,padded", [
    (L, "relu", False), (2 * L, "gated_gelu", True), (L, "squared_relu", True)])
def test_expert_choice_matches_equations_1_to_4(dispatch, group_size, activation, padded):
  x = _x()
  seq = _padding() if padded else None
  run, _ = _run(x, seq, gating="expert_choice", capacity_factor=2.0, group_size=group_size,
                activation=activation, dispatch=dispatch)
  k = round(2.0 * group_size / E)
  expected, _ = harness.numpy_expert_choice(
      x, run.variables, group_size=group_size, k=k, activation=activation, capacity_factor=2.0,
      real=None if seq is None else (seq > 0).astype(float))
  np.testing.assert_allclose(run.y, expected, rtol=1e-4, atol=1e-5)
  assert run.losses == []  # no auxiliary loss by default


@pytest.mark.parametrize("dispatch", ["gather", "einsum"])
def test_top_2_drops_exactly_the_reference_tokens(dispatch):
  x = _x(1)
  seq = _padding()
  # capacity round(1.0 * 16 / 4) = 4 slots for 2 * 13 real assignments: many are dropped.
  run, layer = _run(x, seq, gating="top_2", capacity_factor=1.0, group_size=2 * L,
                    dispatch=dispatch, aux_loss_coef=0.01)
  expected, assignments, balance = harness.numpy_top_2(
      x, run.variables, group_size=2 * L, capacity=4, real=(seq > 0).astype(float),
      capacity_factor=1.0)
  assert len(assignments) < 2 * 13
  np.testing.assert_allclose(run.y, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(run.losses, [0.01 * balance], rtol=1e-5)
  assert layer.experts_per_token() == 2


def test_router_z_loss_is_added():
  x = _x(2)
  run, _ = _run(x, gating="expert_choice", group_size=L, router_z_loss=0.1)
  _, s = harness.numpy_router_scores(x, run.variables, L)
  logits = harness.moe_groups(x.astype(np.float64), L) @ run.variables["router/kernel"]
  z = np.mean(np.log(np.exp(logits).sum(-1)) ** 2)
  np.testing.assert_allclose(run.losses, [0.1 * z], rtol=1e-5)


@pytest.mark.parametrize("gating", ["expert_choice", "top_2"])
def test_gradients_reach_the_router(gating):
  """d sum(y * dy) / d W_router equals central differences of the numpy reference."""
  x = _x(3)
  dy = np.random.RandomState(4).randn(*x.shape)
  layer = MoE(num_experts=E, hidden_size=H, gating=gating, group_size=L)
  run = harness.run_layer(layer, x, dy=dy.astype(np.float32))

  def objective(router):
    variables = dict(run.variables, **{"router/kernel": router})
    if gating == "top_2":
      y = harness.numpy_top_2(x, variables, group_size=L, capacity=4)[0]
    else:
      y = harness.numpy_expert_choice(x, variables, group_size=L, k=4)[0]
    return (y * dy).sum()

  w = run.variables["router/kernel"].astype(np.float64)
  numeric = np.zeros_like(w)
  for idx in np.ndindex(*w.shape):
    step = np.zeros_like(w)
    step[idx] = 1e-4
    numeric[idx] = (objective(w + step) - objective(w - step)) / 2e-4
  assert np.abs(numeric).max() > 1e-3
  np.testing.assert_allclose(run.grads["router/kernel"], numeric, rtol=2e-3, atol=2e-4)


def test_capped_lp_respects_constraints_and_matches_numpy_dykstra():
  x = _x(5)
  layer = MoE(num_experts=E, hidden_size=H, gating="expert_choice_capped", group_size=L,
              capacity_factor=1.0, max_experts_per_token=1.5, dykstra_lambda=0.01)
  run = harness.run_layer(layer, x, fetch=lambda c, y: dict(layer.last_routing.extras))
  solution = run.fetched["lp_solution"]                            # [G, S, E]
  _, scores = harness.numpy_router_scores(x, run.variables, L)
  k = 2
  for g in range(scores.shape[0]):
    expected = harness.numpy_capped_lp(scores[g], k=k, b=1.5, lam=0.01, iterations=100)
    np.testing.assert_allclose(solution[g], expected, atol=2e-3)
    assert solution[g].max() <= 1 + 1e-6
    assert (solution[g].sum(1) <= 1.5 + 1e-4).all()
    np.testing.assert_allclose(solution[g].sum(0), k, atol=0.05)
  y, _ = harness.numpy_expert_choice(
      x, run.variables, group_size=L, k=k,
      key=np.stack([harness.numpy_capped_lp(scores[g], k=k, b=1.5, lam=0.01)
                    for g in range(scores.shape[0])]))
  np.testing.assert_allclose(run.y, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", [harness.TRAIN, harness.EVAL])
def test_causal_threshold_routing_matches_reference(mode):
  x = _x(6)
  layer = MoE(num_experts=E, hidden_size=H, gating="expert_choice_causal", group_size=2 * L,
              capacity_factor=2.0, causal_capacity_multiplier=1.0, threshold_decay=0.9)
  tau = np.array([0.2, 0.25, 0.3, 0.22], np.float32)
  state = {"router/threshold_ema": tau * 0.5, "router/threshold_weight": np.float32(0.5)}
  run = harness.run_layer(layer, x, mode=mode, variables=state)
  train = mode == harness.TRAIN
  expected, _ = harness.numpy_threshold_choice(x, run.variables, group_size=2 * L,
                                               thresholds=tau, capacity=8 if train else None)
  np.testing.assert_allclose(run.y, expected, rtol=1e-4, atol=1e-5)
  after = run.variables_after
  if train:   # EMA of the k-th (k = 8) largest score of each expert in the group
    _, s = harness.numpy_router_scores(x, run.variables, 2 * L)
    kth = np.sort(s[0], axis=0)[-8]
    np.testing.assert_allclose(after["router/threshold_ema"], 0.9 * tau * 0.5 + 0.1 * kth,
                               rtol=1e-5)
    np.testing.assert_allclose(after["router/threshold_weight"], 0.9 * 0.5 + 0.1, rtol=1e-6)
  else:
    np.testing.assert_allclose(after["router/threshold_ema"], tau * 0.5)


@pytest.mark.parametrize("gating,mode,causal", [
    ("expert_choice_causal", harness.TRAIN, True),
    ("expert_choice_causal", harness.EVAL, True),
    ("top_2", harness.TRAIN, False),  # first choices of later tokens outrank second choices
    ("expert_choice", harness.TRAIN, False),
    ("expert_choice_capped", harness.EVAL, False),
])
def test_future_tokens_change_earlier_outputs_only_without_causal_routing(gating, mode, causal):
  x = _x(7)
  x_future = x.copy()
  x_future[:, 5:] = np.random.RandomState(8).randn(B, L - 5, M) * 3
  layer_args = dict(num_experts=E, hidden_size=H, gating=gating, group_size=L,
                    capacity_factor=1.0, causal_capacity_multiplier=1.0)
  state = {"router/threshold_ema": np.full(E, 0.25, np.float32),
           "router/threshold_weight": np.float32(1.0)}
  first = harness.run_layer(MoE(**layer_args), x, mode=mode, variables=state)
  state.update(first.variables)
  second = harness.run_layer(MoE(**layer_args), x_future, mode=mode, variables=state)
  changed = np.abs(first.y[:, :5] - second.y[:, :5]).max()
  if causal:
    assert changed == 0
  else:
    assert changed > 1e-3


@pytest.mark.parametrize("gating", ["expert_choice", "top_2"])
def test_missing_padding_mask_means_all_tokens_are_real(gating):
  x = _x(9)
  for mode in (harness.TRAIN, harness.EVAL):
    without = harness.run_layer(MoE(num_experts=E, hidden_size=H, gating=gating), x, mode=mode)
    with_mask = harness.run_layer(MoE(num_experts=E, hidden_size=H, gating=gating), x,
                                  mode=mode, sequence_id=np.ones((B, L), np.int32),
                                  variables=without.variables)
    np.testing.assert_allclose(without.y, with_mask.y, rtol=1e-6)


def test_experts_per_token():
  assert MoE(num_experts=8, hidden_size=4, gating="top_2").experts_per_token() == 2
  for gating in ("expert_choice", "expert_choice_capped", "expert_choice_causal"):
    layer = MoE(num_experts=8, hidden_size=4, gating=gating, capacity_factor=1.0)
    assert layer.experts_per_token() == 1.0


def test_tokens_per_slot_count_matches_bincount():
  """The routed_to_* summaries' input: how many filled slots hold each token, per group."""
  rng = np.random.RandomState(0)
  groups, experts, slots, tokens = 3, 4, 2, 5
  idx = rng.randint(0, tokens, (groups, experts, slots)).astype(np.int32)
  val = (rng.rand(groups, experts, slots) > 0.3).astype(np.float32)
  dims = [mtf.Dimension(n, s) for n, s in
          [("batch", groups), ("expert_unsplit", experts), ("expert_capacity", slots)]]
  with harness.mesh_graph() as g:
    i = mtf.import_tf_tensor(g.mesh, tf.constant(idx), mtf.Shape(dims))
    v = mtf.import_tf_tensor(g.mesh, tf.constant(val), mtf.Shape(dims))
    counts = dispatch_lib.tokens_per_slot_count(i, v, mtf.Dimension("group", tokens))
    with g.session() as s:
      got = s.run(counts)
  want = np.stack([np.bincount(idx[g].ravel(), weights=val[g].ravel(), minlength=tokens)
                   for g in range(groups)])
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("gating", ["expert_choice", "expert_choice_capped", "top_2"])
def test_scoring_routes_each_row_alone_and_ignores_its_padding(gating):
  """Eval mode: a row's outputs depend neither on the other rows of its batch nor on how much
  padding follows it (padding never takes a slot nor widens capacity)."""
  args = dict(num_experts=E, hidden_size=H, gating=gating, capacity_factor=1.0,
              group_size=4 * L, max_experts_per_token=2.0, dykstra_lambda=0.01)
  row = _x(11, batch=1)
  others = [_x(12, batch=1), _x(13, batch=1) * 3]
  first = harness.run_layer(MoE(**args), np.concatenate([row, others[0]]), mode=harness.EVAL)
  second = harness.run_layer(MoE(**args), np.concatenate([row, others[1]]), mode=harness.EVAL,
                             variables=first.variables)
  np.testing.assert_allclose(first.y[0], second.y[0], rtol=1e-5, atol=1e-6)
  # the same 5 real tokens, padded to L and to 2L, with garbage in the padding
  real = 5
  short = np.concatenate([row[:, :real], np.full((1, L - real, M), 7.0, np.float32)], axis=1)
  seq_short = (np.arange(L) < real).astype(np.int32)[None]
  long_ = np.concatenate([row[:, :real], np.full((1, 2 * L - real, M), -5.0, np.float32)], 1)
  seq_long = (np.arange(2 * L) < real).astype(np.int32)[None]
  a = harness.run_layer(MoE(**args), short, mode=harness.EVAL, sequence_id=seq_short,
                        variables=first.variables)
  b = harness.run_layer(MoE(**args), long_, mode=harness.EVAL, sequence_id=seq_long,
                        variables=first.variables)
  np.testing.assert_allclose(a.y[0, :real], b.y[0, :real], rtol=1e-5, atol=1e-6)
  if gating != "expert_choice_capped":  # the capped LP's own reference is tested above
    reference = harness.numpy_expert_choice if gating == "expert_choice" else harness.numpy_top_2
    kwargs = (dict(k=round(1.0 * L / E)) if gating == "expert_choice"
              else dict(capacity=round(1.0 * L / E)))
    expected = reference(short, first.variables, group_size=L, real=seq_short.astype(float),
                         capacity_factor=1.0, **kwargs)[0]
    np.testing.assert_allclose(a.y[0, :real], expected[0, :real], rtol=1e-4, atol=1e-5)
