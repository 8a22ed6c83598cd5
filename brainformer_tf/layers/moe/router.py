"""Gatings: router scores -> a routing decision (which token fills which expert slot).

Every gating maps `RouterInputs` (per routing group: router logits and scores
S = softmax(X W_g) over experts, in float32) to a `Routing` (indices/valid slots for
dispatch.py, the gate tensor the combine weights are read from, auxiliary loss, variable
updates). One small function per gating; dispatch, experts and combine are shared.

Capacity convention (all gatings, num_slots): with group size S, E experts and capacity
factor cf, each expert has round(cf * S / E) slots (half up, at most S) for all of its
assignments together. For expert choice this is the EC paper's k = n*c/e, so cf is the average
number of experts per token; GLaM/GShard top-2 with 2S/E slots is cf = 2. Other codebases
round differently and add a floor: mesh-tf's MoE1D max(min(S, floor(cf*S/E)), 4) (moe.py,
min_expert_capacity = 4); Flaxformer's MoeLayer max(round(cf*S/E), 4) (Python round, half to
even); Praxis's top2_gating_on_logits floor(cf*S/E) rounded up to a multiple of 4.

Dims: G groups (named like the batch dim), S "group", E "expert_unsplit", C "expert_capacity".
"""

import dataclasses
import math
from typing import Callable, Dict, List, Optional

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from brainformer_tf.layers.moe import dispatch as dispatch_lib


@dataclasses.dataclass(frozen=True)
class RouterConfig:
  """The gating hyperparameters of one MoE layer (see MoE for their meaning)."""
  gating: str
  capacity_factor: float
  aux_loss_coef: float
  second_policy: str
  max_experts_per_token: float
  dykstra_lambda: float
  dykstra_iterations: int
  threshold_decay: float
  causal_capacity_multiplier: float
  layer_name: str = "MoE"


@dataclasses.dataclass
class RouterInputs:
  logits: mtf.Tensor            # [G, S, E] float32
  scores: mtf.Tensor            # [G, S, E] softmax over E
  real: mtf.Tensor              # [G, S] 1 for real tokens, 0 for padding
  positions: Optional[mtf.Tensor]  # [G, S] position in the sequence (None when decoding)
  train: bool
  incremental: bool             # one decoding step: each group holds one token per sequence

  @property
  def token_dim(self):
    return self.scores.shape.dims[1]

  @property
  def expert_dim(self):
    return self.scores.shape.dims[2]


@dataclasses.dataclass
class Routing:
  indices: mtf.Tensor           # [G, E, C] int32 token filling each slot
  valid: mtf.Tensor             # [G, E, C] 1 where the slot is filled
  gates: mtf.Tensor             # [G, S, E] combine weight of token s at expert e
  requested: Optional[mtf.Tensor] = None  # [G, S] assignments asked for (token choice)
  aux_loss: Optional[mtf.Tensor] = None   # scalar, already multiplied by its coefficient
  updates: List[mtf.Operation] = dataclasses.field(default_factory=list)
  extras: Dict[str, mtf.Tensor] = dataclasses.field(default_factory=dict)


def num_slots(capacity_factor: float, group_size: int, num_experts: int,
              cfg: RouterConfig, what: str = "k", train: bool = True) -> int:
  """round(cf * S / E), at most S. In training 0 is an error naming the layer and its
  parameters; when scoring (each sequence its own group, possibly a short one) at least 1,
  and real_capacity_mask closes what a group's real tokens are not entitled to."""
  slots = min(group_size, int(math.floor(capacity_factor * group_size / num_experts + 0.5)))
  if slots < 1 and not train:
    return 1
  if slots < 1:
    raise ValueError(
        f"{cfg.layer_name}: capacity_factor={capacity_factor} with a routing group of "
        f"{group_size} tokens and num_experts={num_experts} gives {what} = "
        f"round({capacity_factor} * {group_size} / {num_experts}) = 0 tokens per expert; "
        f"raise capacity_factor or group_size")
  return slots


