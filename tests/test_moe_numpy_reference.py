"""The MoE numpy references of tests/harness.py checked on cases solvable by hand.

The references (EC eq. 1-4, the capped LP by Dykstra with bisection-solved KL projections,
GShard top-2 with capacity, threshold expert choice) are what tests/test_moe_*.py compare the
MoE layer with; tests/test_router_golden.py checks the router functions on their own.
"""

import numpy as np

from harness import numpy_capped_lp
from harness import real_capacity
from harness import water_fill


def test_water_fill_meets_its_total():
  # total 2 over [5, 1, 0.5, 0.25]: 5 saturates at 1, the rest scale by 4/7 to sum to 1.
  a = np.exp(water_fill(np.log([5.0, 1.0, 0.5, 0.25]), 2.0))
  np.testing.assert_allclose(a, [1, 4 / 7, 2 / 7, 1 / 7], rtol=1e-6)


def test_capped_lp_reference_splits_a_contested_token():
  # Both experts prefer token 0 (k = 1); with b = 1 the optimum gives expert 1 token 1.
  # (Dykstra needs many iterations when lambda is small: 0.01 and 1000 here; docs/moe.md.)
  scores = np.array([[0.9, 0.8], [0.5, 0.7], [0.1, 0.1], [0.2, 0.1]])
  np.testing.assert_allclose(numpy_capped_lp(scores, k=1, b=1.0, lam=0.01, iterations=1000),
                             [[1, 0], [0, 1], [0, 0], [0, 0]], atol=2e-3)
  np.testing.assert_allclose(numpy_capped_lp(scores, k=1, b=2.0, lam=0.01, iterations=1000),
                             [[1, 1], [0, 0], [0, 0], [0, 0]], atol=1e-3)


def test_real_capacity_rounds_half_up_and_keeps_one_slot():
  assert real_capacity(8, 13, 1.0, 4) == 3      # 3.25
  assert real_capacity(8, 14, 1.0, 4) == 4      # 3.5 rounds up
  assert real_capacity(8, 1, 1.0, 4) == 1       # 0.25 -> at least one slot
  assert real_capacity(8, 0, 1.0, 4) == 0       # an all-padding group gets none
  assert real_capacity(4, 32, 1.0, 4) == 4      # never above the static capacity
