"""TensorBoard scalars of one MoE layer (training only), written by plain tf.summary ops.

mtf.scalar_summary only reaches TensorBoard through the TPU host call; on CPU/GPU the
Estimator writes the tf.summary ops of the graph (every save_summary_steps, default 100).
Tags: moe/<layer variable scope>/<metric>. Metrics (fractions are over real tokens):
  router_entropy            mean -sum_e S log S
  expert_load_min/max       tokens per expert per routing group (min/max over experts)
  routed_to_{0,1,2,3plus}   fraction of tokens processed by that many experts
  dropped_fraction          token-choice: share of requested assignments that got no slot
  dropped_fraction_q{1..4}  the same by quarter of the sequence (position)
  aux_loss, z_loss          the losses this layer adds (z_loss unscaled)
"""

from typing import Optional

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf


class _ScalarSummary(mtf.Operation):
  """Lowers a scalar mtf tensor to tf.summary.scalar(tag) at the top-level name scope."""

  def __init__(self, tag: str, x: mtf.Tensor):
    super().__init__([x], x.mesh, name="moe_summary")
    self._tag = tag
    self._outputs = []

  @property
  def has_gradient(self):
    return False

  def lower(self, lowering):
    value = lowering.tensors[self.inputs[0]].to_laid_out_tensor().tensor_list[0]
    with tf.get_default_graph().name_scope(None):
      tf.summary.scalar(self._tag, value)


def _ratio(numerator, denominator):
  return mtf.reduce_sum(numerator) / mtf.maximum(mtf.reduce_sum(denominator), 1.0)


def add_routing_summaries(prefix: str, routing, scores: mtf.Tensor, real: mtf.Tensor,
                          tokens_routed: mtf.Tensor, positions: Optional[mtf.Tensor],
                          sequence_length: Optional[int], z_loss: Optional[mtf.Tensor]):
  """scores [G,S,E]; real, tokens_routed (experts per token), positions: [G,S]."""
  def scalar(name, x):
    _ScalarSummary(f"{prefix}/{name}", mtf.to_float(x))

  expert_dim = scores.shape.dims[-1]
  entropy = -mtf.reduce_sum(scores * mtf.log(scores + 1e-9), reduced_dim=expert_dim)
  scalar("router_entropy", _ratio(entropy * real, real))
  load = mtf.reduce_mean(mtf.reduce_sum(routing.valid, reduced_dim=routing.valid.shape.dims[-1]),
                         output_shape=[routing.valid.shape.dims[1]])     # [E]
  scalar("expert_load_min", mtf.reduce_min(load))
  scalar("expert_load_max", mtf.reduce_max(load))
  for count in range(3):
    scalar(f"routed_to_{count}",
           _ratio(mtf.to_float(mtf.equal(tokens_routed, float(count))) * real, real))
  scalar("routed_to_3plus", _ratio(mtf.to_float(mtf.greater(tokens_routed, 2.5)) * real, real))
  if routing.requested is not None:
    dropped = (routing.requested - tokens_routed) * real
    scalar("dropped_fraction", _ratio(dropped, routing.requested))
    if positions is not None:
      quarter = mtf.floordiv(positions * 4, sequence_length)
      for q in range(4):
        in_q = mtf.to_float(mtf.equal(quarter, q))
        scalar(f"dropped_fraction_q{q + 1}", _ratio(dropped * in_q, routing.requested * in_q))
  if routing.aux_loss is not None:
    scalar("aux_loss", routing.aux_loss)
  if z_loss is not None:
    scalar("z_loss", z_loss)
