"""Brainformer blocks: a compact spec of heterogeneous sub-layers, built as a mesh-tf stack.

  spec   BlockSpec / SubLayer dataclasses, parse(text), str(spec) (canonical notation)
  build  BlockDefaults (Gin), resolve, validate(spec, mesh_shape, layout_rules), block_layers
  norms  per-sub-layer residual + norm placement (pre / post / sandwich), rms or layer norm
"""

from brainformer_tf.blocks.build import block_layers
from brainformer_tf.blocks.build import BlockDefaults
from brainformer_tf.blocks.build import make_layer
from brainformer_tf.blocks.build import resolve
from brainformer_tf.blocks.build import validate
from brainformer_tf.blocks.norms import BlockNorm
from brainformer_tf.blocks.norms import sublayer_final_norm
from brainformer_tf.blocks.norms import sublayer_residual_norm
from brainformer_tf.blocks.spec import BlockSpec
from brainformer_tf.blocks.spec import BlockSpecError
from brainformer_tf.blocks.spec import parse
from brainformer_tf.blocks.spec import SubLayer

__all__ = ["BlockDefaults", "block_layers", "make_layer", "resolve", "validate", "BlockNorm",
           "sublayer_final_norm", "sublayer_residual_norm", "BlockSpec", "BlockSpecError",
           "SubLayer", "parse"]
