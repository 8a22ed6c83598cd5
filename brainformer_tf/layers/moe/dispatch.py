"""Dispatch tokens to expert slots and combine expert outputs, shared by every gating.

A routing decision is index-based: `indices [G, E, C]` (the position in its group of the
token that fills slot c of expert e, int32) and `valid [G, E, C]` (1 where the slot is
filled). G = groups (named like the batch dimension, so it is split like the batch), S =
tokens per group ("group"), E = experts ("expert_unsplit"), C = slots per expert
("expert_capacity"), M = d_model.

Two implementations of the same maps, chosen by `MoE.dispatch`:
  einsum: one-hot P[G,S,E,C] (GShard/mesh-tf); expert_in = einsum(x, P), y = einsum(out, P*w).
          Costs 2*G*S*E*C*M multiply-adds each way, about S/H times the expert FLOPs.
  gather: tf.gather / unsorted_segment_sum on the indices; costs G*E*C*M copies.
Both give expert_in [E, G, C, M] and y [G, S, M] = sum_{e,c: indices=s} w[g,e,c] out[e,g,c].
The tf functions run slice-wise (the G dimension may be split; S, E, C, M may not).
"""

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

DISPATCH_MODES = ("einsum", "gather")


def _flat_token_ids(indices, group_size, expert_order=False):
  """indices [g, E, C] -> row ids into the group-major token matrix [g * S, M]: [g, E, C], or
  [E, g, C] with expert_order (the int ids are transposed, not the token tensor)."""
  g = indices.shape.as_list()[0]
  ids = indices + tf.range(g)[:, None, None] * group_size
  return tf.transpose(ids, [1, 0, 2]) if expert_order else ids


def _gather_tokens_tf(x, indices):
  """x [g, S, M], indices [g, E, C] -> [E, g, C, M] (gathered straight into expert order)."""
  g, s, m = x.shape.as_list()
  return tf.gather(tf.reshape(x, [g * s, m]), _flat_token_ids(indices, s, expert_order=True))


def _scatter_tokens_tf(values, indices, group_size):
  """values [E, g, C, M], indices [g, E, C] -> [g, S, M], summing values that share a token."""
  e, g, c, m = values.shape.as_list()
  rows = tf.reshape(_flat_token_ids(indices, group_size, expert_order=True), [-1])

  @tf.custom_gradient
  def segment_sum(flat_values, ids):
    # The gradient is a plain gather: ids are never negative here, so TF's own gradient's
    # masking of negative ids (a select over the whole tensor) is not needed.
    return (tf.math.unsorted_segment_sum(flat_values, ids, g * group_size),
            lambda dy: (tf.gather(dy, ids), None))

  return tf.reshape(segment_sum(tf.reshape(values, [e * g * c, m]), rows), [g, group_size, m])


def gather_gates(gates: mtf.Tensor, indices: mtf.Tensor) -> mtf.Tensor:
  """gates [G, S, E] (float), indices [G, E, C] -> gates[g, indices[g,e,c], e]: [G, E, C].

  Differentiable with respect to gates (this is how the router receives gradients).
  """
  group_dim, _, expert_dim = gates.shape.dims
  gates = mtf.transpose(gates, [group_dim, expert_dim, gates.shape.dims[1]])
  return mtf.slicewise(lambda s, i: tf.gather(s, i, batch_dims=2), [gates, indices],
                       output_shape=indices.shape, output_dtype=gates.dtype,
                       splittable_dims=[group_dim], name="gather_gates")


