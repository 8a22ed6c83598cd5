"""MoE layer overhead: forward+backward time of an MoE layer / a dense FFN of equal activated FLOPs.

  .venv/bin/python -m benchmarks.moe_overhead [--groups 256,512,1024,2048] [--experts 8,16,64]

Layers (d_model 256, expert hidden 512, ReLU experts, 8 x 512 = 4096 tokens, train mode):
  expert_choice  this project's MoE, expert-choice gating, capacity factor 2, gather dispatch
  top2_ours      this project's MoE, GLaM top-2 gating, capacity factor 2, gather dispatch
  top2_mesh_tf   mesh-tf's stock moe.MoE1D, top-2, capacity_factor_train 2, second policy "all"
                 (one-hot einsum dispatch)
  dense          mesh-tf DenseReluDense with hidden 2 x 512 = 1024: the same activated FLOPs
                 (every token meets 2 experts' worth of FFN under both gatings at c = 2)
For every (group size, experts) cell the four layers are built side by side and timed in
interleaved rounds, each layer once per round (moe_dispatch.interleaved: the speed of the
machines here drifts by up to 2x within minutes, so only interleaved ratios count); best of
--repeats rounds after --warmup, divided by the dense time of that cell. 1.0 is the physical
limit. Each cell also times the expert FFN's six matmuls alone against the dense FFN's
(matmul_floor): the part of the ratio that is TF's batched matmul kernels, not routing.
Writes results/moe_overhead.json (+ .png) and updates results/summary.json.
"""

import argparse
import contextlib
import os
import time

import matplotlib
import matplotlib.pyplot as plt
from mesh_tensorflow.transformer import moe as mtf_moe
from mesh_tensorflow.transformer import transformer_layers
import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from benchmarks import moe_dispatch  # time_fwd_bwd
from benchmarks import summary
from brainformer_tf.layers.moe import MoE

D_MODEL, HIDDEN, CAPACITY = 256, 512, 2.0


def layers(num_experts, group_size):
  """name -> zero-argument constructor of the layer."""
  return {
      "dense": lambda: transformer_layers.DenseReluDense(hidden_size=int(CAPACITY * HIDDEN)),
      "expert_choice": lambda: MoE(num_experts=num_experts, hidden_size=HIDDEN,
                                   gating="expert_choice", capacity_factor=CAPACITY,
                                   group_size=group_size, dispatch="gather"),
      "top2_ours": lambda: MoE(num_experts=num_experts, hidden_size=HIDDEN, gating="top_2",
                               capacity_factor=CAPACITY, group_size=group_size,
                               dispatch="gather", second_policy="all"),
      "top2_mesh_tf": lambda: mtf_moe.MoE1D(
          num_experts=num_experts, hidden_size=HIDDEN, group_size=group_size,
          capacity_factor_train=CAPACITY, capacity_factor_eval=CAPACITY,
          second_policy_train="all", second_policy_eval="all", activation="relu"),
  }


def measure_cell(num_experts, group_size, batch=8, length=512, warmup=2, repeats=5):
  """The four layers' best fwd+bwd seconds, timed in interleaved rounds, and their ratios."""
  row = {"num_experts": num_experts, "group_size": group_size, "tokens": batch * length}
  with contextlib.ExitStack() as stack:
    runs = {name: stack.enter_context(moe_dispatch.fwd_bwd_runner(
        make, d_model=D_MODEL, batch=batch, length=length, packed=True))
            for name, make in layers(num_experts, group_size).items()}
    seconds = moe_dispatch.interleaved(runs, warmup, repeats, stat="min")
  row.update({f"{name}_s": s for name, s in seconds.items()})
  for name in ("expert_choice", "top2_ours", "top2_mesh_tf"):
    row[f"{name}_over_dense"] = row[f"{name}_s"] / row["dense_s"]
  row["expert_choice_over_top2_mesh_tf"] = row["expert_choice_s"] / row["top2_mesh_tf_s"]
  row["expert_choice_over_top2_ours"] = row["expert_choice_s"] / row["top2_ours_s"]
  row.update(matmul_floor(num_experts, group_size, batch, length, warmup, repeats))
  return row


