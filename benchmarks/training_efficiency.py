"""Paper Table 3 at mini scale: every zoo family trained side by side on this machine.

  .venv/bin/python -m benchmarks.training_efficiency                       # the issue's setting
  .venv/bin/python -m benchmarks.training_efficiency --budget_s 75 --steps 0 \
      --lr_warmup_steps 50 --scale reduced                                 # what fits a session

For each seed, every model trains from scratch (`brainformer train`, cpu_mini recipe: 16 x 128
tokens/step, Adafactor) on the Gutenberg books + WikiText-2 valid text for --budget_s seconds of
wall-clock (the budget hook's clock), then validates on WikiText-2 test. With --steps N > 0 every
model also trains for exactly N steps. Runs are interleaved (model order reversed on every other
seed) so machine drift hits all models alike. The matmul peak (oneDNN on and off) is measured in
the same run, before and after the training runs; MFU = model FLOPs/token (`brainformer params`:
6 x activated matmul params + attention, no dispatch) x tokens/s / best peak of the oneDNN
setting the runs used. Writes results/training_efficiency.json, training_efficiency_{steps,
wallclock}.png and updates results/summary.json.
"""

import argparse
import os
import statistics
import time

import matplotlib
import matplotlib.pyplot as plt

from benchmarks import common
from benchmarks import summary

RECIPE = "train/cpu_mini.gin"
TOKENS_PER_STEP = 16 * 128  # cpu_mini.gin
DEFAULT_MODELS = ("dense", "glam", "glam_ec", "search_top2", "brainformer1", "brainformer2",
                  "primer")


def run_order(models, seeds):
  """[(seed, model)]: model order reversed on every other seed (interleaving)."""
  return [(seeds[r], model) for r, model in common.alternating(models, len(seeds))]


def aggregate(runs, models, flops, peak_gflops):
  """Per-model means over seeds of the wall-clock and fixed-step runs, and MFU."""
  table = {}
  for model in models:
    row = {"flops_per_token": flops[model]["flops_per_token"],
           "activated_params": flops[model]["activated_params"],
           "total_params": flops[model]["total_params"]}
    for mode in ("wallclock", "steps"):
      done = [r for r in runs if r["model"] == model and r["mode"] == mode
              and r.get("steps_per_sec") and r.get("val_loss") is not None]
      if not done:
        continue
      sps = [r["steps_per_sec"] for r in done]
      val = [r["val_loss"] for r in done]
      row[mode] = {"seeds": len(done), "steps_per_sec": statistics.mean(sps),
                   "steps_per_sec_per_seed": sps,
                   "tokens_per_sec": statistics.mean(sps) * TOKENS_PER_STEP,
                   "val_loss": statistics.mean(val), "val_loss_per_seed": val,
                   "val_loss_spread": max(val) - min(val),
                   "steps": statistics.mean(r["steps"] for r in done),
                   "train_s": statistics.mean(r["train_s"] for r in done)}
      row[mode]["mfu"] = (row["flops_per_token"] * row[mode]["tokens_per_sec"]
                          / (peak_gflops * 1e9))
    table[model] = row
  # The same step count read off the wall-clock runs: smoothed training loss at the step every
  # wall-clock run reached.
  wall = [r for r in runs if r["mode"] == "wallclock" and r.get("curve")]
  if wall:
    common_step = min(r["curve"][-1][0] for r in wall)
    for model in table:
      losses = [common.loss_at_step(r["curve"], common_step) for r in wall if r["model"] == model]
      losses = [l for l in losses if l is not None]
      if losses:
        table[model]["train_loss_at_common_step"] = statistics.mean(losses)
    table["_common_step"] = common_step
  return table


