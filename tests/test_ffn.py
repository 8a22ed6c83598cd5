"""FFN variants against a numpy reference (y = W_o act(x W_i) and its GLU forms)."""

import gin
import mesh_tensorflow as mtf
import numpy as np
import pytest
from scipy import special
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.layers import ffn


@pytest.mark.parametrize("activation", sorted(ffn.ACTIVATIONS))
def test_dense_ffn_matches_numpy(activation):
  x = np.random.RandomState(0).randn(2, 5, 8).astype(np.float32)
  run = harness.run_layer(ffn.DenseFFN(hidden_size=12, activation=activation), x)
  expected_matrices = 3 if activation.startswith("gated_") else 2
  assert len(run.variables) == expected_matrices
  np.testing.assert_allclose(run.y, harness.numpy_ffn(x, run.variables, activation), rtol=1e-4,
                             atol=1e-5)


def _numpy_ffn_grads(x, variables, activation, dy):
  """Gradients of sum(y * dy) for harness.numpy_ffn, by the chain rule by hand; act' by central
  differences of the numpy activation (float64)."""
  act = harness.NUMPY_ACTIVATIONS[activation.replace("gated_", "")]
  slope = lambda z: (act(z + 1e-5) - act(z - 1e-5)) / 2e-5
  x, dy = x.astype(np.float64), dy.astype(np.float64)
  v = {k: w.astype(np.float64) for k, w in variables.items()}
  if activation.startswith("gated_"):
    a, b = x @ v["wi_0/kernel"], x @ v["wi_1/kernel"]
    h = act(a) * b
  else:
    a = x @ v["wi/kernel"]
    h = act(a)
  dh = dy @ v["wo/kernel"].T
  grads = {"wo/kernel": np.einsum("btf,btd->fd", h, dy)}
  if activation.startswith("gated_"):
    da, db = dh * b * slope(a), dh * act(a)
    grads.update({"wi_0/kernel": np.einsum("btd,btf->df", x, da),
                  "wi_1/kernel": np.einsum("btd,btf->df", x, db)})
    grads["x"] = da @ v["wi_0/kernel"].T + db @ v["wi_1/kernel"].T
  else:
    da = dh * slope(a)
    grads["wi/kernel"] = np.einsum("btd,btf->df", x, da)
    grads["x"] = da @ v["wi/kernel"].T
  return grads


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("activation", ["gelu", "gated_gelu"])
def test_gelu_ffn_gradients_match_numpy(activation, fused):
  """The fused GeLU kernels' written-out gradient (and mtf.gelu's autodiff, fused=False)."""
  gin.bind_parameter("fused_gelu.enabled", fused)
  rng = np.random.RandomState(1)
  x, dy = rng.randn(2, 2, 5, 8).astype(np.float32)
  # pre-activations of standard deviation ~2: GeLU's bend and both tails
  names = ["wi_0/kernel", "wi_1/kernel"] if activation.startswith("gated_") else ["wi/kernel"]
  weights = {n: (0.7 * rng.randn(8, 12)).astype(np.float32) for n in names}
  run = harness.run_layer(ffn.DenseFFN(hidden_size=12, activation=activation), x, dy=dy,
                          variables=weights)
  for name in names:
    np.testing.assert_array_equal(run.variables[name], weights[name])
  np.testing.assert_allclose(run.y, harness.numpy_ffn(x, run.variables, activation), rtol=1e-4,
                             atol=1e-5)
  expected = _numpy_ffn_grads(x, run.variables, activation, dy)
  assert sorted(run.grads) == sorted(expected)
  for name, grad in expected.items():
    np.testing.assert_allclose(run.grads[name], grad, rtol=1e-4, atol=1e-4, err_msg=name)


def test_gelu_is_one_kernel_forward_and_one_per_input_backward():
  """gated GeLU's graph: with fused_gelu, no Tanh outside the XLA-compiled functions."""
  counts = {}
  for fused in (True, False):
    gin.bind_parameter("fused_gelu.enabled", fused)
    with harness.mesh_graph() as g:
      x = mtf.import_tf_tensor(g.mesh, tf.ones([4, 8]), mtf.Shape(
          [mtf.Dimension("t", 4), mtf.Dimension("d_model", 8)]))
      y = ffn.feed_forward(x, mtf.Dimension("d_ff", 6), "gated_gelu",
                           mtf.VariableDType(), name="f")
      grads = mtf.gradients([mtf.reduce_sum(y)],
                            [v.outputs[0] for v in g.graph.trainable_variables])
      with g.session() as s:
        s.export(grads)
      ops = tf.get_default_graph().get_operations()
      counts[fused] = {t: sum(o.type == t for o in ops) for t in ("Tanh", "PartitionedCall")}
  assert counts[False]["Tanh"] >= 1 and counts[False]["PartitionedCall"] == 0
  assert counts[True]["Tanh"] == 0 and counts[True]["PartitionedCall"] == 3


def test_fused_gelu_switch_must_be_a_bool():
  gin.bind_parameter("fused_gelu.enabled", "no")
  with pytest.raises(ValueError, match="fused_gelu.enabled='no': must be True or False"):
    ffn.fused_gelu()


def test_gelu_reference_is_close_to_erf_gelu():
  x = np.linspace(-4, 4, 50)
  np.testing.assert_allclose(harness.numpy_gelu(x), 0.5 * x * (1 + special.erf(x / np.sqrt(2))),
                             atol=2e-3)


@pytest.mark.parametrize("kwargs,message", [
    ({"hidden_size": 8, "activation": "swishy"}, "DenseFFN.activation='swishy'"),
    ({"hidden_size": 0}, "DenseFFN.hidden_size=0"),
])
def test_bad_ffn_settings_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    ffn.DenseFFN(**kwargs)