def matmul_floor(num_experts, group_size, batch=8, length=512, warmup=2, repeats=5):
  """The expert FFN's six matmuls alone over the equal-FLOPs dense FFN's six, timed in
  interleaved rounds in one plain TF session: what TF's batched matmul kernels cost at
  `num_experts` experts before any routing, the floor of expert_choice_over_dense.

  Experts: x [E, R, M] (R = groups x capacity rows per expert), W_i [E, M, H], W_o [E, H, M];
  forward x W_i, h W_o; input gradients dy W_o^T, dh W_i^T; weight gradients x^T dh, h^T dy.
  Dense: the same six with E = 1, R = tokens, hidden = CAPACITY x H. Equal FLOPs: E x R = 2 x
  tokens at capacity factor 2.
  """
  tokens, hidden = batch * length, HIDDEN
  rows = tokens // group_size * int(CAPACITY * group_size / num_experts)
  shapes = {"experts": (num_experts, rows, hidden), "dense": (1, tokens, int(CAPACITY * hidden))}
  graph, rng = tf.Graph(), np.random.RandomState(0)
  with graph.as_default():
    ops = {}
    for name, (e, r, h) in shapes.items():
      const = lambda *shape: tf.Variable(rng.randn(*shape).astype(np.float32))
      x, dy, w_i, w_o, h_, dh = (const(e, r, D_MODEL), const(e, r, D_MODEL),
                                 const(e, D_MODEL, h), const(e, h, D_MODEL), const(e, r, h),
                                 const(e, r, h))
      products = [
          tf.einsum("erm,emh->erh", x, w_i), tf.einsum("erh,ehm->erm", h_, w_o),
          tf.einsum("erm,ehm->erh", dy, w_o), tf.einsum("erh,emh->erm", dh, w_i),
          tf.einsum("erm,erh->emh", x, dh), tf.einsum("erh,erm->ehm", h_, dy)]
      # one element of each fetched: a tf.group of them lets Grappler drop the products
      ops[name] = tf.add_n([t[0, 0, 0] for t in products])
    init = tf.global_variables_initializer()
  with tf.Session(graph=graph) as session:
    session.run(init)

    def timed(op):
      def run():
        start = time.perf_counter()
        session.run(op)
        return time.perf_counter() - start
      return run
    seconds = moe_dispatch.interleaved({k: timed(op) for k, op in ops.items()}, warmup, repeats)
  return {"expert_matmuls_s": seconds["experts"], "dense_matmuls_s": seconds["dense"],
          "rows_per_expert": rows,
          "expert_matmuls_over_dense": seconds["experts"] / seconds["dense"]}


def profile_cell(num_experts=8, group_size=1024, top=12):
  """Op-type time breakdown (TF step-stats timeline, one traced run) of each layer of a cell."""
  out = {}
  for name, make in layers(num_experts, group_size).items():
    seconds, by_type = moe_dispatch.time_fwd_bwd(make, d_model=D_MODEL, warmup=2, repeats=3,
                                                 stat="min", packed=True, profile=True)
    total = sum(by_type.values())
    out[name] = {"seconds": seconds, "op_us_total": total,
                 "top_ops_us": dict(list(by_type.items())[:top])}
    print(name, f"{seconds:.3f}s", {k: v for k, v in list(by_type.items())[:8]}, flush=True)
  return {"num_experts": num_experts, "group_size": group_size, "layers": out}


def plot(rows, path):
  matplotlib.use("Agg")
  experts = sorted({r["num_experts"] for r in rows})
  fig, axes = plt.subplots(1, len(experts), figsize=(4 * len(experts), 3.6), sharey=True)
  axes = axes if len(experts) > 1 else [axes]
  for ax, e in zip(axes, experts):
    sel = sorted((r for r in rows if r["num_experts"] == e), key=lambda r: r["group_size"])
    for name in ("expert_choice", "top2_ours", "top2_mesh_tf"):
      ax.plot([r["group_size"] for r in sel], [r[f"{name}_over_dense"] for r in sel], "o-",
              label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.25, color="r", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_title(f"{e} experts", fontsize=9)
    ax.set_xlabel("group size (tokens)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("fwd+bwd time / equal-FLOPs dense FFN")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--groups", default="256,512,1024,2048")
  p.add_argument("--experts", default="8,16,64")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--profile", default="8,1024",
                  help="experts,group of the cell whose op-time breakdown is recorded ('' skips)")
  p.add_argument("--profile_only", action="store_true",
                  help="only the --profile cell's breakdown, to moe_overhead_profile_<e>e_<g>g.json")
  p.add_argument("--scale", default="full")
  p.add_argument("--out", default="moe_overhead.json")
  args = p.parse_args()
  machine = common.machine_info()
  if args.profile_only:
    e, g = (int(x) for x in args.profile.split(","))
    data = {"benchmark": "moe_overhead profile", "machine": machine,
            "command": f"python -m benchmarks.moe_overhead --profile_only --profile {e},{g}",
            "what": "TF step-stats op time (microseconds, summed over the 2 inter-op threads) "
                    "of one traced fwd+bwd run; seconds = best of 3 untraced runs",
            "profile": profile_cell(e, g)}
    print(f"wrote {common.write_json(f'moe_overhead_profile_{e}e_{g}g.json', data)}")
    return
  rows = []
  for e in [int(x) for x in args.experts.split(",")]:
    for g in [int(x) for x in args.groups.split(",")]:
      row = measure_cell(e, g, warmup=args.warmup, repeats=args.repeats)
      print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.items()), flush=True)
      rows.append(row)
  data = {"benchmark": "moe_overhead", "scale": args.scale, "machine": machine,
          "load_average_end": list(os.getloadavg()),
          "command": f"python -m benchmarks.moe_overhead --groups {args.groups} "
                     f"--experts {args.experts} --repeats {args.repeats}",
          "what": "best-of-repeats forward+backward seconds; *_over_dense = layer / dense FFN "
                  "with the same activated FLOPs (hidden 2 x 512) in the same cell",
          "d_model": D_MODEL, "expert_hidden": HIDDEN, "capacity_factor": CAPACITY,
          "rows": rows}
  if args.profile:
    e, g = (int(x) for x in args.profile.split(","))
    data["profile"] = profile_cell(e, g)
  plot(rows, os.path.join(common.RESULTS, "moe_overhead.png"))
  data["plots"] = ["benchmarks/results/moe_overhead.png"]
  print(f"wrote {common.write_json(args.out, data)}")
  summary.update()


if __name__ == "__main__":
  main()
