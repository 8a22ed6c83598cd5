"""Attention sub-layers beyond mesh-tf's SelfAttention.

The plain `a` sub-layer is mesh-tf's `transformer_layers.SelfAttention` itself (num_heads,
key_value_size, relative_attention_type="bias" for GLaM's per-layer relative position bias),
so its variables keep mesh-tf's names. This module adds Primer's multi-dconv-head attention:

  q_h = dconv(x W_q)_h,  k_h = dconv(x W_k)_h,  v_h = dconv(x W_v)_h     (per head h)
  dconv(u)[t, c] = sum_{i=0}^{width-1} w_i[c] * u[t - i, c]            (causal, depthwise)

u [batch, length, heads, d_kv]; w_i [heads, d_kv]; u[t - i] is zero before the sequence start
and, with packed examples, wherever position t - i belongs to another segment (sequence_id), so
position t never sees t + 1 nor a neighbouring packed example. Initial taps follow Primer:
w_0 = 0.5, w_i = 0.5 / width for i > 0.
"""

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer_layers
import tensorflow.compat.v1 as tf


def _taps(context, channels, width):
  """The conv's variables w_<i> [ensemble..., channels...], i < width (Primer's initial taps)."""
  return [mtf.get_variable(
      context.mesh, f"w_{i}", mtf.Shape(context.model.ensemble_dims + channels),
      initializer=tf.constant_initializer(0.5 if i == 0 else 0.5 / width),
      dtype=context.variable_dtype) for i in range(width)]


def causal_depthwise_conv(u, length_dim, width, context, sequence_id=None, name="dconv"):
  """dconv(u) above along `length_dim`; variables {name}/w_<i> shaped like u's channel dims.

  u: [batch..., length_dim, channels...]; channels = u's dims after length_dim.
  sequence_id: optional int tensor [batch..., length_dim]; taps never cross a change of id.
  """
  channels = u.shape.dims[u.shape.dims.index(length_dim) + 1:]
  with tf.variable_scope(name):
    out = None
    for i, w in enumerate(_taps(context, channels, width)):
      shifted = mtf.shift(u, i, length_dim, wrap=False) if i else u
      if i and sequence_id is not None:  # packed segments are contiguous runs of one id
        same = mtf.equal(mtf.shift(sequence_id, i, length_dim, wrap=False), sequence_id)
        shifted *= mtf.cast(same, shifted.dtype)
      out = shifted * w if out is None else out + shifted * w
  return out


def causal_depthwise_conv_step(u, history, position, memory_length, width, context,
                               name="dconv"):
  """One decoding step of the same conv: (dconv output at `position`, updated history).

  u: [batch..., channels...], the current position's input; history: [batch...,
  memory_length, channels...], the inputs of every position so far (zeros elsewhere);
  position: int [batch...]. Output = sum_i w_i * history[position - i] (zero before 0).
  """
  here = mtf.one_hot(position, memory_length, dtype=u.dtype)
  history = history * (1.0 - here) + u * here
  channels = u.shape.dims[len(position.shape.dims):]
  with tf.variable_scope(name):
    out = None
    for i, w in enumerate(_taps(context, channels, width)):
      back = mtf.one_hot(position - i, memory_length, dtype=u.dtype)  # all 0 when < 0
      tap = mtf.reduce_sum(history * back, reduced_dim=memory_length) * w
      out = tap if out is None else out + tap
  return out, history


class _DConvProjections:
  """AttentionParams whose compute_q/k/v apply `causal_depthwise_conv` after the projection."""

  def __init__(self, params, layer, context):
    self._params, self._layer, self._context = params, layer, context

  def __getattr__(self, name):
    return getattr(self._params, name)

  def _conv(self, projected, name):
    """The conv of one projection. Decoding state (mode "first_part" records it, "incremental"
    reads and updates it): that projection's pre-conv values [batch, memory_length, heads,
    d_kv], one state per projection, recorded before SelfAttention's key/value caches."""
    context = self._context
    memory_length = self._layer.memory_length(context)
    width = self._layer.dconv_width
    if context.mode == "incremental":
      history, = context.get_states(1)
      out, history = causal_depthwise_conv_step(projected, history, context.position,
                                                memory_length, width, context, name=name)
      context.record_new_states([history])
      return out
    if context.mode == "first_part":
      context.record_new_states([mtf.replace_dimensions(projected, context.length_dim,
                                                        memory_length)
                                 if context.length_dim in projected.shape.dims else projected])
    if context.length_dim in projected.shape.dims:
      length_dim, seq = context.length_dim, context.sequence_id
    else:  # keys and values run over memory_length
      length_dim = memory_length
      seq = context.sequence_id
      if isinstance(seq, mtf.Tensor):
        seq = mtf.replace_dimensions(seq, context.length_dim, length_dim)
    if not isinstance(seq, mtf.Tensor) or length_dim not in seq.shape.dims:
      seq = None
    return causal_depthwise_conv(projected, length_dim, width, context, seq, name=name)

  def compute_q(self, x):
    return self._conv(self._params.compute_q(x), "q_dconv")

  def compute_k(self, x):
    return self._conv(self._params.compute_k(x), "k_dconv")

  def compute_v(self, x):
    return self._conv(self._params.compute_v(x), "v_dconv")


@gin.configurable
class MultiDConvHeadAttention(transformer_layers.SelfAttention):
  """Primer's MDHA: SelfAttention with a causal depthwise conv after each Q, K, V projection.

  x [batch, length, d_model] -> [batch, length, d_model]. All SelfAttention arguments (and
  their Gin bindings, e.g. relative_attention_type) apply; dconv_width is the conv width (3 in
  Primer). Decodes one token at a time: each of Q, K, V keeps its pre-conv projections as
  decoding state next to mesh-tf's key/value caches (see _DConvProjections._conv).
  """

  def __init__(self, dconv_width: int = 3, **kwargs):
    if int(dconv_width) < 1:
      raise ValueError(f"MultiDConvHeadAttention.dconv_width={dconv_width!r}: must be >= 1")
    super().__init__(**kwargs)
    if self.shared_kv:
      raise ValueError("MultiDConvHeadAttention does not support shared_kv=True")
    self.dconv_width = int(dconv_width)

  def make_params(self, context):
    return _DConvProjections(super().make_params(context), self, context)
