"""Blocks as mesh-tf layer stacks: residual + norm placement against numpy, layer classes."""

import gin
import numpy as np
import pytest
from mesh_tensorflow.transformer import transformer, transformer_layers

import harness
from brainformer_tf import blocks
from brainformer_tf.layers import attention, ffn

def _stack(text, defaults):
  factories = blocks.block_layers(text, defaults, mesh_shape="", layout_rules="")
  layers = []
  for n, factory in enumerate(factories):
    layer = factory()
    layer.set_name(f"layer_{n:03d}")
    layers.append(layer)
  return transformer.LayerStack(layers, sublayers_initial=[],
                                sublayers_per_layer=[blocks.sublayer_residual_norm],
                                sublayers_final=[blocks.sublayer_final_norm])


@pytest.mark.parametrize("norm_type", ["rms", "layer_norm"])
@pytest.mark.parametrize("placements", [("pre", "pre"), ("post", "post"),
                                        ("sandwich", "sandwich"), ("post", "pre"),
                                        ("pre", "sandwich")])
def test_norm_placement_matches_numpy(placements, norm_type):
  text = " ".join(f"f[norm={p}]" for p in placements)
  stack = _stack(text, blocks.BlockDefaults(d_ff=6, ffn_activation="gelu", norm_type=norm_type))
  x = np.random.RandomState(0).randn(2, 3, 8).astype(np.float32) * 3
  first = harness.run_layer(stack, x)
  rng = np.random.RandomState(1)
  values = {k: rng.randn(*v.shape).astype(np.float32) for k, v in first.variables.items()}
  run = harness.run_layer(stack, x, variables=values)
  norms_per_layer = {"pre": 1, "post": 1, "sandwich": 2}
  scales = 1 + (norm_type == "layer_norm")  # layer norm: scale and bias
  expected_count = (sum(2 + scales * norms_per_layer[p] for p in placements)
                    + (0 if placements[-1] == "post" else scales))
  assert len(values) == expected_count
  np.testing.assert_allclose(run.y, harness.numpy_stack(x, values, placements, norm_type, "gelu"),
                             rtol=1e-4, atol=1e-4)


def test_letters_build_the_configured_layer_classes():
  defaults = blocks.BlockDefaults(num_heads=4, d_kv=16, d_ff=64, ffn_activation="relu")
  a, a_dconv, f, f_wide = [factory() for factory in blocks.block_layers(
      "a[h=2] a[dconv=3,norm=post] f f[H=128,act=squared_relu]", defaults,
      mesh_shape="", layout_rules="")]
  assert type(a) is transformer_layers.SelfAttention  # pylint: disable=unidiomatic-typecheck
  assert (a.num_heads, a.key_value_size) == (2, 16)
  assert isinstance(a_dconv, attention.MultiDConvHeadAttention)
  assert (a_dconv.num_heads, a_dconv.dconv_width) == (4, 3)
  assert a_dconv.block_norm == blocks.BlockNorm("post", "rms")
  assert isinstance(f, ffn.DenseFFN) and (f.hidden_size, f.activation) == (64, "relu")
  assert (f_wide.hidden_size, f_wide.activation) == (128, "squared_relu")


def test_each_call_builds_fresh_layers():
  """make_layer_stack calls a factory once per repeat; each block needs its own objects."""
  factory, = blocks.block_layers("f", blocks.BlockDefaults(d_ff=8), mesh_shape="",
                                 layout_rules="")
  assert factory() is not factory()


def test_layer_constructor_errors_name_the_sub_layer():
  """A Gin binding the layer class rejects is reported with the sub-layer index."""
  gin.bind_parameter("transformer_layers.SelfAttention.shared_kv", True)
  try:
    with pytest.raises(blocks.BlockSpecError,
                       match=r"sub-layer 1 \(a\): MultiDConvHeadAttention does not support "
                             r"shared_kv"):
      blocks.validate("f a[dconv=3]", defaults=blocks.BlockDefaults(num_heads=2, d_ff=8))
  finally:
    gin.clear_config()
