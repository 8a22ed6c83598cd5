"""`brainformer train`: t5_mesh_transformer with the project's Gin files and tasks.

Takes exactly t5_mesh_transformer's absl flags (--model_dir, --gin_file, --gin_param,
--module_import, --gin_location_prefix, --tpu, ...). On top of t5's main it
  * applies brainformer_tf.compat before mesh_tensorflow/t5 are imported,
  * puts the project's gin/ on the Gin search path (`--gin_file=models/glam_tiny.gin` works
    from any directory) next to t5's,
  * imports `tasks` (the project's SeqIO tasks) in addition to --module_import,
  * checks Gin files, the config (brainformer_tf.config_checks, as `brainformer validate`),
    the mixture/task name and its training data before any graph is built, and reports bad
    input naming what is wrong (exit code 2);
  * installs the NaN guard and, in train_with_progress, resumes from the newest intact
    checkpoint (docs/reliability.md); a NaN stop exits with code 1.
`--use_model_api` is passed through to t5's own main unchanged.
"""

import importlib
import os
import sys

from brainformer_tf import errors

PROG = "brainformer train"


def _import_modules(modules):
  for module in list(modules or []) + ["tasks"]:
    importlib.import_module(module)


def _record_command(model_dir):
  """Appends the command line to <model_dir>/commands/command[.N], as t5's main does."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  command_dir = os.path.join(model_dir, "commands")
  tf.io.gfile.makedirs(command_dir)
  filename, suffix = os.path.join(command_dir, "command"), 0
  while tf.io.gfile.exists(filename):
    suffix += 1
    filename = os.path.join(command_dir, f"command.{suffix}")
  with tf.io.gfile.GFile(filename, "w") as f:
    f.write(" ".join(sys.argv))


def _parse_gin(flags_):
  import gin  # pylint: disable=g-import-not-at-top
  from brainformer_tf import paths  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import utils  # pylint: disable=g-import-not-at-top
  from t5.models import mesh_transformer  # pylint: disable=g-import-not-at-top
  skip = flags_.skip_all_gin_unknowns or (
      mesh_transformer.DEPRECATED_GIN_REFERENCES +
      tuple(flags_.additional_deprecated_gin_references))
  try:
    utils.parse_gin_defaults_and_flags(skip_unknown=skip, finalize_config=False)
  except OSError as e:
    raise errors.UsageError(
        f"{e}\n  project model files: {', '.join(paths.model_files())}") from None


class DataUnavailable(errors.UsageError):
  """The task is registered but its data cannot be read on this machine."""


def _tfds_sources(task):
  """The TFDS data sources of `task` or its subtasks."""
  import seqio  # pylint: disable=g-import-not-at-top
  return [sub.source for sub in seqio.get_subtasks(task)
          if isinstance(getattr(sub, "source", None), seqio.TfdsDataSource)]


def check_mixture_or_task(name, split, sequence_length, read=True):
  """Fails with a clear message if `name` is unknown or its `split` yields no example.

  Raises UsageError for an unknown name or an empty split, DataUnavailable when reading fails
  (a TFDS dataset not prepared in the data dir, an unreachable gs:// path). read=False checks
  TFDS datasets without reading them, so nothing is downloaded (TFDS would prepare a missing
  dataset on first read).
  """
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from brainformer_tf.data import text  # pylint: disable=g-import-not-at-top
  try:
    task = seqio.get_mixture_or_task(name)
  except ValueError:
    import tasks  # pylint: disable=g-import-not-at-top
    ours = sorted(tasks.PROJECT_NAMES)
    raise errors.UsageError(
        f"MIXTURE_NAME={name!r} is not a registered task or mixture; this project's: "
        f"{', '.join(ours)} (see tasks/)") from None
  sources = _tfds_sources(task)
  if not read and sources:
    missing = [f"{s.tfds_dataset.name} (in {s.tfds_dataset.builder.data_dir_root})"
               for s in sources if not s.tfds_dataset.builder.is_prepared()]
    if missing:
      raise DataUnavailable(f"task {name!r}: TFDS dataset {', '.join(missing)} is not "
                            "prepared; TFDS data is read from --t5_tfds_data_dir or "
                            "TFDS_DATA_DIR (docs/tasks.md)")
    return
  try:
    with tf.Graph().as_default():
      ds = task.get_dataset(sequence_length, split=split, shuffle=False, num_epochs=1)
      first = tf.data.make_one_shot_iterator(ds.take(1)).get_next()
      with tf.Session() as session:
        session.run(first)
  except tf.errors.OutOfRangeError:
    raise errors.UsageError(f"task {name!r} has no examples in split {split!r}") from None
  except (errors.UsageError, text.CorpusError):
    raise
  except Exception as e:  # pylint: disable=broad-except  (any reader failure: one line)
    reason = (str(e).strip().splitlines() or [""])[0][:200]
    raise DataUnavailable(
        f"task {name!r}: the {split!r} split cannot be read here ({type(e).__name__}: "
        f"{reason}); TFDS data is read from --t5_tfds_data_dir or TFDS_DATA_DIR "
        "(docs/tasks.md)") from None


def check_config(flags_, locate=None):
  """Raises UsageError listing every problem config_checks finds in the parsed Gin config."""
  from brainformer_tf import config_checks  # pylint: disable=g-import-not-at-top
  locate = locate or config_checks.Locator(flags_.gin_file or [], flags_.gin_param or [])
  problems = config_checks.check(locate, flags_.model_dir, tpu=bool(flags_.tpu))
  if problems:
    raise errors.UsageError(f"{len(problems)} problem(s) in the Gin config:\n  " +
                            "\n  ".join(problems))


def parse_and_check(flags_):
  """Parses Gin from the flags on the project's search path, then `check_config`."""
  from brainformer_tf import ginutil  # pylint: disable=g-import-not-at-top
  ginutil.add_search_paths()
  _parse_gin(flags_)
  from brainformer_tf import config_checks  # pylint: disable=g-import-not-at-top
  locate = config_checks.Locator(flags_.gin_file or [], flags_.gin_param or [])
  note = None if locate("utils.run.mesh_shape") else ginutil.resolve_default_mesh(
      flags_.tpu, flags_.tpu_topology)
  if note:
    print(f"brainformer: {note}", flush=True)
  check_config(flags_, locate)


def prepare(flags_, for_training=True):
  """Imports tasks, parses Gin like t5's main and checks it; shared with `brainformer validate`.

  for_training: also bind the task's vocabulary, install the NaN guard and finalize Gin.
  Raises UsageError (or the data errors listed in USER_ERRORS) on bad input.
  """
  import gin  # pylint: disable=g-import-not-at-top
  import t5  # pylint: disable=g-import-not-at-top
  from t5.models import mesh_transformer  # pylint: disable=g-import-not-at-top
  from brainformer_tf import ginutil  # pylint: disable=g-import-not-at-top
  from brainformer_tf.training import nan_guard  # pylint: disable=g-import-not-at-top
  _import_modules(flags_.module_import)
  if flags_.t5_tfds_data_dir:
    t5.data.set_tfds_data_dir_override(flags_.t5_tfds_data_dir)
  parse_and_check(flags_)
  name = ginutil.mixture_name()
  if name and ginutil.query("utils.run.mode", "train") == "train":
    try:
      check_mixture_or_task(name, "train", gin.query_parameter("utils.run.sequence_length"),
                            read=for_training)
    except DataUnavailable as e:
      if for_training:
        raise
      print(f"brainformer: note: {e} (train will stop there unless it runs where the data is)",
            flush=True)
  if for_training:
    gin.bind_parameter("run.vocabulary", mesh_transformer.get_vocabulary())
    nan_guard.install()
    gin.finalize()


def user_errors():
  """Exception types that mean bad input (reported as one line, exit code 2)."""
  from brainformer_tf.data import text  # pylint: disable=g-import-not-at-top
  return (errors.UsageError, text.CorpusError, FileNotFoundError, ValueError, SyntaxError)


def _main(argv):
  """t5's mesh_transformer_main.main with the checks and paths described above."""
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import utils  # pylint: disable=g-import-not-at-top
  import t5  # pylint: disable=g-import-not-at-top
  from t5.models import mesh_transformer_main  # pylint: disable=g-import-not-at-top
  from brainformer_tf.training import nan_guard  # pylint: disable=g-import-not-at-top
  flags_ = flags.FLAGS

  try:
    if flags_.use_model_api:
      _import_modules(flags_.module_import)
      return mesh_transformer_main.main(None)
    prepare(flags_)
  except user_errors() as e:
    return errors.report(PROG, e)

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
  return 0


def run(argv):
  """Runs the command. TensorFlow's own INFO logs (the Estimator's per-step "global_step/sec"
  and mesh-tf's per-step "step, tf_loss" print) are hidden unless BRAINFORMER_LOG_LEVEL=INFO;
  the progress lines, the final validation and every warning and error are always shown."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  verbose = os.environ.get("BRAINFORMER_LOG_LEVEL", "").upper() in ("INFO", "DEBUG")
  from brainformer_tf import compat  # pylint: disable=g-import-not-at-top
  compat.apply()
  if not verbose:
    compat.silence_mesh_tf_step_print()
  from absl import app  # pylint: disable=g-import-not-at-top
  from t5.models import mesh_transformer_main  # pylint: disable=g-import-not-at-top,unused-import  (defines the flags)
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  tf.logging.set_verbosity(tf.logging.INFO if verbose else tf.logging.WARN)
  app.run(_main, argv=argv)
