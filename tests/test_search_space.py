"""Search space, candidate encoding and mutation validity (brainformer_tf.search)."""

import pyglove as pg
import pytest

from brainformer_tf.blocks import build, spec as spec_lib
from brainformer_tf.search import space as space_lib, trial
from brainformer_tf.search.space import Candidate


def test_table1_is_the_paper_search_space():
  t = space_lib.TABLE1
  assert set(t.model_dims) == {512, 768, 1024}
  assert set(t.ffn_hidden) == set(t.moe_hidden) == {1536, 2048, 3072, 4096}
  assert set(t.heads) == {12, 16, 20}
  assert set(t.gatings) == {"top_2", "expert_choice"}
  assert set(t.capacity_factors) == {1, 2, 3, 4}
  assert set(t.activations) == {"gated_relu", "gated_gelu", "relu", "gelu"}
  assert t.stack == 3


def test_cpu_variants_are_table1_scaled_down():
  t, cpu = space_lib.TABLE1, space_lib.get("cpu")
  assert [d * 16 for d in cpu.model_dims] == list(t.model_dims)
  assert [h * 16 for h in cpu.ffn_hidden] == list(t.ffn_hidden)
  assert (cpu.gatings, cpu.capacity_factors, cpu.activations) == (
      t.gatings, t.capacity_factors, t.activations)
  with pytest.raises(ValueError, match="--space='nope'"):
    space_lib.get("nope")


def _random_dna(name, n, seed=0):
  generator = space_lib.RandomBlocks(seed=seed, space=name)
  generator.setup(space_lib.dna_spec(name))
  return [generator.propose() for _ in range(n)]


def _random_candidates(space, n, seed=0):
  return [space_lib.decode(space.name, dna) for dna in _random_dna(space.name, n, seed)]


@pytest.mark.parametrize("name", ["table1", "mini", "tiny"])
def test_candidates_round_trip_through_the_block_notation(name):
  space = space_lib.get(name)
  for dna in _random_dna(name, 6):  # PyGlove's materialize / encode take ~0.1 s each
    candidate = space_lib.decode(name, dna)
    assert _allowed(space, candidate)
    text = str(candidate.block)
    assert spec_lib.parse(text) == candidate.block
    assert Candidate.from_json(candidate.to_json()) == candidate
    assert pg.DNA.from_numbers(dna.to_numbers(), space_lib.dna_spec(name)) == dna  # state.json
    # decode reads the DNA's numbers; PyGlove's materialize is the independent reference, and
    # the materialised value encodes back to the same DNA.
    value = pg.materialize(space_lib.hyper(name), dna)
    assert value.d_model == candidate.d_model
    assert [dict(l) for l in value.layers if l is not None] == [
        dict(kind=l.kind, **{f: v for f, v in vars(l).items() if v is not None and f != "kind"})
        for l in candidate.block.layers]
    assert pg.template(space_lib.hyper(name)).encode(value) == dna


def test_dna_slots_materialise_in_order_and_empty_slots_vanish():
  name = "mini"
  space = space_lib.get(name)
  # d_model choice 2 (32); slots: a with heads choice 1 (4), empty, f with hidden choice 0 (48)
  # and activation choice 2 (relu), then empty slots up to max_layers.
  numbers = [2, 1, 1, 0, 2, 0, 2] + [0] * (space.max_layers - 3)
  candidate = space_lib.decode(name, pg.DNA.from_numbers(numbers, space_lib.dna_spec(name)))
  assert str(candidate) == "d=32 a[h=4] f[H=48,act=relu]"


def test_random_initial_blocks_are_valid_and_varied():
  space = space_lib.get("mini")
  candidates = _random_candidates(space, 30, seed=5)
  lengths = {len(c.block.layers) for c in candidates}
  assert min(lengths) >= space.min_layers and max(lengths) <= space.max_layers
  assert len(lengths) >= 4 and len({str(c) for c in candidates}) == 30
  assert all("a" in c.block.letters for c in candidates)


def test_candidate_gin_file_builds_the_same_block(tmp_path):
  space = space_lib.get("mini")
  candidate = _random_candidates(space, 1, seed=3)[0]
  text = trial.model_gin(space, candidate)
  spec_line = next(l for l in text.splitlines() if l.startswith("blocks.block_layers.spec"))
  assert spec_lib.parse(spec_line.split("=", 1)[1].strip().strip('"')) == candidate.block
  assert f"d_model = {candidate.d_model}" in text
  assert "num_layers = 3" in text
  # The Gin file's spec resolves with the file's defaults to the candidate's own sub-layers.
  resolved = build.validate(candidate.block, defaults=build.BlockDefaults(
      d_kv=space.d_kv, num_experts=space.num_experts))
  assert [l.kind for l in resolved] == list(candidate.block.letters)


def test_scaled_gin_files_scale_widths_and_stack():
  space = space_lib.get("mini")
  candidate = Candidate(32, spec_lib.parse("a[h=2] g[ec,c=1,H=64,act=gated_gelu] f[H=48,act=relu]"))
  text = trial.model_gin(space, candidate, stack=6, scale=2)
  assert "d_model = 64" in text and "num_layers = 6" in text and f"d_kv = {2 * space.d_kv}" in text
  assert '"a[h=2] g[ec,c=1,H=128,act=gated_gelu] f[H=96,act=relu]"' in text


def _allowed(space, candidate):
  """The space's rule, restated: min..max_layers sub-layers, one of them attention."""
  layers = candidate.block.layers
  return (space.min_layers <= len(layers) <= space.max_layers
          and any(l.kind == "a" for l in layers))


def _dna(name, candidate):
  dna = pg.template(space_lib.hyper(name)).encode(_symbolic(name, candidate))
  dna.use_spec(space_lib.dna_spec(name))
  return dna


