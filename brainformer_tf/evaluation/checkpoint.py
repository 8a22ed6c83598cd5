"""Checkpoints of `brainformer train` and plain `t5_mesh_transformer` runs (same format).

`resolve` turns a model dir or a checkpoint prefix into (prefix, step, operative config);
`check_compatible` compares the variables the parsed Gin model would create with the
checkpoint's, before any session is run, so a wrong model or a wrong checkpoint is named in
one line instead of being half-restored (mesh-tf's `init_checkpoint` silently skips variables
it does not find) or failing deep inside an estimator.
"""

import os
import re

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import utils
from tensorflow.compat.v1 import estimator as tf_estimator
import tensorflow.compat.v1 as tf

from brainformer_tf.config import errors
from brainformer_tf.config import ginutil

OPERATIVE_CONFIG = "operative_config.gin"
# Learned during training only by causal expert choice (docs/moe.md); a checkpoint of another
# gating lacks them and fine-tuning with `expert_choice_causal` learns them from scratch.
LEARNED_IN_FINETUNE = re.compile(r"router/threshold_(ema|weight)$")
ONE_DEVICE = (mtf.convert_to_shape(""), mtf.convert_to_layout_rules(""))   # mesh shape, layout


def resolve(path):
  """(checkpoint prefix, global step, operative_config.gin path or None) of a dir or prefix."""
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise errors.UsageError(f"checkpoint dir {path} holds no checkpoint (no 'checkpoint' "
                              "state file naming a model.ckpt-N)")
  elif tf.io.gfile.exists(path + ".index"):
    prefix = path
  else:
    raise errors.UsageError(f"checkpoint {path} not found (give a model dir or a "
                            "model.ckpt-N prefix)")
  match = re.search(r"-(\d+)$", prefix)
  if not match:
    raise errors.UsageError(f"checkpoint {prefix} has no step suffix (-N)")
  config = os.path.join(os.path.dirname(prefix), OPERATIVE_CONFIG)
  return prefix, int(match.group(1)), config if os.path.exists(config) else None


def config_files(path, gin_files=()):
  """(prefix, step, Gin files) of checkpoint `path`: its operative_config.gin, then `gin_files`;
  UsageError if there is neither."""
  prefix, step, operative = resolve(path)
  files = ([operative] if operative else []) + list(gin_files)
  if not files:
    raise errors.UsageError(f"no {OPERATIVE_CONFIG} next to {prefix}; pass the model's "
                            "--gin_file")
  return prefix, step, files


def load_config(path, gin_files=(), gin_params=()):
  """(prefix, step) of checkpoint `path` (dir or prefix), with Gin cleared and holding its
  `config_files` and `gin_params` (a model's config, for decoding or scoring it). UsageError
  if there is no config or it does not parse."""
  prefix, step, files = config_files(path, gin_files)
  try:
    ginutil.parse_model_config(files, list(gin_params))
  except (OSError, ValueError) as e:
    raise errors.UsageError(str(e).splitlines()[0]) from None
  return prefix, step


def one_device_lm(vocab_size, mesh_name="mesh"):
  """(mtf graph, mesh, Unitransformer) of the parsed Gin config, for one CPU device, in the
  current tf.Graph: what scoring and decoding a checkpoint build on."""
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, mesh_name)
  model = utils.build_model(model_type="lm", input_vocab_size=vocab_size,
                            output_vocab_size=vocab_size, layout_rules=ONE_DEVICE[1],
                            mesh_shape=ONE_DEVICE[0])
  return graph, mesh, model


def lower_one_device(graph, mesh):
  """(lowering, saver of the model's master variables by checkpoint name) of `one_device_lm`'s
  graph once its outputs are built; restore with the saver, then run
  lowering.copy_masters_to_slices()."""
  lowering = mtf.Lowering(graph, {mesh: mtf.placement_mesh_impl.PlacementMeshImpl(
      ONE_DEVICE[0], ONE_DEVICE[1], [""])})
  names = {v.name for v in graph.all_variables}
  saver = tf.train.Saver(
      var_list={v.op.name: v for v in tf.global_variables() if v.op.name in names})
  return lowering, saver


def save_initialised(model_dir, gin_files, vocab_size, length=64):
  """A step-0 checkpoint of the Gin files' LM with its initial (random) weights, and an
  operative_config.gin that includes the files: what decoding and scoring a model need, without
  training it (speed benchmarks, tests). Clears Gin and parses the files first."""
  ginutil.parse_model_config(list(gin_files))
  with tf.Graph().as_default() as graph:
    mtf_graph, mesh, model = one_device_lm(vocab_size)
    dims = mtf.Shape([mtf.Dimension("batch", 1), mtf.Dimension("length", length)])
    targets = mtf.zeros(mesh, dims, tf.int32)
    model.call_simple(inputs=targets, targets=targets, compute_loss=False,
                      mode=tf_estimator.ModeKeys.EVAL,
                      variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32))
    lower_one_device(mtf_graph, mesh)
    tf.train.get_or_create_global_step()   # an Estimator (export) restores it too
    saver = tf.train.Saver()   # one device: every variable is a model master, or the step
    with tf.Session(graph=graph) as session:
      session.run(tf.global_variables_initializer())
      saver.save(session, os.path.join(model_dir, "model.ckpt"), global_step=0)
  with open(os.path.join(model_dir, OPERATIVE_CONFIG), "w") as f:
    f.writelines(f"include '{name}'\n" for name in gin_files)


def model_variables(model_type, vocab_size, length=64, batch=2):
  """{name: shape} of the master variables the Gin-configured model creates (graph only)."""
  with tf.Graph().as_default():
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "check_mesh")
    model = utils.build_model(model_type=model_type, input_vocab_size=vocab_size,
                              output_vocab_size=vocab_size, layout_rules=None,
                              mesh_shape=mtf.convert_to_shape(""))
    dims = [mtf.Dimension("batch", batch), mtf.Dimension("length", length)]
    targets = mtf.ones(mesh, mtf.Shape(dims), dtype=tf.int32)
    model.call_simple(inputs=targets, targets=targets, compute_loss=True,
                      mode=tf_estimator.ModeKeys.TRAIN,
                      variable_dtype=utils.get_variable_dtype())
    return {v.name: v.shape.to_integer_list for v in graph.all_variables}


def check_compatible(prefix, model_type, vocab_size, allow_missing=None):
  """Raises UsageError naming the first mismatches between the model and checkpoint `prefix`.

  allow_missing: regex of model variables the checkpoint may lack (learned afterwards).
  Optimizer slots and the global step in the checkpoint are ignored.
  """
  ours = model_variables(model_type, vocab_size)
  theirs = dict(tf.train.list_variables(prefix))
  missing = sorted(n for n in ours if n not in theirs and not (
      allow_missing and allow_missing.search(n)))
  shapes = sorted(f"{n} {theirs[n]} vs model {ours[n]}" for n in ours
                  if n in theirs and list(theirs[n]) != list(ours[n]))
  slot = re.compile(r"(_slot_|/slot_|global_step$|_v[rc]$|_m$)")
  extra = sorted(n for n in theirs if n not in ours and not slot.search(n))
  problems = []
  if shapes:
    problems.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
  if missing:
    problems.append(f"{len(missing)} model variable(s) not in the checkpoint, e.g. {missing[0]}")
  if extra:
    problems.append(f"{len(extra)} checkpoint variable(s) not in the model, e.g. {extra[0]}")
  if problems:
    raise errors.UsageError(f"model does not match checkpoint {prefix}: " + "; ".join(problems)
                            + " (pass the model's Gin file, or the checkpoint it was trained to)")
