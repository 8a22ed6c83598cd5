"""`brainformer eval`: evaluate a checkpoint by greedy decoding and/or rank classification.

  brainformer eval --checkpoint=/runs/bf1 --task=nq_open_oneshot_local --output_dir=/runs/bf1/eval

--checkpoint is a model dir (its newest checkpoint) or a model.ckpt-N prefix written by
`brainformer train`, `brainformer finetune` or `t5_mesh_transformer`; the model is read from
its operative_config.gin (--gin_file/--gin_param add to or override it). The output dir gets
scores.json, <task>.<mode>.predictions.jsonl, the operative Gin config and results.md (the
paper's Table 4 / Table 5 layout). Bad input: one line naming it, exit code 2.
"""

import argparse
import os

from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.evaluation import driver
from brainformer_tf.evaluation import tables

PROG = "brainformer eval"


def parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="model dir or model.ckpt-N prefix")
  p.add_argument("--task", required=True, action="append",
                 help="task or mixture (repeat or comma-separate)")
  p.add_argument("--output_dir", required=True)
  p.add_argument("--modes", default="decode", help="decode,rank (comma-separated)")
  p.add_argument("--split", default="validation")
  p.add_argument("--num_examples", type=int, default=-1, help="first N per task (-1: all)")
  p.add_argument("--name", help="row name in results.md (default: the checkpoint dir name)")
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--gin_param", action="append", default=[])
  return p


def tasks_of(values):
  return [t for v in values for t in v.split(",") if t]


def results_markdown(name, scores):
  """Table 5 for one-shot tasks and Table 4 per mode for the others."""
  parts = []
  for mode in ("decode", "rank"):
    by_task = {t: m[mode] for t, m in scores.items() if mode in m}
    oneshot = {t: v for t, v in by_task.items() if "oneshot" in t}
    finetune = {t: v for t, v in by_task.items() if "oneshot" not in t}
    if oneshot:
      parts.append(f"One-shot ({mode}), paper Table 5 layout\n\n" +
                   tables.table5({name: oneshot}))
    if finetune:
      parts.append(f"Dev scores ({mode}), paper Table 4 layout\n\n" +
                   tables.table4({name: finetune}))
  return "\n\n".join(parts) + "\n"


def evaluate_and_report(args, checkpoint, out_dir, name):
  scores = driver.evaluate(checkpoint, tasks_of(args.task), args.modes.split(","), out_dir,
                           args.gin_file, args.gin_param, args.split, args.num_examples)
  text = results_markdown(name, scores)
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(text)
  print(text, flush=True)
  return scores


def run(argv):
  args = parser().parse_args(argv[1:])
  prepare.graph_mode()
  name = args.name or os.path.basename(os.path.normpath(
      args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(args.checkpoint)))
  try:
    prepare.check_writable_dir(args.output_dir, "--output_dir")
    evaluate_and_report(args, args.checkpoint, args.output_dir, name)
  except prepare.user_errors() as e:
    return errors.report(PROG, e)
  return 0
