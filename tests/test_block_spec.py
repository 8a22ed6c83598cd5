"""The block notation: parsing, canonical printing (round trip), defaults and every error."""

import dataclasses

import pytest

from brainformer_tf import blocks

CANONICAL = [
    "a g f a g f g f",
    "(a f)(a g)",
    "(a f)",
    "a (f g) a",
    "(a f) g (a f)",
    "a[h=20,d_kv=128] g[ec,c=1,H=2048,act=gated_gelu] f[H=2048,act=gated_gelu]",
    "g[top2,E=32,c=1.25,H=1536,act=relu,norm=post]",
    "g[gate=expert_choice_capped,c=2]",
    "(a[dconv=3,norm=sandwich] f[act=squared_relu])",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_text_round_trips(text):
  spec = blocks.parse(text)
  assert str(spec) == text
  assert blocks.parse(str(spec)) == spec


def test_parse_builds_plain_data():
  spec = blocks.parse("a[h=20,d_kv=128] g[ec,c=1,H=2048,act=gated_gelu] (f[H=3072] a)")
  assert spec.letters == "agfa"
  assert spec.groups == ((2, 4),)
  assert spec.layers[0] == blocks.SubLayer("a", heads=20, d_kv=128)
  assert spec.layers[1] == blocks.SubLayer("g", gating="expert_choice", capacity_factor=1.0,
                                           hidden=2048, activation="gated_gelu")
  assert spec.layers[2] == blocks.SubLayer("f", hidden=3072)
  assert spec.layers[3] == blocks.SubLayer("a")


@pytest.mark.parametrize("text,canonical", [
    ("( a  f ) ( a g )", "(a f)(a g)"),
    ("a[ h = 4 , d_kv = 8 ]f", "a[h=4,d_kv=8] f"),
    ("g[H=8,gate=top_2,c=2.0]", "g[top2,c=2,H=8]"),        # canonical order, flag, number
    ("g[gate=expert_choice]", "g[ec]"),
])
def test_non_canonical_text_prints_canonically(text, canonical):
  assert str(blocks.parse(text)) == canonical
  assert blocks.parse(canonical) == blocks.parse(text)


def test_mutated_spec_prints_and_parses_back():
  """The search edits specs as data: replace a sub-layer, append one, and print."""
  spec = blocks.parse("(a f)(a g)")
  layers = list(spec.layers)
  layers[1] = dataclasses.replace(layers[1], hidden=4096, activation="gelu")
  layers.append(blocks.SubLayer("g", gating="expert_choice", capacity_factor=3))
  mutated = blocks.BlockSpec(tuple(layers), spec.groups)
  assert str(mutated) == "(a f[H=4096,act=gelu])(a g) g[ec,c=3]"
  assert blocks.parse(str(mutated)) == mutated


@pytest.mark.parametrize("text,message", [
    ("a x f", r"sub-layer 1: unknown letter 'x'"),
    ("a f A", r"sub-layer 2: unknown letter 'A'"),
    ("a f[act=swish]", r"sub-layer 1 \(f\): act='swish' \(activation\) is not a known"),
    ("a g[act=tanh]", r"sub-layer 1 \(g\): act='tanh'"),
    ("f[norm=middle]", r"sub-layer 0 \(f\): norm='middle' \(norm placement\) is not a known"),
    ("a a[norm=Pre]", r"sub-layer 1 \(a\): norm='Pre'"),
    ("f[H=0]", r"sub-layer 0 \(f\): H=0 \(hidden size\) must be a positive integer"),
    ("a[h=2.5]", r"sub-layer 0 \(a\): h='2.5' \(attention heads\) is not a valid int"),
    ("g[c=0]", r"sub-layer 0 \(g\): c=0.0 \(capacity factor\) must be a positive number"),
    ("g[c=-1]", r"sub-layer 0 \(g\): c='-1' \(capacity factor\) is not a valid float"),
    ("a[H=64]", r"sub-layer 0 \(a\): H=64 \(hidden size\) does not apply to attention"),
    ("f[ec]", r"sub-layer 0 \(f\): gate='expert_choice' \(gating\) does not apply to dense"),
    ("g[fast]", r"sub-layer 0 \(g\): unknown flag 'fast'"),
    ("f[width=3]", r"sub-layer 0 \(f\): unknown setting 'width'"),
    ("f[H=4,H=8]", r"sub-layer 0 \(f\): H is given twice"),
    ("a f[H=4", r"sub-layer 1 \(f\): '\[' at character 3 is not closed"),
    ("a, f", r"unexpected ',' at character 1"),
    ("(a (f))", r"nested '\(' at sub-layer 1"),
    ("a f)", r"'\)' without a non-empty group at sub-layer 2"),
    ("a ()", r"'\)' without a non-empty group at sub-layer 1"),
    ("(a f", r"'\(' at sub-layer 0 is not closed"),
    ("   ", r"block spec is empty"),
])
def test_bad_specs_name_the_sub_layer_and_parameter(text, message):
  with pytest.raises(blocks.BlockSpecError, match=message):
    blocks.parse(text)


def test_bad_data_is_rejected_on_construction():
  with pytest.raises(blocks.BlockSpecError, match=r"sub-layer 1 \(f\): act='swish'"):
    blocks.BlockSpec((blocks.SubLayer("a"), blocks.SubLayer("f", activation="swish")))
  with pytest.raises(blocks.BlockSpecError, match="groups"):
    blocks.BlockSpec((blocks.SubLayer("a"), blocks.SubLayer("f")), groups=((1, 3),))


DEFAULTS = blocks.BlockDefaults(num_heads=4, d_kv=16, d_ff=64, ffn_activation="gated_gelu",
                                d_moe=32, num_experts=8, gating="top_2")


def test_resolve_fills_unset_settings_from_defaults():
  a, f, g = blocks.resolve(blocks.parse("a[h=2] f g[ec,E=4,act=relu,norm=post]"), DEFAULTS)
  assert (a.heads, a.d_kv, a.dconv, a.norm) == (2, 16, 0, "pre")
  assert (f.hidden, f.activation, f.norm) == (64, "gated_gelu", "pre")
  assert (g.hidden, g.experts, g.gating, g.activation, g.capacity_factor, g.norm) == (
      32, 4, "expert_choice", "relu", None, "post")  # None: the MoE's own Gin default


@pytest.mark.parametrize("text,defaults,message", [
    ("a f", blocks.BlockDefaults(d_ff=8),
     r"sub-layer 0 \(a\): h \(attention heads\) is missing: write a\[h=...\] or bind "
     r"blocks.BlockDefaults.num_heads"),
    ("a[h=2] f", blocks.BlockDefaults(),
     r"sub-layer 1 \(f\): H \(hidden size\) is missing.*BlockDefaults.d_ff"),
    ("g[H=8]", blocks.BlockDefaults(),
     r"sub-layer 0 \(g\): E \(number of experts\) is missing.*BlockDefaults.num_experts"),
    ("f[H=8]", blocks.BlockDefaults(ffn_activation="swish"),
     r"sub-layer 0 \(f\): act='swish'.*comes from blocks.BlockDefaults"),
    ("a[h=2] f[H=8]", blocks.BlockDefaults(norm="middle"),
     r"sub-layer 0 \(a\): norm='middle'.*comes from blocks.BlockDefaults"),
    ("f[H=8]", blocks.BlockDefaults(norm_type="batch_norm"),
     r"BlockDefaults.norm_type='batch_norm' is not a known norm type"),
])
def test_missing_and_bad_defaults_are_named(text, defaults, message):
  with pytest.raises(blocks.BlockSpecError, match=message):
    blocks.validate(text, defaults=defaults)


@pytest.mark.parametrize("text,mesh,layout,message", [
    ("a f[H=60]", "model:8", "d_ff:model",
     r"sub-layer 1 \(f\): H=60 \(hidden size, dimension 'd_ff'\) is split over mesh "
     r"dimension 'model' of size 8"),
    ("a f a[h=6]", "batch:2,model:4", "heads:model",
     r"sub-layer 2 \(a\): h=6 \(attention heads, dimension 'heads'\) .* 'model' of size 4"),
    ("a g[E=6]", "batch:4", "experts:batch",
     r"sub-layer 1 \(g\): E=6 \(number of experts, dimension 'experts'\) .* 'batch' of size 4"),
    ("a g[H=30]", "model:4", "expert_hidden:model",
     r"sub-layer 1 \(g\): H=30 \(hidden size, dimension 'expert_hidden'\)"),
])
def test_widths_must_divide_their_mesh_dims(text, mesh, layout, message):
  with pytest.raises(blocks.BlockSpecError, match=message):
    blocks.validate(text, mesh, layout, DEFAULTS)


def test_widths_that_divide_or_are_not_split_pass():
  resolved = blocks.validate("a f[H=60] a[h=1]", "batch:3,model:4", "heads:model,batch:batch",
                             DEFAULTS)
  assert [layer.kind for layer in resolved] == ["a", "f", "a"]



def test_layer_class_checks_are_reported_with_the_sub_layer():
  """Settings only the layer class knows (here MoE's gating names) are checked by validate."""
  with pytest.raises(blocks.BlockSpecError, match=r"sub-layer 2 \(g\): MoE.gating='top_3'"):
    blocks.validate("a f g[gate=top_3]", defaults=DEFAULTS)
