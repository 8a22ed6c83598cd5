"""Entry point of the `brainformer` console script: dispatches to a subcommand module.

Each subcommand lives in brainformer_tf/cli/<name>.py and exposes `run(argv)`; modules are
imported only when their command runs, so `brainformer --help` is instant. TensorFlow's C++
log lines are hidden (TF_CPP_MIN_LOG_LEVEL=3, set before a command imports TF, unless the
environment sets it; 0 shows them all): TF 2.15 prints three "Unable to register cuDNN/cuFFT/
cuBLAS factory" ERROR lines at every import, GPU or not (tensorflow/tensorflow#62075, fixed in
2.16), and C++ failures reach the user as Python errors anyway. TF's Python deprecation
notices (~30 per training run, about TF 1 APIs that mesh-tf and the Estimator use) are not
printed, nor tf_should_use's "Object was never used" dumps, and each remaining TF warning is
printed once (TF's own handler is removed; the root logger's, absl's once a command parses its
flags, prints it).
"""

import importlib
import os
import sys

import brainformer_tf
from brainformer_tf import compat

# name -> (module, one-line help)
COMMANDS = {
    "train": ("brainformer_tf.cli.train",
              "train or evaluate with Mesh-TF: a drop-in for t5_mesh_transformer (same flags) "
              "with the project's gin/ and tasks"),
    "params": ("brainformer_tf.cli.params", "total/activated parameters and training FLOPs per token of a model"),
    "search": ("brainformer_tf.cli.search", "evolutionary block search under a wall-clock budget (paper Sec. 3)"),
    "vocab": ("brainformer_tf.cli.vocab", "train a SentencePiece vocabulary on text files"),
    "validate": ("brainformer_tf.cli.validate", "check a Gin config (as train does) without building a graph"),
    "finetune": ("brainformer_tf.cli.finetune", "fine-tune a pretrained checkpoint on a task, then evaluate it (paper Table 4)"),
    "score": ("brainformer_tf.cli.score", "leak-free log-perplexity of a checkpoint on held-out text, and its future-information gap"),
    "decode": ("brainformer_tf.cli.decode", "continue prompts from a file or stdin: greedy, sampling or beam search"),
    "export": ("brainformer_tf.cli.export", "a SavedModel of a trained LM that serves text in, text out"),
    "eval": ("brainformer_tf.cli.eval", "evaluate a checkpoint: greedy decoding / rank classification (paper Tables 4, 5)"),
}

USAGE = """usage: brainformer <command> [flags]

commands:
{commands}

`brainformer <command> --help` lists a command's flags; `brainformer --version` the version
and which mesh-tf patches (brainformer_tf/compat.py) are on."""


def usage() -> str:
  width = max(len(name) for name in COMMANDS)
  lines = [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
  return USAGE.format(commands="\n".join(lines))


def version() -> str:
  lines = [f"brainformer_tf {brainformer_tf.__version__}", "mesh-tf patches (compat.py):"]
  for name, on in compat.status().items():
    lines.append(f"  {name:<32} {'on ' if on else 'OFF'}  {compat.PATCHES[name]}")
  return "\n".join(lines)


def _quiet_tf_python_logs():
  """No deprecation notices; one copy of each TF warning (see the module docstring)."""
  from tensorflow.python.util import \
      deprecation  # pylint: disable=g-import-not-at-top  (loads TF: only once a command runs)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  deprecation._PRINT_DEPRECATION_WARNINGS = False  # pylint: disable=protected-access
  tf.get_logger().handlers.clear()
  tf.get_logger().addFilter(_not_never_used)


def _not_never_used(record) -> bool:
  """Drops tf_should_use's "Object was never used" dumps (mesh-tf's export builds an op it does
  not run: ~10 lines of stack a user cannot act on)."""
  return "Object was never used" not in str(record.msg)


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    return 0 if len(argv) >= 2 else 2
  command = argv[1]
  try:
    compat.status()
  except ValueError as e:
    print(f"brainformer: error: {e}", file=sys.stderr)
    return 2
  if command == "--version":
    print(version())
    return 0
  if command not in COMMANDS:
    print(f"brainformer: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
    return 2
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  _quiet_tf_python_logs()
  module = importlib.import_module(COMMANDS[command][0])
  return module.run([f"brainformer {command}"] + argv[2:]) or 0


if __name__ == "__main__":
  sys.exit(main())
