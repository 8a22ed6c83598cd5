"""`brainformer train`: t5_mesh_transformer with the project's Gin files and tasks.

Takes exactly t5_mesh_transformer's absl flags (--model_dir, --gin_file, --gin_param,
--module_import, --gin_location_prefix, --tpu, ...). On top of t5's main it
  * puts the project's gin/ on the Gin search path (`--gin_file=models/glam_tiny.gin` works
    from any directory) next to t5's,
  * imports `tasks` (the project's SeqIO tasks) in addition to --module_import,
  * checks Gin files, the config (brainformer_tf.config.checks, as `brainformer validate`),
    the mixture/task name and its training data before any graph is built, and reports bad
    input naming what is wrong (exit code 2);
  * requires --model_dir and locks it (<model_dir>/train.lock: one training run per model dir,
    a killed run's lock taken over),
  * installs the NaN guard and, in train_with_progress, resumes from the newest intact
    checkpoint (docs/reliability.md); a NaN stop exits with code 1;
  * on a full disk, says "no space left on device: <path>", removes the partial save's temp
    dir and keeps the earlier checkpoints (exit code 2).
`--use_model_api` is passed through to t5's own main unchanged.
"""

import os
import sys

from absl import app
from absl import flags
import gin
from mesh_tensorflow.transformer import utils
import t5
from t5.models import mesh_transformer_main  # defines t5_mesh_transformer's flags
import tensorflow.compat.v1 as tf

from brainformer_tf import compat
from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.training import checkpoints
from brainformer_tf.training import lock
from brainformer_tf.training import nan_guard

PROG = "brainformer train"


def _record_command(model_dir):
  """Appends the command line to <model_dir>/commands/command[.N], as t5's main does."""
  command_dir = os.path.join(model_dir, "commands")
  tf.io.gfile.makedirs(command_dir)
  filename, suffix = os.path.join(command_dir, "command"), 0
  while tf.io.gfile.exists(filename):
    suffix += 1
    filename = os.path.join(command_dir, f"command.{suffix}")
  with tf.io.gfile.GFile(filename, "w") as f:
    f.write(" ".join(sys.argv))


def _main(argv):
  """t5's mesh_transformer_main.main with the checks and paths described above."""
  del argv
  flags_ = flags.FLAGS

  try:
    if flags_.use_model_api:
      prepare.import_modules(flags_.module_import)
      return mesh_transformer_main.main(None)
    if not flags_["model_dir"].present:
      raise errors.UsageError(f"--model_dir is required (t5's default is "
                              f"{flags_.model_dir}, a temp dir)")
    prepare.prepare(flags_)
    held = lock.acquire(flags_.model_dir)
  except prepare.user_errors() as e:
    return errors.report(PROG, e)
  try:
    return _train(flags_)
  finally:
    lock.release(held)


def _train(flags_):
  """utils.run on the prepared config; 1 on a NaN stop."""
  _record_command(flags_.model_dir)
  t5.data.add_global_cache_dirs(flags_.additional_task_cache_dirs)
  if not flags_.tpu:
    with gin.unlock_config():
      gin.bind_parameter("utils.get_variable_dtype.slice_dtype", "float32")
      gin.bind_parameter("utils.get_variable_dtype.activation_dtype", "float32")
  print(f"{PROG}: model dir {flags_.model_dir}", flush=True)
  try:
    utils.run(tpu_job_name=flags_.tpu_job_name, tpu=flags_.tpu, gcp_project=flags_.gcp_project,
              tpu_zone=flags_.tpu_zone, model_dir=flags_.model_dir)
  except nan_guard.NonFiniteError as e:
    errors.report(PROG, str(e).splitlines()[0])
    return 1
  except Exception as e:  # pylint: disable=broad-except  (a full disk, whatever op hit it)
    full = errors.no_space_left(e)
    if full is None:
      raise
    removed = checkpoints.remove_temp_dirs(flags_.model_dir)
    newest = checkpoints.newest_listable(flags_.model_dir)
    kept = os.path.basename(newest) if newest else "no checkpoint"
    return errors.report(PROG, f"{full} (newest checkpoint kept: {kept}" +
                         (f"; removed the partial save {', '.join(removed)}" if removed else "") +
                         "; free space and run the same command to resume)")
  return 0


def run(argv):
  """Runs the command. TensorFlow's own INFO logs (the Estimator's per-step "global_step/sec"
  and mesh-tf's per-step "step, tf_loss" print) are hidden unless BRAINFORMER_LOG_LEVEL=INFO;
  the progress lines, the final validation and every warning and error are always shown."""
  verbose = os.environ.get("BRAINFORMER_LOG_LEVEL", "").upper() in ("INFO", "DEBUG")
  if not verbose:
    compat.silence_mesh_tf_step_print()
  tf.disable_v2_behavior()
  tf.logging.set_verbosity(tf.logging.INFO if verbose else tf.logging.WARN)
  app.run(_main, argv=argv)
