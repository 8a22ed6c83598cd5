"""`brainformer score`: leak-free log-perplexity of a checkpoint on held-out text.

  brainformer score --checkpoint=/runs/bf1 --text_files=wiki.test.txt [--rows=32]
                    [--sequence_length=128] [--mode=auto|prefix|whole] [--json=out.json]
  brainformer score --checkpoint=/runs/bf1 --task=default_corpus_lm --split=validation

Rows are `--sequence_length` tokens cut from the text's token stream (the model's training
vocabulary). Each token is scored from the tokens before it only: in one pass when every
layer's routing is causal (dense, Primer, `expert_choice_causal`), else once per token on
its prefix ("prefix-exact", evaluation/leakfree.py), which also gives the future-information
gap (whole-sequence minus prefix-exact loss, with its standard error over rows and by quarter
of the row). --mode=whole skips the prefix passes and labels the figure as whole-sequence.
Bad input: one line naming it, exit code 2.
"""

import argparse
import json
import os
import sys

from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.evaluation import leakfree

PROG = "brainformer score"


def parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="model dir or model.ckpt-N prefix")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--text_files", help="comma-separated text files (paragraphs = documents)")
  source.add_argument("--task", help="a registered task or mixture (its targets feature)")
  p.add_argument("--split", default="validation", help="with --task")
  p.add_argument("--rows", type=int, default=32, help="rows to score (default 32)")
  p.add_argument("--sequence_length", type=int, default=128)
  p.add_argument("--batch", type=int, default=64, help="sequences per forward pass")
  p.add_argument("--mode", default="auto", choices=("auto", "prefix", "whole"))
  p.add_argument("--json", help="also write the summary as JSON here")
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--gin_param", action="append", default=[])
  return p


def _check(args):
  if args.rows < 1 or args.sequence_length < 2 or args.batch < 1:
    raise errors.UsageError("--rows and --batch must be >= 1, --sequence_length >= 2")
  for path in (args.text_files or "").split(","):
    if path and not os.path.isfile(path):
      raise errors.UsageError(f"--text_files: {path} is not a file")
  if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
    raise errors.UsageError(f"--json: directory of {args.json} does not exist")


def main(args):
  _check(args)
  scorer = leakfree.Scorer(args.checkpoint, args.sequence_length, args.batch, args.gin_file,
                           args.gin_param)
  if args.text_files:
    rows = leakfree.rows_from_files(args.text_files.split(","), scorer.vocabulary,
                                    args.sequence_length, args.rows)
    source = args.text_files
  else:
    rows = leakfree.rows_from_task(args.task, args.split, args.sequence_length, args.rows)
    source = f"{args.task} ({args.split})"

  def progress(done, total):
    print(f"\r  prefix passes {done}/{total}", end="" if done < total else "\n",
          file=sys.stderr, flush=True)

  result = leakfree.score(scorer, rows, args.mode, progress)
  summary = result.summary()
  summary.update(checkpoint=scorer.prefix, step=scorer.step, source=source,
                 sequence_length=args.sequence_length, mode=args.mode)
  if args.mode == "whole" and not result.causal:
    summary["leak_free_log_ppl"] = None  # not measured: the one pass may read later tokens
  print(f"{PROG}: {scorer.prefix} (step {scorer.step}), {summary['rows']} rows x "
        f"{args.sequence_length} tokens of {source}", flush=True)
  if summary["leak_free_log_ppl"] is None:
    print(f"whole-sequence log-perplexity (NOT leak-free: {'; '.join(result.noncausal_layers)}"
          f"): {summary['whole_sequence_log_ppl']:.4f} nats/token", flush=True)
  else:
    print("\n".join(leakfree.describe(summary)), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(summary, f, indent=1)
  scorer.close()
  return summary


def run(argv):
  args = parser().parse_args(argv[1:])
  return prepare.run_reporting(PROG, main, args)
