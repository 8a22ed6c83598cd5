"""Golden-array tests of each gating (layers/moe/router.py) and of dispatch.assign_slots alone.

In the style of Flaxformer's routing_test.py: tiny hand-written router scores (one routing
group, 3-5 tokens, 2-3 experts), expected slots worked out by hand and written as literals, a
comment per expected value saying which token wins which slot and why. No expected value here
was printed by the code under test.

Conventions of the expected arrays: `slots[e][c]` is the token (position in the group) that
fills slot c of expert e, -1 where the slot is empty or closed (valid = 0); expert choice's
slots come in TopK order (highest score first); token choice (top-2, threshold) fills slots
first-come-first-served. Score rows sum to 1, like the softmax the layer feeds the router.
"""

import mesh_tensorflow as mtf
import numpy as np
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.layers.moe import dispatch
from brainformer_tf.layers.moe import router

CONFIG = dict(capacity_factor=1.0, aux_loss_coef=0.0, second_policy="all",
              max_experts_per_token=2.0, dykstra_lambda=0.01, dykstra_iterations=100,
              threshold_decay=0.9, causal_capacity_multiplier=1.0)


def _dims(tokens, experts):
  return (mtf.Dimension("batch", 1), mtf.Dimension("group", tokens),
          mtf.Dimension("expert_unsplit", experts))


def _slots(indices, valid):
  """[E, C] token of each slot of the one group, -1 where the slot is not filled."""
  return np.where(valid[0] > 0, indices[0], -1).tolist()


def route(gating, scores, *, real=None, positions=None, train=True, variables=None, **config):
  """Runs one gating on scores [S, E] (one group): its Routing's arrays (group axis dropped
  from gates / requested / extras) as numpy, "slots" (see _slots) and every variable's value
  after the step's updates ("after")."""
  scores = np.asarray(scores, np.float32)
  group, token, expert = _dims(*scores.shape)
  real = np.ones(scores.shape[0], np.float32) if real is None else np.asarray(real, np.float32)
  cfg = router.RouterConfig(gating=gating, **dict(CONFIG, **config))
  with harness.mesh_graph() as g:
    s = mtf.import_tf_tensor(g.mesh, tf.constant(scores[None]), [group, token, expert])
    r = mtf.import_tf_tensor(g.mesh, tf.constant(real[None]), [group, token])
    p = None if positions is None else mtf.import_tf_tensor(
        g.mesh, tf.constant(np.asarray(positions, np.int32)[None]), [group, token])
    inputs = router.RouterInputs(logits=mtf.log(s), scores=s, real=r, positions=p, train=train,
                                 incremental=False)
    routing = router.GATINGS[gating](inputs, cfg)
    fetch = dict(routing.extras, indices=routing.indices, valid=routing.valid,
                 gates=routing.gates)
    if routing.requested is not None:
      fetch["requested"] = routing.requested
    if routing.aux_loss is not None:
      fetch["aux_loss"] = routing.aux_loss
    state = {v.name: v.outputs[0] for v in g.graph.all_variables}
    with g.session(variables) as sess:
      out, _ = sess.run([fetch, routing.updates])
      out["after"] = sess.run(state)
  out["slots"] = _slots(out["indices"], out["valid"])
  for name in ("gates", "requested", "lp_solution"):
    if name in out:
      out[name] = out[name][0]
  return out


# --- expert choice (EC eq. 1-4): each expert takes its k best tokens ---------------------------

EC_SCORES = [[0.6, 0.4],    # t0
             [0.3, 0.7],    # t1
             [0.8, 0.2],    # t2
             [0.5, 0.5]]    # t3


def test_expert_choice_each_expert_takes_its_k_best_tokens():
  # k = round(cf * S / E) = round(1.0 * 4 / 2) = 2 slots per expert.
  out = route("expert_choice", EC_SCORES)
  assert out["slots"] == [
      [2, 0],   # expert 0's column is (0.6, 0.3, 0.8, 0.5): t2 (0.8), then t0 (0.6)
      [1, 3],   # expert 1's column is (0.4, 0.7, 0.2, 0.5): t1 (0.7), then t3 (0.5)
  ]
  # the combine weights are the router scores themselves (EC eq. 3)
  np.testing.assert_array_equal(out["gates"], np.float32(EC_SCORES))
  assert "requested" not in out and "aux_loss" not in out   # no token choice, no balance loss


