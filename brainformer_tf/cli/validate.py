"""`brainformer validate`: the checks `brainformer train` runs before building a graph, alone.

Same flags as `brainformer train` (--gin_file, --gin_param, --model_dir, --module_import, --tpu,
...); Gin is parsed and checked by the same code (config.prepare without binding the vocabulary
or finalizing). Prints "config OK" and exits 0, or lists every problem found and exits 2 (an
unknown flag too, in one line).
`--model_dir` is optional here: when given, its latest checkpoint is compared with the model.

Nothing is compared with this machine's devices, so a layout for more devices than it has (a
TPU slice, 8 GPUs) is checked here as well: mesh shape and layout rules, every split dimension
against its mesh dimension, the batch. `utils.run.mesh_devices` must list one device per mesh
slice, except with --tpu, where the TPU system places the mesh and mesh-tf ignores the list (a
CPU recipe's `["cpu:0"]` under a TPU layout is fine there). Memory per device:
`brainformer params --mesh=<layout>`.
"""

import sys

from absl import app
from absl import flags
from t5.models import mesh_transformer_main  # pylint: disable=unused-import  (defines the flags)
import tensorflow.compat.v1 as tf

from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.config import prepare

PROG = "brainformer validate"


def _main(argv):
  del argv
  try:
    prepare.prepare(flags.FLAGS, for_training=False)
  except prepare.user_errors() as e:
    return errors.report(PROG, e)
  print(f"{PROG}: config OK (task {ginutil.mixture_name()!r}, "
        f"{len(flags.FLAGS.gin_file or [])} Gin file(s))", flush=True)
  return 0


def _parse_flags(argv):
  """absl's flag parsing, with a bad flag reported in one line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(errors.report(PROG, " ".join(str(e).split())))


def run(argv):
  tf.disable_v2_behavior()
  flags.FLAGS["model_dir"].default = None  # required by train, optional here
  app.run(_main, argv=argv, flags_parser=_parse_flags)
