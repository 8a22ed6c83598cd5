"""Forward+backward time of the MoE layer with einsum vs gather dispatch on this machine.

  .venv/bin/python benchmarks/moe_dispatch.py [--out benchmarks/results/moe_dispatch.json]

One graph per (gating, dispatch, experts, group size); times session.run of the layer's
output and all gradients (median of --repeats after --warmup runs). d_model 256, hidden 512,
4096 tokens, capacity factor 2. The ratio einsum/gather is the dispatch overhead estimate.
"""

import argparse
import json
import os
import platform
import time

import numpy as np

from brainformer_tf import compat

compat.apply()

import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top
from mesh_tensorflow.transformer import transformer  # pylint: disable=g-import-not-at-top
import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

from brainformer_tf.layers.moe import MoE  # pylint: disable=g-import-not-at-top


def time_layer(gating, dispatch, num_experts, group_size, d_model=256, hidden=512, batch=8,
               length=512, warmup=2, repeats=5):
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim, length_dim = mtf.Dimension("batch", batch), mtf.Dimension("length", length)
  model_dim = mtf.Dimension("d_model", d_model)
  with tf.Graph().as_default() as tf_graph:
    model = transformer.Unitransformer(
        layer_stack=transformer.LayerStack([]), d_model=d_model, input_vocab_size=16,
        output_vocab_size=16, autoregressive=True, max_length=length)
    x_np = np.random.RandomState(0).randn(batch, length, d_model).astype(np.float32)
    x = mtf.import_tf_tensor(mesh, tf.constant(x_np), [batch_dim, length_dim, model_dim])
    context = transformer.Context(
        model=model, mesh=mesh, batch_dims=[batch_dim], length_dim=length_dim,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32),
        mode=tf.estimator.ModeKeys.TRAIN, losses=[], sequence_id=None,
        position=mtf.range(mesh, length_dim, tf.int32), position_is_default=True)
    layer = MoE(num_experts=num_experts, hidden_size=hidden, gating=gating, dispatch=dispatch,
                group_size=group_size, capacity_factor=2.0)
    y = layer.call(context, x)
    loss = mtf.reduce_sum(mtf.square(y))
    variables = [v.outputs[0] for v in graph.trainable_variables]
    grads = mtf.gradients([loss], variables)
    lowering = mtf.Lowering(graph, {mesh: mtf.placement_mesh_impl.PlacementMeshImpl(
        mtf.Shape([]), mtf.convert_to_layout_rules(""), [""])})
    fetches = [lowering.export_to_tf_tensor(t) for t in [loss] + grads]
    with tf.Session(graph=tf_graph) as session:
      session.run(tf.global_variables_initializer())
      session.run(lowering.copy_masters_to_slices())
      for _ in range(warmup):
        session.run(fetches)
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        session.run(fetches)
        times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "moe_dispatch.json"))
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  rows = []
  for gating in ("expert_choice", "top_2"):
    for num_experts, group_size in ((8, 256), (16, 512), (32, 1024)):
      row = {"gating": gating, "num_experts": num_experts, "group_size": group_size,
             "d_model": 256, "hidden": 512, "tokens": 4096, "capacity_factor": 2.0}
      for dispatch in ("einsum", "gather"):
        row[f"{dispatch}_s"] = time_layer(gating, dispatch, num_experts, group_size,
                                          repeats=args.repeats)
      row["einsum_over_gather"] = row["einsum_s"] / row["gather_s"]
      print(json.dumps(row), flush=True)
      rows.append(row)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "what": "median forward+backward seconds", "rows": rows},
              f, indent=1)


if __name__ == "__main__":
  main()