def assign_slots(masks, capacity_dim: mtf.Dimension, priority=None):
  """First-come-first-served slots for token-choice assignments.

  masks: list of [G, S, E] 0/1 tensors in priority order (top-2: first choices, then second
    choices). Within one mask tokens are served in group order, or by increasing `priority`
    [G, S] (ties in group order) when given. A token is kept iff its position among the
    tokens already assigned to that expert is < C (GShard's cumsum rule).
  Returns indices [G, E, C] int32, valid [G, E, C] float32, kept [G, S, E] float32 (the
    assignments that got a slot). Not differentiable (routing decisions).
  """
  group_dim, token_dim, expert_dim = masks[0].shape.dims
  capacity = capacity_dim.size

  def fn(*tensors):
    masks_tf = [m > 0 for m in tensors[:len(masks)]]
    if priority is not None:
      order = tf.argsort(tensors[-1], axis=1, stable=True)       # [g, S]
      masks_tf = [tf.gather(m, order, batch_dims=1) for m in masks_tf]
    taken = tf.zeros_like(tf.cast(masks_tf[0][:, 0, :], tf.int32))  # [g, E]
    kept = tf.zeros_like(masks_tf[0])
    position = tf.zeros_like(tf.cast(masks_tf[0], tf.int32))
    for m in masks_tf:
      m_int = tf.cast(m, tf.int32)
      pos = tf.cumsum(m_int, axis=1, exclusive=True) + taken[:, None, :]
      keep = tf.logical_and(m, pos < capacity)
      taken += tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
      kept = tf.logical_or(kept, keep)
      position += tf.where(keep, pos, tf.zeros_like(pos))
    if priority is not None:                                     # back to group order
      inverse = tf.argsort(order, axis=1)
      kept = tf.gather(kept, inverse, batch_dims=1)
      position = tf.gather(position, inverse, batch_dims=1)
    where = tf.cast(tf.where(kept), tf.int32)                   # [N, 3] = (g, s, e)
    slot = tf.stack([where[:, 0], where[:, 2], tf.gather_nd(position, where)], axis=1)
    shape = tf.stack([tf.shape(kept)[0], expert_dim.size, capacity])
    indices = tf.scatter_nd(slot, where[:, 1], shape)
    valid = tf.scatter_nd(slot, tf.ones_like(where[:, 1], tf.float32), shape)
    return indices, valid, tf.cast(kept, tf.float32)

  inputs = [mtf.to_float(m) for m in masks] + ([mtf.to_float(priority)] if priority is not None
                                               else [])
  slots_shape = mtf.Shape([group_dim, expert_dim, capacity_dim])
  return mtf.slicewise(fn, inputs, output_shape=[slots_shape, slots_shape, masks[0].shape],
                       output_dtype=[tf.int32, tf.float32, tf.float32],
                       splittable_dims=[group_dim], grad_function=0, name="assign_slots")


def tokens_per_slot_count(indices: mtf.Tensor, valid: mtf.Tensor,
                          token_dim: mtf.Dimension) -> mtf.Tensor:
  """How many expert slots each token fills: [G, S] float32 (not differentiable)."""
  group_dim = indices.shape.dims[0]

  def fn(i, v):
    g = i.shape.as_list()[0]
    segments = tf.reshape(_flat_token_ids(i, token_dim.size), [-1])
    counts = tf.math.unsorted_segment_sum(tf.reshape(v, [-1]), segments, g * token_dim.size)
    return tf.reshape(counts, [g, token_dim.size])

  return mtf.slicewise(fn, [indices, valid], output_shape=[group_dim, token_dim],
                       output_dtype=tf.float32, splittable_dims=[group_dim], grad_function=0,
                       name="tokens_routed")


def dispatch(x: mtf.Tensor, indices: mtf.Tensor, valid: mtf.Tensor, mode: str) -> mtf.Tensor:
  """x [G, S, M] -> expert inputs [E, G, C, M] (empty slots hold zeros or an unused token)."""
  group_dim, token_dim, model_dim = x.shape.dims
  _, expert_dim, capacity_dim = indices.shape.dims
  out_shape = mtf.Shape([expert_dim, group_dim, capacity_dim, model_dim])
  if mode == "einsum":
    return mtf.einsum([x, _one_hot(indices, valid, token_dim, x.dtype)], out_shape)
  return mtf.slicewise(_gather_tokens_tf, [x, indices], output_shape=out_shape,
                       output_dtype=x.dtype, splittable_dims=[group_dim], name="moe_gather")


def combine(expert_out: mtf.Tensor, indices: mtf.Tensor, valid: mtf.Tensor,
            weights: mtf.Tensor, token_dim: mtf.Dimension, mode: str) -> mtf.Tensor:
  """expert_out [E, G, C, M], weights [G, E, C] -> y [G, S, M]; unrouted tokens get 0."""
  expert_dim, group_dim, _, model_dim = expert_out.shape.dims
  out_shape = mtf.Shape([group_dim, token_dim, model_dim])
  weights = mtf.cast(weights * valid, expert_out.dtype)
  if mode == "einsum":
    combine_tensor = _one_hot(indices, valid, token_dim, expert_out.dtype) * weights
    return mtf.einsum([expert_out, combine_tensor], out_shape)
  weighted = expert_out * weights
  return mtf.slicewise(lambda v, i: _scatter_tokens_tf(v, i, token_dim.size),
                       [weighted, indices], output_shape=out_shape, output_dtype=weighted.dtype,
                       splittable_dims=[group_dim], name="moe_scatter")


def _one_hot(indices, valid, token_dim, dtype):
  """P[G, E, C, S] = 1 iff slot (e, c) of group g holds token s."""
  return mtf.one_hot(indices, token_dim, dtype=dtype) * mtf.cast(valid, dtype)
