"""Brainformer blocks: a compact spec of heterogeneous sub-layers, built as a mesh-tf stack.

  spec   BlockSpec / SubLayer dataclasses, parse(text), str(spec) (canonical notation)
  build  BlockDefaults (Gin), resolve, validate(spec, mesh_shape, layout_rules), block_layers
  norms  per-sub-layer residual + norm placement (pre / post / sandwich), rms or layer norm
"""

from brainformer_tf import compat

compat.apply()

# pylint: disable=g-import-not-at-top,wrong-import-position
from brainformer_tf.blocks.build import BlockDefaults, block_layers, make_layer, resolve, validate
from brainformer_tf.blocks.norms import BlockNorm, sublayer_final_norm, sublayer_residual_norm
from brainformer_tf.blocks.spec import BlockSpec, BlockSpecError, SubLayer, parse
