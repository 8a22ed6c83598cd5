"""Mutation operators over a candidate (model dim + block); every mutant stays in the space.

Operators (paper Table 1's axes plus the block length; the paper does not list its own):
  layer_type   a sub-layer becomes another type (fresh random settings for it)
  width        an FFN or MoE hidden size changes
  heads        an attention sub-layer's head count changes
  gating       an MoE sub-layer switches gating (top-2 <-> expert choice)
  capacity     an MoE sub-layer's capacity factor changes
  activation   an FFN or MoE activation changes
  model_dim    the model dim changes
  insert       a random sub-layer is inserted (if below max_layers)
  delete       a sub-layer is removed (if above min_layers)
`mutate` picks uniformly among the operators that can change this candidate and returns
(child, operator name); the child differs from the parent and passes `space.check`.
"""

import dataclasses
import random
from typing import Callable, Dict, Optional, Tuple

from brainformer_tf.blocks import spec as spec_lib
from brainformer_tf.search import space as space_lib
from brainformer_tf.search.space import Candidate
from brainformer_tf.search.space import SearchSpace

_SETTING_OPS = {  # operator -> (SubLayer field, letters it applies to)
    "width": ("hidden", "fg"),
    "heads": ("heads", "a"),
    "gating": ("gating", "g"),
    "capacity": ("capacity_factor", "g"),
    "activation": ("activation", "fg"),
}
OPERATORS = ("layer_type",) + tuple(_SETTING_OPS) + ("model_dim", "insert", "delete")


def _with_layers(candidate: Candidate, layers) -> Candidate:
  return Candidate(candidate.d_model, spec_lib.BlockSpec(tuple(layers)))


def _change_setting(op: str):
  field, letters = _SETTING_OPS[op]

  def apply(space: SearchSpace, candidate: Candidate, rng: random.Random) -> Optional[Candidate]:
    layers = list(candidate.block.layers)
    options = [(i, v) for i, layer in enumerate(layers) if layer.kind in letters
               for v in space.choices(layer.kind)[field] if v != getattr(layer, field)]
    if not options:
      return None
    index, value = rng.choice(options)
    layers[index] = dataclasses.replace(layers[index], **{field: value})
    return _with_layers(candidate, layers)
  return apply


def _layer_type(space, candidate, rng):
  layers = list(candidate.block.layers)
  index = rng.randrange(len(layers))
  kinds = [k for k in space_lib.LAYER_TYPES if k != layers[index].kind]
  layers[index] = space_lib.random_sublayer(space, rng, rng.choice(kinds))
  return _valid_or_none(space, _with_layers(candidate, layers))


def _model_dim(space, candidate, rng):
  options = [d for d in space.model_dims if d != candidate.d_model]
  return Candidate(rng.choice(options), candidate.block) if options else None


def _insert(space, candidate, rng):
  layers = list(candidate.block.layers)
  if len(layers) >= space.max_layers:
    return None
  layers.insert(rng.randint(0, len(layers)), space_lib.random_sublayer(space, rng))
  return _with_layers(candidate, layers)


def _delete(space, candidate, rng):
  layers = list(candidate.block.layers)
  if len(layers) <= space.min_layers:
    return None
  del layers[rng.randrange(len(layers))]
  return _valid_or_none(space, _with_layers(candidate, layers))


def _valid_or_none(space, candidate):
  try:
    space_lib.check(space, candidate)
  except ValueError:
    return None
  return candidate


_APPLY: Dict[str, Callable] = {"layer_type": _layer_type, "model_dim": _model_dim,
                               "insert": _insert, "delete": _delete,
                               **{op: _change_setting(op) for op in _SETTING_OPS}}


def mutate(space: SearchSpace, parent: Candidate, rng: random.Random,
           operators=OPERATORS, attempts: int = 100) -> Tuple[Candidate, str]:
  """A child of `parent` one operator away, inside `space`; ValueError if none is found."""
  unknown = [op for op in operators if op not in _APPLY]
  if unknown:
    raise ValueError(f"mutation operators {unknown} are unknown; choose from {list(OPERATORS)}")
  for _ in range(attempts):
    op = rng.choice(list(operators))
    child = _APPLY[op](space, parent, rng)
    if child is not None and child != parent:
      space_lib.check(space, child)
      return child, op
  raise ValueError(f"no mutation of {parent} found in {attempts} attempts with operators "
                   f"{list(operators)}")
