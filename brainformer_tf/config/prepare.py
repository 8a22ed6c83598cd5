"""Gin parsing and checking as `brainformer train` does it, shared by every command.

`prepare` = t5_mesh_transformer's Gin handling (mesh-tf defaults, --gin_file, --gin_param,
deprecated names skipped) on the project's search path, then every config check
(brainformer_tf.config.checks), the task/mixture name and its training data, all before a graph
is built. Bad input raises one of `user_errors()` with a message naming what is wrong.
"""

import importlib
import os

import gin
from mesh_tensorflow.transformer import utils
import seqio
import t5
from t5.models import mesh_transformer
import tensorflow.compat.v1 as tf

from brainformer_tf.config import checks as config_checks
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.config import paths
from brainformer_tf.data import text
from brainformer_tf.training import checkpoints
from brainformer_tf.training import nan_guard


def graph_mode(modules=()):
  """TF1 graph mode (mesh-tf's), with `modules` and the project's tasks imported."""
  tf.disable_v2_behavior()
  import_modules(modules)


def import_modules(modules):
  """Imports --module_import's modules and the project's `tasks` (SeqIO registrations)."""
  ginutil.import_modules(list(modules or []) + ["tasks"])


def _parse_gin(flags_):
  skip = flags_.skip_all_gin_unknowns or (
      mesh_transformer.DEPRECATED_GIN_REFERENCES +
      tuple(flags_.additional_deprecated_gin_references))
  try:
    with ginutil.quiet_search_misses():
      utils.parse_gin_defaults_and_flags(skip_unknown=skip, finalize_config=False)
  except OSError as e:
    raise errors.UsageError(
        f"{e}\n  project model files: {', '.join(paths.model_files())}") from None


class DataUnavailable(errors.UsageError):
  """The task is registered but its data cannot be read on this machine."""


def _tfds_sources(task):
  """The TFDS data sources of `task` or its subtasks."""
  return [sub.source for sub in seqio.get_subtasks(task)
          if isinstance(getattr(sub, "source", None), seqio.TfdsDataSource)]


def check_mixture_or_task(name, split, sequence_length, read=True):
  """Fails with a clear message if `name` is unknown or its `split` yields no example.

  Raises UsageError for an unknown name or an empty split, DataUnavailable when reading fails
  (a TFDS dataset not prepared in the data dir, an unreachable gs:// path). read=False checks
  TFDS datasets without reading them, so nothing is downloaded (TFDS would prepare a missing
  dataset on first read).
  """
  # asked first: seqio's own lookup logs every registered name (~270 INFO lines) before raising
  if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
    ours = sorted(importlib.import_module("tasks").PROJECT_NAMES)
    raise errors.UsageError(
        f"MIXTURE_NAME={name!r} is not a registered task or mixture; this project's: "
        f"{', '.join(ours)} (see tasks/)")
  task = seqio.get_mixture_or_task(name)
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
  locate = locate or config_checks.Locator(flags_.gin_file or [], flags_.gin_param or [])
  problems = config_checks.check(locate, flags_.model_dir, tpu=bool(flags_.tpu))
  if problems:
    raise errors.UsageError(f"{len(problems)} problem(s) in the Gin config:\n  " +
                            "\n  ".join(problems))


def check_writable_dir(directory, flag="--model_dir"):
  """`directory` (local) is one this user can write, or can be created as one; else a
  UsageError naming `flag`. Remote paths (gs://) are left to the run."""
  if not directory or "://" in directory:
    return
  path = os.path.abspath(directory)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise errors.UsageError(f"{flag}={directory}: {path} is a file, not a directory")
  if not os.access(path, os.W_OK | os.X_OK):
    raise errors.UsageError(f"{flag}={directory}: {path} is not writable by this user")


