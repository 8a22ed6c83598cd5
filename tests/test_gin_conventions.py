"""The layout of gin/ (docs/zoo.md "Files"), read as text: no TF, no Gin parsing.

* Every model file says on its first comment line what `num_layers` counts there
  ("# num_layers = number of stacked ..."), and that line names the block the file builds.
* Model files take their structure from a family file (gin/models/includes/<family>.gin) or
  from another model file (causal twins, moe_tiny/), and their sizes from includes/size_*.gin;
  none writes its own block spec. glam_tiny.gin is the one mesh-tf layer list (the reason is in
  its header).
* Recipes (train/, search/, finetune/, eval/) bind no mesh or layout: that is gin/layouts/'s job.
"""

import pathlib
import re

import pytest

GIN = pathlib.Path(__file__).resolve().parent.parent / "gin"
MODELS = sorted(p.relative_to(GIN).as_posix() for pattern in ("models/*.gin", "models/moe_tiny/*.gin")
                for p in GIN.glob(pattern))
FAMILIES = ("dense", "glam", "glam_ec", "brainformer1", "brainformer2", "primer")
RECIPES = sorted(p.relative_to(GIN).as_posix() for d in ("train", "search", "finetune", "eval")
                 for p in (GIN / d).glob("*.gin"))
LAYER_LISTS = {"models/glam_tiny.gin"}   # mesh-tf layer lists, not block specs (docs/zoo.md)
NUM_LAYERS_LINE = "# num_layers = number of stacked "
LAYOUT_BINDING = re.compile(r"^\s*(utils\.run\.(mesh_shape|mesh_devices|layout_rules)|"
                            r"utils\.tpu_mesh_shape\.\w+)\s*=", re.M)
SPEC_BINDING = re.compile(r"""^\s*blocks\.block_layers\.spec\s*=\s*["'](.*)["']\s*$""", re.M)


def _includes(name):
  return re.findall(r"""^include\s+['"]([^'"]+)['"]""", (GIN / name).read_text(), re.M)


def _spec(name):
  """The block spec `name` ends up with (its own binding, else the last include's), or None."""
  spec = None
  for included in _includes(name):
    spec = _spec(included) or spec
  own = SPEC_BINDING.findall((GIN / name).read_text())
  return own[-1] if own else spec


def _closure(name):
  """Every file `name` includes, directly or not."""
  seen = []
  for included in _includes(name):
    seen += [included] + _closure(included)
  return seen


def test_the_globs_find_the_zoo_and_the_recipes():
  assert len(MODELS) >= 40 and "models/moe_tiny/top_2.gin" in MODELS
  assert {"train/cpu.gin", "train/cpu_mini.gin", "train/glam.gin", "search/cpu_proxy.gin",
          "finetune/default.gin", "eval/default.gin"} <= set(RECIPES)


@pytest.mark.parametrize("model", MODELS)
def test_first_comment_line_says_what_num_layers_counts(model):
  lines = (GIN / model).read_text().splitlines()
  first = lines[1] if lines[0].startswith("# -*-Python-*-") else lines[0]
  assert first.startswith(NUM_LAYERS_LINE), f"{model}: first line {first!r}"
  spec = _spec(model)
  if model in LAYER_LISTS or any(f in LAYER_LISTS for f in _closure(model)):
    assert spec is None and "mesh-tf list" in first, model
  else:   # the line names the block the file builds
    assert spec is not None and f'"{spec}"' in first, f"{model}: {spec!r} not in {first!r}"


@pytest.mark.parametrize("model", MODELS)
def test_model_files_include_their_family_and_size(model):
  text = (GIN / model).read_text()
  assert not SPEC_BINDING.search(text), f"{model} writes its own block spec"
  closure = _closure(model)
  if model in LAYER_LISTS:
    assert "models/includes/lm_base.gin" in closure
  else:
    family = [f for f in FAMILIES if f"models/includes/{f}.gin" in closure]
    based_on = [f for f in _includes(model) if f in MODELS]
    assert family or based_on, f"{model} includes no family file and no model file"
  sizes = [f for f in closure if re.fullmatch(r"models/includes/size_[\w.]+\.gin", f)]
  stem = pathlib.PurePath(model).stem
  assert sizes, f"{model} takes no sizes from includes/size_*.gin"
  if stem.endswith(("_tiny", "_mini")):
    assert f"models/includes/size_{stem.rsplit('_', 1)[1]}.gin" in sizes, model


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_hold_no_mesh_or_layout(recipe):
  found = LAYOUT_BINDING.findall((GIN / recipe).read_text())
  assert not found, f"{recipe} binds {[f[0] for f in found]}: put it in gin/layouts/"


def test_every_layout_binds_a_mesh():
  layouts = sorted((GIN / "layouts").glob("*.gin"))
  assert len(layouts) >= 7
  for layout in layouts:
    bound = {m[0] for m in LAYOUT_BINDING.findall(layout.read_text())}
    assert {"utils.run.mesh_shape", "utils.run.layout_rules"} <= bound, layout.name
