"""FFN variants against a numpy reference (y = W_o act(x W_i) and its GLU forms)."""

import numpy as np
import pytest
from scipy import special

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
