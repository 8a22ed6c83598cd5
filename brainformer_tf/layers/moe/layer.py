"""The MoE TransformerLayer: router -> gating -> dispatch -> per-expert FFN -> combine.

x [batch..., (length,) d_model] is flattened and cut into G routing groups of S tokens
(G a multiple of the mesh dimension the batch is split over, as in mesh-tf). Experts are
ffn.feed_forward with expert_dims=[experts] (variables wi*/kernel [experts, d_model,
expert_hidden], wo/kernel [experts, expert_hidden, d_model]); the expert dimension is laid
out by the "experts" layout rule (expert parallelism), routing tensors keep it unsplit.
Router: router/kernel [d_model, E], in float32.
"""

import dataclasses
from typing import Optional

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import moe as mtf_moe
from mesh_tensorflow.transformer import transformer
import tensorflow.compat.v1 as tf

from brainformer_tf.layers import ffn
from brainformer_tf.layers import layout
from brainformer_tf.layers.moe import dispatch as dispatch_lib
from brainformer_tf.layers.moe import router
from brainformer_tf.layers.moe import summaries

_FLOAT32 = mtf.VariableDType(tf.float32, tf.float32, tf.float32)


@gin.configurable(module="brainformer_tf.layers.moe")
class MoE(transformer.TransformerLayer):
  """Mixture-of-experts sub-layer `g`: [..., d_model] -> [..., d_model].

  Args (all Gin-configurable):
    num_experts: E. hidden_size: expert FFN width. activation: a name in ffn.ACTIVATIONS
      (default "relu", GLaM's experts).
    gating: "expert_choice" (EC eq. 1-4), "expert_choice_capped" (EC with the capped LP),
      "expert_choice_causal" (threshold expert choice, causal), "top_2" (GShard/GLaM).
    capacity_factor: cf; every expert has round(cf * S / E) slots per group (= EC's k), so
      cf is the average number of experts per token (GLaM top-2 with 2S/E slots: cf = 2).
    group_size: maximum tokens S per routing group in training. When scoring (eval and
      score modes) every sequence is its own group, so a row's scores never depend on the
      other rows of its batch; capacity always follows a group's real (non-padding) tokens
      (router.real_capacity_mask).
    dispatch: "gather" (index-based, fast at small widths) or "einsum" (one-hot, mesh-tf).
    router_z_loss: coefficient of the ST-MoE router z-loss (0 = off; the paper is silent).
    aux_loss_coef: top-2 load-balancing loss coefficient (GLaM: 0.01); EC has none.
    second_policy: top-2 second expert "all" (GLaM) or "random" (GShard, training only).
    max_experts_per_token: b, the cap of the capped mode (>= capacity_factor to be feasible).
    dykstra_lambda, dykstra_iterations: capped LP entropy weight (EC: 0.001) and iterations
      (EC: at most 100).
    threshold_decay: EMA decay of the causal mode's per-expert thresholds.
    causal_capacity_multiplier: causal mode training capacity = this * k slots per expert.
  """

  def __init__(self, num_experts: int = gin.REQUIRED, hidden_size: int = gin.REQUIRED,
               activation: str = "relu", gating: str = "expert_choice",
               capacity_factor: float = 2.0, group_size: int = 1024, dispatch: str = "gather",
               router_z_loss: float = 0.0, aux_loss_coef: float = 0.01,
               second_policy: str = "all", max_experts_per_token: float = 2.0,
               dykstra_lambda: float = 0.001, dykstra_iterations: int = 100,
               threshold_decay: float = 0.99, causal_capacity_multiplier: float = 2.0):
    ffn.activation_functions(activation, "MoE.activation")
    _check_choice("gating", gating, tuple(router.GATINGS))
    _check_choice("dispatch", dispatch, dispatch_lib.DISPATCH_MODES)
    _check_choice("second_policy", second_policy, ("all", "random"))
    numbers = [("num_experts", num_experts), ("hidden_size", hidden_size),
               ("group_size", group_size), ("dykstra_iterations", dykstra_iterations),
               ("capacity_factor", capacity_factor), ("dykstra_lambda", dykstra_lambda),
               ("max_experts_per_token", max_experts_per_token),
               ("causal_capacity_multiplier", causal_capacity_multiplier),
               ("router_z_loss", router_z_loss), ("aux_loss_coef", aux_loss_coef),
               ("threshold_decay", threshold_decay)]
    for name, value in numbers:
      if value is not gin.REQUIRED and (isinstance(value, bool) or
                                        not isinstance(value, (int, float))):
        raise ValueError(f"MoE.{name}={value!r}: must be a number")
    for name, value in numbers[:4]:
      if value is gin.REQUIRED or int(value) != value or value < 1:
        raise ValueError(f"MoE.{name}={value!r}: must be a positive integer")
    for name, value in [("capacity_factor", capacity_factor), ("dykstra_lambda", dykstra_lambda),
                        ("max_experts_per_token", max_experts_per_token),
                        ("causal_capacity_multiplier", causal_capacity_multiplier)]:
      if not value > 0:
        raise ValueError(f"MoE.{name}={value!r}: must be > 0")
    for name, value in [("router_z_loss", router_z_loss), ("aux_loss_coef", aux_loss_coef)]:
      if value < 0:
        raise ValueError(f"MoE.{name}={value!r}: must be >= 0")
    if not 0 <= threshold_decay < 1:
      raise ValueError(f"MoE.threshold_decay={threshold_decay!r}: must be in [0, 1)")
    if gating == "expert_choice_capped" and max_experts_per_token < capacity_factor:
      raise ValueError(
          f"MoE.max_experts_per_token={max_experts_per_token} < MoE.capacity_factor="
          f"{capacity_factor}: the capped LP is infeasible (experts need cf tokens each on "
          f"average, tokens may give at most b)")
    self.num_experts = int(num_experts)
    self.hidden_size = int(hidden_size)
    self.activation = activation
    self.group_size = int(group_size)
    self.dispatch = dispatch
    self.router_z_loss = float(router_z_loss)
    self.config = router.RouterConfig(
        gating=gating, capacity_factor=float(capacity_factor),
        aux_loss_coef=float(aux_loss_coef), second_policy=second_policy,
        max_experts_per_token=float(max_experts_per_token),
        dykstra_lambda=float(dykstra_lambda), dykstra_iterations=int(dykstra_iterations),
        threshold_decay=float(threshold_decay),
        causal_capacity_multiplier=float(causal_capacity_multiplier))
    self.last_routing: Optional[router.Routing] = None  # of the latest call, for inspection

  @property
  def gating(self) -> str:
    return self.config.gating

  @property
  def capacity_factor(self) -> float:
    return self.config.capacity_factor

  def experts_per_token(self) -> float:
    """Average experts processing a token: 2 for top-2, cf (= k * E / n) for expert choice."""
    return 2.0 if self.gating == "top_2" else self.capacity_factor

  def call(self, context, x, losses=None):
    del losses
    if context.model.ensemble_dim:
      raise NotImplementedError("MoE does not support ensembles")
    scope = tf.get_variable_scope().name
    cfg = dataclasses.replace(self.config, layer_name=f"MoE '{scope}'")
    incremental = context.length_dim not in x.shape.dims
    if incremental and self.gating in router.NON_CAUSAL_GATINGS:
      raise ValueError(f"{cfg.layer_name}: gating={self.gating!r} chooses tokens among future "
                       "positions and cannot decode one token at a time; use "
                       "'expert_choice_causal' or 'top_2'")
    experts_dim = mtf.Dimension("experts", self.num_experts)
    problem = layout.split_problem("num_experts", experts_dim, context.model.mesh_shape,
                                   context.model.layout)
    if problem:
      raise ValueError(f"{cfg.layer_name}: {problem}")

    token_dims, model_dim = x.shape.dims[:-1], x.shape.dims[-1]
    batch_dim = token_dims[0]
    if context.train or incremental:
      num_groups, group_size = mtf_moe._split_into_groups(  # pylint: disable=protected-access
          x.shape.size // model_dim.size, self.group_size,
          layout.split_ways(context, batch_dim))
    else:  # scoring: each sequence is its own routing group (see the class docstring)
      group_size = context.length_dim.size
      num_groups = x.shape.size // model_dim.size // group_size
    group_dim = mtf.Dimension(batch_dim.name, num_groups)
    token_dim = mtf.Dimension("group", group_size)

    def grouped(t):
      return mtf.reshape(t, [group_dim, token_dim] + t.shape.dims[len(token_dims):])

    xg = grouped(x)
    nonpadding = context.nonpadding
    real = mtf.ones(x.mesh, token_dims, tf.float32)
    if isinstance(nonpadding, mtf.Tensor):
      real *= mtf.to_float(nonpadding)
    real = grouped(real)
    positions = None
    if not incremental:
      positions = grouped(mtf.broadcast(
          mtf.range(x.mesh, context.length_dim, tf.float32), token_dims))

    expert_dim = mtf.Dimension("expert_unsplit", self.num_experts)
    logits = mtf.layers.dense(mtf.to_float(xg), expert_dim, reduced_dims=[model_dim],
                              use_bias=False, variable_dtype=_FLOAT32, name="router")
    scores = mtf.softmax(logits, expert_dim)
    inputs = router.RouterInputs(logits=logits, scores=scores, real=real, positions=positions,
                                 train=context.train, incremental=incremental)
    routing = router.GATINGS[self.gating](inputs, cfg)
    self.last_routing = routing

    weights = dispatch_lib.gather_gates(routing.gates, routing.indices)
    expert_in = dispatch_lib.dispatch(xg, routing.indices, routing.valid, self.dispatch)
    capacity_dim = routing.indices.shape.dims[-1]
    # [E unsplit, G, C, M] -> [experts, G unsplit, C, M]: from batch- to expert-parallel.
    expert_in = mtf.reshape(expert_in, [experts_dim, mtf.Dimension("batch_unsplit", num_groups),
                                        capacity_dim, model_dim])
    expert_out = ffn.feed_forward(expert_in, mtf.Dimension("expert_hidden", self.hidden_size),
                                  self.activation, context.variable_dtype,
                                  expert_dims=[experts_dim], name="")
    expert_out = mtf.reshape(expert_out, [expert_dim, group_dim, capacity_dim, model_dim])
    y = dispatch_lib.combine(expert_out, routing.indices, routing.valid, weights, token_dim,
                             self.dispatch)
    y = mtf.reshape(y, x.shape)

    z_loss = router.router_z_loss(logits, real) if self.router_z_loss else None
    layer_losses = [l for l in [routing.aux_loss,
                                z_loss * self.router_z_loss if z_loss is not None else None]
                    if l is not None]
    if layer_losses and isinstance(context.losses, list):
      total = mtf.add_n(layer_losses)
      if context.num_microbatches and context.num_microbatches > 1:
        total /= float(context.num_microbatches)
      context.losses.append(mtf.cast(total, x.dtype))
    if context.train:
      summaries.add_routing_summaries(
          f"moe/{scope}", routing, scores, real,
          dispatch_lib.tokens_per_slot_count(routing.indices, routing.valid, token_dim),
          positions, context.length_dim.size, z_loss)
    if routing.updates:
      y = mtf.depend(y, routing.updates)
    return y


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"MoE.{name}={value!r} is not known; choose one of {list(choices)}")
