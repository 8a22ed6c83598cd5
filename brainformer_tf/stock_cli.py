"""The project for the stock `t5_mesh_transformer` command: pass `--module_import=brainformer_tf.stock_cli`.

  t5_mesh_transformer --module_import=brainformer_tf.stock_cli --model_dir=/tmp/run \
    --gin_file=models/glam_tiny.gin --gin_file=train/cpu.gin --gin_param="utils.run.train_steps=100"

Importing it (like any brainformer_tf module) installs the compat shims, and it puts the project's gin/ on the Gin search path and registers the project's SeqIO
tasks: the same model files, recipes and tasks as `brainformer train`, without its pre-flight
checks and NaN-guard installation (recipes that bind `train_with_progress` still get its
progress lines and final validation). Like `brainformer train` it removes mesh-tf's per-step
`tf.Print` of the loss from the graph: with it, the first loss differs in the 7th digit and
later steps vary from run to run (measured: two identical stock runs gave 7.18351 and 7.18262
at step 2).
"""

import importlib

from brainformer_tf import compat
from brainformer_tf.config import ginutil

compat.silence_mesh_tf_step_print()  # as `brainformer train`: see the module docstring
importlib.import_module("tasks")  # registers the project's SeqIO tasks
ginutil.add_search_paths()
