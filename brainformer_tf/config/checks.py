"""Checks of a parsed Gin config that need no graph: run by `brainformer validate` and train.

`check(locate, model_dir)` returns a list of problems, each one line starting with where it is
(`file:line: Configurable.param`, or a sub-layer "layer 3 (MoE1D)"): missing REQUIRED bindings,
mesh/layout strings, dimensions not divisible by the mesh dimension they are split over, MoE
capacity factors, batch size, sequence lengths vs the task and the model, vocabulary size vs the
mesh and vs an existing checkpoint, step counts, the NaN guard policy and Brainformer block specs.
`locate(param)` maps "Configurable.param" to the file:line (or --gin_param) that bound it.
Extension point: append a `fn(locate, model_dir) -> [problems]` to CHECKS.
"""

import dataclasses
import inspect
import os
import re

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import moe as mtf_moe
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import utils
import sentencepiece
import seqio
import tensorflow.compat.v1 as tf

from brainformer_tf.blocks import build
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.data import vocab
from brainformer_tf.evaluation import checkpoint as checkpoint_lib
from brainformer_tf.layers import ffn
from brainformer_tf.layers import layout
from brainformer_tf.layers.moe import layer as moe_layer
from brainformer_tf.layers.moe import router
from brainformer_tf.training import checkpoints
from brainformer_tf.training import nan_guard

# mesh-tf layer parameters that size a dimension which layout_rules may split over the mesh.
SPLIT_PARAMS = {
    "SelfAttention": {"num_heads": "heads"},
    "DenseReluDense": {"hidden_size": "d_ff"},
    "MoE1D": {"num_experts": "experts", "hidden_size": "expert_hidden"},
    "MoE": {"num_experts": "experts", "hidden_size": "expert_hidden"},
}
CAPACITY_PARAMS = ("capacity_factor_train", "capacity_factor_eval", "capacity_factor")


class Locator:
  """Finds the file:line (or --gin_param) of the last binding of a parameter.

  Scans the --gin_file files (following `include`) and --gin_param strings in parse order;
  matches `[scope/][module.]Configurable.param =`.
  """

  def __init__(self, gin_files, gin_params):
    self._bindings = []  # (where, text) in parse order
    for path in gin_files:
      self._add_file(path, depth=0)
    self._bindings += [("--gin_param", p) for p in gin_params]

  def _add_file(self, name, depth):
    path = next((os.path.join(prefix, name) for prefix in gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
                 if os.path.isfile(os.path.join(prefix, name))), None)
    if path is None or depth > 10:
      return
    with open(path) as f:
      for number, line in enumerate(f, 1):
        include = re.match(r"\s*include\s+['\"](.+)['\"]", line)
        if include:
          self._add_file(include.group(1), depth + 1)
        else:
          self._bindings.append((f"{path}:{number}", line))

  def __call__(self, param):
    configurable, _, arg = param.rpartition(".")
    short = configurable.rpartition(".")[2]
    pattern = re.compile(rf"^\s*([\w/]+/)?([\w.]+\.)?{re.escape(short)}\.{re.escape(arg)}\s*=")
    return next((where for where, text in reversed(self._bindings) if pattern.match(text)), None)


def _where(locate, param):
  return f"{locate(param)}: {param}" if locate(param) else param


def _converted(locate, param, convert, expected, problems):
  """convert(value) of a string-valued Gin `param`; None when computed (a @reference) or
  malformed (then a problem naming where it was bound is appended)."""
  value = ginutil.query(param)
  if not isinstance(value, str):
    return None
  try:
    return convert(value)
  except (ValueError, IndexError) as e:
    problems.append(f"{_where(locate, param)} = {value!r} is not {expected} ({e})")
    return None


def _mesh(locate, tpu=False):
  """(mesh_shape, layout_rules, problems); shape None when computed (e.g. @tpu_mesh_shape()).

  tpu: the run places the mesh by the TPU device assignment (mesh-tf's SimdMeshImpl ignores
  `utils.run.mesh_devices`), so a CPU layout's device list is not a problem there.
  """
  problems = []
  mesh_shape = ginutil.query("utils.run.mesh_shape")
  shape = _converted(locate, "utils.run.mesh_shape", mtf.convert_to_shape,
                     "a mesh shape like 'batch:2,model:4'", problems)
  rules = _converted(locate, "utils.run.layout_rules", mtf.convert_to_layout_rules,
                     "a list of tensor_dim:mesh_dim pairs", problems)
  rules = rules if rules is not None else mtf.convert_to_layout_rules("")
  devices = ginutil.query("utils.run.mesh_devices")
  if not tpu and shape is not None and devices and len(devices) != max(shape.size, 1):
    problems.append(f"{_where(locate, 'utils.run.mesh_devices')} lists {len(devices)} devices "
                    f"but utils.run.mesh_shape = {mesh_shape!r} has {shape.size}")
  return shape, rules, problems


