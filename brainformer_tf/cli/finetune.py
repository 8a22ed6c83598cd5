"""`brainformer finetune`: fine-tune a pretrained checkpoint on a task, then evaluate it.

  brainformer finetune --init_checkpoint=/runs/bf1 --task=super_glue_cb_local \
      --model_dir=/runs/bf1_cb --steps=100

1. Checks before any training: the task (a train split), the checkpoint (a model dir or a
   model.ckpt-N prefix of `brainformer train` or `t5_mesh_transformer`), that the model of its
   operative_config.gin (plus --gin_file/--gin_param) matches the checkpoint's variables, and
   that the routing is causal enough to evaluate.
2. `brainformer train` with gin/finetune/default.gin: mesh-tf `utils.run.init_checkpoint`,
   `model_type="delimited_lm"`, loss on targets only, --steps steps after the checkpoint's.
3. `brainformer eval` of the result on the validation split (--modes rank,decode) into
   <model_dir>/eval: scores.json, per-example JSONL, results.md in the paper's Table 4 layout.
"""

import argparse
import os
import subprocess
import sys

from brainformer_tf.cli import eval as eval_cli
from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.evaluation import checkpoint
from brainformer_tf.evaluation import driver

PROG = "brainformer finetune"


def parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--init_checkpoint", required=True, help="pretrained model dir or prefix")
  p.add_argument("--task", required=True, help="task or mixture to fine-tune on")
  p.add_argument("--model_dir", required=True)
  p.add_argument("--steps", type=int, default=100, help="fine-tuning steps")
  p.add_argument("--modes", default="rank,decode", help="evaluation: rank,decode")
  p.add_argument("--num_eval_examples", type=int, default=-1)
  p.add_argument("--name", help="row name in results.md (default: the model dir name)")
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--gin_param", action="append", default=[])
  return p


def train_config(args):
  """(gin files, gin params) of the training run; runs every pre-flight check."""
  if args.steps < 1:
    raise errors.UsageError(f"--steps={args.steps}: must be >= 1")
  prepare.check_writable_dir(args.model_dir)
  prefix, step, operative = checkpoint.resolve(args.init_checkpoint)
  files = driver.model_config(prefix, operative, args.gin_file)
  files = files[:1] + ["finetune/default.gin"] + files[1:]
  params = list(args.gin_param) + [
      f"MIXTURE_NAME = '{args.task}'", f"utils.run.init_checkpoint = '{prefix}'",
      f"utils.run.train_steps = {step + args.steps}",
      f"utils.run.seen_data_init_step = {step}"]
  driver.parse_gin(files, params)
  task = driver.get_task(args.task, "train")
  vocab_size = task.output_features["targets"].vocabulary.vocab_size
  driver.check_causal(args.modes.split(","), "delimited_lm", vocab_size)
  checkpoint.check_compatible(prefix, "delimited_lm", vocab_size,
                              allow_missing=checkpoint.LEARNED_IN_FINETUNE)
  return files, params


def run(argv):
  args = parser().parse_args(argv[1:])
  prepare.graph_mode()
  try:
    files, params = train_config(args)
  except prepare.user_errors() as e:
    return errors.report(PROG, e)
  command = ([sys.executable, "-m", "brainformer_tf.cli.main", "train",
              f"--model_dir={args.model_dir}"] + [f"--gin_file={f}" for f in files] +
             [f"--gin_param={p}" for p in params])
  print(f"{PROG}: training {args.task} from {args.init_checkpoint} into {args.model_dir}",
        flush=True)
  code = subprocess.call(command)
  if code:
    return code
  eval_args = eval_cli.parser().parse_args([
      f"--checkpoint={args.model_dir}", f"--task={args.task}", "--output_dir=-",
      f"--modes={args.modes}", f"--num_examples={args.num_eval_examples}"] +
      [f"--gin_file={f}" for f in args.gin_file] + [f"--gin_param={p}" for p in args.gin_param])
  name = args.name or os.path.basename(os.path.normpath(args.model_dir))
  try:
    eval_cli.evaluate_and_report(eval_args, args.model_dir,
                                 os.path.join(args.model_dir, "eval"), name)
  except prepare.user_errors() as e:
    return errors.report(PROG, e)
  return 0