def convergence(runs, fast="brainformer1", slow="glam"):
  """Per seed: when `fast`'s smoothed training loss first reaches `slow`'s final one.

  Returns {"fraction": mean of t_fast / t_slow_total over seeds (None if never reached),
  "per_seed": [...]}; 0.5 = the paper's 2x faster convergence.
  """
  per_seed = []
  for seed in sorted({r["seed"] for r in runs}):
    pick = {r["model"]: r for r in runs if r["seed"] == seed and r["mode"] == "wallclock"
            and r.get("curve")}
    if fast not in pick or slow not in pick:
      continue
    slow_curve = pick[slow]["curve"]
    target = common.smooth([c[2] for c in slow_curve])[-1]
    reached = common.time_to_loss(pick[fast]["curve"], target)
    per_seed.append({"seed": seed, "target_loss": target, "slow_total_s": slow_curve[-1][1],
                     "fast_reaches_s": reached,
                     "fraction": None if reached is None else reached / slow_curve[-1][1]})
  fractions = [p["fraction"] for p in per_seed]
  mean = (statistics.mean(fractions) if fractions and None not in fractions else None)
  return {"fraction": mean, "per_seed": per_seed}


def plot(runs, path_prefix, title="", validation="WikiText-2 test"):
  """Smoothed training loss (lines) and final validation loss (markers) vs step and seconds."""
  matplotlib.use("Agg")
  paths = []
  models = list(dict.fromkeys(r["model"] for r in runs))
  colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
  for axis, xlabel, idx in (("steps", "training step", 0), ("wallclock", "wall-clock s", 1)):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    seen = set()
    for r in runs:
      if r.get("mode", "wallclock") != "wallclock" or not r.get("curve"):
        continue
      xs = [c[idx] for c in r["curve"]]
      label = r["model"] if r["model"] not in seen else None
      seen.add(r["model"])
      ax.plot(xs, common.smooth([c[2] for c in r["curve"]]), color=colors[r["model"]],
              label=label, lw=1.2, alpha=0.85)
      if r.get("val_loss") is not None:
        ax.plot([xs[-1]], [r["val_loss"]], "o", color=colors[r["model"]], ms=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("nats / token")
    ax.set_title(f"{title}lines: training loss (10-step mean); dots: {validation} "
                 "log-perplexity", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = f"{path_prefix}_{axis}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default=",".join(DEFAULT_MODELS))
  p.add_argument("--seeds", default="1,2")
  p.add_argument("--budget_s", type=float, default=1200,
                 help="training wall-clock per run (issue setting: 1200 = cpu_mini's 20 min)")
  p.add_argument("--steps", type=int, default=1200,
                 help="also train every model for this many steps (0: skip the fixed-step runs)")
  p.add_argument("--lr_warmup_steps", type=int, default=None,
                 help="override the recipe's 200 LR warm-up steps (short budgets: 50)")
  p.add_argument("--final_eval_steps", type=int, default=50)
  p.add_argument("--onednn", choices=("on", "off", "default"), default="default",
                 help="oneDNN setting of the training runs (the peak is measured with both)")
  p.add_argument("--scale", default="full", help="label stored in the results (full / reduced)")
  p.add_argument("--run_dir", default="/tmp/brainformer_bench/training_efficiency")
  p.add_argument("--out", default="training_efficiency.json")
  args = p.parse_args()
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = set(models) - set(common.MODELS)
  if unknown:
    p.error(f"unknown models {sorted(unknown)}; choose from {sorted(common.MODELS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  command = ("python -m benchmarks.training_efficiency " +
             " ".join(f"--{k} {v}" for k, v in vars(args).items()
                      if v is not None and k not in ("run_dir", "out")))
  machine = common.machine_info(args.onednn if args.onednn != "default" else None)
  print(f"machine: {machine}", flush=True)
  train, valid = common.train_files(), common.validation_files()

  flops = {m: common.model_counts(common.MODELS[m][0], RECIPE, common.MODELS[m][1])
           for m in models}
  peak_before = common.peaks()
  print(f"peak GFLOP/s before: on {peak_before['on']['gflops']:.1f}, "
        f"off {peak_before['off']['gflops']:.1f}", flush=True)

  runs = []
  modes = [("wallclock", {"budget_s": args.budget_s})]
  if args.steps:
    modes.append(("steps", {"steps": args.steps}))
  for mode, budget in modes:
    for seed, model in run_order(models, seeds):
      gin_file, extra = common.MODELS[model]
      model_dir = os.path.join(args.run_dir, f"{mode}_{model}_s{seed}")
      cmd = common.train_command(model_dir, gin_file, RECIPE, seed=seed, extra=extra,
                                 train=train, validation=valid,
                                 final_eval_steps=args.final_eval_steps,
                                 lr_warmup_steps=args.lr_warmup_steps, **budget)
      result = common.run_training(model_dir, cmd, onednn=args.onednn)
      result.update(model=model, seed=seed, mode=mode)
      runs.append(result)
      print(f"{mode:9s} {model:13s} seed {seed}: {result.get('steps')} steps, "
            f"{result.get('steps_per_sec') or 0:.3f} steps/s, val {result.get('val_loss')}, "
            f"load {result['load_average_start']:.1f}, {result['process_s']:.0f}s"
            + (f"  ERROR {result['error']}" if result.get("error") else ""), flush=True)

  peak_after = common.peaks()
  peak = {mode: max(peak_before[mode]["gflops"], peak_after[mode]["gflops"])
          for mode in ("on", "off")}
  runs_onednn = "off" if args.onednn == "off" else "on"  # TF 2.15 x86 Linux default: on
  table = aggregate(runs, models, flops, peak[runs_onednn])
  conv = convergence(runs)
  data = {"benchmark": "training_efficiency", "scale": args.scale, "command": command,
          "machine": machine, "load_average_end": list(os.getloadavg()),
          "recipe": RECIPE, "tokens_per_step": TOKENS_PER_STEP,
          "train_files": train, "validation_files": valid,
          "excluded_files": list(common.EXCLUDED_FILES),
          "budget_s": args.budget_s, "steps": args.steps, "seeds": seeds,
          "lr_warmup_steps": args.lr_warmup_steps,
          "peak_gflops": {"on": peak["on"], "off": peak["off"], "before": peak_before,
                          "after": peak_after, "mfu_denominator": runs_onednn},
          "table": table, "convergence_brainformer1_vs_glam": conv,
          "runs": runs, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  path = common.write_json(args.out, data)
  data["plots"] = [os.path.relpath(x, common.ROOT) for x in
                   plot(runs, os.path.join(common.RESULTS, os.path.splitext(args.out)[0]))]
  common.write_json(args.out, data)
  print(format_table(data))
  print(f"wrote {path}")
  if args.out == "training_efficiency.json":
    summary.update()


def format_table(data) -> str:
  table = data["table"]
  lines = [f"{'model':13s} {'act.params':>10s} {'MFLOP/tok':>9s} {'steps/s':>8s} {'tok/s':>7s} "
           f"{'MFU':>6s} {'val loss':>8s} {'spread':>6s} {'loss@step':>9s}"]
  for model, row in table.items():
    if model.startswith("_") or "wallclock" not in row:
      continue
    w = row["wallclock"]
    at = row.get("train_loss_at_common_step")
    lines.append(f"{model:13s} {row['activated_params']:>10,d} {row['flops_per_token']/1e6:>9.1f} "
                 f"{w['steps_per_sec']:>8.3f} {w['tokens_per_sec']:>7.0f} {w['mfu']:>6.1%} "
                 f"{w['val_loss']:>8.3f} {w['val_loss_spread']:>6.3f} "
                 f"{'' if at is None else f'{at:.3f}':>9s}")
  lines.append(f"(same wall-clock {data['budget_s']:g}s, mean of seeds {data['seeds']}; "
               f"loss@step = training loss at step {table.get('_common_step')}, the step all "
               f"runs reached)")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
