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
  np.testing.assert_allclose(run.y, harness.numpy_attention(x, run.variables, heads, d_kv, seq),
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
  assert set(np.unique(harness.numpy_buckets(np.arange(40), np.arange(40), 8))) == set(range(7))
  np.testing.assert_allclose(run.y, harness.numpy_attention(x, values, 2, 4, seq, num_buckets=8),
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
  expected = harness.numpy_attention(x, values, 2, 4, seq, num_buckets=32, dconv_width=width)
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
