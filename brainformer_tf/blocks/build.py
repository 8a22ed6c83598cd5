"""From a BlockSpec to mesh-tf layers: defaults, mesh checks and the Gin entry point.

  transformer.make_layer_stack.layers = @blocks.block_layers()
  blocks.block_layers.spec = "a g f a g f g f"
  transformer.make_layer_stack.num_layers = %num_layers        # the block is stacked N times

Sub-layer -> layer class (variables under block_BBB/layer_NNN/<Class>/, as any mesh-tf list):
  a            transformer_layers.SelfAttention(num_heads=h, key_value_size=d_kv)
  a[dconv=k]   layers.attention.MultiDConvHeadAttention(dconv_width=k, ...)   (Primer)
  f            layers.ffn.DenseFFN(hidden_size=H, activation=act)
  g            layers.moe.MoE(num_experts=E, hidden_size=H, activation=act, gating, capacity_factor)
Settings the spec leaves out come from BlockDefaults; a None default leaves the argument to
the layer class's own Gin binding (e.g. SelfAttention.relative_attention_type, MoE.group_size).
Every error is raised by block_layers / validate, before any graph is built, and names the
sub-layer index and the parameter.
"""

import dataclasses
import functools
from typing import Optional, Tuple, Union

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer_layers

from brainformer_tf.blocks import norms
from brainformer_tf.blocks.spec import BlockSpec
from brainformer_tf.blocks.spec import BlockSpecError
from brainformer_tf.blocks.spec import check_sublayer
from brainformer_tf.blocks.spec import parse
from brainformer_tf.blocks.spec import SETTINGS
from brainformer_tf.blocks.spec import SubLayer
from brainformer_tf.blocks.spec import sublayer_error
from brainformer_tf.layers import attention
from brainformer_tf.layers import ffn
from brainformer_tf.layers import layout
from brainformer_tf.layers.moe import MoE


@gin.configurable(module="blocks")
@dataclasses.dataclass(frozen=True)
class BlockDefaults:
  """Values for the settings a spec leaves out; None = the layer class's own Gin default.

  num_heads, d_ff, d_moe, num_experts have no class default: a sub-layer that needs one and
  gets neither a spec setting nor a value here is an error. norm_type (rms | layer_norm) is
  one per model, since the stack's final norm shares it.
  """
  num_heads: Optional[int] = None          # a: h
  d_kv: Optional[int] = None               # a: d_kv
  dconv: int = 0                           # a: dconv (0 = plain attention)
  d_ff: Optional[int] = None               # f: H
  ffn_activation: Optional[str] = None     # f: act
  d_moe: Optional[int] = None              # g: H
  moe_activation: Optional[str] = None     # g: act
  num_experts: Optional[int] = None        # g: E
  gating: Optional[str] = None             # g: gate
  capacity_factor: Optional[float] = None  # g: c
  norm: str = "pre"                        # every letter: norm
  norm_type: str = "rms"                   # the whole stack

  def for_letter(self, kind: str) -> dict:
    """SubLayer field -> default value, and the BlockDefaults field it comes from."""
    fields = {
        "a": {"heads": "num_heads", "d_kv": "d_kv", "dconv": "dconv"},
        "f": {"hidden": "d_ff", "activation": "ffn_activation"},
        "g": {"hidden": "d_moe", "activation": "moe_activation", "experts": "num_experts",
              "gating": "gating", "capacity_factor": "capacity_factor"},
    }[kind]
    fields["norm"] = "norm"
    return {field: (getattr(self, name), name) for field, name in fields.items()}


_REQUIRED = {"a": ("heads",), "f": ("hidden",), "g": ("hidden", "experts")}
# SubLayer field -> the mesh-tf dimension it sizes, per letter (for layout checks).
_SPLIT_DIMS = {"a": {"heads": "heads", "d_kv": "d_kv"}, "f": {"hidden": "d_ff"},
               "g": {"experts": "experts", "hidden": "expert_hidden"}}
_KEYS = {s.field: s for s in SETTINGS}


