"""Runs one Mesh-TF layer on numpy inputs, for tests against numpy references.

`run_layer(layer, x)` builds a fresh mtf graph holding `layer.call(context, x)` inside a
minimal decoder-only Unitransformer context, lowers it on a PlacementMeshImpl (1 device, or a
multi-device CPU mesh given by mesh_shape/layout), initialises variables with a fixed seed and
returns the output, the layer's variables (by name, without the scope prefix) and the values of
the auxiliary losses the layer appended. Optionally also gradients of sum(y * dy) w.r.t. the
variables and x.
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np

from brainformer_tf import compat

compat.apply()

import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top
from mesh_tensorflow.transformer import transformer  # pylint: disable=g-import-not-at-top
import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

TRAIN = tf.estimator.ModeKeys.TRAIN
EVAL = tf.estimator.ModeKeys.EVAL


@dataclasses.dataclass
class LayerRun:
  y: np.ndarray
  variables: Dict[str, np.ndarray]
  losses: List[float]
  grads: Optional[Dict[str, np.ndarray]] = None   # variable name (and "x") -> d sum(y*dy)
  fetched: Optional[Dict[str, np.ndarray]] = None
  # every variable (trainable or not) read again after the step, e.g. state the layer assigns
  variables_after: Optional[Dict[str, np.ndarray]] = None


def run_layer(layer, x: np.ndarray, *, mode=TRAIN, sequence_id: Optional[np.ndarray] = None,
              mesh_shape="", layout="", dy: Optional[np.ndarray] = None, seed: int = 0,
              scope="layer", variables: Optional[Dict[str, np.ndarray]] = None,
              fetch=None, causal: bool = False) -> LayerRun:
  """Runs `layer` on x [batch, length, d_model] (float32).

  sequence_id: optional int [batch, length], 0 marks padding (Context.nonpadding); None leaves
    the context without a padding mask, as in unpacked evaluation and decoding.
  variables: optional values to assign (by name, trainable or not) before running, e.g. from
    another run; variables not named keep their initial values.
  fetch: optional callable(context, y) -> {name: mtf.Tensor} of extra tensors to return.
  causal: give the context the decoder's causal read/write priorities (position t may attend to
    positions <= t), as Unitransformer does for autoregressive models; needed by attention.
  """
  batch, length, d_model = x.shape
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  mesh_shape = mtf.convert_to_shape(mesh_shape)
  layout_rules = mtf.convert_to_layout_rules(layout)
  batch_dim = mtf.Dimension("batch", batch)
  length_dim = mtf.Dimension("length", length)
  model_dim = mtf.Dimension("d_model", d_model)
  with tf.Graph().as_default() as tf_graph:
    tf.random.set_random_seed(seed)
    model = transformer.Unitransformer(
        layer_stack=transformer.LayerStack([]), d_model=d_model, input_vocab_size=16,
        output_vocab_size=16, autoregressive=True, max_length=length,
        layout=layout_rules, mesh_shape=mesh_shape)
    x_mtf = mtf.import_tf_tensor(mesh, tf.constant(x, tf.float32),
                                 mtf.Shape([batch_dim, length_dim, model_dim]))
    seq = None
    if sequence_id is not None:
      seq = mtf.import_tf_tensor(mesh, tf.constant(sequence_id, tf.int32),
                                 mtf.Shape([batch_dim, length_dim]))
    position = mtf.range(mesh, length_dim, tf.int32)
    priority = position if causal else None
    context = transformer.Context(
        model=model, mesh=mesh, batch_dims=[batch_dim], length_dim=length_dim,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32), mode=mode,
        losses=[], sequence_id=seq, position=position, position_is_default=True,
        read_priority=priority, write_priority=priority)
    with tf.variable_scope(scope):
      y = layer.call(context, x_mtf)
    extra = fetch(context, y) if fetch else {}
    mtf_vars = graph.trainable_variables
    grad_targets = []
    if dy is not None:
      dy_mtf = mtf.import_tf_tensor(mesh, tf.constant(dy, tf.float32), y.shape)
      objective = mtf.reduce_sum(y * dy_mtf)
      grad_targets = mtf.gradients([objective], [v.outputs[0] for v in mtf_vars] + [x_mtf])
    devices = [""] * max(1, mesh_shape.size)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mesh_shape, layout_rules, devices)
    lowering = mtf.Lowering(graph, {mesh: mesh_impl})
    names = [_short_name(v.name, scope) for v in mtf_vars]
    y_tf = lowering.export_to_tf_tensor(y)
    var_tf = [lowering.export_to_tf_tensor(v.outputs[0]) for v in mtf_vars]
    loss_tf = [lowering.export_to_tf_tensor(l) for l in context.losses]
    grad_tf = [lowering.export_to_tf_tensor(g) for g in grad_targets]
    extra_tf = {k: lowering.export_to_tf_tensor(t) for k, t in extra.items()}
    all_vars = graph.all_variables
    all_names = [_short_name(v.name, scope) for v in all_vars]
    all_var_tf = [lowering.export_to_tf_tensor(v.outputs[0]) for v in all_vars]
    assign_ops = [tf.assign(_master(v), variables[name])
                  for v, name in zip(all_vars, all_names) if name in (variables or {})]
    with tf.Session(graph=tf_graph) as session:
      session.run(tf.global_variables_initializer())
      if assign_ops:
        session.run(assign_ops)
      session.run(lowering.copy_masters_to_slices())
      y_np, var_np, loss_np, grad_np, extra_np = session.run(
          [y_tf, var_tf, loss_tf, grad_tf, extra_tf])
      after_np = session.run(all_var_tf)
  grads = None
  if dy is not None:
    grads = dict(zip(names + ["x"], grad_np))
  return LayerRun(y=y_np, variables=dict(zip(names, var_np)),
                  losses=[float(l) for l in loss_np], grads=grads, fetched=extra_np,
                  variables_after=dict(zip(all_names, after_np)))


def _master(variable):
  """The tf.Variable holding an mtf.Variable's master copy (mtf has no public accessor)."""
  return variable._master  # pylint: disable=protected-access


def _short_name(name: str, scope: str) -> str:
  prefix = scope + "/"
  return name[len(prefix):] if name.startswith(prefix) else name
