"""Paper Table 3 at mini scale, leak-free and over seeds: equal tokens, then equal wall-clock.

  .venv/bin/python -m benchmarks.table3                 # run / resume the whole matrix
  .venv/bin/python -m benchmarks.table3 --timing        # + idle steps/s runs (quiet machine)
  .venv/bin/python -m benchmarks.table3 --report        # tables, plots, summary.json only

Every model trains from scratch for the same --steps (2048 tokens per step: cpu_mini.gin, on
the Gutenberg books + WikiText-2 valid, `benchmarks.common.train_files`), saving a checkpoint
every --every steps. Each checkpoint is scored leak-free by `brainformer score` (prefix-exact
for routing that reads its row: expert choice and capacity-limited top-2; one pass for causal
routing) on WikiText-2 test, the final one also on LAMBADA (novels; not in the training text)
with the future-information gap. The models with three seeds (GLaM, GLaM-EC, Brainformer-1 and
its causal twin: the question) run all their seeds first; runs interleave models (order
reversed every other seed).

Resumable: a finished run is results/table3/runs/<model>_s<seed>.json (committed with the
repo), and is skipped; a killed run resumes from its last checkpoint (brainformer train) and
its finished scores (<run_dir>/<run>/scores/). So the matrix may span sessions; run it in the
background (`nohup ... &`), it prints one progress line per stage.

Wall-clock: steps/s of the long runs are recorded with the load average, but other work may
share the machine; --timing adds short back-to-back runs (--timing_steps each, interleaved)
that give the steps/s used for the equal-wall-clock comparison, with the matmul peak measured
in the same run. Equal wall-clock = the time the fastest model needs for --steps steps: every
model's leak-free loss is interpolated at the step it reaches by then.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

import matplotlib
import matplotlib.pyplot as plt

from benchmarks import common
from benchmarks import summary
from brainformer_tf import atomic
from brainformer_tf.training import progress

RECIPE = "train/cpu_mini.gin"
TOKENS_PER_STEP = 16 * 128
RESULTS = os.path.join(common.RESULTS, "table3")
# name -> (model gin file, extra bindings, seeds)
MODELS = {
    "glam": ("models/glam_mini.gin", (), 3),
    "glam_ec": ("models/glam_ec_mini.gin", (), 3),
    "brainformer1": ("models/brainformer1_mini.gin", (), 3),
    "brainformer1_causal": ("models/brainformer1_causal_mini.gin", (), 3),
    "search_top2": common.MODELS["search_top2"] + (2,),
    "brainformer2": ("models/brainformer2_mini.gin", (), 2),
    "dense": ("models/dense_mini.gin", (), 2),
    "primer": ("models/primer_mini.gin", (), 2),
}


def run_order(models, max_seeds=3):
  """[(seed, model)]: the models with most seeds first (the question's models: all their seeds
  before the others start), seed-major within each group, order reversed every other seed."""
  order = []
  for count in sorted({MODELS[m][2] for m in models}, reverse=True):
    group = [m for m in models if MODELS[m][2] == count]
    order += [(r + 1, m) for r, m in common.alternating(group, min(count, max_seeds))]
  return order


def lambada_text(run_dir):
  """LAMBADA passages (context + last word) as a text file in run_dir (never in the repo)."""
  path = os.path.join(run_dir, "lambada_test.txt")
  if not os.path.exists(path):
    source = os.path.join(common.SHARED, "lambada", "lambada_openai.jsonl")
    with open(source) as f, open(path + ".tmp", "w") as out:
      for line in f:
        ex = json.loads(line)
        out.write(ex["context"].strip() + " " + ex["continuation"].strip() + "\n\n")
    os.replace(path + ".tmp", path)
  return path


def logged_run(cmd, log, what, log_level="2"):
  """Runs cmd from the repo root, appending the command and its output to `log`."""
  with open(log, "a") as f:
    f.write(" ".join(cmd) + "\n")
    f.flush()
    proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=common.ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=log_level))
  if proc.returncode:
    raise RuntimeError(f"{what} failed (see {log})")


def score(checkpoint, text_file, rows, out_json, log):
  """`brainformer score` of one checkpoint (cached in out_json)."""
  if os.path.exists(out_json):
    with open(out_json) as f:
      return json.load(f)
  cmd = [sys.executable, "-m", "brainformer_tf.cli.main", "score", f"--checkpoint={checkpoint}",
         f"--text_files={text_file}", f"--rows={rows}", "--sequence_length=128",
         f"--json={out_json}.tmp"]
  logged_run(cmd, log, f"scoring {checkpoint}")
  os.replace(out_json + ".tmp", out_json)
  with open(out_json) as f:
    return json.load(f)


def checkpoints(model_dir):
  """{step: prefix} of the checkpoints in model_dir."""
  out = {}
  for index in glob.glob(os.path.join(model_dir, "model.ckpt-*.index")):
    prefix = index[:-len(".index")]
    out[int(prefix.rsplit("-", 1)[1])] = prefix
  return dict(sorted(out.items()))


def throughput(records, gap_s=30.0):
  """steps/s over the logged steps, leaving out gaps > gap_s (a kill and resume)."""
  train = sorted((r["step"], r["time"]) for r in records if "loss" in r and "time" in r)
  steps, seconds = 0, 0.0
  for (s0, t0), (s1, t1) in zip(train[2:], train[3:]):
    if 0 < t1 - t0 <= gap_s:
      steps, seconds = steps + (s1 - s0), seconds + (t1 - t0)
  return steps / seconds if seconds else None


def train_and_score(model, seed, args, train, valid, lambada):
  name = f"{model}_s{seed}"
  out_path = os.path.join(args.results_dir, "runs", name + ".json")
  if os.path.exists(out_path):
    return None
  gin_file, extra, _ = MODELS[model]
  model_dir = os.path.join(args.run_dir, name)
  log = os.path.join(args.run_dir, name + ".log")
  done = checkpoints(model_dir)
  if args.steps not in done:
    cmd = common.train_command(
        model_dir, gin_file, RECIPE, steps=args.steps, seed=seed, train=train,
        validation=valid, final_eval_steps=10,
        extra=list(extra) + [f"utils.run.save_checkpoints_steps = {args.every}",
                             "utils.run.keep_checkpoint_max = 1000",
                             "train_with_progress.final_leak_free_rows = 0",  # scored below
                             "train_with_progress.log_every_n_steps = 10"])
    load = os.getloadavg()[0]
    start = time.time()
    logged_run(cmd, log, f"training {name}", log_level="1")
    print(f"  {name}: trained {args.steps} steps in {time.time() - start:.0f}s "
          f"(load {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
  records = progress.read_log(model_dir)
  scores_dir = os.path.join(model_dir, "scores")
  os.makedirs(scores_dir, exist_ok=True)
  curve = []
  for step, prefix in checkpoints(model_dir).items():
    if step == 0:
      continue
    final = step == args.steps
    s = score(prefix, valid[0], args.final_rows if final else args.rows,
              os.path.join(scores_dir, f"wikitext_{step}.json"), log)
    curve.append({"step": step, "leak_free": s["leak_free_log_ppl"],
                  "whole_sequence": s["whole_sequence_log_ppl"], "rows": s["rows"]})
    print(f"  {name} step {step}: WikiText-2 leak-free {s['leak_free_log_ppl']:.4f}", flush=True)
  final_wiki = score(checkpoints(model_dir)[args.steps], valid[0], args.final_rows,
                     os.path.join(scores_dir, f"wikitext_{args.steps}.json"), log)
  final_lambada = score(checkpoints(model_dir)[args.steps], lambada, args.final_rows,
                        os.path.join(scores_dir, f"lambada_{args.steps}.json"), log)
  result = {"model": model, "seed": seed, "steps": args.steps, "gin_file": gin_file,
            "extra": list(extra), "tokens_per_step": TOKENS_PER_STEP,
            "steps_per_sec_loaded": throughput(records),
            "train_loss_curve": [[r["step"], r["loss"]] for r in records
                                 if "loss" in r and r["step"] % 10 == 0],
            "validation_curve": curve, "final": {"wikitext2_test": final_wiki,
                                                  "lambada": final_lambada},
            "machine": common.machine_info(), "finished_utc": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  atomic.write_json(out_path, result)
  return result


def timing(models, args, train, valid):
  """Back-to-back short runs per model (2 rounds, interleaved): idle steps/s, with the peak."""
  out = {"machine": common.machine_info(), "peak_before": common.peaks(), "runs": []}
  for round_ in range(2):
    for model in (models if round_ == 0 else list(reversed(models))):
      gin_file, extra, _ = MODELS[model]
      model_dir = os.path.join(args.run_dir, "timing", f"{model}_{round_}")
      cmd = common.train_command(model_dir, gin_file, RECIPE, steps=args.timing_steps,
                                 train=train, validation=valid, final_eval_steps=1,
                                 extra=list(extra))
      result = common.run_training(model_dir, cmd)
      out["runs"].append({"model": model, "round": round_,
                          "steps_per_sec": result.get("steps_per_sec"),
                          "load_average_start": result["load_average_start"]})
      print(f"  timing {model} round {round_}: {result.get('steps_per_sec') or 0:.3f} steps/s "
            f"(load {result['load_average_start']:.1f})", flush=True)
  out["peak_after"] = common.peaks()
  with open(os.path.join(args.results_dir, "timing.json"), "w") as f:
    json.dump(out, f, indent=1)


def interpolate(curve, step):
  """Leak-free loss at `step` on the checkpoint curve (linear between checkpoints)."""
  points = [(c["step"], c["leak_free"]) for c in curve]
  for (s0, l0), (s1, l1) in zip(points, points[1:]):
    if s0 <= step <= s1:
      return l0 + (l1 - l0) * (step - s0) / (s1 - s0)
  return points[-1][1] if points and step >= points[-1][0] else None


def steps_to_loss(curve, target):
  """First step (interpolated between checkpoints) where the leak-free loss reaches target."""
  points = [(c["step"], c["leak_free"]) for c in curve]
  for (s0, l0), (s1, l1) in zip(points, points[1:]):
    if l1 <= target < l0 or (l0 <= target and s0 == points[0][0]):
      return s0 if l0 <= target else s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
  return None


def report(results_dir):
  """Aggregates finished runs: mean +- std per model, ratios, gaps; writes table3.json/.md/png."""
  runs = []
  for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
    with open(path) as f:
      runs.append(json.load(f))
  timing_path = os.path.join(results_dir, "timing.json")
  idle = {}
  if os.path.exists(timing_path):
    with open(timing_path) as f:
      for r in json.load(f)["runs"]:
        if r["steps_per_sec"]:
          idle.setdefault(r["model"], []).append(r["steps_per_sec"])
  idle = {m: statistics.mean(v) for m, v in idle.items()}
  table = {}
  glam_final = {r["seed"]: r["validation_curve"][-1]["leak_free"] for r in runs
                if r["model"] == "glam"}
  for model in MODELS:
    mine = [r for r in runs if r["model"] == model]
    if not mine:
      continue
    wiki = [r["final"]["wikitext2_test"]["leak_free_log_ppl"] for r in mine]
    lamb = [r["final"]["lambada"]["leak_free_log_ppl"] for r in mine]
    row = {"seeds": [r["seed"] for r in mine], "wikitext2_leak_free": _ms(wiki),
           "lambada_leak_free": _ms(lamb),
           # quarters 2-4 of the row: prefixes there are long routing groups (docs/moe.md)
           "wikitext2_leak_free_q2_q4": _ms([
               sum(q[1:]) / 3 for q in (r["final"]["wikitext2_test"].get(
                   "leak_free_log_ppl_by_quarter") for r in mine) if q]),
           "wikitext2_whole_sequence": _ms([r["final"]["wikitext2_test"][
               "whole_sequence_log_ppl"] for r in mine]),
           "steps_per_sec_loaded": _ms([r["steps_per_sec_loaded"] for r in mine]),
           "steps_per_sec_idle": idle.get(model)}
    gaps = [r["final"][s].get("future_information_gap") for r in mine
            for s in ("wikitext2_test", "lambada")]
    if all(gaps):
      row["future_information_gap"] = {
          "wikitext2_test": _ms([r["final"]["wikitext2_test"]["future_information_gap"]["mean"]
                                 for r in mine]),
          "lambada": _ms([r["final"]["lambada"]["future_information_gap"]["mean"]
                          for r in mine]),
          "se_per_run": [r["final"]["wikitext2_test"]["future_information_gap"]["se"]
                         for r in mine]}
    ratios = []
    for r in mine:
      if r["seed"] in glam_final:
        reached = steps_to_loss(r["validation_curve"], glam_final[r["seed"]])
        ratios.append(None if reached is None else reached / r["steps"])
    row["steps_to_glam_final_loss"] = ratios
    table[model] = row
  glam_rate = table.get("glam", {}).get("steps_per_sec_idle")
  for model, row in table.items():
    rate = row["steps_per_sec_idle"]
    row["steps_per_sec_over_glam"] = rate / glam_rate if rate and glam_rate else None
  data = {"benchmark": "table3", "runs": len(runs), "table": table, "idle_steps_per_sec": idle}
  if idle and runs:
    steps = runs[0]["steps"]
    seconds = min(steps / idle[m] for m in table if m in idle)
    data["equal_wallclock_s"] = seconds
    for model, row in table.items():
      if model in idle:
        at = min(steps, seconds * idle[model])
        row["equal_wallclock"] = {"step": at, "wikitext2_leak_free": _ms([
            interpolate(r["validation_curve"], at) for r in runs if r["model"] == model])}
  with open(os.path.join(results_dir, "table3.json"), "w") as f:
    json.dump(data, f, indent=1)
  text = markdown(data)
  with open(os.path.join(results_dir, "table3.md"), "w") as f:
    f.write(text)
  plot(runs, os.path.join(results_dir, "table3_validation.png"))
  return data, text


def _ms(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {"mean": statistics.mean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def _fmt(ms, digits=3):
  return "-" if not ms else f"{ms['mean']:.{digits}f} +- {ms['std']:.{digits}f}"


def markdown(data):
  lines = ["| model | seeds | WikiText-2 test (leak-free) | LAMBADA (leak-free) | gap WikiText-2 "
           "| gap LAMBADA | steps to GLaM's final loss | steps/s idle / GLaM "
           "| WikiText-2 at equal wall-clock (step) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for model, row in data["table"].items():
    gap = row.get("future_information_gap") or {}
    ratios = [f"{x:.2f}" if x is not None else "never" for x in row["steps_to_glam_final_loss"]]
    wall = row.get("equal_wallclock")
    clock = f"{_fmt(wall['wikitext2_leak_free'])} ({wall['step']:.0f})" if wall else "-"
    lines.append(f"| {model} | {len(row['seeds'])} | {_fmt(row['wikitext2_leak_free'])} | "
                 f"{_fmt(row['lambada_leak_free'])} | {_fmt(gap.get('wikitext2_test'), 4)} | "
                 f"{_fmt(gap.get('lambada'), 4)} | {', '.join(ratios)} | "
                 f"{'-' if row.get('steps_per_sec_over_glam') is None else format(row['steps_per_sec_over_glam'], '.3f')} | "
                 f"{clock} |")
  return "\n".join(lines) + "\n"


def plot(runs, path):
  matplotlib.use("Agg")
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(MODELS)}
  seen = set()
  for r in runs:
    xs = [c["step"] for c in r["validation_curve"]]
    ys = [c["leak_free"] for c in r["validation_curve"]]
    ax.plot(xs, ys, "o-", color=colors[r["model"]], ms=3, lw=1, alpha=0.8,
            label=None if r["model"] in seen else r["model"])
    seen.add(r["model"])
  ax.set_xlabel("training step (2048 tokens each)")
  ax.set_ylabel("WikiText-2 test leak-free log-perplexity")
  ax.set_title("Table 3 at mini scale: leak-free validation per checkpoint, every seed",
               fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--every", type=int, default=500, help="checkpoint (and score) every N steps")
  p.add_argument("--rows", type=int, default=16, help="scored rows at intermediate checkpoints")
  p.add_argument("--final_rows", type=int, default=32, help="scored rows at the last one")
  p.add_argument("--run_dir", default=os.path.expanduser("~/brainformer_bench/table3"))
  p.add_argument("--results_dir", default=RESULTS)
  p.add_argument("--timing", action="store_true", help="also the idle steps/s runs")
  p.add_argument("--timing_steps", type=int, default=150)
  p.add_argument("--report", action="store_true", help="only aggregate finished runs")
  args = p.parse_args()
  models = [m for m in args.models.split(",") if m]
  unknown = sorted(set(models) - set(MODELS))
  if unknown:
    p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
  if not os.path.isdir(common.SHARED):
    p.error(f"needs the shared datasets at {common.SHARED}")
  if not args.report:
    os.makedirs(args.run_dir, exist_ok=True)
    train, valid = common.train_files(), common.validation_files()
    lambada = lambada_text(args.run_dir)
    order = run_order(models)
    print(f"table3: {len(order)} runs of {args.steps} steps; machine {common.machine_info()}",
          flush=True)
    for i, (seed, model) in enumerate(order):
      print(f"[{i + 1}/{len(order)}] {model} seed {seed}", flush=True)
      train_and_score(model, seed, args, train, valid, lambada)
    if args.timing:
      timing(models, args, train, valid)
  _, text = report(args.results_dir)
  print(text)
  if os.path.abspath(args.results_dir) == os.path.abspath(RESULTS):
    summary.update()


if __name__ == "__main__":
  main()
