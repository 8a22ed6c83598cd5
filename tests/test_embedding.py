"""GatherVocabEmbedding: rows and table gradient against numpy, on one device and split meshes."""

import types

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.layers import embedding

VOCAB, D, BATCH, LENGTH = 12, 6, 4, 5


def _run(mesh_shape, layout, model_layout_unset=False):
  """x = embedding(ids) and dE of sum(x * r), lowered on a CPU mesh; also the TF op types.

  model_layout_unset: the model's layout and mesh shape are None, as in a model built with
  `utils.build_model(layout_rules=None)` (checkpoint checks, accounting).
  """
  rng = np.random.RandomState(0)
  ids_np = rng.randint(0, VOCAB, size=(BATCH, LENGTH))
  ids_np[0, :3] = 7  # repeated ids: their gradient rows must add up
  r_np = rng.randn(BATCH, LENGTH, D).astype(np.float32)
  vocab, d = mtf.Dimension("vocab", VOCAB), mtf.Dimension("d_model", D)
  batch, length = mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)
  with harness.mesh_graph(mesh_shape, layout) as g:
    context = types.SimpleNamespace(model=types.SimpleNamespace(
        layout=None if model_layout_unset else g.layout_rules,
        mesh_shape=None if model_layout_unset else g.mesh_shape))
    vocab_embedding = embedding.GatherVocabEmbedding(
        g.mesh, vocab, d, mtf.VariableDType(tf.float32, tf.float32, tf.float32), "embedding",
        ensemble_dim=None)
    ids = mtf.import_tf_tensor(g.mesh, tf.constant(ids_np, tf.int32), mtf.Shape([batch, length]))
    r = mtf.import_tf_tensor(g.mesh, tf.constant(r_np), mtf.Shape([batch, length, d]))
    x = vocab_embedding.ids_to_embedding(ids, context)
    table = g.graph.trainable_variables[0].outputs[0]
    d_table = mtf.gradients([mtf.reduce_sum(x * r)], [table])[0]
    with g.session() as s:
      table_np, got_x, got_d = s.run([table, x, d_table])
    op_types = {op.type for op in g.tf_graph.get_operations()}
  want_d = np.zeros_like(table_np)
  np.add.at(want_d, ids_np, r_np)  # dE[v] = sum of r over the positions holding id v
  return got_x, got_d, table_np[ids_np], want_d, op_types


@pytest.mark.parametrize("mesh_shape,layout,unset", [
    ("", "", False),                         # one device
    ("", "", True),                          # the model's layout and mesh shape left None
    ("b:2", "batch:b", False),               # data parallel: slices' row sums are all-reduced
    ("b:2;m:2", "batch:b;d_model:m", False),  # and the rows split over a second axis
])
def test_gather_rows_and_gradient_match_numpy(mesh_shape, layout, unset):
  got_x, got_d, want_x, want_d, op_types = _run(mesh_shape, layout, unset)
  np.testing.assert_allclose(got_x, want_x, rtol=1e-6)
  np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-6)
  assert "OneHot" not in op_types and "UnsortedSegmentSum" in op_types


def test_split_vocab_keeps_mesh_tf_one_hot_einsum():
  got_x, got_d, want_x, want_d, op_types = _run("m:2", "vocab:m")
  np.testing.assert_allclose(got_x, want_x, rtol=1e-6)
  np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-6)
  assert "OneHot" in op_types
