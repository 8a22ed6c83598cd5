"""Mixture-of-experts layers: expert choice (plain, capped, causal) and GLaM top-2.

  from brainformer_tf.layers.moe import MoE
  MoE(num_experts=8, hidden_size=256, gating="expert_choice", capacity_factor=2.0)

Modules: router (gatings -> routing decision), dispatch (einsum / gather dispatch and
combine), layer (the MoE TransformerLayer), summaries (TensorBoard scalars). docs/moe.md
explains the design choices.
"""

from brainformer_tf.layers.moe.layer import MoE
from brainformer_tf.layers.moe.router import GATINGS

__all__ = ["MoE", "GATINGS"]