def check_train_steps(model_dir):
  """Training to utils.run.train_steps from a checkpoint already there must have steps left."""
  prefix = checkpoints.newest_listable(model_dir)
  target = ginutil.query("utils.run.train_steps")
  if prefix and isinstance(target, int) and checkpoints.step_of(prefix) >= target:
    raise errors.UsageError(
        f"utils.run.train_steps = {target} but --model_dir={model_dir} is already at step "
        f"{checkpoints.step_of(prefix)}: nothing to train (raise train_steps to go on; "
        "`brainformer eval` / `score` read a finished run)")


def _device_name(device) -> str:
  """"/job:localhost/replica:0/task:0/device:GPU:1" or "gpu:1" -> "gpu:1" ("" stays "")."""
  return ":".join(str(device).lower().split(":")[-2:]).rpartition("/")[2]


def check_local_devices():
  """Every device of utils.run.mesh_devices exists on this machine (off-TPU runs); mesh-tf
  would otherwise place the slices on the CPU without a word."""
  local = sorted(_device_name(d.name) for d in tf.config.list_logical_devices())
  for device in ginutil.query("utils.run.mesh_devices") or []:
    if device and _device_name(device) not in local:
      raise errors.UsageError(
          f"utils.run.mesh_devices lists {device!r}, which this machine does not have (it has "
          f"{', '.join(local)}); pick a layout from gin/layouts/ that fits it")


def _validates_after_training():
  """The split train_with_progress validates on after training, or None."""
  fn = ginutil.query("utils.run.train_model_fn")
  if getattr(getattr(fn, "configurable", None), "name", None) != "train_with_progress":
    return None
  return ginutil.query("train_with_progress.final_eval_split", "validation")


def parse_and_check(flags_):
  """Parses Gin from the flags on the project's search path, then `check_config`."""
  ginutil.add_search_paths()
  ginutil.check_gin_files(flags_.gin_file)
  _parse_gin(flags_)
  locate = config_checks.Locator(flags_.gin_file or [], flags_.gin_param or [])
  note = None if locate("utils.run.mesh_shape") else ginutil.resolve_default_mesh(
      flags_.tpu, flags_.tpu_topology)
  if note:
    print(f"brainformer: {note}", flush=True)
  check_config(flags_, locate)


def prepare(flags_, for_training=True):
  """Imports tasks, parses Gin like t5's main and checks it; shared with `brainformer validate`.

  for_training: also bind the task's vocabulary, install the NaN guard and finalize Gin.
  Raises one of `user_errors()` on bad input.
  """
  import_modules(flags_.module_import)
  if flags_.t5_tfds_data_dir:
    t5.data.set_tfds_data_dir_override(flags_.t5_tfds_data_dir)
  parse_and_check(flags_)
  training = ginutil.query("utils.run.mode", "train") == "train"
  if for_training:  # the cheap checks first: reading the data builds input pipelines
    check_writable_dir(flags_.model_dir)
    if training:
      check_train_steps(flags_.model_dir)
    if not flags_.tpu:
      check_local_devices()
  name = ginutil.mixture_name() if training else None
  if name:
    length = gin.query_parameter("utils.run.sequence_length")
    try:
      check_mixture_or_task(name, "train", length, read=for_training)
    except DataUnavailable as e:
      if for_training:
        raise
      print(f"brainformer: note: {e} (train will stop there unless it runs where the data is)",
            flush=True)
  if for_training:
    split = name and _validates_after_training()
    if split:   # found before training, not after it
      check_mixture_or_task(name, split, length)
    gin.bind_parameter("run.vocabulary", mesh_transformer.get_vocabulary())
    nan_guard.install()
    gin.finalize()


def run_reporting(prog, main, args):
  """Graph mode, then main(args); bad input (user_errors) becomes one line and exit code 2."""
  graph_mode()
  try:
    main(args)
  except user_errors() as e:
    return errors.report(prog, e)
  return 0


def user_errors():
  """Exception types that mean bad input (reported as one line, exit code 2)."""
  return (errors.UsageError, text.CorpusError, FileNotFoundError, ValueError, SyntaxError)
