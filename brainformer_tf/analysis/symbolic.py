"""The symbolic training graph of a Gin-configured model: what accounting and memory read.

The model is the one `brainformer train` builds: the Gin files are parsed on top of mesh-tf's
defaults.gin, `utils.build_model` makes the Unitransformer, and its training graph (forward,
loss) is built on a [batch, length] batch of zeros with no lowering and no session. The tf
master variables are shape-only stand-ins, so a 160B model builds in about a second.
"""

from typing import Optional, Sequence, Tuple

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import utils
import tensorflow.compat.v1 as tf
from tensorflow.python.framework import tensor_shape

from brainformer_tf.config import checks as config_checks
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.config import paths

DEFAULT_SEQUENCE_LENGTH = 1024   # GLaM recipe; a recipe gin file (utils.run.sequence_length) wins


class AnalysisError(ValueError):
  """A model that cannot be parsed or built; the message is one line naming the cause."""


def one_line(e: BaseException) -> str:
  return " ".join(str(e).split("\n")[0].split()) or type(e).__name__


def load_gin(gin_files: Sequence[str], gin_params: Sequence[str] = (),
             module_imports: Sequence[str] = ()):
  """Clears Gin and parses mesh-tf's defaults.gin, then the files and bindings (as `train`).

  Gin files are looked up in the project's gin/ and t5's gin/ folders. Bad input raises
  AnalysisError with one line.
  """
  tf.disable_v2_behavior()
  try:
    ginutil.import_modules(module_imports)
  except errors.UsageError as e:
    raise AnalysisError(str(e)) from None
  try:
    ginutil.check_gin_files(gin_files)
  except errors.UsageError as e:
    raise AnalysisError(str(e)) from None
  try:
    ginutil.parse_model_config(gin_files, gin_params)
  except OSError as e:
    raise AnalysisError(f"{e}; project model files: {', '.join(paths.model_files())}"
                        ) from None
  except (ValueError, TypeError, ImportError, NameError, SyntaxError) as e:
    raise AnalysisError(f"gin: {one_line(e)}") from None


def sequence_length(explicit: Optional[int]) -> int:
  """explicit, else a recipe's utils.run.sequence_length["targets"], else 1024."""
  if explicit:
    return int(explicit)
  bound = ginutil.query("utils.run.sequence_length") or {}
  # mesh-tf's defaults.gin binds 512 for every model; only a recipe's own value counts.
  if isinstance(bound, dict) and bound.get("targets") and bound != {"inputs": 512, "targets": 512}:
    return int(bound["targets"])
  return DEFAULT_SEQUENCE_LENGTH


class _ShapeOnlyVariable:
  """What mtf keeps of a tf variable here: its name and shape (no initializer ops)."""

  def __init__(self, name, shape, dtype):
    self.name, self.dtype = f"{name}:0", dtype
    self.shape = tensor_shape.TensorShape(shape)

  def get_shape(self):
    return self.shape


def _shape_only_variable(next_creator, **kwargs):
  del next_creator  # building the real variable's initializer ops is most of the build time
  return _ShapeOnlyVariable(kwargs["name"], kwargs["shape"], kwargs.get("dtype"))


def build_training_graph(batch: int, length: int, vocab_size: int, mesh_shape=None,
                         layout_rules=None) -> Tuple[object, mtf.Graph]:
  """(model, mtf graph) of the parsed Gin model's training step on [batch, length] tokens,
  laid out on mesh_shape / layout_rules (strings or mtf objects; "" = one device)."""
  mesh_shape = mtf.convert_to_shape(mesh_shape or "")
  layout_rules = mtf.convert_to_layout_rules(layout_rules or "")
  problems = config_checks.check_built_model(None, mesh_shape, layout_rules)
  if problems:   # non-positive sizes, capacities rounding to 0: named, not a ZeroDivisionError
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise AnalysisError(problems[0] + more)
  with tf.Graph().as_default(), tf.variable_creator_scope(_shape_only_variable):
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    try:
      model = utils.build_model(model_type="lm", input_vocab_size=vocab_size,
                                output_vocab_size=vocab_size, layout_rules=layout_rules,
                                mesh_shape=mesh_shape)
      shape = mtf.Shape([mtf.Dimension("batch", batch), mtf.Dimension("length", length)])
      tokens = mtf.zeros(mesh, shape, tf.int32)
      model.call_simple(inputs=tokens, targets=tokens, compute_loss=True,
                        mode=tf.estimator.ModeKeys.TRAIN,
                        variable_dtype=mtf.VariableDType(tf.float32),
                        sequence_id=mtf.ones(mesh, shape, tf.int32))
    except AnalysisError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any build failure: one line)
      where = f" on utils.run.mesh_shape={str(mesh_shape)!r}" if mesh_shape.ndims else ""
      raise AnalysisError(f"the model does not build{where}: {type(e).__name__}: "
                          f"{one_line(e)}") from None
  return model, graph