def real_capacity_mask(r: RouterInputs, capacity_factor: float,
                       capacity_dim: mtf.Dimension) -> mtf.Tensor:
  """[G, 1, C] 1 for the slots a group's real tokens are entitled to, 0 beyond.

  Capacity follows the group's real tokens n_g, not its padded size S: slot c is open iff
  c < max(round(cf * n_g / E), min(n_g, 1)). Padding thus neither takes slots (it is never
  selected) nor grants extra slots to real tokens, and a sequence scores the same whatever
  padding its batch holds. With no padding (packed training) every slot is open.
  """
  n = mtf.reduce_sum(r.real, reduced_dim=r.token_dim)                     # [G]
  slot = mtf.range(r.scores.mesh, capacity_dim, tf.float32)
  # c < round(y) = floor(y + 0.5)  <=>  c + 1 <= y + 0.5 for an integer c
  rounded = mtf.less_equal(slot + 1.0, n * (capacity_factor / r.expert_dim.size) + 0.5)
  return mtf.to_float(mtf.logical_or(rounded, mtf.less(slot, mtf.minimum(n, 1.0))))


def _selection_scores(r: RouterInputs, scores: mtf.Tensor) -> mtf.Tensor:
  """Scores without gradient, with padding below every real score (scores are >= 0)."""
  return mtf.stop_gradient(scores) * r.real - (1.0 - r.real)


def _top_k_tokens(r: RouterInputs, key: mtf.Tensor, k: int):
  """Each expert's k best tokens by key [G, S, E]: values and indices [G, E, k]."""
  return mtf.top_k(key, r.token_dim, mtf.Dimension("expert_capacity", k))


def _real_at(r: RouterInputs, indices: mtf.Tensor) -> mtf.Tensor:
  return dispatch_lib.gather_gates(mtf.broadcast(r.real, r.scores.shape), indices)


def expert_choice(r: RouterInputs, cfg: RouterConfig) -> Routing:
  """EC eq. 1-4: G, I = TopK(S^T, k) over the group's tokens, k = round(cf * S / E)."""
  k = num_slots(cfg.capacity_factor, r.token_dim.size, r.expert_dim.size, cfg, train=r.train)
  _, indices = _top_k_tokens(r, _selection_scores(r, r.scores), k)
  valid = _real_at(r, indices) * real_capacity_mask(r, cfg.capacity_factor,
                                                    indices.shape.dims[-1])
  return Routing(indices=indices, valid=valid, gates=r.scores)


def expert_choice_capped(r: RouterInputs, cfg: RouterConfig) -> Routing:
  """EC with at most b experts per token: top-k over the entropy-regularised LP solution

    max_A <S, A> + lambda H(A)  s.t.  sum_t A[t,e] = k,  sum_e A[t,e] <= b,  0 <= A <= 1,

  solved by Dykstra's algorithm with KL projections (see dykstra_lp). Gates stay S.
  """
  k = num_slots(cfg.capacity_factor, r.token_dim.size, r.expert_dim.size, cfg, train=r.train)
  b = min(cfg.max_experts_per_token, r.expert_dim.size)
  lam, iterations, cf = cfg.dykstra_lambda, cfg.dykstra_iterations, cfg.capacity_factor
  log_a = mtf.slicewise(lambda s, m: dykstra_lp(s, m, k, b, lam, iterations, cf),
                        [_selection_scores(r, r.scores), r.real], output_shape=r.scores.shape,
                        splittable_dims=r.scores.shape.dims[:1], grad_function=0,
                        name="capped_lp")
  _, indices = _top_k_tokens(r, log_a, k)
  valid = _real_at(r, indices) * real_capacity_mask(r, cfg.capacity_factor,
                                                    indices.shape.dims[-1])
  return Routing(indices=indices, valid=valid, gates=r.scores,
                 extras={"lp_solution": mtf.exp(log_a)})


def dykstra_lp(scores, real, k, b, lam, iterations, capacity_factor=None):
  """tf: log A [g, S, E] solving the capped LP for scores [g, S, E], real [g, S].

  A = argmin KL(A || exp(S / lambda)) over C1 = {column sums k_g, A <= 1} and
  C2 = {row sums <= b, A <= 1}; Dykstra alternates exact KL projections onto C1 and C2 with
  correction terms (in log space: y = a + q; a = P(y); q = y - a). Each projection is
  a = min(0, y + mu) with the shift mu found by water-filling over the sorted values. Padding
  scores are pushed to -1 / lambda. k_g = k, or with capacity_factor the group's share of its
  real tokens n_g (min(k, max(round(cf * n_g / E), min(n_g, 1))), as real_capacity_mask).
  """
  log_a0 = (scores * real[:, :, None] - (1.0 - real[:, :, None])) / lam
  total = k
  if capacity_factor is not None:
    n = tf.reduce_sum(real, axis=1)
    rounded = tf.floor(n * (capacity_factor / scores.shape.as_list()[-1]) + 0.5)
    total = tf.minimum(float(k), tf.maximum(rounded, tf.minimum(n, 1.0)))[:, None, None]

  def step(i, log_a, q1, q2):
    y = log_a + q1
    log_a = _cap_projection(y, total, k, axis=1, inequality=False)
    q1 = y - log_a
    y = log_a + q2
    log_a = _cap_projection(y, b, b, axis=2, inequality=True)
    return i + 1, log_a, q1, y - log_a

  zeros = tf.zeros_like(log_a0)
  _, log_a, _, _ = tf.while_loop(lambda i, *_: i < iterations, step,
                                 [tf.constant(0), log_a0, zeros, zeros])
  return log_a


