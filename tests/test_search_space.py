"""Search space, candidate encoding and mutation validity (brainformer_tf.search)."""

import random

import pytest

from brainformer_tf.blocks import build, spec as spec_lib
from brainformer_tf.search import mutation, space as space_lib, trial
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


def _random_candidates(space, n, seed=0):
  rng = random.Random(seed)
  return [space_lib.random_candidate(space, rng) for _ in range(n)]


@pytest.mark.parametrize("name", ["table1", "mini", "tiny"])
def test_candidates_round_trip_through_the_block_notation(name):
  space = space_lib.get(name)
  for candidate in _random_candidates(space, 50):
    space_lib.check(space, candidate)
    text = str(candidate.block)
    assert spec_lib.parse(text) == candidate.block
    assert Candidate.from_json(candidate.to_json()) == candidate


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


def test_check_names_the_offending_setting():
  space = space_lib.get("mini")
  with pytest.raises(ValueError, match="hidden=999"):
    space_lib.check(space, Candidate(32, spec_lib.parse("a[h=2] f[H=999,act=relu]")))
  with pytest.raises(ValueError, match="d_model=7"):
    space_lib.check(space, Candidate(7, spec_lib.parse("a[h=2] f[H=48,act=relu]")))
  with pytest.raises(ValueError, match="no attention"):
    space_lib.check(space, Candidate(32, spec_lib.parse("f[H=48,act=relu] f[H=48,act=relu]")))
  with pytest.raises(ValueError, match="9 sub-layers"):
    space_lib.check(space, Candidate(32, spec_lib.parse(" ".join(["a[h=2]"] * 9))))


def test_references_are_glam_dense_and_block1():
  refs = space_lib.references(space_lib.TABLE1)
  assert refs["glam"].block.letters == "afagafag"
  assert {l.gating for l in refs["glam"].block.layers if l.kind == "g"} == {"top_2"}
  assert refs["dense"].block.letters == "afafafaf"
  assert refs["block1"].block.letters == "agfagfgf"
  assert refs["block1"].d_model == 1024
  assert {(l.gating, l.capacity_factor) for l in refs["block1"].block.layers
          if l.kind == "g"} == {("expert_choice", 1.0)}


@pytest.mark.parametrize("name", ["table1", "mini", "tiny"])
def test_every_mutant_is_a_valid_block_of_the_space(name):
  space = space_lib.get(name)
  rng = random.Random(1)
  used = set()
  parents = _random_candidates(space, 40, seed=2)
  for parent in parents:
    child = parent
    for _ in range(10):  # chains of mutations drift far from the random start
      new, op = mutation.mutate(space, child, rng)
      assert new != child
      space_lib.check(space, new)
      assert spec_lib.parse(str(new.block)) == new.block
      build.validate(new.block, defaults=build.BlockDefaults(
          d_kv=space.d_kv, num_experts=space.num_experts))
      used.add(op)
      child = new
  assert used == set(mutation.OPERATORS) - ({"model_dim"} if len(space.model_dims) == 1 else set())


def test_each_operator_changes_only_its_axis():
  space = space_lib.get("mini")
  parent = Candidate(32, spec_lib.parse(
      "a[h=2] g[ec,c=1,H=64,act=gated_gelu] f[H=48,act=relu] a[h=4]"))
  rng = random.Random(0)
  for op in ("gating", "capacity", "heads", "activation", "width"):
    child, used = mutation.mutate(space, parent, rng, operators=[op])
    assert used == op and child.d_model == parent.d_model
    assert child.block.letters == parent.block.letters
    diffs = [(a, b) for a, b in zip(parent.block.layers, child.block.layers) if a != b]
    assert len(diffs) == 1
  child, _ = mutation.mutate(space, parent, rng, operators=["insert"])
  assert len(child.block.layers) == 5
  child, _ = mutation.mutate(space, parent, rng, operators=["delete"])
  assert len(child.block.layers) == 3 and "a" in child.block.letters
  child, _ = mutation.mutate(space, parent, rng, operators=["model_dim"])
  assert child.d_model != 32 and child.block == parent.block


def test_insert_and_delete_respect_the_length_bounds():
  space = space_lib.get("tiny")  # 1..3 sub-layers
  full = Candidate(16, spec_lib.parse("a[h=1] a[h=2] a[h=1]"))
  single = Candidate(16, spec_lib.parse("a[h=1]"))
  with pytest.raises(ValueError, match="no mutation"):
    mutation.mutate(space, full, random.Random(0), operators=["insert"])
  with pytest.raises(ValueError, match="no mutation"):
    mutation.mutate(space, single, random.Random(0), operators=["delete"])
  with pytest.raises(ValueError, match="unknown"):
    mutation.mutate(space, single, random.Random(0), operators=["teleport"])
