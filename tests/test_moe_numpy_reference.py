"""Independent numpy references of the MoE layer equations, used by tests/test_moe_*.py.

Written from the papers, with loops where that is clearer: EC eq. 1-4, the capped LP
(Dykstra with bisection-solved KL projections), GShard top-2 with capacity, threshold
(causal) expert choice, and GShard's balance loss. The tests in this file check the
references themselves on cases solvable by hand.
"""

import numpy as np
from scipy import special

from test_ffn import numpy_ffn


def groups(a, group_size):
  """[B, L, ...] -> [G, S, ...] in row-major token order, as the layer groups tokens."""
  flat = a.reshape((-1,) + a.shape[2:])
  return flat.reshape((flat.shape[0] // group_size, group_size) + a.shape[2:])


def router_scores(x, variables, group_size):
  xg = groups(x.astype(np.float64), group_size)
  return xg, special.softmax(xg @ variables["router/kernel"], axis=-1)


def expert(x_tokens, variables, e, activation):
  """FFN of expert e on tokens [N, M]."""
  per_expert = {k: v[e] for k, v in variables.items() if k != "router/kernel"}
  return numpy_ffn(x_tokens, per_expert, activation)


def combine(xg, assignments, variables, activation, shape):
  """y[g, s] = sum over (g, s, e, weight) of weight * FFN_e(x[g, s])."""
  y = np.zeros_like(xg)
  for g, s, e, w in assignments:
    y[g, s] += w * expert(xg[g, s][None], variables, e, activation)[0]
  return y.reshape(shape)


def real_capacity(capacity, n_real, capacity_factor, num_experts):
  """Slots of a group holding n_real real tokens: round(cf * n / E) (half up), at least 1 if
  n > 0, at most the static capacity (None: the static capacity)."""
  if capacity_factor is None:
    return capacity
  rounded = int(np.floor(capacity_factor * n_real / num_experts + 0.5))
  return min(capacity, max(rounded, min(int(n_real), 1)))


def expert_choice(x, variables, *, group_size, k, activation="relu", real=None, key=None,
                  capacity_factor=None):
  """EC eq. 1-4: each expert e takes the k tokens of its group with the largest key (default
  S[:, e]); output weighted by S. With capacity_factor, k follows the group's real tokens
  (real_capacity). Returns (y, list of (g, s, e, gate))."""
  xg, s = router_scores(x, variables, group_size)
  real = np.ones(s.shape[:2]) if real is None else groups(real, group_size)
  key = s if key is None else key
  assignments = []
  for g in range(s.shape[0]):
    k_g = real_capacity(k, real[g].sum(), capacity_factor, s.shape[2])
    for e in range(s.shape[2]):
      order = sorted(range(s.shape[1]), key=lambda t: (-real[g, t], -key[g, t, e]))
      assignments += [(g, t, e, s[g, t, e]) for t in order[:k_g] if real[g, t]]
  return combine(xg, assignments, variables, activation, x.shape), assignments


def _water_fill(y, total):
  """KL projection of exp(y) (1-D) onto {sum = total, A <= 1}: min(0, y + mu), mu by bisection."""
  lo, hi = -2000.0, 2000.0
  for _ in range(60):
    mu = (lo + hi) / 2
    if np.minimum(1.0, np.exp(np.minimum(y + mu, 0))).sum() > total:
      hi = mu
    else:
      lo = mu
  return np.minimum(y + (lo + hi) / 2, 0)


def capped_lp(scores, k, b, lam=1e-3, iterations=100):
  """Dykstra for max <S,A> + lam H(A) s.t. column sums k, row sums <= b, 0 <= A <= 1 (one group
  [S, E]); returns A."""
  log_a = scores / lam
  q1, q2 = np.zeros_like(log_a), np.zeros_like(log_a)
  for _ in range(iterations):
    y = log_a + q1
    log_a = np.stack([_water_fill(y[:, e], k) for e in range(y.shape[1])], axis=1)
    q1 = y - log_a
    y = log_a + q2
    rows = []
    for t in range(y.shape[0]):
      clipped = np.minimum(y[t], 0)
      rows.append(clipped if np.exp(clipped).sum() <= b else _water_fill(y[t], b))
    log_a = np.stack(rows)
    q2 = y - log_a
  return np.exp(log_a)


def top_2(x, variables, *, group_size, capacity, activation="relu", real=None,
          capacity_factor=None):
  """GShard top-2: first choices served in group order, then second choices, each while the
  expert has < capacity tokens (with capacity_factor: real_capacity of the group). Returns
  (y, assignments, balance loss)."""
  xg, s = router_scores(x, variables, group_size)
  real = np.ones(s.shape[:2]) if real is None else groups(real, group_size)
  assignments, losses = [], []
  for g in range(s.shape[0]):
    ranked = np.argsort(-s[g], axis=1, kind="stable")
    first, second = ranked[:, 0], ranked[:, 1]
    load = np.zeros(s.shape[2])
    cap = real_capacity(capacity, real[g].sum(), capacity_factor, s.shape[2])
    for choice in (first, second):
      for t in range(s.shape[1]):
        e = choice[t]
        if real[g, t] and load[e] < cap:
          load[e] += 1
          g1, g2 = s[g, t, first[t]], s[g, t, second[t]]
          assignments.append((g, t, e, s[g, t, e] / (g1 + g2)))
    n = real[g].sum()
    if n:
      density = np.array([(real[g] * (first == e)).sum() for e in range(s.shape[2])]) / n
      proxy = (s[g] * real[g][:, None]).sum(0) / n
      losses.append(s.shape[2] * (density * proxy).sum())
  return combine(xg, assignments, variables, activation, x.shape), assignments, np.mean(losses)


def threshold_choice(x, variables, *, group_size, thresholds, capacity=None, activation="relu"):
  """Causal EC: token t to expert e iff S[t,e] >= tau_e; with a capacity, tokens are served by
  increasing position (then group order) while the expert has room."""
  xg, s = router_scores(x, variables, group_size)
  length = x.shape[1]
  positions = groups(np.tile(np.arange(length), (x.shape[0], 1)), group_size)
  assignments = []
  for g in range(s.shape[0]):
    order = sorted(range(s.shape[1]), key=lambda t: (positions[g, t], t))
    load = np.zeros(s.shape[2])
    for t in order:
      for e in range(s.shape[2]):
        if s[g, t, e] >= thresholds[e] and (capacity is None or load[e] < capacity):
          load[e] += 1
          assignments.append((g, t, e, s[g, t, e]))
  return combine(xg, assignments, variables, activation, x.shape), assignments


def test_water_fill_meets_its_total():
  # total 2 over [5, 1, 0.5, 0.25]: 5 saturates at 1, the rest scale by 4/7 to sum to 1.
  a = np.exp(_water_fill(np.log([5.0, 1.0, 0.5, 0.25]), 2.0))
  np.testing.assert_allclose(a, [1, 4 / 7, 2 / 7, 1 / 7], rtol=1e-6)


def test_capped_lp_reference_splits_a_contested_token():
  # Both experts prefer token 0 (k = 1); with b = 1 the optimum gives expert 1 token 1.
  # (Dykstra needs many iterations when lambda is small: 0.01 and 1000 here; docs/moe.md.)
  scores = np.array([[0.9, 0.8], [0.5, 0.7], [0.1, 0.1], [0.2, 0.1]])
  np.testing.assert_allclose(capped_lp(scores, k=1, b=1.0, lam=0.01, iterations=1000),
                             [[1, 0], [0, 1], [0, 0], [0, 0]], atol=2e-3)
  np.testing.assert_allclose(capped_lp(scores, k=1, b=2.0, lam=0.01, iterations=1000),
                             [[1, 1], [0, 0], [0, 0], [0, 0]], atol=1e-3)


def test_real_capacity_rounds_half_up_and_keeps_one_slot():
  assert real_capacity(8, 13, 1.0, 4) == 3      # 3.25
  assert real_capacity(8, 14, 1.0, 4) == 4      # 3.5 rounds up
  assert real_capacity(8, 1, 1.0, 4) == 1       # 0.25 -> at least one slot
  assert real_capacity(8, 0, 1.0, 4) == 0       # an all-padding group gets none
  assert real_capacity(4, 32, 1.0, 4) == 4      # never above the static capacity
