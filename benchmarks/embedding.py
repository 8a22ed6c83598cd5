"""Training step time with the token embedding as mesh-tf's one-hot einsum vs a gather.

  .venv/bin/python -m benchmarks.embedding [--models glam,brainformer1] [--rounds 2] [--steps 60]

Each model (`_mini`, `train/cpu_mini.gin`: 16 x 128 tokens, vocabulary 4096, the benchmark
text in ../shared/data) trains --steps steps with `transformer.VocabEmbedding` (mesh-tf's
`mtf.gather` = einsum with a one-hot) and with `GatherVocabEmbedding`
(brainformer_tf/layers/embedding.py), alternating, --rounds times. Steps/s is measured after
step 2 (graph building excluded). Writes results/embedding.json.
"""

import argparse
import os
import statistics

from benchmarks import common

RECIPE = "train/cpu_mini.gin"
VARIANTS = {"einsum": "@transformer.VocabEmbedding", "gather": "@embedding.GatherVocabEmbedding"}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default="glam,brainformer1")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--run_dir", default="/tmp/brainformer_bench/embedding")
  args = p.parse_args()
  train, valid = common.train_files(), common.validation_files()
  machine = common.machine_info()
  runs = []
  for round_ in range(args.rounds):
    for model in args.models.split(","):
      order = list(VARIANTS) if round_ % 2 == 0 else list(VARIANTS)[::-1]
      for variant in order:
        model_dir = os.path.join(args.run_dir, f"{model}_{variant}_{round_}")
        extra = [f"transformer.get_vocab_embedding_cls.cls = {VARIANTS[variant]}",
                 "train_with_progress.final_eval_split = None"]
        cmd = common.train_command(model_dir, f"models/{model}_mini.gin", RECIPE,
                                   steps=args.steps, extra=extra, train=train, validation=valid)
        r = common.run_training(model_dir, cmd)
        run = {"model": model, "embedding": variant, "round": round_,
               "steps_per_sec": r.get("steps_per_sec"), "error": r.get("error")}
        print(run, flush=True)
        runs.append(run)
  table = {}
  for model in args.models.split(","):
    rate = {v: statistics.mean(r["steps_per_sec"] for r in runs if r["model"] == model and
                               r["embedding"] == v and r["steps_per_sec"]) for v in VARIANTS}
    table[model] = dict(rate, gather_over_einsum_steps_per_sec=rate["gather"] / rate["einsum"])
    print(model, table[model], flush=True)
  common.write_json("embedding.json", {
      "benchmark": "embedding", "command": "python -m benchmarks.embedding " + " ".join(
          f"--{k} {v}" for k, v in vars(args).items() if k != "run_dir"),
      "machine": machine, "recipe": RECIPE, "steps": args.steps, "table": table, "runs": runs})


if __name__ == "__main__":
  main()
