"""Block specs as plain data: parse the compact notation and print it back canonically.

Notation: sub-layer letters separated by spaces, each with optional settings in brackets;
parentheses group sub-layers visually and are kept (GLaM is `(a f)(a g)`).

  a   self-attention   h=<heads> d_kv=<head size> dconv=<width, 0 = none; 3 = Primer>
  f   dense FFN        H=<hidden size> act=<activation>
  g   MoE              <gating flag: top2 | ec> or gate=<gating name>, E=<experts>,
                       c=<capacity factor> H=<expert hidden size> act=<activation>
  every letter         norm=<pre | post | sandwich>  (residual + norm placement)

  e.g. "a[h=20,d_kv=128] g[ec,c=1,H=2048,act=gated_gelu] f[H=2048,act=gated_gelu]"

Unset settings are None here and are filled from Gin defaults when the block is built
(`blocks.build`). Canonical text: one space between top-level items, none inside parentheses
next to them, no space between adjacent groups, settings in the order of SETTINGS. For every
spec s, parse(str(s)) == s; for canonical text t, str(parse(t)) == t. Sub-layer indices in
error messages count from 0, like mesh-tf's block_000/layer_000 scopes.
"""

import dataclasses
import re
from typing import Optional, Tuple

from brainformer_tf.layers.ffn import ACTIVATIONS

LETTERS = {"a": "attention", "f": "dense FFN", "g": "MoE"}
NORM_PLACEMENTS = ("pre", "post", "sandwich")
# Short gating flags; any other gating is written gate=<name> (checked by the MoE layer).
GATING_FLAGS = {"top2": "top_2", "ec": "expert_choice"}


@dataclasses.dataclass(frozen=True)
class Setting:
  field: str     # SubLayer attribute
  key: str       # notation key
  kind: type     # int, float or str
  letters: str   # letters that accept it
  meaning: str


SETTINGS = (
    Setting("gating", "gate", str, "g", "gating"),
    Setting("experts", "E", int, "g", "number of experts"),
    Setting("capacity_factor", "c", float, "g", "capacity factor"),
    Setting("heads", "h", int, "a", "attention heads"),
    Setting("d_kv", "d_kv", int, "a", "head size"),
    Setting("dconv", "dconv", int, "a", "causal depthwise conv width"),
    Setting("hidden", "H", int, "fg", "hidden size"),
    Setting("activation", "act", str, "fg", "activation"),
    Setting("norm", "norm", str, "afg", "norm placement"),
)
_BY_KEY = {s.key: s for s in SETTINGS}


class BlockSpecError(ValueError):
  """A block spec that cannot be built; the message names the sub-layer and the parameter."""


@dataclasses.dataclass(frozen=True)
class SubLayer:
  """One sub-layer; None = take the Gin default when building."""
  kind: str
  gating: Optional[str] = None
  experts: Optional[int] = None
  capacity_factor: Optional[float] = None
  heads: Optional[int] = None
  d_kv: Optional[int] = None
  dconv: Optional[int] = None
  hidden: Optional[int] = None
  activation: Optional[str] = None
  norm: Optional[str] = None

  def settings(self):
    """(Setting, value) for every setting that is not None, in canonical order."""
    return [(s, getattr(self, s.field)) for s in SETTINGS if getattr(self, s.field) is not None]

  def __str__(self):
    parts = []
    for setting, value in self.settings():
      if setting.field == "gating" and value in GATING_FLAGS.values():
        parts.append(next(k for k, v in GATING_FLAGS.items() if v == value))
      else:
        parts.append(f"{setting.key}={_format_value(value)}")
    return self.kind + (f"[{','.join(parts)}]" if parts else "")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """An ordered block of sub-layers; groups are (start, stop) spans printed in parentheses."""
  layers: Tuple[SubLayer, ...]
  groups: Tuple[Tuple[int, int], ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "layers", tuple(self.layers))
    object.__setattr__(self, "groups", tuple(tuple(g) for g in self.groups))
    check(self)

  @property
  def letters(self) -> str:
    return "".join(layer.kind for layer in self.layers)

  def __str__(self):
    items, i = [], 0
    for start, stop in self.groups + ((len(self.layers), len(self.layers)),):
      items += [str(layer) for layer in self.layers[i:start]]
      if stop > start:
        inner = " ".join(str(layer) for layer in self.layers[start:stop])
        glue = items.pop() if items and items[-1].endswith(")") else None
        items.append((glue or "") + f"({inner})")
      i = stop
    return " ".join(items)


def _format_value(value) -> str:
  if isinstance(value, float):
    return repr(value)[:-2] if value.is_integer() else repr(value)
  return str(value)


def sublayer_error(index: int, layer_kind: Optional[str], message: str) -> BlockSpecError:
  """A BlockSpecError whose message starts with "sub-layer <index> (<letter>)"."""
  where = f"sub-layer {index}" + (f" ({layer_kind})" if layer_kind else "")
  return BlockSpecError(f"{where}: {message}")


def _check_letter(index: int, letter: str):
  if letter not in LETTERS:
    raise sublayer_error(index, None, f"unknown letter {letter!r}; choose one of "
                         + ", ".join(f"{k} ({v})" for k, v in LETTERS.items()))


