"""Paper Tables 4 and 5 pipelines, scaled to a CPU: Brainformer-1 vs GLaM, same wall-clock.

  BRAINFORMER_DATA_DIR=../shared/data .venv/bin/python benchmarks/finetune_eval.py \
      --work_dir=/tmp/bf_fe --pretrain_seconds=300 --finetune_steps=50 --num_examples=200

1. `brainformer train` each model on --corpus for the same wall-clock (budget.settings.seconds;
   Brainformer-1 with causal expert choice so it can be decoded); an existing pretraining dir
   in work_dir is reused.
2. `brainformer finetune` each on every --finetune_task (rank classification + greedy decode).
3. `brainformer eval` each pretrained checkpoint one-shot on every --oneshot_task.
Writes benchmarks/results/finetune_eval.{json,md}. Scale up with the flags.
"""

import argparse
import json
import os
import re
import subprocess
import sys

from brainformer_tf.evaluation import run_dir
from brainformer_tf.evaluation import tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "Brainformer-1 mini (causal EC)": ("brainformer1_mini",
                                       ["blocks.BlockDefaults.gating = 'expert_choice_causal'"]),
    "GLaM mini (top-2)": ("glam_mini", []),
}


def brainformer(*args):
  command = [sys.executable, "-m", "brainformer_tf.cli.main"] + list(args)
  print("+", " ".join(command), flush=True)
  subprocess.run(command, check=True, cwd="/tmp")


def pretrain(work_dir, model, params, seconds, corpus):
  model_dir = os.path.join(work_dir, f"pre_{model}")
  if os.path.exists(os.path.join(model_dir, "checkpoint")):
    return model_dir
  brainformer("train", f"--model_dir={model_dir}", f"--gin_file=models/{model}.gin",
              "--gin_file=train/cpu_mini.gin", f"--gin_param=MIXTURE_NAME='{corpus}'",
              "--gin_param=utils.run.train_steps=100000",
              f"--gin_param=budget.settings.seconds={seconds}",
              "--gin_param=utils.run.save_checkpoints_steps=100000",
              "--gin_param=train_with_progress.final_eval_steps=10",
              *[f"--gin_param={p}" for p in params])
  return model_dir


def final_step(model_dir):
  with open(os.path.join(model_dir, "checkpoint")) as f:
    return int(re.search(r"-(\d+)\"", f.readline()).group(1))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--work_dir", default="/tmp/bf_fe")
  p.add_argument("--corpus", default="default_corpus_lm")
  p.add_argument("--pretrain_seconds", type=float, default=300)
  p.add_argument("--finetune_steps", type=int, default=50)
  p.add_argument("--finetune_tasks", default="super_glue_cb_local,super_glue_copa_local,"
                 "super_glue_rte_local,super_glue_wic_local")
  p.add_argument("--oneshot_tasks", default="nq_open_oneshot_local,trivia_qa_oneshot_local,"
                 "squad_open_oneshot_local")
  p.add_argument("--num_examples", type=int, default=200, help="per task and split")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "finetune_eval"))
  args = p.parse_args()

  results = {"settings": vars(args), "pretrain_steps": {}, "finetune": {}, "oneshot": {}}
  for name, (model, params) in MODELS.items():
    pre = pretrain(args.work_dir, model, params, args.pretrain_seconds, args.corpus)
    results["pretrain_steps"][name] = final_step(pre)
    for task in args.finetune_tasks.split(","):
      ft = os.path.join(args.work_dir, f"ft_{model}_{task}")
      brainformer("finetune", f"--init_checkpoint={pre}", f"--task={task}", f"--model_dir={ft}",
                  f"--steps={args.finetune_steps}", f"--num_eval_examples={args.num_examples}",
                  f"--name={name}")
      for t, modes in run_dir.read_scores(os.path.join(ft, "eval"))["scores"].items():
        for mode, metrics in modes.items():
          results["finetune"].setdefault(mode, {}).setdefault(name, {})[t] = metrics
    out = os.path.join(args.work_dir, f"oneshot_{model}")
    brainformer("eval", f"--checkpoint={pre}", f"--task={args.oneshot_tasks}",
                f"--output_dir={out}", "--modes=decode", f"--num_examples={args.num_examples}",
                f"--name={name}")
    for t, modes in run_dir.read_scores(out)["scores"].items():
      results["oneshot"].setdefault(name, {})[t] = modes["decode"]

  steps = ", ".join(f"{n}: {s} steps" for n, s in results["pretrain_steps"].items())
  md = [f"# Fine-tuning and one-shot evaluation (CPU scale)\n\nPretraining on {args.corpus}, "
        f"{args.pretrain_seconds:.0f} s wall-clock each ({steps}); fine-tuning "
        f"{args.finetune_steps} steps per task; first {args.num_examples} validation examples "
        "per task.\n"]
  for mode, label in (("rank", "rank classification"), ("decode", "greedy decoding")):
    if mode in results["finetune"]:
      md.append(f"## Table 4 layout: dev accuracy / official metric, {label}\n\n"
                + tables.table4(results["finetune"][mode]) + "\n")
  md.append("## Table 5 layout: one-shot, greedy decoding\n\n" +
            tables.table5(results["oneshot"]) + "\n")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(results, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write("\n".join(md))
  print("\n".join(md))


if __name__ == "__main__":
  main()
