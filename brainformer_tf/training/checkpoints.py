"""Crash-safe restart: make the model dir's `checkpoint` state name only complete checkpoints.

TF's Saver writes `model.ckpt-N.{index,data-*}` (sharded: into a temp dir, then merged and
renamed), then replaces the `checkpoint` state file atomically, then writes `.meta`. A SIGKILL
on a local disk therefore never leaves the state naming a half-written checkpoint, but a torn
write (power loss, a non-atomic file system, a full disk) or a damaged state file can. Before
training resumes, `recover` reads every tensor of the newest checkpoint (the bundle reader checks
each tensor's CRC32C), falls back to the newest one that reads cleanly, moves broken ones to
`<model_dir>/corrupt_checkpoints/` and rewrites the state file.
"""

import glob
import os
import re
import shutil

from absl import logging
import tensorflow.compat.v1 as tf
from tensorflow.python.checkpoint import checkpoint_management  # relative paths in the state

QUARANTINE_DIR = "corrupt_checkpoints"
_STEP = re.compile(r"-(\d+)$")


def step_of(prefix):
  match = _STEP.search(prefix)
  return int(match.group(1)) if match else None


def _candidates(model_dir):
  """Checkpoint prefixes named by the state file or present on disk, newest step first."""
  prefixes = {p[:-len(".index")] for p in glob.glob(os.path.join(model_dir, "*.index"))}
  prefixes |= {p.rsplit(".data-", 1)[0]
               for p in glob.glob(os.path.join(model_dir, "*.data-?????-of-?????"))}
  try:
    state = tf.train.get_checkpoint_state(model_dir)
  except Exception as e:  # pylint: disable=broad-except  (text-format parse errors)
    logging.warning("checkpoint state file in %s is unreadable (%s); rebuilding it", model_dir, e)
    state = None
  if state:
    prefixes |= {p if os.path.isabs(p) else os.path.join(model_dir, p)
                 for p in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]}
  prefixes = {p for p in prefixes if step_of(p) is not None}
  return sorted(prefixes, key=step_of, reverse=True)


def newest_listable(model_dir):
  """The newest checkpoint prefix whose index reads (its variables can be listed), or None.

  Read-only and cheap (no tensor is read): what the pre-flight checks compare the model with.
  A torn or zero-byte newest index is passed over, as `recover` will pass over it.
  """
  if not model_dir or not os.path.isdir(model_dir):
    return None
  for prefix in _candidates(model_dir):
    try:
      tf.train.list_variables(prefix)
    except Exception:  # pylint: disable=broad-except  (DataLoss, NotFound, ...: skip it)
      continue
    return prefix
  return None


def check(prefix):
  """None if every tensor of checkpoint `prefix` reads back intact, else why not."""
  try:
    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except Exception as e:  # pylint: disable=broad-except  (DataLoss, NotFound, OutOfRange, ...)
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
  return None


def remove_temp_dirs(model_dir):
  """Removes the temp dirs of interrupted sharded saves (`model.ckpt-N_temp/`); their names."""
  removed = []
  for temp in sorted(glob.glob(os.path.join(model_dir, "*_temp*"))):
    if os.path.isdir(temp):
      shutil.rmtree(temp, ignore_errors=True)
      removed.append(os.path.basename(temp))
  return removed


def _quarantine(model_dir, prefix):
  dest = os.path.join(model_dir, QUARANTINE_DIR)
  os.makedirs(dest, exist_ok=True)
  for path in glob.glob(glob.escape(prefix) + ".*"):
    shutil.move(path, os.path.join(dest, os.path.basename(path)))


def recover(model_dir):
  """Points the state file at the newest intact checkpoint; returns its step (0 if none).

  A complete checkpoint that the state file does not name yet (killed between the data and
  the state write) is adopted: every tensor of it was read back. Broken checkpoints newer than it are moved to corrupt_checkpoints/; leftover temp dirs of
  interrupted sharded saves are removed.
  """
  if not os.path.isdir(model_dir):
    return 0
  remove_temp_dirs(model_dir)
  good = []
  for prefix in _candidates(model_dir):
    problem = check(prefix) if not good else None
    if problem:
      logging.warning("checkpoint %s is incomplete or corrupt (%s); moved to %s/",
                      prefix, problem, QUARANTINE_DIR)
      print(f"resume: skipping broken checkpoint {os.path.basename(prefix)} ({problem})",
            flush=True)
      _quarantine(model_dir, prefix)
    else:
      good.append(prefix)
  state_file = os.path.join(model_dir, "checkpoint")
  if not good:
    if os.path.exists(state_file):
      os.remove(state_file)
    return 0
  checkpoint_management.update_checkpoint_state_internal(
      model_dir, good[0], all_model_checkpoint_paths=list(reversed(good)),
      save_relative_paths=True)
  return step_of(good[0])
