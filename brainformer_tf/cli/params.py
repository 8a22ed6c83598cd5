"""`brainformer params`: parameters and training FLOPs per token of a Gin-configured model.

  brainformer params --gin_file=models/glam_1.7b_64e.gin [--gin_param="d_model = 1024"]
                     [--sequence_length=1024] [--layers] [--json]
  brainformer params --paper      # every zoo model with a paper row, next to the paper
  brainformer params --gin_file=models/glam_8b_64e.gin --mesh=tpu_v4_512 [--device_memory_gib=32]
                     [--layout_rules=...] [--batch_size=1024]   # memory per device

Counts the model `brainformer train` would build from the same Gin files (see
brainformer_tf/analysis/accounting.py for the convention): total and activated parameters per token,
both without embeddings, and training FLOPs per token. --json prints one object with keys
total_params, activated_params, flops_per_token (plus embedding_params, sequence_length).
--mesh (a gin/layouts/ name such as tpu_v4_512, or a mesh string "batch:4,model:2" used with
the rules of --layout_rules or the Gin files) prints the per-device memory estimate of
brainformer_tf/analysis/memory.py instead (parameters, gradients, optimizer slots, activations).
"""

import argparse
import json
import sys

from brainformer_tf.analysis import accounting
from brainformer_tf.analysis import memory
from brainformer_tf.analysis import symbolic
from brainformer_tf.analysis.accounting import human
from brainformer_tf.config import errors

PROG = "brainformer params"


def _parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
  p.add_argument("--gin_file", action="append", default=[],
                 help="model (and optionally recipe/layout) gin file; repeatable")
  p.add_argument("--gin_param", action="append", default=[], help="gin binding; repeatable")
  p.add_argument("--module_import", action="append", default=[], help="module to import first")
  p.add_argument("--sequence_length", type=int, default=None,
                 help="T for the attention FLOPs (default: the recipe's, else 1024)")
  p.add_argument("--vocab_size", type=int, default=None,
                 help="vocabulary for the (excluded) embedding count (default 256000)")
  p.add_argument("--layers", action="store_true", help="also list every layer's counts")
  p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
  p.add_argument("--paper", action="store_true",
                 help="count every zoo model with a row in the papers' tables, next to the paper")
  p.add_argument("--mesh", default=None,
                 help="estimate memory per device on this layout (layouts/<name>.gin or "
                      "a mesh string like batch:64,model:8)")
  p.add_argument("--layout_rules", default=None, help="with --mesh: override the layout rules")
  p.add_argument("--batch_size", type=int, default=None,
                 help="with --mesh: sequences per batch (default: the recipe's, else 1024)")
  p.add_argument("--device_memory_gib", type=float, default=32.0,
                 help="with --mesh: memory per device to compare with (TPU v4: 32)")
  return p


def format_table(counts, layers=False) -> str:
  rows = [("total params (no embeddings)", counts.total_params),
          ("activated params / token", counts.activated_params),
          (f"training FLOPs / token (T={counts.sequence_length})", counts.flops_per_token),
          ("embedding params (excluded)", counts.embedding_params)]
  lines = [f"{name:<40} {human(v):>9}  {v:>18,.0f}" for name, v in rows]
  if layers:
    lines.append("")
    lines.append(f"{'layer':<22} {'class':<26} {'params':>9} {'activated':>9} {'experts/tok':>11}")
    for e in counts.layers:
      ept = "" if e.experts_per_token is None else f"{e.experts_per_token:g}"
      lines.append(f"{e.name:<22} {e.kind:<26} {human(e.params):>9} {human(e.activated):>9} "
                   f"{ept:>11}")
  return "\n".join(lines)


def run(argv) -> int:
  parser = _parser()
  args = parser.parse_args(argv[1:])
  if not args.gin_file and not args.paper:
    parser.error("--gin_file is required (or --paper)")
  if args.mesh:
    return _memory(args)
  try:
    if args.paper:
      print(accounting.paper_table(args.sequence_length))
      return 0
    counts = accounting.count(args.gin_file, args.gin_param, args.sequence_length,
                              args.vocab_size or accounting.DEFAULT_VOCAB_SIZE,
                              args.module_import)
  except symbolic.AnalysisError as e:
    return errors.report(PROG, e)
  if args.json:
    print(json.dumps(counts.as_dict()))
  else:
    print(format_table(counts, args.layers))
  sys.stdout.flush()
  return 0


def _memory(args) -> int:
  try:
    est = memory.estimate(args.gin_file, args.gin_param, args.mesh, args.layout_rules,
                          args.batch_size, args.sequence_length,
                          args.vocab_size or accounting.DEFAULT_VOCAB_SIZE)
  except symbolic.AnalysisError as e:
    return errors.report(PROG, e)
  if args.json:
    print(json.dumps({**est.as_dict(),
                      "fits": est.total <= args.device_memory_gib * memory.GIB}))
  else:
    print(memory.format_estimate(est, args.device_memory_gib))
  sys.stdout.flush()
  return 0
