"""`brainformer validate`: the checks `brainformer train` runs before building a graph, alone.

Same flags as `brainformer train` (--gin_file, --gin_param, --model_dir, --module_import, ...);
Gin is parsed and checked by the same code (train.prepare without binding the vocabulary or
finalizing). Prints "config OK" and exits 0, or lists every problem found and exits 2.
`--model_dir` is optional here: when given, its latest checkpoint is compared with the model.
"""

import os

from brainformer_tf.cli import errors
from brainformer_tf.cli import train

PROG = "brainformer validate"


def _main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from brainformer_tf import ginutil  # pylint: disable=g-import-not-at-top
  try:
    train.prepare(flags.FLAGS, for_training=False)
  except train.user_errors() as e:
    return errors.report(PROG, e)
  print(f"{PROG}: config OK (task {ginutil.mixture_name()!r}, "
        f"{len(flags.FLAGS.gin_file or [])} Gin file(s))", flush=True)
  return 0


def run(argv):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from brainformer_tf import compat  # pylint: disable=g-import-not-at-top
  compat.apply()
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from t5.models import mesh_transformer_main  # pylint: disable=g-import-not-at-top,unused-import  (defines the flags)
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  flags.FLAGS["model_dir"].default = None  # required by train, optional here
  app.run(_main, argv=argv)