def test_valid_refuses_blocks_without_attention_or_too_short_and_the_space_other_values():
  ok, no_attention = "a[h=2] f[H=48,act=relu]", "f[H=48,act=relu] f[H=48,act=relu]"
  assert space_lib.valid("mini", _dna("mini", Candidate(32, spec_lib.parse(ok))))
  assert not space_lib.valid("mini", _dna("mini", Candidate(32, spec_lib.parse(no_attention))))
  assert space_lib.get("mini").min_layers == 2
  assert not space_lib.valid("mini", _dna("mini", Candidate(32, spec_lib.parse("a[h=2]"))))
  empty = pg.DNA.from_numbers([0] * (1 + space_lib.get("mini").max_layers),
                              space_lib.dna_spec("mini"))
  assert not space_lib.valid("mini", empty)
  outside = _symbolic("mini", Candidate(32, spec_lib.parse("a[h=2] f[H=48,act=relu]")))
  outside.layers[1].hidden = 999  # not a choice: PyGlove will not encode it
  with pytest.raises(ValueError, match="999"):
    pg.template(space_lib.hyper("mini")).encode(outside)


def test_references_are_glam_dense_and_block1():
  refs = space_lib.references(space_lib.TABLE1)
  assert refs["glam"].block.letters == "afagafag"
  assert {l.gating for l in refs["glam"].block.layers if l.kind == "g"} == {"top_2"}
  assert refs["dense"].block.letters == "afafafaf"
  assert refs["block1"].block.letters == "agfagfgf"
  assert refs["block1"].d_model == 1024
  assert {(l.gating, l.capacity_factor) for l in refs["block1"].block.layers
          if l.kind == "g"} == {("expert_choice", 1.0)}


def _mutate(name, parent, operators=space_lib.OPERATORS, seed=0):
  """(child candidate, operator) of BlockMutator on a DNA that decodes to `parent`."""
  child = space_lib.BlockMutator(name, list(operators), seed).mutate(_dna(name, parent))
  return space_lib.decode(name, child), child.metadata["operator"]


def _symbolic(name, candidate):
  """The candidate as a value of the PyGlove space: its sub-layers, then empty slots."""
  layers = [pg.Dict(kind=l.kind, **{f: getattr(l, f) for f in space_lib.get(name).choices(l.kind)})
            for l in candidate.block.layers]
  return pg.Dict(d_model=candidate.d_model,
                 layers=layers + [None] * (space_lib.get(name).max_layers - len(layers)))


@pytest.mark.parametrize("name,parents", [("table1", 3), ("mini", 8), ("tiny", 3)])
def test_every_mutant_is_a_valid_block_of_the_space(name, parents):
  space = space_lib.get(name)
  mutator = space_lib.BlockMutator(name, list(space_lib.OPERATORS), 1)
  used = set()
  for dna in _random_dna(name, parents, seed=2):
    for _ in range(6):  # chains of mutations drift far from the random start
      child = mutator.mutate(dna)
      new, old = space_lib.decode(name, child), space_lib.decode(name, dna)
      assert new != old
      assert _allowed(space, new)
      assert spec_lib.parse(str(new.block)) == new.block
      build.validate(new.block, defaults=build.BlockDefaults(
          d_kv=space.d_kv, num_experts=space.num_experts))
      used.add(child.metadata["operator"])
      dna = child
  if name == "mini":  # 48 mutations: every operator was drawn
    assert used == set(space_lib.OPERATORS)


def test_each_operator_changes_only_its_axis():
  parent = Candidate(32, spec_lib.parse(
      "a[h=2] g[ec,c=1,H=64,act=gated_gelu] f[H=48,act=relu] a[h=4]"))
  fields = {"gating": "gating", "capacity": "capacity_factor", "heads": "heads",
            "activation": "activation", "width": "hidden"}
  for seed in range(3):
    for op, field in fields.items():
      child, used = _mutate("mini", parent, [op], seed)
      assert used == op and child.d_model == parent.d_model
      assert child.block.letters == parent.block.letters
      diffs = [(a, b) for a, b in zip(parent.block.layers, child.block.layers) if a != b]
      assert len(diffs) == 1
      (a, b), = diffs
      assert [f for f in fields.values() if getattr(a, f) != getattr(b, f)] == [field]
    child, _ = _mutate("mini", parent, ["model_dim"], seed)
    assert child.d_model != 32 and child.block == parent.block
    child, _ = _mutate("mini", parent, ["swap"], seed)  # the same sub-layers, reordered
    assert sorted(map(str, child.block.layers)) == sorted(map(str, parent.block.layers))
    assert child.block != parent.block and child.d_model == 32
    child, _ = _mutate("mini", parent, ["layer"], seed)  # insert, delete or replace one
    assert abs(len(child.block.layers) - 4) <= 1 and child.d_model == 32


def test_layer_operator_inserts_and_deletes_within_the_length_bounds():
  seen = set()
  for seed in range(12):
    child, _ = _mutate("mini", Candidate(32, spec_lib.parse("a[h=2] a[h=4]")), ["layer"], seed)
    seen.add(len(child.block.layers))
  assert seen == {2, 3}  # min_layers is 2: an insert or a replacement, never a delete
  full = Candidate(16, spec_lib.parse("a[h=1] a[h=2] a[h=1]"))  # tiny: 1..3 sub-layers
  for seed in range(5):
    assert len(_mutate("tiny", full, ["layer"], seed)[0].block.layers) in (2, 3)
  with pytest.raises(ValueError, match="no mutation"):
    _mutate("tiny", Candidate(16, spec_lib.parse("a[h=1]")), ["swap"])  # nothing to reorder
