"""A/B of one change on a whole training step: a compat patch, or a Gin switch, on and off.

  .venv/bin/python -m benchmarks.compat_ab --patch cpu_bfc_allocator [--experts 8,64]
  .venv/bin/python -m benchmarks.compat_ab --gin_off "fused_gelu.enabled = False" \
      [--model models/glam_mini.gin]

For each expert count, `brainformer train` runs --steps steps of --model (default
models/brainformer1_mini.gin; train/cpu_mini.gin, the item-1 data) as it is ("on"), and again
with BRAINFORMER_COMPAT_OFF=<patch> or with the --gin_off binding ("off"); --rounds rounds, the
order reversed on every other round (the speed of the machines here drifts by up to 2x within
minutes). Steps/s = the budget clock's (steps 2..N); each cell keeps its best round. Writes
results/by_machine/<CPU kind>/compat_ab_<change>[_<model>].json (<change>: the patch, or the
Gin configurable; the model's name unless Brainformer-1 mini; one file per kind of CPU, since a
patch may pay on one and not the other): the runs, on / off per expert count and the step-time
growth from the fewest to the most experts, on and off (issue 19's target 2).
"""

import argparse
import os
import re

from benchmarks import common
from brainformer_tf import compat

MODEL, RECIPE = "models/brainformer1_mini.gin", "train/cpu_mini.gin"


def plan(experts, rounds):
  """[(round, experts, "on" | "off")]: every cell once per round, every other round reversed."""
  cells = [(e, mode) for e in experts for mode in ("on", "off")]
  return [(r, e, mode) for r, (e, mode) in common.alternating(cells, rounds)]


GIN_BINDING = r"\s*([\w.]+?)\.\w+\s*="   # configurable.parameter = (the configurable grouped)


def change_name(patch, gin_off, model=MODEL):
  """The results file's stem: compat_ab_<patch or Gin configurable>[_<model unless MODEL>]."""
  name = patch or re.match(GIN_BINDING, gin_off).group(1).replace(".", "_")
  if model != MODEL:
    name += "_" + os.path.splitext(os.path.basename(model))[0]
  return f"compat_ab_{name}"


def summarise(rows, experts):
  """Best steps/s per (experts, on/off), on / off per expert count, growth fewest -> most."""
  best = {}
  for row in rows:
    key = f"{row['experts']}e_{row['patch']}"
    best[key] = max(best.get(key, 0.0), row["steps_per_sec"] or 0.0)
  lo, hi = min(experts), max(experts)
  return {"best_steps_per_sec": best,
          "on_over_off": {str(e): best[f"{e}e_on"] / best[f"{e}e_off"] for e in experts},
          f"step_time_growth_{lo}_to_{hi}": {m: best[f"{lo}e_{m}"] / best[f"{hi}e_{m}"] - 1
                                            for m in ("on", "off")}}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  change = p.add_mutually_exclusive_group(required=True)
  change.add_argument("--patch", choices=compat.SWITCHABLE, help="a compat patch")
  change.add_argument("--gin_off", help="a Gin binding that turns the change off, e.g. "
                                        "'fused_gelu.enabled = False'")
  p.add_argument("--model", default=MODEL, help="the model's Gin file (under gin/)")
  p.add_argument("--experts", default="8,64")
  p.add_argument("--steps", type=int, default=40)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--run_dir", default="/tmp/brainformer_bench/compat_ab")
  args = p.parse_args()
  if args.gin_off is not None and not re.match(GIN_BINDING, args.gin_off):
    p.error(f"--gin_off={args.gin_off!r} is not a Gin binding 'configurable.parameter = value'")
  experts = [int(x) for x in args.experts.split(",")]
  train, valid = common.train_files(), common.validation_files()
  stem = change_name(args.patch, args.gin_off, args.model)
  rows = []
  for r, e, mode in plan(experts, args.rounds):
    model_dir = os.path.join(args.run_dir, stem, f"e{e}_{mode}")
    extra = [f"num_experts = {e}", "train_with_progress.final_eval_split = None"]
    if args.gin_off and mode == "off":
      extra.append(args.gin_off)
    cmd = common.train_command(model_dir, args.model, RECIPE, steps=args.steps, train=train,
                               validation=valid, extra=extra)
    off_patch = args.patch if args.patch and mode == "off" else ""
    result = common.run_training(model_dir, cmd, env={"BRAINFORMER_COMPAT_OFF": off_patch})
    rows.append({"round": r, "experts": e, "patch": mode,
                 "steps_per_sec": result.get("steps_per_sec"),
                 "load_average_start": result["load_average_start"], "error": result.get("error")})
    print(rows[-1], flush=True)
  switch = f"--patch {args.patch}" if args.patch else f"--gin_off {args.gin_off!r}"
  data = {"benchmark": "compat_ab", "machine": common.machine_info(), "patch": args.patch,
          "gin_off": args.gin_off,
          "command": f"python -m benchmarks.compat_ab {switch} --model {args.model} --experts "
                     f"{args.experts} --steps {args.steps} --rounds {args.rounds}",
          "model": args.model, "recipe": RECIPE, "rows": rows, **summarise(rows, experts)}
  print(data["on_over_off"], flush=True)
  path = os.path.join("by_machine", data["machine"]["kind"], stem + ".json")
  print(f"wrote {common.write_json(path, data)}")


if __name__ == "__main__":
  main()