def _split_problem(where, what, size, dim_name, shape, rules):
  if shape is None or not isinstance(size, int):
    return None
  try:
    problem = layout.split_problem(what, mtf.Dimension(dim_name, size), shape, rules)
  except ValueError as e:
    return f"{where}: {e}"
  return f"{where}: {problem}" if problem else None


def _layer_entries():
  """[(index, class name, configurable, kwargs)] of make_layer_stack.layers, if a plain list."""
  layers = ginutil.query("make_layer_stack.layers")
  if not isinstance(layers, (list, tuple)):
    return []
  entries = []
  for index, entry in enumerate(layers):
    ref, kwargs = (entry[0], next((e for e in entry[1:] if isinstance(e, dict)), {})) \
        if isinstance(entry, (list, tuple)) else (entry, {})
    if isinstance(ref, gin.config.ConfigurableReference):
      entries.append((index, ref.configurable.name, ref, kwargs))
  return entries


def _layer_value(name, kwargs, param, cls):
  if param in kwargs:
    return kwargs[param]
  value = ginutil.query(f"{name}.{param}", inspect.Parameter.empty)
  if value is inspect.Parameter.empty:
    value = inspect.signature(cls).parameters.get(param)
    value = value.default if value is not None else None
  return value


def check_layers(locate, shape, rules):
  """Constructor errors, split-dimension divisibility and capacity factors of each layer."""
  problems = []
  for index, name, ref, kwargs in _layer_entries():
    cls = ref.configurable.wrapped
    where = f"make_layer_stack.layers[{index}] ({name})"
    try:
      ref.configurable.wrapper(**kwargs)  # constructors only record hyperparameters
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"{where}: {str(e).splitlines()[0]}")
      continue
    for param, dim_name in SPLIT_PARAMS.get(name, {}).items():
      size = _layer_value(name, kwargs, param, cls)
      problems.append(_split_problem(f"{where}, {_where(locate, f'{name}.{param}')}",
                                     param, size, dim_name, shape, rules))
    for param in CAPACITY_PARAMS:
      value = _layer_value(name, kwargs, param, cls) if param in inspect.signature(
          cls).parameters else None
      if isinstance(value, (int, float)) and value <= 0:
        problems.append(f"{where}, {_where(locate, f'{name}.{param}')} = {value}: a capacity "
                        "factor must be > 0 (each expert needs slots)")
  return [p for p in problems if p]


def _referenced_configurables():
  """Every configurable the run may call: utils.run, make_layer_stack and each @reference.

  References carry their resolved configurable (full selector and function), so nothing is
  looked up by short name: two configurables sharing a name (mesh-tf's
  `learning_rate_schedules.product_learning_rate` and `optimize.product_learning_rate`) stay
  apart, as in Gin itself.
  """
  found = {"mesh_tensorflow.transformer.utils.run": utils.run,
           "mesh_tensorflow.transformer.transformer.make_layer_stack":
               transformer.make_layer_stack}
  for value in list(gin.config._CONFIG.values()):  # pylint: disable=protected-access
    stack = list(value.values())
    while stack:
      item = stack.pop()
      if isinstance(item, gin.config.ConfigurableReference):
        found.setdefault(item.configurable.selector, item.configurable.wrapped)
      elif isinstance(item, (list, tuple)):
        stack.extend(item)
      elif isinstance(item, dict):
        stack.extend(item.values())
  return found


def check_required(locate):
  """REQUIRED parameters left unbound in configurables the run will call."""
  del locate
  problems = []
  for selector, fn in _referenced_configurables().items():
    try:
      params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
      continue
    for param, p in params.items():
      if (p.default is gin.REQUIRED and
          ginutil.query(f"{selector}.{param}", gin.REQUIRED) is gin.REQUIRED):
        problems.append(f"{selector}.{param}: REQUIRED but not bound in any Gin file or "
                        "--gin_param")
  return problems


def _batch_sequences():
  batch = ginutil.query("utils.run.batch_size")
  length = (ginutil.query("utils.run.sequence_length") or {}).get("targets")
  if isinstance(batch, int):
    return batch
  if isinstance(batch, (list, tuple)) and len(batch) == 2:
    kind, n = batch
    if kind.startswith("sequences"):
      return n
    if kind.startswith("tokens") and length:
      return n // length
  return None


