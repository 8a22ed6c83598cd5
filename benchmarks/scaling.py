"""Scaling of cost: step time vs number of experts (fixed activated params) and vs tokens/batch.

  .venv/bin/python -m benchmarks.scaling [--experts 8,16,32,64] [--tokens 1024,...,16384]
                                         [--model_steps 40] [--model_batches 8,16,32]

Layer level (seconds): forward+backward of the expert-choice MoE layer (capacity 2, expert
hidden 512, d_model 256, group 1024, gather dispatch) and of mesh-tf's stock top-2 MoE1D as the
expert count grows at fixed activated parameters (every token still meets 2 experts' worth of
FFN), and of the expert-choice layer as tokens per batch grow (8 experts; time per token shown).
Model level (--model_steps > 0): Brainformer-1 mini trained by `brainformer train` (cpu_mini
recipe, item-1 data) for that many steps at each expert count (activated params fixed: expert
size and capacity do not change); step time = mean over steps 2..N (the budget clock's
convention), the best of --model_rounds rounds that alternate the order. --model_batches adds
runs at those sequences per batch at the fewest and the most experts (growth_by_tokens: the
step-time growth at each batch). The layers are all built side by side and timed
in interleaved rounds (moe_dispatch.interleaved).
Writes results/scaling.json (+ scaling.png) and updates results/summary.json.
"""

import argparse
import contextlib
import os

import matplotlib
import matplotlib.pyplot as plt

from benchmarks import common
from benchmarks import moe_dispatch
from benchmarks import moe_overhead
from benchmarks import summary
from brainformer_tf.layers.moe import MoE

RECIPE = "train/cpu_mini.gin"


def layer_experts(experts, repeats, warmup):
  """EC and MoE1D layers at every expert count, all built side by side and timed in
  interleaved rounds (moe_dispatch.interleaved), so the growth is not the machine's drift."""
  with contextlib.ExitStack() as stack:
    runs = {(e, name): stack.enter_context(moe_dispatch.fwd_bwd_runner(
        moe_overhead.layers(e, 1024)[name], d_model=moe_overhead.D_MODEL, packed=True))
            for e in experts for name in ("expert_choice", "top2_mesh_tf")}
    seconds = moe_dispatch.interleaved(runs, warmup, repeats, stat="min")
  rows = [{"num_experts": e, "tokens": 4096, "group_size": 1024,
           **{f"{name}_s": seconds[e, name] for name in ("expert_choice", "top2_mesh_tf")}}
          for e in experts]
  for row in rows:
    print(row, flush=True)
  base = rows[0]["expert_choice_s"]
  return {"rows": rows, "growth": rows[-1]["expert_choice_s"] / base - 1,
          "top2_mesh_tf_growth": rows[-1]["top2_mesh_tf_s"] / rows[0]["top2_mesh_tf_s"] - 1,
          "from_to": [experts[0], experts[-1]]}


