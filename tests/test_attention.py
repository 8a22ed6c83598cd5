"""Attention variants against a numpy multi-head attention reference.

Covers mesh-tf's SelfAttention as the `a` sub-layer uses it (heads, head size, causal mask,
packed sequences), GLaM's relative position bias (T5 buckets, unidirectional) and Primer's
causal depthwise convolution after the Q, K, V projections.
"""

import numpy as np
import pytest
from mesh_tensorflow.transformer import transformer_layers

import harness
from brainformer_tf.layers import attention


def numpy_buckets(query_pos, memory_pos, num_buckets, max_distance=128):
  """T5 relative position buckets for a decoder: distance n = max(q - m, 0)."""
  n = np.maximum(query_pos[:, None] - memory_pos[None, :], 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    large = max_exact + (np.log(np.maximum(n, 1) / max_exact) / np.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(np.int64)
  return np.where(n < max_exact, n, np.minimum(large, num_buckets - 1))


def numpy_dconv(u, taps, sequence_id):
  """u [b, t, h, k]; taps [width, h, k]; out[t] = sum_i taps[i] * u[t - i] within a segment."""
  out = np.zeros_like(u)
  for t in range(u.shape[1]):
    for i in range(taps.shape[0]):
      if t - i >= 0:
        same = (sequence_id[:, t] == sequence_id[:, t - i])[:, None, None]
        out[:, t] += taps[i] * u[:, t - i] * same
  return out


def numpy_attention(x, var, heads, d_kv, sequence_id, num_buckets=None, dconv_width=0):
  """Causal multi-head attention; weights laid out as mesh-tf's combined [d_model, heads*d_kv]."""
  b, t, d = x.shape
  proj = {n: (x @ var[n]).reshape(b, t, heads, d_kv) for n in "qkv"}
  if dconv_width:
    proj = {n: numpy_dconv(proj[n], np.stack([var[f"{n}_dconv/w_{i}"]
                                              for i in range(dconv_width)]), sequence_id)
            for n in "qkv"}
  logits = np.einsum("bqhk,bmhk->bhqm", proj["q"], proj["k"])  # scale folded into W_q init
  pos = np.arange(t)
  if num_buckets:
    logits += var["relative_attention_bias"][:, numpy_buckets(pos, pos, num_buckets)][None]
  visible = (pos[None, :] <= pos[:, None])[None] & (
      sequence_id[:, :, None] == sequence_id[:, None, :])
  logits = np.where(visible[:, None], logits, -1e9)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  o = np.einsum("bhqm,bmhk->bqhk", w, proj["v"]).reshape(b, t, heads * d_kv)
  return o @ var["o"]


def _inputs(length=7, d_model=8, seed=0):
  x = np.random.RandomState(seed).randn(2, length, d_model).astype(np.float32)
  sequence_id = np.ones((2, length), np.int32)
  sequence_id[1, length // 2:] = 2  # second row packs two examples
  return x, sequence_id


def _randomize(run, seed=1):
  """Random values for every variable (dconv taps and the bias are constant at init)."""
  rng = np.random.RandomState(seed)
  return {k: rng.randn(*v.shape).astype(np.float32) * 0.5 for k, v in run.variables.items()}


@pytest.mark.parametrize("heads,d_kv", [(2, 4), (3, 5), (1, 6)])
def test_self_attention_matches_numpy(heads, d_kv):
  x, seq = _inputs()
  layer = transformer_layers.SelfAttention(num_heads=heads, key_value_size=d_kv)
  run = harness.run_layer(layer, x, sequence_id=seq, causal=True)
  assert run.variables["q"].shape == (8, heads * d_kv)
  np.testing.assert_allclose(run.y, numpy_attention(x, run.variables, heads, d_kv, seq),
                             rtol=1e-4, atol=1e-5)


def test_relative_position_bias_matches_numpy():
  # length 40 with 8 buckets exercises both the exact and the logarithmic buckets.
  x, seq = _inputs(length=40)
  layer = transformer_layers.SelfAttention(
      num_heads=2, key_value_size=4, relative_attention_type="bias",
      relative_attention_num_buckets=8)
  first = harness.run_layer(layer, x, sequence_id=seq, causal=True)
  values = _randomize(first)
  assert values["relative_attention_bias"].shape == (2, 8)
  run = harness.run_layer(layer, x, sequence_id=seq, causal=True, variables=values)
  # distances 0..39 fill the exact buckets 0-3 and log buckets 4-6 (7 starts at distance 128)
  assert set(np.unique(numpy_buckets(np.arange(40), np.arange(40), 8))) == set(range(7))
  np.testing.assert_allclose(run.y, numpy_attention(x, values, 2, 4, seq, num_buckets=8),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width", [3, 2])
def test_dconv_attention_matches_numpy(width):
  x, seq = _inputs()
  layer = attention.MultiDConvHeadAttention(dconv_width=width, num_heads=2, key_value_size=4,
                                            relative_attention_type="bias")
  first = harness.run_layer(layer, x, sequence_id=seq, causal=True)
  np.testing.assert_allclose(first.variables["q_dconv/w_0"], 0.5)  # Primer's initial taps
  np.testing.assert_allclose(first.variables["k_dconv/w_1"], 0.5 / width)
  values = _randomize(first)
  run = harness.run_layer(layer, x, sequence_id=seq, causal=True, variables=values)
  expected = numpy_attention(x, values, 2, 4, seq, num_buckets=32, dconv_width=width)
  np.testing.assert_allclose(run.y, expected, rtol=1e-4, atol=1e-5)


def test_dconv_attention_is_causal():
  """Changing the input at position t+1 (and later) leaves outputs at 0..t unchanged."""
  x, _ = _inputs(length=9)
  seq = np.ones((2, 9), np.int32)
  layer = attention.MultiDConvHeadAttention(num_heads=2, key_value_size=4)
  base = harness.run_layer(layer, x, sequence_id=seq, causal=True)
  values = _randomize(base)
  y = harness.run_layer(layer, x, sequence_id=seq, causal=True, variables=values).y
  t = 4
  changed = x.copy()
  changed[:, t + 1:] += 10.0
  y2 = harness.run_layer(layer, changed, sequence_id=seq, causal=True, variables=values).y
  np.testing.assert_allclose(y2[:, :t + 1], y[:, :t + 1], rtol=1e-5, atol=1e-5)
  assert np.abs(y2[:, t + 1:] - y[:, t + 1:]).max() > 1e-2


def test_dconv_gradient_reaches_no_earlier_position():
  """d y[t] / d x[t+1] = 0: the gradient of output position t flows only to positions <= t."""
  x, _ = _inputs(length=6)
  seq = np.ones((2, 6), np.int32)
  layer = attention.MultiDConvHeadAttention(num_heads=2, key_value_size=4)
  values = _randomize(harness.run_layer(layer, x, sequence_id=seq, causal=True))
  dy = np.zeros_like(x)
  dy[:, 2] = 1.0
  grads = harness.run_layer(layer, x, sequence_id=seq, causal=True, variables=values,
                            dy=dy).grads
  assert np.abs(grads["x"][:, 3:]).max() == 0.0
  assert np.abs(grads["x"][:, :3]).max() > 0.0


def test_bad_dconv_width_is_named():
  with pytest.raises(ValueError, match="dconv_width=0"):
    attention.MultiDConvHeadAttention(dconv_width=0)
