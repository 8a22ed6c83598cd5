"""Residual + norm around each sub-layer, with the placement chosen per sub-layer.

For a sub-layer F with input x (N = rms or layer norm, its own scale per use):
  pre       y = x + F(N(x))            (default; mesh-tf's rms_norm -> call -> residual)
  post      y = N(x + F(x))            (original Transformer)
  sandwich  y = x + N2(F(N(x)))        (norm on both sides of F, inside the residual)
The stack ends with a final N unless its last sub-layer is post-norm (already normalised).

Use in Gin (gin/models/includes/block_base.gin):
  transformer.LayerStack.sublayers_per_layer = [@blocks.sublayer_residual_norm]
  transformer.LayerStack.sublayers_final = [@blocks.sublayer_final_norm]
Layers built by `blocks.build` carry their placement as `layer.block_norm`; any other layer
(e.g. a plain mesh-tf layer in the same stack) is treated as pre-norm with rms norm. Variable
names for pre/rms equal mesh-tf's: <layer>/rms_norm/scale, and the final rms_norm/scale.
"""

import dataclasses

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer

NORM_TYPES = ("rms", "layer_norm")


@dataclasses.dataclass(frozen=True)
class BlockNorm:
  placement: str = "pre"     # spec.NORM_PLACEMENTS
  norm_type: str = "rms"     # NORM_TYPES


def _norm(x, layer_stack, context, norm_type, prefix):
  """Variables: {prefix}rms_norm/scale, or {prefix}norm/layer_norm/layer_norm_{scale,bias}."""
  if norm_type == "rms":
    return transformer.sublayer_rms_norm(x, layer_stack, context, name=prefix + "rms_norm")
  return mtf.layers.layer_norm(x, context.model.model_dim, name=prefix + "norm")


def _block_norm(layer) -> BlockNorm:
  return getattr(layer, "block_norm", None) or BlockNorm()


@gin.configurable(module="blocks")
def sublayer_residual_norm(x, layer_stack, context):
  """Norm, call, residual and norm again per the current layer's BlockNorm (see module doc)."""
  norm = _block_norm(context.current_layer)
  y = x
  if norm.placement in ("pre", "sandwich"):
    y = _norm(y, layer_stack, context, norm.norm_type, "")
  y = transformer.sublayer_call_layer(y, layer_stack, context)
  if norm.placement == "sandwich":
    y = _norm(y, layer_stack, context, norm.norm_type, "post_")
  y = transformer.sublayer_residual(y, layer_stack, context)
  if norm.placement == "post":
    y = _norm(y, layer_stack, context, norm.norm_type, "")
  return y


@gin.configurable(module="blocks")
def sublayer_final_norm(x, layer_stack, context):
  """The stack's final norm, skipped when its last sub-layer is post-norm."""
  norm = _block_norm(layer_stack.layers[-1]) if layer_stack.layers else BlockNorm()
  if norm.placement == "post":
    return x
  return _norm(x, layer_stack, context, norm.norm_type, "")