def resolve(spec: BlockSpec, defaults: BlockDefaults) -> Tuple[SubLayer, ...]:
  """The spec's sub-layers with every unset setting filled from `defaults`."""
  if defaults.norm_type not in norms.NORM_TYPES:
    raise BlockSpecError(f"blocks.BlockDefaults.norm_type={defaults.norm_type!r} is not a "
                         f"known norm type; choose one of {list(norms.NORM_TYPES)}")
  resolved = []
  for index, layer in enumerate(spec.layers):
    filled = {}
    for field, (value, _) in defaults.for_letter(layer.kind).items():
      if getattr(layer, field) is None and value is not None:
        filled[field] = value
    full = dataclasses.replace(layer, **filled)
    try:
      check_sublayer(index, full)
    except BlockSpecError as e:
      raise BlockSpecError(f"{e} (the value comes from blocks.BlockDefaults)") from None
    for field in _REQUIRED[layer.kind]:
      if getattr(full, field) is None:
        setting = _KEYS[field]
        name = defaults.for_letter(layer.kind)[field][1]
        raise sublayer_error(index, layer.kind,
                             f"{setting.key} ({setting.meaning}) is missing: write "
                             f"{layer.kind}[{setting.key}=...] or bind "
                             f"blocks.BlockDefaults.{name}")
    resolved.append(full)
  return tuple(resolved)


def validate(spec: Union[str, BlockSpec], mesh_shape="", layout_rules="",
             defaults: Optional[BlockDefaults] = None) -> Tuple[SubLayer, ...]:
  """Parses, resolves and checks that every split width divides its mesh dimension.

  mesh_shape / layout_rules: mesh-tf strings ("batch:2,model:4", "d_ff:model,...") or
  objects; empty or None = one device. Returns the resolved sub-layers; raises BlockSpecError naming the sub-layer index
  and the parameter. Also constructs each layer once, so constructor checks run here too.
  """
  spec = parse(spec) if isinstance(spec, str) else spec
  defaults = defaults or BlockDefaults()
  resolved = resolve(spec, defaults)
  mesh_shape = mtf.convert_to_shape(mesh_shape or "")
  layout_rules = mtf.convert_to_layout_rules(layout_rules or "")
  for index, layer in enumerate(resolved):
    for field, dim_name in _SPLIT_DIMS[layer.kind].items():
      size = getattr(layer, field)
      if size is None or (dim_name == "heads" and size == 1):  # no heads dim for 1 head
        continue
      setting = _KEYS[field]
      problem = layout.split_problem(setting.key, mtf.Dimension(dim_name, size), mesh_shape,
                                     layout_rules, setting.meaning)
      if problem:
        raise sublayer_error(index, layer.kind, problem)
    make_layer(index, layer, defaults.norm_type)
  return resolved


def _attention(layer: SubLayer):
  kwargs = {"num_heads": layer.heads}
  if layer.d_kv is not None:
    kwargs["key_value_size"] = layer.d_kv
  if layer.dconv:
    return attention.MultiDConvHeadAttention(dconv_width=layer.dconv, **kwargs)
  return transformer_layers.SelfAttention(**kwargs)


def _optional(**kwargs):
  return {k: v for k, v in kwargs.items() if v is not None}


def _dense(layer: SubLayer):
  return ffn.DenseFFN(hidden_size=layer.hidden, **_optional(activation=layer.activation))


def _moe(layer: SubLayer):
  return MoE(num_experts=layer.experts, hidden_size=layer.hidden,
             **_optional(activation=layer.activation, gating=layer.gating,
                         capacity_factor=layer.capacity_factor))


_CONSTRUCTORS = {"a": _attention, "f": _dense, "g": _moe}


def make_layer(index: int, layer: SubLayer, norm_type: str = "rms"):
  """A new TransformerLayer for one resolved sub-layer, carrying its BlockNorm."""
  try:
    built = _CONSTRUCTORS[layer.kind](layer)
  except (ValueError, TypeError) as e:
    raise sublayer_error(index, layer.kind, str(e)) from e
  built.block_norm = norms.BlockNorm(layer.norm, norm_type)
  return built


@gin.configurable(module="blocks")
def block_layers(spec: Union[str, BlockSpec] = gin.REQUIRED,
                 defaults: Optional[BlockDefaults] = None, mesh_shape="", layout_rules=""):
  """make_layer_stack's `layers` for one block: one layer factory per sub-layer.

  mesh_shape / layout_rules ("" = not checked against a mesh): when given, every split width
  must divide its mesh dimension. The training loop's mesh is checked before any graph is
  built by brainformer_tf.config.checks (train, validate), which calls `validate` with it.
  """
  spec = parse(spec) if isinstance(spec, str) else spec
  defaults = defaults or BlockDefaults()
  resolved = validate(spec, mesh_shape, layout_rules, defaults)
  return [functools.partial(make_layer, index, layer, defaults.norm_type)
          for index, layer in enumerate(resolved)]