def check_sublayer(index: int, layer: SubLayer):
  """Raises BlockSpecError for an unknown letter or a setting with a bad value."""
  _check_letter(index, layer.kind)
  for setting, value in layer.settings():
    label = f"{setting.key}={value!r} ({setting.meaning})"
    problem = None
    if layer.kind not in setting.letters:
      problem = f"does not apply to {LETTERS[layer.kind]} sub-layers"
    elif setting.kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (0 if setting.field == "dconv" else 1)):
      problem = f"must be a {'non-negative' if setting.field == 'dconv' else 'positive'} integer"
    elif setting.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not 0 < value < float("inf")):
      problem = "must be a positive number"
    elif setting.field == "activation" and value not in ACTIVATIONS:
      problem = f"is not a known activation; choose one of {sorted(ACTIVATIONS)}"
    elif setting.field == "norm" and value not in NORM_PLACEMENTS:
      problem = f"is not a known norm placement; choose one of {list(NORM_PLACEMENTS)}"
    elif setting.field == "gating" and not re.fullmatch(r"[a-z][a-z0-9_]*", str(value)):
      problem = "is not a gating name"
    if problem:
      raise sublayer_error(index, layer.kind, f"{label} {problem}")


def check(spec: BlockSpec):
  """Raises BlockSpecError unless every sub-layer and group of `spec` is well formed."""
  if not spec.layers:
    raise BlockSpecError("block spec is empty: give at least one sub-layer letter (a, f, g)")
  for index, layer in enumerate(spec.layers):
    if not isinstance(layer, SubLayer):
      raise sublayer_error(index, None, f"{layer!r} is not a SubLayer")
    check_sublayer(index, layer)
  previous_stop = 0
  for start, stop in spec.groups:
    if not previous_stop <= start < stop <= len(spec.layers):
      raise BlockSpecError(f"groups={spec.groups!r}: each group must be a non-empty, "
                           f"non-overlapping, ordered (start, stop) span of sub-layers")
    previous_stop = stop


_TOKEN = re.compile(r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<letter>[A-Za-z_]\w*)"
                    r"(?:\[(?P<settings>[^\]]*)\])?|(?P<bad>\S))")


def parse(text: str) -> BlockSpec:
  """Parses the notation (module docstring) into a BlockSpec; BlockSpecError on bad input."""
  layers, groups, group_start = [], [], None
  for match in _TOKEN.finditer(text.rstrip()):
    index = len(layers)
    if match.group("bad") == "[" and layers:
      raise sublayer_error(index - 1, layers[-1].kind, f"'[' at character {match.start('bad')} is "
                   f"not closed by ']'")
    if match.group("bad"):
      raise BlockSpecError(f"block spec {text!r}: unexpected {match.group('bad')!r} at "
                           f"character {match.start('bad')} (before sub-layer {index})")
    if match.group("open"):
      if group_start is not None:
        raise BlockSpecError(f"block spec {text!r}: nested '(' at sub-layer {index}")
      group_start = index
    elif match.group("close"):
      if group_start is None or group_start == index:
        raise BlockSpecError(f"block spec {text!r}: ')' without a non-empty group at "
                             f"sub-layer {index}")
      groups.append((group_start, index))
      group_start = None
    else:
      layers.append(_parse_sublayer(index, match.group("letter"), match.group("settings")))
  if group_start is not None:
    raise BlockSpecError(f"block spec {text!r}: '(' at sub-layer {group_start} is not closed")
  return BlockSpec(tuple(layers), tuple(groups))


def _parse_sublayer(index: int, letter: str, settings: Optional[str]) -> SubLayer:
  _check_letter(index, letter)
  values = {}
  for item in (settings.split(",") if settings is not None else []):
    item = item.strip()
    key, has_value, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not has_value:
      if item not in GATING_FLAGS:
        raise sublayer_error(index, letter, f"unknown flag {item!r}; flags are gating names "
                     f"{sorted(GATING_FLAGS)}, other settings are key=value with keys "
                     f"{[s.key for s in SETTINGS]}")
      key, raw = "gate", GATING_FLAGS[item]
    setting = _BY_KEY.get(key)
    if setting is None:
      raise sublayer_error(index, letter, f"unknown setting {key!r}; choose one of "
                   f"{[s.key for s in SETTINGS if letter in s.letters]}")
    if setting.field in values:
      raise sublayer_error(index, letter, f"{key} is given twice")
    values[setting.field] = _convert(index, letter, setting, raw)
  layer = SubLayer(letter, **values)
  check_sublayer(index, layer)
  return layer


def _convert(index, letter, setting, raw):
  value = None
  if setting.kind is int and re.fullmatch(r"\d+", raw):
    value = int(raw)
  elif setting.kind is float and re.fullmatch(r"\d+(\.\d*)?|\.\d+", raw):
    value = float(raw)
  elif setting.kind is str and raw:
    value = raw
  if value is None:
    raise sublayer_error(index, letter, f"{setting.key}={raw!r} ({setting.meaning}) is not a valid "
                 f"{setting.kind.__name__}")
  return value
