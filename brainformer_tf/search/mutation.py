"""Mutations, the random initial population and the search algorithms, all PyGlove's.

Operators, PyGlove mutators on the DNA of `space.hyper` (the paper names none): `layer`
re-draws a sub-layer slot (an empty slot gets a sub-layer = insert, a sub-layer becomes empty
= delete, or a new type in place), `swap` trades two slots, and `model_dim`, `heads`, `width`,
`gating`, `capacity`, `activation` re-draw that setting of one sub-layer (or the model dim).
"""

import random

import pyglove as pg

from brainformer_tf.search import space as space_lib

_SETTINGS = {"model_dim": "d_model", "heads": "heads", "width": "hidden", "gating": "gating",
             "capacity": "capacity_factor", "activation": "activation"}
OPERATORS = ("layer", "swap") + tuple(_SETTINGS)
ALGORITHMS = ("regularized_evolution", "nsga2")
ATTEMPTS = 100


def _operator(name: str, seed: int) -> pg.evolution.Mutator:
  if name == "swap":
    return pg.evolution.mutators.Swap(seed=seed)  # the only multi-choice node: the slots

  def where(dna):  # a decision's key: a slot's index in `layers`, a setting's name
    key = None if dna.spec.location.is_root else dna.spec.location.key
    return isinstance(key, int) if name == "layer" else key == _SETTINGS[name]
  return pg.evolution.mutators.Uniform(where=where, seed=seed)


@pg.members([
    ("space", pg.typing.Str(), "Search space name (space.SPACES)."),
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
    parent = space_lib.decode(self.space, dna)
    for _ in range(ATTEMPTS):
      op = self._random.choice(list(self.operators))
      try:
        child = self._operators[op].mutate(dna, step=step)
      except RuntimeError:  # PyGlove: no decision of this kind in the DNA (no MoE: no gating)
        continue
      if space_lib.valid(self.space, child) and space_lib.decode(self.space, child) != parent:
        return child.set_metadata("operator", op).set_metadata("parent", dna.metadata.get("trial"))
    raise ValueError(f"no mutation of {parent} found in {ATTEMPTS} attempts with operators "
                     f"{list(self.operators)}")


@pg.members([("space", pg.typing.Str(), "Search space name (space.SPACES).")])
class RandomBlocks(pg.geno.Random):
  """Uniformly random DNA of the space, redrawn until it is a valid candidate."""

  def _propose(self) -> pg.DNA:
    for _ in range(ATTEMPTS):
      dna = super()._propose()
      if space_lib.valid(self.space, dna):
        return dna
    raise ValueError(f"no valid random candidate of space {self.space!r} in {ATTEMPTS} draws")


def algorithm(config: dict, history=()) -> pg.evolution.Evolution:
  """The search algorithm of `config` (study.default_config's settings), set up for the space
  and recovered from `history`: (DNA, fitness or None while unfinished), feedback order. Its
  random numbers are seeded from the seed and len(history): a resumed search draws fresh ones.
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
  evolution.setup(space_lib.dna_spec(config["space"]))
  evolution.recover(history)
  return evolution
