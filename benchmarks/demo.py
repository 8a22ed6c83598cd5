"""The side-by-side demo: Brainformer-1 tiny vs GLaM tiny for the same wall-clock, on CPU.

Brainformer-1 is its causal variant (`expert_choice_causal`): its validation figure is leak-free
in one pass and it can write text; GLaM's capacity-limited top-2 reads its row when scoring,
so its figure is the prefix-exact one. After training, each model continues the same few
prompts greedily (`brainformer decode`), so the losses come with text.

  bash scripts/demo.sh [--budget_s 240] [--run_dir runs/demo]     (sets up .venv first)
  .venv/bin/python -m benchmarks.demo [--budget_s 240] [--seed 1234]

Trains both models one after the other with `brainformer train` (train/cpu.gin: 16 x 128 tokens
per step, Adafactor) on the embedded default corpus (no download) for --budget_s seconds of
training each (the budget hook's clock; graph building and validation come on top, about 10
minutes in all at the default on 2 cores), validates each on the corpus's validation split,
prints each one's continuations of PROMPTS, then the comparison table, and writes
<run_dir>/demo.json and <run_dir>/loss_{steps,wallclock}.png (training loss per step and per
second, validation dots).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from benchmarks import common
from benchmarks import training_efficiency

MODELS = (("brainformer1_causal_tiny", "models/brainformer1_causal_tiny.gin"),
          ("glam_tiny", "models/glam_tiny.gin"))
RECIPE = "train/cpu.gin"
PROMPTS = ("The history of the", "In the early years of the war ,", "The album was")
NEW_TOKENS = 24
TOKENS_PER_STEP = 16 * 128


PROGRESS_LINE = re.compile(r"progress\.py:\d+\] (step (\d+) .*)$")


def echo_progress(name, every=100):
  """on_line callback for common.run_training: every `every`-th progress line, and the result."""
  def on_line(line):
    match = PROGRESS_LINE.search(line.rstrip())
    if match and int(match.group(2)) % every == 0:
      print(f"  {name}: {match.group(1)}", flush=True)
    elif "log-perplexity at step" in line or "leak-free log-perplexity" in line:
      print(f"  {name}: {line.strip()}", flush=True)
  return on_line


def samples(model_dir, prompts=PROMPTS):
  """Greedy continuations of `prompts` by the model in `model_dir` (`brainformer decode`)."""
  proc = subprocess.run([sys.executable, "-m", "brainformer_tf.cli.main", "decode",
                         f"--checkpoint={model_dir}", f"--max_new_tokens={NEW_TOKENS}"],
                        input="\n".join(prompts) + "\n", capture_output=True, text=True)
  if proc.returncode:
    return [{"prompt": p, "error": (proc.stderr.strip().splitlines() or [""])[-1]}
            for p in prompts]
  return [{"prompt": p, "continuation": c}
          for p, c in zip(prompts, proc.stdout.split("\n"))]


def compare(runs):
  """Table rows: steps, steps/s, tokens/s, validation loss, training loss at the common step."""
  common_step = min(r["curve"][-1][0] for r in runs if r.get("curve")) if all(
      r.get("curve") for r in runs) else None
  rows = []
  for r in runs:
    rows.append({"model": r["model"], "steps": r.get("steps"),
                 "steps_per_sec": r.get("steps_per_sec"),
                 "tokens_per_sec": (r["steps_per_sec"] * TOKENS_PER_STEP
                                    if r.get("steps_per_sec") else None),
                 "val_loss": r.get("val_loss"), "val_kind": r.get("val_kind"),
                 "samples": r.get("samples", []),
                 "train_loss_at_common_step": (common.loss_at_step(r["curve"], common_step)
                                               if common_step else None)})
  return rows, common_step


def format_rows(rows, common_step, budget_s):
  def f(v, fmt):
    return "-" if v is None else format(v, fmt)
  lines = [f"same wall-clock: {budget_s:g} s of training each",
           f"{'model':18s} {'steps':>6s} {'steps/s':>8s} {'tokens/s':>9s} "
           f"{'val loss':>9s} {'loss@' + str(common_step):>10s}"]
  for r in rows:
    lines.append(f"{r['model']:18s} {f(r['steps'], 'd'):>6s} {f(r['steps_per_sec'], '.3f'):>8s} "
                 f"{f(r['tokens_per_sec'], '.0f'):>9s} {f(r['val_loss'], '.4f'):>9s} "
                 f"{f(r['train_loss_at_common_step'], '.4f'):>10s}")
  lines.append("val loss: leak-free validation log-perplexity (nats/token) after the budget ("
               + "; ".join(f"{r['model']}: {r['val_kind']}" for r in rows) + "); loss@N: "
               "training loss (10-step mean) at the step both models reached")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--budget_s", type=float, default=240, help="training seconds per model")
  p.add_argument("--seed", type=int, default=1234)
  p.add_argument("--final_eval_steps", type=int, default=50)
  p.add_argument("--leak_free_rows", type=int, default=16,
                 help="validation rows scored leak-free after training (train_with_progress."
                      "final_leak_free_rows; Brainformer-1 tiny's expert choice reads its row)")
  p.add_argument("--run_dir", default=os.path.join(
      common.ROOT, "runs", "demo_" + time.strftime("%Y%m%d_%H%M%S")))
  args = p.parse_args()
  machine = common.machine_info()
  print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average'][0]:.1f}",
        flush=True)
  runs = []
  for name, gin_file in MODELS:
    model_dir = os.path.join(args.run_dir, name)
    print(f"training {name} for {args.budget_s:g} s ... (log: {model_dir}.log)", flush=True)
    cmd = common.train_command(model_dir, gin_file, RECIPE, budget_s=args.budget_s,
                               seed=args.seed, final_eval_steps=args.final_eval_steps,
                               extra=[f"train_with_progress.final_leak_free_rows = "
                                      f"{args.leak_free_rows}"])
    r = common.run_training(model_dir, cmd, on_line=echo_progress(name))
    r.update(model=name, mode="wallclock")
    if r.get("error"):
      print(f"  {name} failed: {r['error']}", flush=True)
    else:
      r["samples"] = samples(model_dir)
      for sample in r["samples"]:
        print(f"  {name}: {sample['prompt']!r} -> "
              f"{sample.get('continuation', 'decode failed: ' + sample.get('error', ''))}",
              flush=True)
    runs.append(r)
  rows, common_step = compare(runs)
  table = format_rows(rows, common_step, args.budget_s)
  plots = training_efficiency.plot(runs, os.path.join(args.run_dir, "loss"),
                                   title=f"tiny, {args.budget_s:g}s each; ",
                                   validation="default-corpus validation")
  with open(os.path.join(args.run_dir, "demo.json"), "w") as f:
    json.dump({"machine": machine, "budget_s": args.budget_s, "rows": rows,
               "common_step": common_step, "runs": runs}, f, indent=1)
  print(table)
  for path in plots:
    print(f"plot: {path}")
  return 0 if not any(r.get("error") for r in runs) else 1


if __name__ == "__main__":
  raise SystemExit(main())
