"""`brainformer export`: a SavedModel of a trained LM that serves text in, text out.

  brainformer export --checkpoint=runs/bf1_causal --export_dir=exports/bf1 [--max_new_tokens=32]
                     [--sequence_length=128] [--temperature=0] [--top_k=0] [--beam_size=1]
                     [--alpha=0.6]

mesh-tf's export mode (`brainformer train` with utils.run.mode = "export_infer", the checkpoint's
operative_config.gin) with `generate.predict_fn`, so the served model continues each prompt
exactly as `brainformer decode` does with the same settings (mesh-tf's default would append
EOS to the prompt and start a new document). Serving signature "serving_default": input
"inputs" (a batch of strings), output "outputs" (the continuations). Load it anywhere with
`tf.saved_model.load(<export_dir>/<timestamp>)`; mesh-tf and this package are not needed
(the SentencePiece ops come from tensorflow_text where the graph uses them). Prompts longer
than --sequence_length - --max_new_tokens tokens keep their beginning (mesh-tf's trimming;
`decode` keeps the end). Bad input: one line naming it, exit code 2.
"""

import argparse
import os
import subprocess
import sys

from brainformer_tf.cli import decode
from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.evaluation import checkpoint
from brainformer_tf.evaluation import generate

PROG = "brainformer export"


def parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="the model dir (its newest checkpoint)")
  p.add_argument("--export_dir", required=True, help="SavedModels go to <export_dir>/<time>/")
  decode.add_decoding_flags(p)
  return p


def command(args):
  """The `brainformer train` command line that exports (after checking the arguments)."""
  settings = generate.Settings.from_flags(args)
  settings.check(args.sequence_length)
  if not os.path.isdir(args.checkpoint):
    raise errors.UsageError(f"--checkpoint={args.checkpoint}: not a model dir")
  _, _, files = checkpoint.config_files(args.checkpoint, args.gin_file)
  prepare.check_writable_dir(args.export_dir, "--export_dir")
  params = [
      "utils.run.mode = 'export_infer'", f"utils.run.export_path = {args.export_dir!r}",
      f"utils.run.sequence_length = {{'inputs': {args.sequence_length - args.max_new_tokens}, "
      f"'targets': {args.max_new_tokens}}}",
      "utils.run.predict_fn = @generate.predict_fn",
      f"generate.predict_fn.max_new_tokens = {settings.max_new_tokens}",
      f"generate.predict_fn.temperature = {settings.temperature}",
      f"generate.predict_fn.top_k = {settings.top_k}",
      f"generate.predict_fn.beam_size = {settings.beam_size}",
      f"generate.predict_fn.alpha = {settings.alpha}"] + list(args.gin_param)
  return ([sys.executable, "-m", "brainformer_tf.cli.main", "train",
           f"--model_dir={args.checkpoint}", "--module_import=brainformer_tf.evaluation.generate"]
          + [f"--gin_file={f}" for f in files] + [f"--gin_param={p}" for p in params])


def run(argv):
  args = parser().parse_args(argv[1:])
  prepare.graph_mode()
  try:
    cmd = command(args)
  except prepare.user_errors() as e:
    return errors.report(PROG, e)
  before = set(os.listdir(args.export_dir)) if os.path.isdir(args.export_dir) else set()
  code = subprocess.call(cmd)
  if code:
    return code
  new = sorted(set(os.listdir(args.export_dir)) - before)
  print(f"{PROG}: SavedModel in {os.path.join(args.export_dir, new[-1]) if new else args.export_dir}",
        flush=True)
  return 0
