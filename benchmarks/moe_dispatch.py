"""Forward+backward time of the MoE layer with einsum vs gather dispatch on this machine.

  .venv/bin/python benchmarks/moe_dispatch.py [--out benchmarks/results/moe_dispatch.json]

One graph per (gating, dispatch, experts, group size); times session.run of the layer's
output and all gradients (median of --repeats after --warmup runs). d_model 256, hidden 512,
4096 tokens, capacity factor 2. The ratio einsum/gather is the dispatch overhead estimate.
"""

import argparse
import collections
import contextlib
import json
import os
import platform
import time

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import tensorflow.compat.v1 as tf

from brainformer_tf.layers.moe import MoE
from tests import harness


def time_layer(gating, dispatch, num_experts, group_size, d_model=256, hidden=512, batch=8,
               length=512, warmup=2, repeats=5):
  """Median forward+backward seconds of the project's MoE layer."""
  return time_fwd_bwd(
      lambda: MoE(num_experts=num_experts, hidden_size=hidden, gating=gating, dispatch=dispatch,
                  group_size=group_size, capacity_factor=2.0),
      d_model=d_model, batch=batch, length=length, warmup=warmup, repeats=repeats)


@contextlib.contextmanager
def fwd_bwd_runner(make_layer, d_model=256, batch=8, length=512, packed=False,
                   input_grad=False, on_graph=None):
  """Yields run(trace=False) -> seconds of one session.run of layer output + all gradients
  (with trace=True: (seconds, {op type: microseconds}) from the TF step-stats timeline).

  make_layer() returns a mesh-tf TransformerLayer; it is called on a [batch, length, d_model]
  random input in TRAIN mode on a single-device mesh; the loss is sum(y^2). packed=True gives
  the context an all-ones sequence_id (packed training data without padding), which mesh-tf's
  stock MoE1D needs for its importance weights. input_grad=True also fetches the gradient
  w.r.t. the input (as a layer inside a model computes it). on_graph, if given, is called with
  the mtf.Graph once the layer is built. Several runners may be open at once (each has its own
  graph and session): `interleaved` alternates between them.
  """
  batch_dim, length_dim = mtf.Dimension("batch", batch), mtf.Dimension("length", length)
  model_dim = mtf.Dimension("d_model", d_model)
  with harness.mesh_graph(grappler=True) as g:   # timed as training runs it
    model = transformer.Unitransformer(
        layer_stack=transformer.LayerStack([]), d_model=d_model, input_vocab_size=16,
        output_vocab_size=16, autoregressive=True, max_length=length, layout="",
        mesh_shape="")  # mesh-tf's stock MoE1D reads the (empty) layout and mesh shape
    x_np = np.random.RandomState(0).randn(batch, length, d_model).astype(np.float32)
    x = mtf.import_tf_tensor(g.mesh, tf.constant(x_np), [batch_dim, length_dim, model_dim])
    context = transformer.Context(
        model=model, mesh=g.mesh, batch_dims=[batch_dim], length_dim=length_dim,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32),
        mode=tf.estimator.ModeKeys.TRAIN, losses=[],
        sequence_id=mtf.ones(g.mesh, mtf.Shape([batch_dim, length_dim]), tf.int32) if packed
        else None,
        position=mtf.range(g.mesh, length_dim, tf.int32), position_is_default=True)
    y = make_layer().call(context, x)
    loss = mtf.reduce_sum(mtf.square(y))
    variables = [v.outputs[0] for v in g.graph.trainable_variables]
    grads = mtf.gradients([loss], variables + ([x] if input_grad else []))
    if on_graph:
      on_graph(g.graph)
    with g.session() as s:
      fetches = s.export([loss] + grads)

      def run(trace=False):
        options, meta = (tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                         tf.RunMetadata()) if trace else (None, None)
        start = time.perf_counter()
        s.session.run(fetches, options=options, run_metadata=meta)
        seconds = time.perf_counter() - start
        if not trace:
          return seconds
        by_type = collections.Counter()
        for dev in meta.step_stats.dev_stats:
          for node in dev.node_stats:
            kind = node.timeline_label.split("=")[-1].split("(")[0].strip() or node.node_name
            by_type[kind] += node.op_end_rel_micros - node.op_start_rel_micros
        return seconds, dict(by_type.most_common())
      yield run


def interleaved(runs, warmup=2, repeats=5, stat="min"):
  """Seconds of each run() in `runs` ({name: run}), measured in rounds that run each once in
  turn (so drift of the machine's speed hits all alike): "min" or "median" of `repeats`
  rounds after `warmup`."""
  for _ in range(warmup):
    for run in runs.values():
      run()
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      times[name].append(run())
  reduce = np.min if stat == "min" else np.median
  return {name: float(reduce(t)) for name, t in times.items()}


def time_fwd_bwd(make_layer, d_model=256, batch=8, length=512, warmup=2, repeats=5,
                 stat="median", packed=False, profile=False, input_grad=False, on_graph=None):
  """Seconds of one fwd+bwd session.run of one layer ("median" or "min" of repeats; see
  fwd_bwd_runner); profile=True: (seconds, {op type: microseconds}) of one more, traced run."""
  with fwd_bwd_runner(make_layer, d_model, batch, length, packed, input_grad, on_graph) as run:
    seconds = interleaved({"layer": run}, warmup, repeats, stat)["layer"]
    return (seconds, run(trace=True)[1]) if profile else seconds


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