def layer_tokens(tokens, repeats, warmup, length=512):
  rows = []
  for n in tokens:
    batch = max(1, n // length)
    make = lambda: MoE(num_experts=8, hidden_size=moe_overhead.HIDDEN, gating="expert_choice",
                       capacity_factor=2.0, group_size=1024, dispatch="gather")
    s = moe_dispatch.time_fwd_bwd(make, d_model=moe_overhead.D_MODEL, batch=batch, length=length,
                                  warmup=warmup, repeats=repeats, stat="min", packed=True)
    rows.append({"tokens": batch * length, "expert_choice_s": s,
                 "us_per_token": s / (batch * length) * 1e6})
    print(rows[-1], flush=True)
  return {"rows": rows}


def model_plan(experts, batches):
  """[(experts, sequences per batch)]: every expert count at the recipe's 16 sequences, and
  each extra batch size at the fewest and the most experts (the growth at that batch)."""
  ends = sorted({min(experts), max(experts)})
  return [(e, 16) for e in experts] + [(e, b) for b in batches if b != 16 for e in ends]


def growth_by_batch(rows, experts):
  """{tokens per step: step time at the most experts / at the fewest - 1} for every batch
  measured at both ({} for one expert count)."""
  step = {(r["num_experts"], r["tokens_per_step"]): r["step_s"] for r in rows}
  lo, hi = min(experts), max(experts)
  return {str(t): step[hi, t] / step[lo, t] - 1 for (e, t) in sorted(step)
          if lo < hi and e == lo and step.get((hi, t)) and step[lo, t]}


def model_runs(run_dir, experts, batches, steps, rounds=2):
  """Brainformer-1 mini trained `steps` steps per (experts, batch) of model_plan in `rounds`
  rounds, the order reversed on every other round (drift of the machine hits all alike);
  step_s = the best round's mean step time."""
  train, valid = common.train_files(), common.validation_files()
  plan = model_plan(experts, batches)
  found = {cell: [] for cell in plan}
  for i, (e, b) in common.alternating(plan, rounds):
    model_dir = os.path.join(run_dir, f"bf1_e{e}_b{b}")
    extra = [f"num_experts = {e}", f"utils.run.batch_size = ('sequences_per_batch', {b})",
             "train_with_progress.final_eval_split = None"]
    cmd = common.train_command(model_dir, "models/brainformer1_mini.gin", RECIPE,
                               steps=steps, extra=extra, train=train, validation=valid)
    r = common.run_training(model_dir, cmd)
    found[e, b].append(r)
    print(f"round {i}: {e} experts, {b} sequences: {r.get('steps_per_sec')} steps/s",
          flush=True)
  rows = []
  for (e, b), runs in found.items():
    step_s = [1 / r["steps_per_sec"] for r in runs if r.get("steps_per_sec")]
    rows.append({"num_experts": e, "sequences_per_batch": b, "tokens_per_step": b * 128,
                 "steps": runs[0].get("steps"), "step_s": min(step_s, default=None),
                 "step_s_per_round": step_s,
                 "load_average_start": [r["load_average_start"] for r in runs],
                 "error": next((r["error"] for r in runs if r.get("error")), None)})
    print(rows[-1], flush=True)
  by_tokens = growth_by_batch(rows, experts)
  return {"rows": rows, "growth": by_tokens.get(str(16 * 128)), "growth_by_tokens": by_tokens,
          "steps": steps}


def plot(data, path):
  matplotlib.use("Agg")
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  rows = data["layer_experts"]["rows"]
  xs = [r["num_experts"] for r in rows]
  for name in ("expert_choice", "top2_mesh_tf"):
    axes[0].plot(xs, [r[f"{name}_s"] / rows[0][f"{name}_s"] for r in rows], "o-",
                 label=f"{name} layer fwd+bwd")
  model = data.get("model_experts")
  if model:
    mr = [r for r in model["rows"] if r["sequences_per_batch"] == 16 and r["step_s"]]
    if mr:
      axes[0].plot([r["num_experts"] for r in mr], [r["step_s"] / mr[0]["step_s"] for r in mr],
                   "s-", label="Brainformer-1 mini train step")
  axes[0].axhline(1.15, color="r", ls="--", lw=0.8)
  axes[0].set_xscale("log", base=2)
  axes[0].set_xlabel("experts (fixed activated params)")
  axes[0].set_ylabel("time / time at fewest experts")
  axes[0].legend(fontsize=8)
  axes[0].grid(alpha=0.3)
  tr = data["layer_tokens"]["rows"]
  axes[1].plot([r["tokens"] for r in tr], [r["us_per_token"] for r in tr], "o-",
               label="expert-choice layer fwd+bwd")
  axes[1].set_xscale("log", base=2)
  axes[1].set_xlabel("tokens per batch")
  axes[1].set_ylabel("microseconds per token")
  axes[1].legend(fontsize=8)
  axes[1].grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--experts", default="8,16,32,64")
  p.add_argument("--tokens", default="1024,2048,4096,8192,16384")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--model_steps", type=int, default=40, help="0: skip the model-level runs")
  p.add_argument("--model_batches", default="", help="e.g. 8,16,32 (sequences of 128)")
  p.add_argument("--model_rounds", type=int, default=2, help="alternating rounds of model runs")
  p.add_argument("--scale", default="full")
  p.add_argument("--run_dir", default="/tmp/brainformer_bench/scaling")
  args = p.parse_args()
  experts = [int(x) for x in args.experts.split(",")]
  machine = common.machine_info()
  data = {"benchmark": "scaling", "scale": args.scale, "machine": machine,
          "command": f"python -m benchmarks.scaling --experts {args.experts} --tokens "
                     f"{args.tokens} --repeats {args.repeats} --model_steps {args.model_steps} "
                     f"--model_rounds {args.model_rounds}"
                     + (f" --model_batches {args.model_batches}" if args.model_batches else ""),
          "what": "layer: best-of-repeats fwd+bwd seconds; model: mean training step seconds"}
  data["layer_experts"] = layer_experts(experts, args.repeats, args.warmup)
  data["layer_tokens"] = layer_tokens([int(x) for x in args.tokens.split(",")], args.repeats,
                                      args.warmup)
  if args.model_steps:
    batches = [int(x) for x in args.model_batches.split(",") if x]
    data["model_experts"] = model_runs(args.run_dir, experts, batches, args.model_steps,
                                       args.model_rounds)
  data["load_average_end"] = list(os.getloadavg())
  plot(data, os.path.join(common.RESULTS, "scaling.png"))
  data["plots"] = ["benchmarks/results/scaling.png"]
  print(f"wrote {common.write_json('scaling.json', data)}")
  summary.update()


if __name__ == "__main__":
  main()