def test_expert_choice_never_picks_padding_and_sizes_capacity_by_real_tokens():
  # t2 is padding: it is never selected though it has expert 0's best score (0.8).
  # 3 real tokens: round(1.0 * 3 / 2) = round(1.5) = 2 slots (half rounds up), all open.
  out = route("expert_choice", EC_SCORES, real=[1, 1, 0, 1])
  assert out["slots"] == [
      [0, 3],   # expert 0 without t2: t0 (0.6), t3 (0.5)
      [1, 3],   # expert 1: t1 (0.7), t3 (0.5), as without padding
  ]
  # Two real tokens: round(1.0 * 2 / 2) = 1 open slot per expert; slot 1 is closed (its
  # TopK token, the other real one, is not served), so padding grants no extra capacity.
  out = route("expert_choice", EC_SCORES, real=[1, 1, 0, 0])
  assert out["slots"] == [
      [0, -1],  # expert 0 over (t0 0.6, t1 0.3): t0
      [1, -1],  # expert 1 over (t0 0.4, t1 0.7): t1
  ]


# --- capped expert choice: top-k over the LP solution (at most b experts per token) ----------

CAPPED_SCORES = [[0.50, 0.45, 0.05],   # t0: the best token of experts 0 and 1
                 [0.05, 0.40, 0.55],   # t1
                 [0.05, 0.05, 0.90]]   # t2


def test_capped_expert_choice_moves_a_contested_token_to_the_best_assignment():
  # k = round(1.0 * 3 / 3) = 1. Plain EC: expert 0 -> t0 (0.50), expert 1 -> t0 (0.45, its
  # best), expert 2 -> t2 (0.90); t1 gets no expert, t0 two.
  assert route("expert_choice", CAPPED_SCORES)["slots"] == [[0], [0], [2]]
  # Capped with b = 1 expert per token: the LP (column sums k = 1, row sums <= 1) is an
  # assignment problem; its best permutation is e0-t0, e1-t1, e2-t2 with 0.50 + 0.40 + 0.90 =
  # 1.80 (next best e0-t1, e1-t0, e2-t2: 1.40; e0-t0, e1-t2, e2-t1: 1.10).
  out = route("expert_choice_capped", CAPPED_SCORES, max_experts_per_token=1.0)
  assert out["slots"] == [
      [0],      # expert 0 keeps t0
      [1],      # expert 1 gives t0 up (t0 may have one expert) and takes t1
      [2],      # expert 2 keeps t2
  ]
  # the LP solution A is that permutation matrix (up to the entropy term lambda = 0.01 and
  # 100 Dykstra iterations)
  np.testing.assert_allclose(out["lp_solution"], np.eye(3), atol=0.03)
  np.testing.assert_array_equal(out["gates"], np.float32(CAPPED_SCORES))   # gates stay S


# --- top-2 (GShard / GLaM): tokens choose; first choices are served before second ones --------

TOP2_SCORES = [[0.5, 0.3, 0.2],   # t0: 1st e0, 2nd e1
               [0.6, 0.1, 0.3],   # t1: 1st e0, 2nd e2
               [0.7, 0.2, 0.1],   # t2: 1st e0, 2nd e1
               [0.2, 0.5, 0.3]]   # t3: 1st e1, 2nd e2