def check_sizes(locate, shape, rules, checkpoint=None):
  """Batch, sequence length, vocabulary (vs mesh and checkpoints) and step counts."""
  problems = []
  problems.append(_split_problem(_where(locate, "utils.run.batch_size"), "sequences per batch",
                                 _batch_sequences(), "batch", shape, rules))
  lengths = ginutil.query("utils.run.sequence_length")
  max_length = ginutil.query("Unitransformer.max_length")
  if isinstance(lengths, dict) and isinstance(max_length, int):
    for feature, length in lengths.items():
      if length > max_length:
        problems.append(f"{_where(locate, 'utils.run.sequence_length')}: {feature} length "
                        f"{length} exceeds {_where(locate, 'Unitransformer.max_length')} = "
                        f"{max_length}")
  name = ginutil.mixture_name()
  if isinstance(lengths, dict) and name:
    try:
      features = seqio.get_mixture_or_task(name).output_features
    except ValueError:
      features = {}
    missing = sorted(set(features) - set(lengths))
    if missing and ginutil.query("utils.run.model_type", "bitransformer") != "lm":
      problems.append(f"{_where(locate, 'utils.run.sequence_length')} = {lengths} has no "
                      f"length for feature(s) {missing} of task {name!r}")
    elif "targets" in features and "targets" not in lengths:
      problems.append(f"{_where(locate, 'utils.run.sequence_length')} = {lengths} has no "
                      f"'targets' length for task {name!r}")
  for param in ("utils.run.train_steps", "utils.run.save_checkpoints_steps"):
    value = ginutil.query(param)
    if isinstance(value, (int, float)) and value <= 0:
      problems.append(f"{_where(locate, param)} = {value}: must be a positive number of steps")
  problems += _vocab_problems(locate, shape, rules, checkpoint)
  return [p for p in problems if p]


def vocab_size():
  """The vocabulary size the run will use, from vocabulary_settings (no training needed)."""
  model_file, size, _ = vocab.vocabulary_settings()
  if model_file:
    return sentencepiece.SentencePieceProcessor(model_file=model_file).get_piece_size()
  return size


