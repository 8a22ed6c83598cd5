"""Crash injection for the reliability tests, driven by an environment variable.

BRAINFORMER_FAULT=kill_before_checkpoint_state:N makes the training process SIGKILL itself
after the index and data files of checkpoint N are on disk but before the `checkpoint` state
file names it: the latest moment of a checkpoint write at which a kill can land. Unset (always,
outside tests), nothing is patched.
"""

import os
import signal

from tensorflow.python.checkpoint import checkpoint_management

ENV = "BRAINFORMER_FAULT"


def install():
  """Installs the fault named by $BRAINFORMER_FAULT, if any."""
  spec = os.environ.get(ENV)
  if not spec:
    return
  kind, _, step = spec.partition(":")
  if kind != "kill_before_checkpoint_state" or not step.isdigit():
    raise ValueError(f"{ENV}={spec!r}: expected kill_before_checkpoint_state:<step>")
  update = checkpoint_management.update_checkpoint_state_internal

  def update_or_die(save_dir, model_checkpoint_path, *args, **kwargs):
    if model_checkpoint_path.endswith(f"-{step}"):
      print(f"fault injection: SIGKILL before the state file names {model_checkpoint_path}",
            flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
    return update(save_dir, model_checkpoint_path, *args, **kwargs)

  checkpoint_management.update_checkpoint_state_internal = update_or_die
