"""The search space of paper Table 1 and its scaled-down CPU variants as PyGlove hyper values,
the mutations on their DNA and the search algorithms, all PyGlove's.

A candidate is a model dim plus a block (`blocks.spec.BlockSpec`) whose every sub-layer writes
out its searched settings: `a[h=..]`, `f[H=..,act=..]`, `g[<gating>,c=..,H=..,act=..]`. What
the space fixes (head size, experts, proxy depth) goes into the Gin file, not the block. A
PyGlove DNA of `hyper(space)` decodes to a candidate (`decode`); `valid` says whether it counts.

Mutation operators, PyGlove mutators on that DNA (the paper names none): `layer` re-draws a
sub-layer slot (an empty slot gets a sub-layer = insert, a sub-layer becomes empty = delete, or
a new type in place), `swap` trades two slots, and `model_dim`, `heads`, `width`, `gating`,
`capacity`, `activation` re-draw that setting of one sub-layer (or the model dim).
"""

import dataclasses
import functools
import random
from typing import Dict, Tuple

import pyglove as pg

from brainformer_tf.blocks import spec as spec_lib

LAYER_TYPES = ("a", "f", "g")
_SETTINGS = {"model_dim": "d_model", "heads": "heads", "width": "hidden", "gating": "gating",
             "capacity": "capacity_factor", "activation": "activation"}
