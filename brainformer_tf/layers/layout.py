"""How the model's layout splits a tensor dimension over the mesh, seen from inside a layer."""

import mesh_tensorflow as mtf


def split_ways(context, dim):
  """Number of mesh slices `dim` is split into by `context.model`'s layout and mesh shape
  (1 when not split, or when the model was built without them, e.g. layout_rules=None)."""
  return mtf.tensor_dim_to_mesh_dim_size(context.model.layout or "",
                                         context.model.mesh_shape or "", dim)