def _cap_projection(y, total, max_total, axis, inequality):
  """KL projection of exp(y) onto {sum over axis (=, or <= if inequality) total, A <= 1}.

  total: a number, or a tensor broadcasting against y with `axis` moved last ([g, 1, 1] per
  group), at most max_total (a number).
  """
  y_last = tf.transpose(y, [0, 2, 1]) if axis == 1 else y
  n = y_last.shape.as_list()[-1]
  if not tf.is_tensor(total) and total >= n:       # the sum constraint cannot bind
    return tf.minimum(y, 0.0)
  ys = tf.sort(y_last, axis=-1, direction="DESCENDING")
  tail_lse = tf.math.cumulative_logsumexp(ys, axis=-1, reverse=True)
  m = min(int(math.ceil(max_total)), n)
  saturated = tf.range(m, dtype=y.dtype)                            # entries at 1
  mu = tf.math.log(tf.maximum(total - saturated, 1e-30)) - tail_lse[..., :m]
  fits = tf.logical_and(ys[..., :m] + mu <= 0.0, saturated < total)
  first = tf.argmax(tf.cast(fits, tf.int32), axis=-1, output_type=tf.int32)[..., None]
  mu = tf.where(tf.reduce_any(fits, axis=-1, keepdims=True),        # smallest m that fits
                tf.gather(mu, first, batch_dims=2), tf.fill(tf.shape(first), 1e9))
  if inequality:
    mu = tf.minimum(mu, 0.0)
  if axis == 1:
    mu = tf.transpose(mu, [0, 2, 1])
  return tf.minimum(y + mu, 0.0)


def top_2(r: RouterInputs, cfg: RouterConfig) -> Routing:
  """GShard/GLaM top-2: each token asks its top-2 experts, gates renormalised over the two;
  first choices take slots first, then second choices, each in group order (cumsum);
  overflow is dropped. second_policy "random" keeps the second choice with probability
  2 * g2 / (g1 + g2) in training (GShard's "proportional to its weight"). Auxiliary loss:
  GShard's E * sum_e density_e * mean-score_e over real tokens, times aux_loss_coef.
  """
  experts = r.expert_dim
  gate_1, index_1 = mtf.top_1(r.scores, experts)
  one_hot_1 = mtf.one_hot(index_1, experts, dtype=tf.float32)
  gate_2, index_2 = mtf.top_1(r.scores * (1.0 - one_hot_1), experts)
  one_hot_2 = mtf.one_hot(index_2, experts, dtype=tf.float32)
  denom = gate_1 + gate_2 + 1e-9
  keep_2 = r.real
  if cfg.second_policy == "random" and r.train:
    uniform = mtf.random_uniform(r.scores.mesh, gate_2.shape)
    keep_2 *= mtf.to_float(mtf.less(uniform, 2.0 * gate_2 / denom))
  mask_1, mask_2 = one_hot_1 * r.real, one_hot_2 * keep_2
  slots = r.token_dim.size if r.incremental else num_slots(
      cfg.capacity_factor, r.token_dim.size, experts.size, cfg, what="expert capacity",
      train=r.train)
  capacity_dim = mtf.Dimension("expert_capacity", slots)
  indices, valid, _ = dispatch_lib.assign_slots([mask_1, mask_2], capacity_dim)
  if not r.incremental:
    valid *= real_capacity_mask(r, cfg.capacity_factor, capacity_dim)
  gates = (gate_1 * one_hot_1 + gate_2 * one_hot_2) / denom
  aux = cfg.aux_loss_coef * load_balance_loss(mask_1, r.scores, r.real)
  return Routing(indices=indices, valid=valid, gates=gates,
                 requested=mtf.reduce_sum(mask_1 + mask_2, reduced_dim=experts), aux_loss=aux)