def _vocab_problems(locate, shape, rules, checkpoint):
  problems = []
  try:
    size = vocab_size()
  except (ValueError, OSError) as e:
    return [f"{_where(locate, 'vocabulary_settings.vocab_size')}: {e}"]
  except tf.errors.OpError as e:  # e.g. a gs:// model file this machine cannot reach
    reason = (e.message or "").strip().splitlines()[0][:200]
    return [f"{_where(locate, 'vocabulary_settings.model_file')}: the SentencePiece model "
            f"cannot be read here ({reason})"]
  divisor = ginutil.query("Unitransformer.vocab_divisor", 128) or 1
  padded = -(-size // divisor) * divisor
  problems.append(_split_problem(
      f"{_where(locate, 'vocabulary_settings.vocab_size')} (padded to a multiple of "
      f"Unitransformer.vocab_divisor={divisor})", "vocab", padded, "vocab", shape, rules))
  d_model = ginutil.query("Unitransformer.d_model")
  for source, path in (("utils.run.init_checkpoint", ginutil.query("utils.run.init_checkpoint")),
                       ("the model dir's checkpoint", checkpoint)):
    if not path:
      continue
    try:
      shapes = dict(tf.train.list_variables(path))
    except Exception as e:  # pylint: disable=broad-except  (NotFound, DataLoss, ...: one line)
      problems.append(f"{source} {path} cannot be read: "
                      f"{(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}")
      continue
    embedding = next((s for n, s in shapes.items() if n.endswith("/embedding")), None)
    if embedding and embedding[0] != padded:
      problems.append(f"{_where(locate, 'vocabulary_settings.vocab_size')} = {size} (padded "
                      f"{padded}) but {source} {path} has a {embedding[0]}-row embedding")
    if embedding and isinstance(d_model, int) and embedding[1] != d_model:
      problems.append(f"{_where(locate, 'Unitransformer.d_model')} = {d_model} but {source} "
                      f"{path} was trained with d_model {embedding[1]}")
  return problems


def check_model_dir_checkpoint(prefix):
  """The model dir's checkpoint holds exactly the model's variables (a resume restores all of
  them): the first mismatching variables named, as `brainformer eval` names them."""
  model_type = ginutil.query("utils.run.model_type", "bitransformer")
  if not prefix or model_type not in ("lm", "delimited_lm"):
    return []
  try:
    checkpoint_lib.check_compatible(prefix, model_type, vocab_size())
  except errors.UsageError as e:
    return [f"--model_dir: {e}"]
  return []


# utils.run's modes (mesh_tensorflow/transformer/utils.py, run); any other raises after setup
RUN_MODES = ("train", "perplexity_eval", "eval", "score_eval", "infer", "score_from_strings",
             "score_from_dataset", "export", "export_infer", "export_score")


def check_policies(locate):
  """nan_guard.policy and utils.run.mode name known choices; fused_gelu.enabled is a bool."""
  problems = []
  for param, read in (("nan_guard.policy", nan_guard.settings),
                      ("fused_gelu.enabled", ffn.fused_gelu)):
    try:
      read()
    except ValueError as e:
      problems.append(f"{_where(locate, param)}: {str(e).splitlines()[0]}")
  mode = ginutil.query("utils.run.mode", "train")
  if mode not in RUN_MODES:
    problems.append(f"{_where(locate, 'utils.run.mode')} = {mode!r}: expected one of "
                    f"{', '.join(RUN_MODES)}")
  return problems


def check_block_spec(locate, shape, rules):
  """Brainformer block specs (brainformer_tf.blocks), when a model uses one."""
  spec = ginutil.query("blocks.block_layers.spec")
  if spec is None:
    return []
  try:
    build.validate(spec, shape if shape is not None else "", rules)
  except ValueError as e:
    return [f"{_where(locate, 'blocks.block_layers.spec')}: {e}"]
  return []


# Sizes that graph building turns into mtf.Dimensions: (where the model or a layer keeps it,
# the Gin parameter a user sets; a macro of the zoo's model files where there is one).
MODEL_SIZES = (("model_dim", "d_model"),)
LAYER_SIZES = (("num_heads", "num_heads"), ("key_value_size", "d_kv"), ("hidden_size", "d_ff"),
               ("num_experts", "num_experts"))


def _bad_size(value):
  return not (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def check_built_model(locate, shape, rules):
  """Builds the Gin model (layer constructors only, no graph) and checks what graph building
  would reject: sizes that are not positive integers (d_model, heads, key/value size, FFN
  width, experts) and MoE capacity factors whose slots per expert round to 0 for the training
  routing group (router.num_slots)."""
  del locate
  if ginutil.query("utils.run.model_type", "bitransformer") not in ("lm", "delimited_lm"):
    return []
  try:
    model = ginutil.build_model(mesh_shape=shape or mtf.Shape([]), layout_rules=rules)
  except Exception as e:  # pylint: disable=broad-except  (reported where it is, one line)
    return [f"building the model: {type(e).__name__}: {str(e).splitlines()[0][:200]}"]
  problems = []
  size = model.model_dim.size
  if _bad_size(size):
    problems.append(f"d_model = {size!r} (Unitransformer.d_model): must be a positive integer")
  sequences = _batch_sequences()
  length = (ginutil.query("utils.run.sequence_length") or {}).get("targets")
  for index, layer in enumerate(getattr(model.layer_stack, "_layers", [])):
    where = f"layer {index} ({type(layer).__name__})"
    for attr, param in LAYER_SIZES:
      value = getattr(layer, attr, None)
      if value is not None and _bad_size(value):
        problems.append(f"{where}: {attr} = {value!r} (Gin {param} or {type(layer).__name__}."
                        f"{attr}): must be a positive integer")
    if isinstance(layer, moe_layer.MoE) and isinstance(sequences, int) and isinstance(length, int):
      split = 1
      if shape is not None:
        axis = rules.tensor_dimension_to_mesh_axis(mtf.Dimension("batch", sequences), shape)
        split = shape.dims[axis].size if axis is not None else 1
      _, group = mtf_moe._split_into_groups(sequences * length, layer.group_size, split)  # pylint: disable=protected-access
      cfg = dataclasses.replace(layer.config, layer_name=where)
      try:
        router.num_slots(layer.capacity_factor, group, layer.num_experts, cfg)
      except ValueError as e:
        problems.append(str(e))
  return problems


CHECKS = []


def check(locate, model_dir=None, tpu=False):
  """All problems found in the parsed Gin config (empty list: fine).

  tpu: the run goes to a TPU (--tpu): the mesh is placed there, `mesh_devices` is ignored and
  nothing is compared with this machine's devices (none of the checks look at local devices).
  """
  checkpoint = checkpoints.newest_listable(model_dir)   # what a resume restores
  shape, rules, problems = _mesh(locate, tpu)
  problems += check_required(locate)
  problems += check_layers(locate, shape, rules)
  problems += check_sizes(locate, shape, rules, checkpoint)
  problems += check_block_spec(locate, shape, rules)
  if not problems:   # the model builds only from a config that passed the checks above
    problems += check_built_model(locate, shape, rules)
  if not problems:
    problems += check_model_dir_checkpoint(checkpoint)
  problems += check_policies(locate)
  for fn in CHECKS:
    problems += fn(locate, model_dir)
  return problems
