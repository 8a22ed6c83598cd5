"""Feed-forward networks, shared by dense FFN sub-layers and by every MoE expert.

  y = W_o act(x W_i)                          relu, gelu, squared_relu (Primer)
  y = W_o (act(x W_i0) * (x W_i1))            gated_relu, gated_gelu (GLU variants, 3 matrices)

Shapes: x [..., d_model] -> hidden [..., hidden] -> y [..., d_model]. With `expert_dims`
(e.g. [experts]) every expert has its own W_i/W_o: W_i [experts, d_model, hidden].

GeLU is mesh-tf's tanh form, gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). mtf.gelu
writes it as 9 elementwise mtf ops, and mesh-tf's autodiff adds about twice as many to the
gradient: on a CPU each is a pass over the [tokens, hidden] activations, together more than the
FFN's three matmuls at d_model 128 (benchmarks/README.md). With `fused_gelu` (the default)
gelu and gated GeLU's product act(x W_i0) * (x W_i1) are one XLA-compiled kernel forward and one
per input backward, the gradient written out: d gelu/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi)
(1 + 3 * 0.044715 x^2), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)).
"""

import functools
import math
from typing import List, Optional, Sequence

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import tensorflow.compat.v1 as tf

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


@gin.configurable
def fused_gelu(enabled: bool = True) -> bool:
  """Gin `fused_gelu.enabled`: GeLU as one XLA kernel (True) or as mtf.gelu's ops (False)."""
  if not isinstance(enabled, bool):
    raise ValueError(f"fused_gelu.enabled={enabled!r}: must be True or False")
  return enabled


_SQRT_2_OVER_PI, _CUBIC = math.sqrt(2 / math.pi), 0.044715
_xla = functools.partial(tf.function, jit_compile=True, autograph=False)


def _tf_gelu(x):
  return 0.5 * x * (1.0 + tf.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * x * x * x)))


def _tf_gelu_grad(x, dy):
  """dy * d gelu(x) / dx."""
  x2 = x * x
  t = tf.tanh(_SQRT_2_OVER_PI * x * (1.0 + _CUBIC * x2))
  slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * _CUBIC * x2)
  return dy * slope


def _kernel(fn):
  """fn as one XLA-compiled function where the graph is plain; fn's own TF ops inside TF1
  control flow (mesh-tf's decoding while_loop, a TPU computation: TF cannot place an XLA
  function in a v1 while frame, and XLA fuses the ops there anyway)."""
  compiled = _xla(fn)

  def run(*tensors):
    graph = tf.get_default_graph()
    # pylint: disable-next=protected-access
    in_control_flow = graph._get_control_flow_context() is not None
    return (fn if in_control_flow else compiled)(*tensors)
  return run


_GELU, _GELU_GRAD = _kernel(_tf_gelu), _kernel(_tf_gelu_grad)
_GATED = _kernel(lambda a, b: _tf_gelu(a) * b)
_GATED_GRAD_A = _kernel(lambda a, b, dy: _tf_gelu_grad(a, dy * b))


def gelu(x: mtf.Tensor) -> mtf.Tensor:
  """gelu(x), one XLA kernel; its gradient one more."""
  return mtf.cwise(_GELU, [x], name="gelu", grad_function=lambda op, dy: [
      mtf.cwise(_GELU_GRAD, [op.inputs[0], dy], name="gelu_grad")])


def gated_gelu(a: mtf.Tensor, b: mtf.Tensor) -> mtf.Tensor:
  """gelu(a) * b for a, b of one shape, one XLA kernel; d/da and d/db one kernel each."""
  def grad(op, dy):
    a, b = op.inputs
    return [mtf.cwise(_GATED_GRAD_A, [a, b, dy], name="gated_gelu_grad_a"),
            mtf.cwise(_GATED, [a, dy], name="gated_gelu_grad_b")]
  return mtf.cwise(_GATED, [a, b], name="gated_gelu", grad_function=grad)


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
  functions = activation_functions(activation)
  if fused_gelu() and activation == "gated_gelu":   # the product is in the kernel too
    a, b = (mtf.layers.dense(x, hidden_dim, reduced_dims=x.shape.dims[-1:], use_bias=False,
                             variable_dtype=variable_dtype, name=f"{prefix}wi_{i}",
                             expert_dims=expert_dims) for i in range(2))
    h = gated_gelu(a, b)
  else:
    if fused_gelu():
      functions = [gelu if f == "gelu" else f for f in functions]
    h = mtf.layers.dense_product(
        x, reduced_dims=x.shape.dims[-1:], new_dims=hidden_dim,
        activation_functions=functions, use_bias=False,
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
