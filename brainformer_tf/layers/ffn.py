"""Feed-forward networks, shared by dense FFN sub-layers and by every MoE expert.

  y = W_o act(x W_i)                          relu, gelu, squared_relu (Primer)
  y = W_o (act(x W_i0) * (x W_i1))            gated_relu, gated_gelu (GLU variants, 3 matrices)

Shapes: x [..., d_model] -> hidden [..., hidden] -> y [..., d_model]. With `expert_dims`
(e.g. [experts]) every expert has its own W_i/W_o: W_i [experts, d_model, hidden].
"""

from typing import List, Optional, Sequence

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer

# Activation name -> mtf.layers.dense_product activation list (one entry per input matrix).
ACTIVATIONS = {
    "relu": ["relu"],
    "gelu": ["gelu"],
    "squared_relu": ["squared_relu"],
    "gated_relu": ["relu", "linear"],
    "gated_gelu": ["gelu", "linear"],
}


def activation_functions(name: str, where: str = "activation") -> List[str]:
  """The dense_product activation list for `name`; unknown names are a ValueError naming `where`."""
  if name not in ACTIVATIONS:
    raise ValueError(f"{where}={name!r} is not a known activation; choose one of "
                     f"{sorted(ACTIVATIONS)}")
  return list(ACTIVATIONS[name])


def num_input_matrices(activation: str) -> int:
  """2 for gated (GLU) activations, 1 otherwise: the FFN has this many + 1 weight matrices."""
  return len(activation_functions(activation))


def feed_forward(x: mtf.Tensor, hidden_dim: mtf.Dimension, activation: str,
                 variable_dtype: mtf.VariableDType,
                 expert_dims: Optional[Sequence[mtf.Dimension]] = None,
                 output_dim: Optional[mtf.Dimension] = None, name: str = "ffn") -> mtf.Tensor:
  """Applies the FFN over the last dimension of x (d_model) and returns x's shape.

  Variables: {name}/wi (or wi_0, wi_1 when gated) [expert_dims..., d_model, hidden] and
  {name}/wo [expert_dims..., hidden, d_model]; the same names as mesh-tf's DenseReluDense/MoE1D
  when name is "" so checkpoints stay compatible.
  """
  io_dim = output_dim or x.shape.dims[-1]
  prefix = f"{name}/" if name else ""
  h = mtf.layers.dense_product(
      x, reduced_dims=x.shape.dims[-1:], new_dims=hidden_dim,
      activation_functions=activation_functions(activation), use_bias=False,
      variable_dtype=variable_dtype, name=prefix + "wi", expert_dims=expert_dims)
  return mtf.layers.dense(
      h, io_dim, reduced_dims=[hidden_dim], use_bias=False, activation=None,
      variable_dtype=variable_dtype, name=prefix + "wo", expert_dims=expert_dims)


@gin.configurable
class DenseFFN(transformer.TransformerLayer):
  """Dense FFN sub-layer `f`: x [batch, length, d_model] -> [batch, length, d_model].

  Gin: hidden_size (the FFN hidden width, dim name d_ff, split over `model` by the default
  layout), activation (one of ACTIVATIONS).
  """

  def __init__(self, hidden_size: int = gin.REQUIRED, activation: str = "gated_gelu"):
    activation_functions(activation, "DenseFFN.activation")
    if hidden_size is gin.REQUIRED or int(hidden_size) <= 0:
      raise ValueError(f"DenseFFN.hidden_size={hidden_size!r}: must be a positive integer")
    self.hidden_size = int(hidden_size)
    self.activation = activation

  def call(self, context, x, losses=None):
    del losses
    return feed_forward(x, mtf.Dimension("d_ff", self.hidden_size), self.activation,
                        context.variable_dtype, name="")
