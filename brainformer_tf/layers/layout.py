"""How a layout splits a tensor dimension over the mesh: the one divisibility rule.

Used inside layers (split_ways from the model's context), by the block builder, the config
checks and the memory estimate (split_problem on given mesh shape and layout rules).
"""

from typing import Optional

import mesh_tensorflow as mtf


def split_ways(context, dim):
  """Number of mesh slices `dim` is split into by `context.model`'s layout and mesh shape
  (1 when not split, or when the model was built without them, e.g. layout_rules=None)."""
  return mtf.tensor_dim_to_mesh_dim_size(context.model.layout or "",
                                         context.model.mesh_shape or "", dim)


def split_problem(what: str, dim: mtf.Dimension, mesh_shape, layout_rules,
                  meaning: str = "") -> Optional[str]:
  """None when the layout splits `dim` into equal slices (or not at all), else why not:
  "H=60 (hidden size, dimension 'd_ff') is split over mesh dimension 'model' of size 8 and
  must be a multiple of it" (what="H", meaning="hidden size"). mesh_shape / layout_rules: mtf
  objects or strings ("" = one device).
  """
  mesh_shape = mtf.convert_to_shape(mesh_shape or "")
  layout_rules = mtf.convert_to_layout_rules(layout_rules or "")
  axis = layout_rules.tensor_dimension_to_mesh_axis(dim, mesh_shape)
  if axis is None or dim.size % mesh_shape.dims[axis].size == 0:
    return None
  mesh_dim = mesh_shape.dims[axis]
  return (f"{what}={dim.size} ({meaning + ', ' if meaning else ''}dimension {dim.name!r}) is "
          f"split over mesh dimension {mesh_dim.name!r} of size {mesh_dim.size} and must be a "
          "multiple of it")