OPERATORS = ("layer", "swap") + tuple(_SETTINGS)
ALGORITHMS = ("regularized_evolution", "nsga2")
ATTEMPTS = 100


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Choices per searched setting (paper Table 1) and the proxy model's fixed settings."""
  name: str
  model_dims: Tuple[int, ...]
  ffn_hidden: Tuple[int, ...]
  moe_hidden: Tuple[int, ...]
  heads: Tuple[int, ...]
  d_kv: int                    # head size, fixed (Table 1 does not list it)
  num_experts: int             # fixed per proxy (paper: 32 at 100M scale)
  gatings: Tuple[str, ...] = ("top_2", "expert_choice")
  capacity_factors: Tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
  activations: Tuple[str, ...] = ("gated_relu", "gated_gelu", "relu", "gelu")
  min_layers: int = 2          # sub-layers per block
  max_layers: int = 12
  stack: int = 3               # the proxy model stacks the block this many times
  # The baseline the space is centred on (Table 1: d = 768, FFN 3072, 12 heads).
  base_model_dim: int = 768
  base_hidden: int = 3072
  base_heads: int = 12
  reference_repeats: int = 2  # glam = (a f)(a g) x this, dense = (a f) x 2*this
  # Paper Block 1 assumption (docs/search.md): d and d_ffn = d_moe; heads = max(heads).
  block1: Tuple[int, int] = (1024, 2048)

  def choices(self, kind: str) -> Dict[str, tuple]:
    """SubLayer field -> allowed values, for sub-layer letter `kind`."""
    return {"a": {"heads": self.heads},
            "f": {"hidden": self.ffn_hidden, "activation": self.activations},
            "g": {"gating": self.gatings, "capacity_factor": self.capacity_factors,
                  "hidden": self.moe_hidden, "activation": self.activations}}[kind]

  def scaled(self, name: str, divisor: int, **overrides) -> "SearchSpace":
    """The same space with model dims and hidden sizes divided by `divisor`."""
    div = lambda values: tuple(v // divisor for v in values)
    fields = dict(name=name, model_dims=div(self.model_dims), ffn_hidden=div(self.ffn_hidden),
                  moe_hidden=div(self.moe_hidden), base_model_dim=self.base_model_dim // divisor,
                  base_hidden=self.base_hidden // divisor, block1=div(self.block1))
    return dataclasses.replace(self, **dict(fields, **overrides))


TABLE1 = SearchSpace(
    name="table1", model_dims=(512, 768, 1024), ffn_hidden=(1536, 2048, 3072, 4096),
    moe_hidden=(1536, 2048, 3072, 4096), heads=(12, 16, 20), d_kv=64, num_experts=32)

# CPU proxies: widths / 16 (cpu) or / 32 (mini), fewer heads and experts; same structure.
SPACES = {
    "table1": TABLE1,
    "cpu": TABLE1.scaled("cpu", 16, heads=(2, 4, 6), d_kv=16, num_experts=8, base_heads=4),
    "mini": TABLE1.scaled("mini", 32, heads=(2, 4), d_kv=8, num_experts=4, max_layers=8,
                          base_heads=2),
    # For tests: two-layer blocks stacked once, a handful of choices.
    "tiny": SearchSpace(name="tiny", model_dims=(16,), ffn_hidden=(16, 32), moe_hidden=(16, 32),
                        heads=(1, 2), d_kv=8, num_experts=2, capacity_factors=(1.0, 2.0),
                        activations=("relu", "gelu"), min_layers=1, max_layers=3, stack=1,
                        base_model_dim=16, base_hidden=32, base_heads=2, reference_repeats=1,
                        block1=(16, 16)),
}


def get(name: str) -> SearchSpace:
  if name not in SPACES:
    raise ValueError(f"--space={name!r} is not a search space; choose one of {sorted(SPACES)}")
  return SPACES[name]


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One point of a space: the model dim and the block."""
  d_model: int
  block: spec_lib.BlockSpec

  def to_json(self) -> dict:
    return {"d_model": self.d_model, "block": str(self.block)}

  @classmethod
  def from_json(cls, data: dict) -> "Candidate":
    return cls(int(data["d_model"]), spec_lib.parse(data["block"]))

  def __str__(self):
    return f"d={self.d_model} {self.block}"


@functools.lru_cache(maxsize=None)
def hyper(name: str) -> pg.Dict:
  """Space `name` as a PyGlove hyper value: d_model `pg.oneof` its choices, and max_layers slots
  (`pg.manyof`, neither distinct nor sorted), each None or a sub-layer with `pg.oneof` settings."""
  space = get(name)
  slot = [None] + [pg.Dict(kind=kind, **{f: pg.oneof(v) for f, v in space.choices(kind).items()})
                   for kind in LAYER_TYPES]
  return pg.Dict(d_model=pg.oneof(space.model_dims),
                 layers=pg.manyof(space.max_layers, slot, distinct=False, sorted=False))


@functools.lru_cache(maxsize=None)
def dna_spec(name: str) -> pg.DNASpec:
  return pg.dna_spec(hyper(name))


def dna_of(name: str, numbers, metadata) -> pg.DNA:
  """A DNA of space `name` built from its numbers, with `metadata` (see BlockMutator.mutate)."""
  return pg.DNA.from_numbers(list(numbers), dna_spec(name)).rebind(
      metadata=dict(metadata), skip_notification=True)


def decode(name: str, dna: pg.DNA) -> Candidate:
  """The candidate a DNA of space `name` materialises to (not checked, see `valid`): what
  `pg.materialize(hyper(name), dna)` builds, a hundred times faster, from the DNA's numbers
  (the model dim's choice, then per slot None / a / f / g and its settings in `choices` order).
  """
  space, numbers = get(name), iter(dna.to_numbers())
  d_model = space.model_dims[next(numbers)]
  layers = []
  for _ in range(space.max_layers):
    kind = ((None,) + LAYER_TYPES)[next(numbers)]
    if kind:
      layers.append(spec_lib.SubLayer(kind, **{f: values[next(numbers)]
                                               for f, values in space.choices(kind).items()}))
  return Candidate(d_model, spec_lib.BlockSpec(tuple(layers)))


def valid(name: str, dna: pg.DNA) -> bool:
  """Whether the DNA's block has min_layers or more sub-layers, one of them attention. (At most
  max_layers, and every setting one of the space's choices, hold by construction.)"""
  try:
    block = decode(name, dna).block
  except spec_lib.BlockSpecError:  # no sub-layer at all
    return False
  return len(block.layers) >= get(name).min_layers and "a" in block.letters


def references(space: SearchSpace) -> Dict[str, Candidate]:
  """The baselines, written with the space's choices (their length may exceed max_layers).

  glam: (a f)(a g) x reference_repeats, gated-GeLU FFN, top-2 experts with ReLU, c = 2
  (GLaM); dense: (a f) x 2*reference_repeats, ReLU FFN; block1: the paper's Block 1
  assumption a g f a g f g f, gated GeLU, expert choice c = 1, the most heads. Widths are the
  space's baseline / Block 1 widths: each number the nearest choice, each name the space's
  first choice where the space lacks it.
  """
  nearest = lambda values, target: min(values, key=lambda v: abs(v - target))

  def sub(kind, **wanted):
    choices = space.choices(kind)
    return spec_lib.SubLayer(kind, **{
        f: (v if v in choices[f] else choices[f][0]) if isinstance(v, str)
        else nearest(choices[f], v) for f, v in wanted.items()})

  d, H, n = space.base_model_dim, space.base_hidden, space.reference_repeats
  a, f = sub("a", heads=space.base_heads), sub("f", hidden=H, activation="gated_gelu")
  g = sub("g", gating="top_2", capacity_factor=2, hidden=H, activation="relu")
  (bd, bH), ba = space.block1, sub("a", heads=max(space.heads))
  bf = sub("f", hidden=bH, activation="gated_gelu")
  bg = sub("g", gating="expert_choice", capacity_factor=1, hidden=bH, activation="gated_gelu")
  blocks = {"glam": (d, [a, f, a, g] * n),
            "dense": (d, [a, sub("f", hidden=H, activation="relu")] * (2 * n)),
            "block1": (bd, [ba, bg, bf, ba, bg, bf, bg, bf])}
  return {name: Candidate(nearest(space.model_dims, dim), spec_lib.BlockSpec(tuple(layers)))
          for name, (dim, layers) in blocks.items()}


def _operator(name: str, seed: int) -> pg.evolution.Mutator:
  if name == "swap":
    return pg.evolution.mutators.Swap(seed=seed)  # the only multi-choice node: the slots

  def where(dna):  # a decision's key: a slot's index in `layers`, a setting's name
    key = None if dna.spec.location.is_root else dna.spec.location.key
    return isinstance(key, int) if name == "layer" else key == _SETTINGS[name]
  return pg.evolution.mutators.Uniform(where=where, seed=seed)


@pg.members([
    ("space", pg.typing.Str(), "Search space name (SPACES)."),
    ("operators", pg.typing.List(pg.typing.Enum(OPERATORS[0], list(OPERATORS)), min_size=1),
     "Operators to choose from."),
    ("seed", pg.typing.Int().noneable(), "Random seed."),
])
class BlockMutator(pg.evolution.Mutator):
  """One operator, drawn uniformly, until the child is valid and differs from the parent; the
  child's metadata names the operator and the parent's trial."""

  def _on_bound(self):
    super()._on_bound()
    self._random = random.Random(self.seed)
    self._operators = {op: _operator(op, self._random.randrange(2 ** 31)) for op in self.operators}

  def mutate(self, dna: pg.DNA, step: int = 0) -> pg.DNA:
    parent = decode(self.space, dna)
    for _ in range(ATTEMPTS):
      op = self._random.choice(list(self.operators))
      try:
        child = self._operators[op].mutate(dna, step=step)
      except RuntimeError:  # PyGlove: no decision of this kind in the DNA (no MoE: no gating)
        continue
      if valid(self.space, child) and decode(self.space, child) != parent:
        # Rebuilt from its numbers: PyGlove's Swap leaves child DNAs bound to their old slots'
        # specs, which Vizier's converter follows back (the served trial would be the parent).
        return dna_of(self.space, child.to_numbers(),
                      dict(child.metadata, operator=op, parent=dna.metadata.get("trial")))
    raise ValueError(f"no mutation of {parent} found in {ATTEMPTS} attempts with operators "
                     f"{list(self.operators)}")


@pg.members([("space", pg.typing.Str(), "Search space name (SPACES).")])
class RandomBlocks(pg.geno.Random):
  """Uniformly random DNA of the space, redrawn until it is a valid candidate."""

  def _propose(self) -> pg.DNA:
    for _ in range(ATTEMPTS):
      dna = super()._propose()
      if valid(self.space, dna):
        return dna
    raise ValueError(f"no valid random candidate of space {self.space!r} in {ATTEMPTS} draws")


def algorithm(config: dict, history=()) -> pg.evolution.Evolution:
  """PyGlove's regularized (aging) evolution (Real et al. 2019, the paper's Algorithm 1) or
  NSGA-II, as `config` (study.default_config) says, set up for the space and recovered from
  `history`: (DNA, fitness or None while unfinished) in feedback order. Seeded from the seed
  and len(history): a resumed search draws fresh random numbers.
  """
  seed = config["seed"] * 1000003 + len(history)
  mutator = BlockMutator(config["space"], list(config["operators"]), seed)
  if config["algorithm"] == "nsga2":  # population_size children per generation, 2x initial
    evolution = pg.evolution.nsga2(mutator, config["population"], seed)
  else:
    evolution = pg.evolution.regularized_evolution(
        mutator, config["population"], config["tournament"], seed)
  evolution.rebind(population_init=(RandomBlocks(seed=seed, space=config["space"]),
                                    evolution.population_init[1]))
  evolution.setup(dna_spec(config["space"]))
  evolution.recover(history)
  return evolution