def expert_choice_causal(r: RouterInputs, cfg: RouterConfig) -> Routing:
  """Threshold expert choice: token t goes to expert e iff S[t,e] >= tau_e.

  tau_e = bias-corrected EMA (decay threshold_decay) of the k-th largest real score of expert
  e per routing group, measured in training (k = round(cf * S / E)); non-trainable variables
  router/threshold_ema [E] and router/threshold_weight []. The decision depends on the token
  alone, so training, scoring and one-token-at-a-time decoding route identically. Training
  bounds memory with capacity round(causal_capacity_multiplier * k) per expert, served
  first-come-first-served by position (a token competes only with earlier positions); other
  modes have no capacity limit. Routing uses tau from before this step's update.
  """
  experts = r.expert_dim
  mesh = r.scores.mesh
  fp32 = mtf.VariableDType(tf.float32, tf.float32, tf.float32)
  ema = mtf.get_variable(mesh, "router/threshold_ema", [experts], dtype=fp32,
                         initializer=tf.zeros_initializer(), trainable=False)
  weight = mtf.get_variable(mesh, "router/threshold_weight", [], dtype=fp32,
                            initializer=tf.zeros_initializer(), trainable=False)
  threshold = ema / mtf.maximum(weight, 1e-9)
  mask = mtf.to_float(mtf.greater_equal(r.scores, threshold)) * r.real
  slots = r.token_dim.size
  if r.train:
    k = num_slots(cfg.capacity_factor, r.token_dim.size, experts.size, cfg)
    slots = num_slots(cfg.causal_capacity_multiplier * cfg.capacity_factor,
                      r.token_dim.size, experts.size, cfg, what="training capacity")
  indices, valid, _ = dispatch_lib.assign_slots(
      [mask], mtf.Dimension("expert_capacity", slots),
      priority=r.positions if r.train else None)
  updates = []
  if r.train:
    values, _ = _top_k_tokens(r, _selection_scores(r, r.scores), k)
    kth = mtf.reduce_mean(mtf.relu(mtf.reduce_min(values, reduced_dim=values.shape.dims[-1])),
                          output_shape=[experts])
    decay = cfg.threshold_decay
    # Reads of a variable may alias its buffer: assign only after routing has used tau.
    after_routing = lambda t: mtf.depend(t, [indices, valid])
    updates = [mtf.assign(ema, after_routing(ema * decay + kth * (1.0 - decay))),
               mtf.assign(weight, after_routing(weight * decay + (1.0 - decay)))]
  return Routing(indices=indices, valid=valid, gates=r.scores,
                 requested=mtf.reduce_sum(mask, reduced_dim=experts), updates=updates)


def load_balance_loss(mask_1, scores, real):
  """GShard: per group E * sum_e (top-1 fraction_e)(mean score_e) over real tokens; mean
  over groups that hold real tokens."""
  _, token_dim, expert_dim = scores.shape.dims
  count = mtf.reduce_sum(real, reduced_dim=token_dim)                 # [G]
  denom = mtf.maximum(count, 1.0)
  density = mtf.reduce_sum(mask_1, reduced_dim=token_dim) / denom     # [G, E]
  proxy = mtf.reduce_sum(scores * real, reduced_dim=token_dim) / denom
  per_group = mtf.reduce_sum(density * proxy, reduced_dim=expert_dim) * float(expert_dim.size)
  has_tokens = mtf.to_float(mtf.greater(count, 0.0))
  return mtf.reduce_sum(per_group * has_tokens) / mtf.maximum(mtf.reduce_sum(has_tokens), 1.0)


def router_z_loss(logits, real):
  """ST-MoE router z-loss: mean over real tokens of logsumexp(logits)^2."""
  log_z = mtf.reduce_logsumexp(logits, logits.shape.dims[-1])
  return mtf.reduce_sum(mtf.square(log_z) * real) / mtf.maximum(mtf.reduce_sum(real), 1.0)


GATINGS: Dict[str, Callable[[RouterInputs, RouterConfig], Routing]] = {
    "top_2": top_2,
    "expert_choice": expert_choice,
    "expert_choice_capped": expert_choice_capped,
    "expert_choice_causal": expert_choice_causal,
}
# Top-k over a group's tokens sees future tokens: these cannot decode one token at a time.
NON_CAUSAL_GATINGS = ("expert_choice", "expert_choice_capped")