def test_top_2_serves_every_first_choice_before_any_second_choice():
  # capacity round(1.5 * 4 / 3) = 2 slots per expert.
  out = route("top_2", TOP2_SCORES, capacity_factor=1.5, aux_loss_coef=1.0)
  assert out["slots"] == [
      # first choices in group order: t0 -> e0 slot 0, t1 -> e0 slot 1, t2 -> e0 is full
      # (dropped), t3 -> e1 slot 0
      [0, 1],
      # then second choices: t0 -> e1 slot 1 (after t3's FIRST choice took slot 0); t2 -> e1
      # is then full, so t2 gets no expert at all
      [3, 0],
      # t1 -> e2 slot 0, t3 -> e2 slot 1
      [1, 3],
  ]
  # gates renormalised over each token's two choices: g / (g1 + g2)
  np.testing.assert_allclose(out["gates"], [
      [0.5 / 0.8, 0.3 / 0.8, 0.0],
      [0.6 / 0.9, 0.0, 0.3 / 0.9],
      [0.7 / 0.9, 0.2 / 0.9, 0.0],   # t2 was dropped: valid, not the gate, says so
      [0.0, 0.5 / 0.8, 0.3 / 0.8]], rtol=1e-6)
  assert out["requested"].tolist() == [2, 2, 2, 2]   # two assignments asked per token
  # GShard balance loss: E * sum_e (fraction of first choices at e) * (mean score of e):
  # first choices (3/4, 1/4, 0), mean scores (2.0/4, 1.1/4, 0.9/4):
  # 3 * (0.75 * 0.5 + 0.25 * 0.275) = 3 * 0.44375 = 1.33125
  np.testing.assert_allclose(out["aux_loss"], 1.33125, rtol=1e-6)


def test_top_2_padding_asks_for_nothing_and_counts_in_no_average():
  # t0 is padding: 3 real tokens, capacity round(1.5 * 3 / 3) = round(1.5) = 2.
  out = route("top_2", TOP2_SCORES, real=[0, 1, 1, 1], capacity_factor=1.5, aux_loss_coef=1.0)
  assert out["slots"] == [
      [1, 2],   # first choices: t1 -> e0 slot 0, t2 -> e0 slot 1 (t0's request is gone)
      [3, 2],   # t3's first choice, then t2's second choice now fits
      [1, 3],   # second choices of t1 and t3
  ]
  assert out["requested"].tolist() == [0, 2, 2, 2]
  # over real tokens only: first choices (2/3, 1/3, 0), mean scores (1.5/3, 0.8/3, 0.7/3):
  # 3 * (2/3 * 0.5 + 1/3 * 0.8/3) = 1 + 0.8/3
  np.testing.assert_allclose(out["aux_loss"], 1.0 + 0.8 / 3, rtol=1e-6)


# --- causal threshold expert choice: token t to expert e iff S[t, e] >= tau_e ----------------

CAUSAL_SCORES = [[0.4, 0.6],   # t0: e0 no (0.4 < 0.5), e1 yes (0.6 >= 0.6: ties pass)
                 [0.7, 0.3],   # t1: e0 yes, e1 no
                 [0.5, 0.5],   # t2: e0 yes (0.5 >= 0.5), e1 no
                 [0.2, 0.8]]   # t3: e0 no, e1 yes
# tau = threshold_ema / threshold_weight = (0.25, 0.30) / 0.5 = (0.5, 0.6)
THRESHOLDS = {"router/threshold_ema": np.float32([0.25, 0.30]),
              "router/threshold_weight": np.float32(0.5)}


def test_causal_threshold_routing_without_capacity_when_scoring():
  # eval: no capacity limit (S = 4 slots per expert), slots filled in group order
  out = route("expert_choice_causal", CAUSAL_SCORES, train=False, variables=THRESHOLDS)
  assert out["slots"] == [
      [1, 2, -1, -1],   # expert 0: t1 (0.7) and t2 (0.5) pass tau 0.5
      [0, 3, -1, -1],   # expert 1: t0 (0.6) and t3 (0.8) pass tau 0.6
  ]
  assert out["requested"].tolist() == [1, 1, 1, 1]
  # scoring leaves the thresholds alone
  np.testing.assert_allclose(out["after"]["router/threshold_ema"], [0.25, 0.30], rtol=1e-6)
  np.testing.assert_allclose(out["after"]["router/threshold_weight"], 0.5, rtol=1e-6)


