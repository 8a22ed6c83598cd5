"""Vocabulary embedding that looks rows up with a gather instead of mesh-tf's one-hot einsum.

mesh-tf's `VocabEmbedding.ids_to_embedding` is `mtf.gather`, i.e.
    x[b,l,d] = sum_v one_hot(ids)[b,l,v] E[v,d]
an einsum of 2·b·l·V·d FLOPs, and the same again for dE. A gather reads b·l rows of E; its
gradient is the segment sum dE[v,d] = sum_{(b,l): ids[b,l]=v} dx[b,l,d]. At 2048 tokens and a
4096-piece vocabulary the einsum pair was about a tenth of a CPU training step
(benchmarks/README.md, "Profiling").

`GatherVocabEmbedding` (Gin: `get_vocab_embedding_cls.cls = @GatherVocabEmbedding`) gathers
whenever the vocab dim is not split across the mesh and the table is [vocab, d_model]. When a
layout splits the vocab dim over a multi-device mesh, or the table has an ensemble dim, it
keeps mesh-tf's einsum, which handles those cases. The output, shape ids.shape + [d_model],
and the logits (`hidden_to_logits`, unchanged) are the same as mesh-tf's.
"""

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import tensorflow.compat.v1 as tf

from brainformer_tf.layers import layout


class _GatherRows(mtf.Operation):
  """x[ids..., d] = E[ids, d] for a table E [vocab, d] whose vocab dim is not split."""

  def __init__(self, weights, ids):
    super().__init__([weights, ids], name="embedding_gather")
    self._outputs = [mtf.Tensor(self, mtf.Shape(ids.shape.dims + weights.shape.dims[1:]),
                                weights.dtype)]

  def gradient(self, grad_ys):
    weights, ids = self.inputs
    return [_SegmentSumRows(ids, grad_ys[0], weights.shape).outputs[0], None]

  def lower(self, lowering):
    weights, ids = (lowering.tensors[t] for t in self.inputs)
    lowering.set_tensor_lowering(
        self.outputs[0], lowering.mesh_impl(self).slicewise(tf.gather, weights, ids))


class _SegmentSumRows(mtf.Operation):
  """dE[v, d] = sum over positions p with ids[p] = v of dx[p, d] (the gather's gradient).

  Each processor sums its slice of positions; slices split over mesh axes (data parallelism)
  are then all-reduced, as mesh-tf does for an einsum that reduces a split dim.
  """

  def __init__(self, ids, dx, weights_shape):
    super().__init__([ids, dx], name="embedding_gather_grad")
    self._outputs = [mtf.Tensor(self, weights_shape, dx.dtype)]

  def lower(self, lowering):
    ids, dx = self.inputs
    mesh_impl = lowering.mesh_impl(self)
    vocab_size = self.outputs[0].shape.dims[0].size
    summed = mesh_impl.slicewise(
        lambda i, g: tf.math.unsorted_segment_sum(g, i, vocab_size),
        lowering.tensors[ids], lowering.tensors[dx])
    axes = [a for a in map(mesh_impl.tensor_dimension_to_mesh_axis, ids.shape.dims)
            if a is not None]
    if axes:
      summed = mesh_impl.allreduce(summed, axes, "SUM")
    lowering.set_tensor_lowering(self.outputs[0], summed)


def _gathers(weights, vocab_dim, context):
  """True when rows can be gathered slice-wise: the vocab dim is first and not split."""
  return (weights.shape.dims[0] == vocab_dim and weights.shape.ndims == 2 and
          layout.split_ways(context, vocab_dim) == 1)


@gin.configurable
class GatherVocabEmbedding(transformer.VocabEmbedding):
  """mesh-tf's VocabEmbedding with a gather lookup (see the module docstring)."""

  def ids_to_embedding(self, ids, context):
    weights = self._embedding_weights
    if not _gathers(weights, self._vocab_dim, context):
      return super().ids_to_embedding(ids, context)
    x = _GatherRows(weights, ids).outputs[0]
    if self._scale_variable_like_classifier_weights:
      x *= self._output_dim.size ** 0.5
    return x