def test_causal_threshold_training_serves_earlier_positions_first_and_updates_tau():
  # Training capacity round(multiplier * cf * S / E) = round(0.5 * 1.0 * 4 / 2) = 1 slot per
  # expert. The group holds two sequences of 2 tokens: positions (0, 1, 0, 1), so t0 and t2
  # (position 0) come before t1 and t3 (position 1) whatever their order in the group.
  out = route("expert_choice_causal", CAUSAL_SCORES, positions=[0, 1, 0, 1],
              causal_capacity_multiplier=0.5, variables=THRESHOLDS)
  assert out["slots"] == [
      [2],   # expert 0: t1 and t2 pass; t2 is at position 0, t1 at 1 -> t2 (group order
             # alone would have given the slot to t1)
      [0],   # expert 1: t0 (position 0) before t3 (position 1)
  ]
  assert out["requested"].tolist() == [1, 1, 1, 1]   # asked, though t1 and t3 were dropped
  # EMA update with the k-th best score of each expert, k = round(1.0 * 4 / 2) = 2:
  # expert 0 (0.4, 0.7, 0.5, 0.2) -> 0.5; expert 1 (0.6, 0.3, 0.5, 0.8) -> 0.6.
  # ema = 0.9 * (0.25, 0.30) + 0.1 * (0.5, 0.6) = (0.275, 0.33); weight = 0.9 * 0.5 + 0.1
  np.testing.assert_allclose(out["after"]["router/threshold_ema"], [0.275, 0.33], rtol=1e-6)
  np.testing.assert_allclose(out["after"]["router/threshold_weight"], 0.55, rtol=1e-6)


# --- dispatch.assign_slots on its own: masks in, first-come-first-served slots out ------------


def assign(masks, capacity, priority=None):
  """assign_slots on one group: masks [n][S][E] 0/1 -> (slots [E][C], kept [S][E])."""
  masks = np.asarray(masks, np.float32)[:, None]                   # [n, G=1, S, E]
  group, token, expert = _dims(*masks.shape[2:])
  with harness.mesh_graph() as g:
    ms = [mtf.import_tf_tensor(g.mesh, tf.constant(m), [group, token, expert]) for m in masks]
    p = None if priority is None else mtf.import_tf_tensor(
        g.mesh, tf.constant(np.asarray(priority, np.float32)[None]), [group, token])
    indices, valid, kept = dispatch.assign_slots(
        ms, mtf.Dimension("expert_capacity", capacity), priority=p)
    with g.session() as sess:
      indices, valid, kept = sess.run([indices, valid, kept])
  return _slots(indices, valid), kept[0].tolist()


def test_assign_slots_first_mask_before_second_each_in_group_order():
  first = [[1, 0], [1, 0], [0, 1], [1, 0], [0, 1]]    # t0 t1 t3 -> e0; t2 t4 -> e1
  second = [[0, 1], [0, 1], [1, 0], [0, 1], [1, 0]]   # t0 t1 t3 -> e1; t2 t4 -> e0
  slots, kept = assign([first, second], capacity=3)
  assert slots == [
      [0, 1, 3],   # e0: the first mask's t0, t1, t3 fill all 3 slots; the second mask's
                   # t2 and t4 find it full
      [2, 4, 0],   # e1: first mask t2, t4; then the second mask in group order: t0 takes the
                   # last slot, t1 and t3 are dropped
  ]
  assert kept == [[1, 1],   # t0 got both its experts
                  [1, 0],   # t1: e0 only (its e1 request came too late)
                  [0, 1],   # t2: e1 only
                  [1, 0],   # t3: e0 only
                  [0, 1]]   # t4: e1 only


def test_assign_slots_serves_by_priority_with_ties_in_group_order():
  mask = [[1, 0], [0, 0], [1, 0], [1, 0], [0, 1]]     # e0 asked by t0, t2, t3; e1 by t4
  # Group order alone: e0 -> t0, t2 (t3 dropped).
  assert assign([mask], capacity=2)[0] == [[0, 2], [4, -1]]
  # Priority (e.g. the position in the sequence) 1, 0, 0, 0, 1: served t1, t2, t3 (ties at 0
  # in group order), then t0, t4.
  slots, kept = assign([mask], capacity=2, priority=[1, 0, 0, 0, 1])
  assert slots == [
      [2, 3],    # e0: t2 and t3 (priority 0) before t0 (priority 1), which is dropped
      [4, -1],   # e1: only t4 asked; the second slot stays empty
  ]
  assert kept == [[0, 0], [0, 0], [1, 0], [1, 0], [0, 1]]
