"""Every model x recipe x layout in gin/: the config checks of `brainformer validate` pass, or fail
for a reason listed below, and the model's graph builds symbolically (the `brainformer params`
path: no lowering, no session), all in this one process (about a minute: marked slow).

Files are found by globbing, so a new model, recipe or layout joins the matrix by itself.
How each recipe directory is used, i.e. which command parses it and with which layouts:

  train/*.gin     `brainformer train` / `validate`: the model, the recipe, a layout (TPU layouts
                  with --tpu, as on a TPU: the mesh is placed there and `mesh_devices` is unused).
  search/*.gin    a search trial: `brainformer train` with the trial's model and this recipe,
                  nothing else (brainformer_tf/search/trial.py), so no layout.
  finetune/*.gin  `brainformer finetune`: the checkpoint's config (stand-in: the model +
                  train/cpu.gin), this file, then the user's --gin_file (a layout), MIXTURE_NAME;
                  the training run's checks plus the causal-routing check. Runs locally (no --tpu).
  eval/*.gin      `brainformer eval`: the checkpoint's config and this file; checks model type
                  and causal routing (sequence lengths are set per mode). It runs locally and its
                  checks read no mesh setting, so layouts add nothing: no layout.

The graph is built (a) for every model x recipe on one device and (b) for every model x layout
on that layout's mesh with the recipe the layout is meant for (train/glam.gin on TPU layouts,
train/cpu.gin on CPU/GPU ones), each with one block repeat at the model's full widths: the
repeats are copies, so one repeat exercises every layer (tests/test_accounting.py counts full
depths). On TPU layouts the build is memory.py's (`brainformer params --mesh`, which splits
every tensor by the layout), at one and two repeats, extrapolated to the full depth for the
per-chip memory check.
"""

import dataclasses
import fnmatch
import logging
import pathlib
import re
from typing import Tuple

from absl import flags
import gin
import mesh_tensorflow as mtf
import pytest

from brainformer_tf.analysis import accounting
from brainformer_tf.analysis import memory
from brainformer_tf.cli import validate
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.config import paths
from brainformer_tf.evaluation import driver
from harness import problems

GIN = pathlib.Path(paths.gin_dir())
TPU_CHIP_GIB = 32.0   # TPU v4 HBM per chip (the paper's 512-chip runs)
FINETUNE_TASK = "super_glue_cb_local"


def _gin_files(*patterns):
  return sorted(str(p.relative_to(GIN)) for pattern in patterns for p in GIN.glob(pattern))


MODELS = _gin_files("models/*.gin", "models/moe_tiny/*.gin")
RECIPES = _gin_files("train/*.gin", "search/*.gin", "finetune/*.gin", "eval/*.gin")
LAYOUTS = [None] + _gin_files("layouts/*.gin")


def is_tpu_layout(layout):
  """A layout meant for a TPU slice: it binds the TPU topology (and no device list)."""
  return layout is not None and "utils.tpu_mesh_shape.tpu_topology" in (GIN / layout).read_text()


def recipe_layouts(recipe):
  """The layouts the command that reads `recipe` can use (module doc)."""
  kind = recipe.split("/")[0]
  if kind in ("search", "eval"):
    return [None]
  if kind == "finetune":
    return [l for l in LAYOUTS if not is_tpu_layout(l)]
  return list(LAYOUTS)


def combinations():
  return [(m, r, l) for m in MODELS for r in RECIPES for l in recipe_layouts(r)]


@dataclasses.dataclass(frozen=True)
class Incompatible:
  """Combinations meant to fail: each must fail with a problem matching `reason`."""
  models: Tuple[str, ...]
  recipes: Tuple[str, ...]
  layouts: Tuple[str, ...]
  reason: str
  why: str
  except_models: Tuple[str, ...] = ()
  stage: str = "check"   # "check": the command's checks; "memory": the per-chip estimate

  def selects(self, model, recipe, layout):
    def any_match(name, patterns):
      return any(fnmatch.fnmatch(name, p) for p in patterns)
    return (any_match(model, self.models) and not any_match(model, self.except_models) and
            any_match(recipe, self.recipes) and any_match(str(layout), self.layouts))


TINY_MINI = ("models/*_tiny*.gin", "models/*_mini*.gin", "models/moe_tiny/*.gin")
MOE_TINY_MINI = ("models/glam*_tiny*.gin", "models/glam*_mini*.gin",
                 "models/brainformer*_tiny*.gin", "models/brainformer*_mini*.gin",
                 "models/moe_tiny/*.gin", "models/*_small.gin")
NON_CAUSAL = ("models/glam_ec_*.gin", "models/brainformer*.gin", "models/moe_tiny/expert_choice.gin",
              "models/moe_tiny/expert_choice_capped.gin")

INCOMPATIBLE = (
    Incompatible(
        ("*",), ("train/cpu*.gin",), ("layouts/tpu_v4_512.gin",),
        r"sequences per batch=16 \(dimension 'batch'\) is split over mesh dimension 'batch' "
        r"of size 64",
        "the CPU recipes train 16 sequences per step; the 512-chip mesh splits the batch 64 ways"),
    Incompatible(
        TINY_MINI + ("models/*_0.1b*.gin", "models/*_100m_*.gin"), ("*",),
        ("layouts/tpu_v4_512.gin",),
        r"(num_heads|h)=(4|12|20) \((attention heads, )?dimension 'heads'\) is split over mesh "
        r"dimension 'model' of size 8",
        "4 (tiny/mini), 12 (0.1B) or 20 (100M) attention heads do not split 8 ways; these models "
        "use 64 chips (docs/scaleout.md)"),
    Incompatible(
        MOE_TINY_MINI, ("*",), ("layouts/tpu_v4_64.gin",),
        r"(num_experts|E)=8 \((number of experts, )?dimension 'experts'\) is split over mesh "
        r"dimension 'batch' of size 16",
        "8 experts cannot be spread over 16 data shards (expert parallelism on the batch axis)"),
    Incompatible(
        ("models/glam_tiny.gin", "models/moe_tiny/*.gin"), ("*",), ("layouts/tpu_v4_512.gin",),
        r"num_experts=8 \(dimension 'experts'\) is split over mesh dimension 'batch' of size 64",
        "as above on 64 data shards (mesh-tf layer lists report every layer; block specs stop "
        "at the first sub-layer, the heads)"),
    Incompatible(
        ("models/*_small.gin",), ("*",), ("layouts/tpu_v4_512.gin",),
        r"E=8 \(number of experts, dimension 'experts'\) is split over mesh dimension 'batch' "
        r"of size 64",
        "the small models (benchmarks only) have 8 experts, which 64 data shards cannot hold; "
        "their 8 heads do split 8 ways, so this is the first problem"),
    Incompatible(
        NON_CAUSAL, ("finetune/*", "eval/*"), ("*",),
        r"routes with non-causal expert choice",
        "non-causal expert choice sees future tokens when scoring and decoding; use the "
        "*_causal_* twin or fine-tune with expert_choice_causal first (docs/finetune_eval.md)",
        except_models=("*causal*",)),
    Incompatible(
        ("models/*_8b_64e.gin",), ("train/glam.gin",), ("layouts/tpu_v4_64.gin",),
        r"GiB per chip at one sequence per data shard does not fit in 32 GiB",
        "8B MoE models need 512 chips: on 64, parameters + gradients alone take 30-40 GiB per chip",
        stage="memory"),
)


def recipe_files(model, recipe, layout):
  """(gin files, gin params, extra flags) as the command that reads `recipe` parses them."""
  kind = recipe.split("/")[0]
  base = ["train/cpu.gin"] if kind in ("finetune", "eval") else []
  params = [f"MIXTURE_NAME = '{FINETUNE_TASK}'"] if kind == "finetune" else []
  extra = ["--tpu=matrix-tpu"] if is_tpu_layout(layout) else []
  return [model] + base + [recipe] + ([layout] if layout else []), params, extra


def check(model, recipe, layout):
  """The problems the command reading `recipe` reports before building a graph ("" = none).

  Leaves the parsed Gin config in place when there is none.
  """
  files, params, extra = recipe_files(model, recipe, layout)
  kind = recipe.split("/")[0]
  if kind == "eval":
    driver.parse_gin(files, params)
    text = ""
  else:
    text = problems(*params, gin_files=files, extra_flags=extra, keep_config=True)
  if not text and kind in ("finetune", "eval"):
    try:
      model_type = "delimited_lm" if kind == "finetune" else "lm"
      driver.check_causal(["decode", "rank"], model_type, 512)  # layers only: any vocab
    except errors.UsageError as e:
      text = str(e)
  return text


def explain(combo, text, stage="check"):
  """[] if `text` (the problems of `combo`, "" = none) is exactly what INCOMPATIBLE expects:
  every row of this stage selecting the combination finds its reason, every problem line is
  one of those reasons; else one message saying what differs."""
  rows = [row for row in INCOMPATIBLE if row.stage == stage and row.selects(*combo)]
  missing = [row.reason for row in rows if not re.search(row.reason, text)]
  unexplained = [l for l in _problem_lines(text) if not any(re.search(r.reason, l) for r in rows)]
  if missing or unexplained:
    return [f"{combo}: expected {missing}, unexplained {unexplained}"]
  return []


def _problem_lines(text):
  if not text:
    return []
  lines = text.splitlines()
  return [l.strip() for l in lines[1:]] if "problem(s) in the Gin config" in lines[0] else lines


def layout_recipe(layout):
  """The recipe a layout is built with in (b): the TPU recipe on TPU layouts, else the CPU one."""
  return "train/glam.gin" if is_tpu_layout(layout) else "train/cpu.gin"


@dataclasses.dataclass
class Parsed:
  """What the builds need from a combination's parsed config."""
  mesh_shape: str
  layout_rules: str
  repeats: int          # %num_layers: how often make_layer_stack stacks the block
  data_shards: int      # the batch's mesh split


def parsed_settings():
  mesh, rules = ginutil.query("utils.run.mesh_shape"), ginutil.query("utils.run.layout_rules")
  shards = mtf.tensor_dim_to_mesh_dim_size(mtf.convert_to_layout_rules(rules),
                                           mtf.convert_to_shape(mesh), mtf.Dimension("batch", 1))
  return Parsed(mesh, rules, ginutil.query("%num_layers"), shards)


def build_one_repeat(settings=None):
  """Builds the parsed model, one block repeat at full widths, on one device or on the mesh of
  `settings`; returns its counts."""
  gin.parse_config("num_layers = 1")
  if settings is None:
    return accounting.count_current_config()
  return accounting.count_current_config(mesh_shape=settings.mesh_shape,
                                         layout_rules=settings.layout_rules)


@pytest.fixture(scope="module")
def matrix():
  """Every combination checked in one pass over Gin (parse, check, build, clear).

  Returns (results, builds, settings): {(model, recipe, layout): problems text ("" = none)},
  {(model, recipe, layout): counts} of the builds of the module doc, (a) on one device and
  (b) on CPU/GPU meshes (layouts with the same mesh and rules are built once), and
  {combination: Parsed} of the TPU combinations of (b) for the memory estimate.
  """
  results, builds, settings, meshes = {}, {}, {}, {}
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)   # gin logs each search-path miss as an ERROR
  try:
    for combo in combinations():
      model, recipe, layout = combo
      try:
        results[combo] = check(*combo)
        if results[combo]:
          continue
        if layout is None:
          builds[combo] = build_one_repeat()
        elif recipe == layout_recipe(layout):
          parsed = parsed_settings()
          if is_tpu_layout(layout):
            settings[combo] = parsed
            continue
          key = (model, recipe, parsed.mesh_shape, parsed.layout_rules)
          if key not in meshes:
            meshes[key] = build_one_repeat(parsed)
          builds[combo] = meshes[key]
      finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
  finally:
    root.setLevel(level)
  return results, builds, settings


@pytest.mark.slow
def test_matrix_is_the_whole_product(matrix):
  results, _, _ = matrix
  assert len(MODELS) >= 30 and "models/moe_tiny/top_2.gin" in MODELS
  assert {"train/cpu.gin", "train/glam.gin", "search/cpu_proxy.gin", "finetune/default.gin",
          "eval/default.gin"} <= set(RECIPES)
  assert len(LAYOUTS) >= 7 and {l for l in LAYOUTS if is_tpu_layout(l)} == {
      "layouts/tpu_v4_64.gin", "layouts/tpu_v4_512.gin"}
  assert len(results) == len(combinations())


@pytest.mark.slow
def test_every_combination_validates_or_fails_for_its_listed_reason(matrix):
  results, _, _ = matrix
  unexpected = [m for combo, text in results.items() for m in explain(combo, text)]
  assert not unexpected, "\n".join(unexpected[:20])


@pytest.mark.slow
def test_every_incompatibility_row_selects_some_combination(matrix):
  """No stale row: each selects a combination its stage examines."""
  results, _, settings = matrix
  for row in INCOMPATIBLE:
    assert any(row.selects(*combo) for combo in (results if row.stage == "check" else settings)
               ), row


@pytest.mark.slow
def test_every_model_builds_with_every_recipe_and_on_every_cpu_gpu_layout(matrix):
  results, builds, _ = matrix
  expected = {(m, r, l) for (m, r, l), text in results.items()
              if not text and (l is None or (r == layout_recipe(l) and not is_tpu_layout(l)))}
  assert set(builds) == expected
  assert {l for _, _, l in builds} == {l for l in LAYOUTS if not is_tpu_layout(l)}
  for combo, counts in builds.items():
    assert 0 < counts.activated_params <= counts.total_params, combo
    assert counts.flops_per_token > 0, combo


def full_depth_estimate(model, recipe, layout, parsed, sequences_per_batch=None):
  """Per-chip bytes {kind: bytes} at the model's full depth (`brainformer params --mesh`), from
  builds of one and two block repeats: each repeat adds the same variables and activations, so
  bytes are linear in the repeats (test_full_depth_estimate_is_linear_in_the_repeats)."""
  one, two = (memory.estimate([model, recipe], [f"num_layers = {n}"], layout,
                              sequences_per_batch=sequences_per_batch) for n in (1, 2))
  return {k: one.bytes[k] + (parsed.repeats - 1) * (two.bytes[k] - one.bytes[k])
          for k in one.bytes}


def fit_problem(model, recipe, layout, parsed):
  """"" if the model fits a TPU chip with some number of microbatches, else why not.

  Microbatching (utils.serialize_num_microbatches) can at best run one sequence per data shard
  at a time: the estimate at a batch of one sequence per shard is the smallest footprint.
  """
  total = sum(full_depth_estimate(model, recipe, layout, parsed, parsed.data_shards).values())
  if total <= TPU_CHIP_GIB * memory.GIB:
    return ""
  return (f"{total / memory.GIB:.1f} GiB per chip at one sequence per data shard does not fit "
          f"in {TPU_CHIP_GIB:g} GiB")


def test_full_depth_estimate_is_linear_in_the_repeats():
  model, recipe, layout = "models/glam_1.7b_64e.gin", "train/glam.gin", "layouts/tpu_v4_64.gin"
  full = memory.estimate([model, recipe], [], layout).bytes
  parsed = Parsed("", "", 12, 16)   # glam_1.7b_64e: 24 layers = 12 repeats of (a f)(a g)
  assert full == pytest.approx(full_depth_estimate(model, recipe, layout, parsed), rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [l for l in LAYOUTS if is_tpu_layout(l)])
def test_every_model_builds_and_fits_on_every_tpu_layout(matrix, layout):
  """(b) on TPU layouts: every model that passes the checks builds on the mesh (memory.py
  splits every tensor by the layout) and fits a chip with some number of microbatches, or is
  listed (stage "memory")."""
  results, _, settings = matrix
  combos = [c for c in settings if c[2] == layout]
  assert len(combos) == sum(1 for (m, r, l), text in results.items()
                            if l == layout and r == layout_recipe(l) and not text) > 0
  unexpected = [m for combo in combos
                for m in explain(combo, fit_problem(*combo, settings[combo]), stage="memory")]
  assert not unexpected, "\n".join(unexpected)


def test_tpu_runs_ignore_a_cpu_device_list():
  """A device list of one CPU (layouts/cpu_1.gin's, e.g. left in the operative config of a
  checkpoint trained with it); on a TPU the mesh is placed by the TPU system, so only a run
  without --tpu (PlacementMeshImpl, one slice per listed device) reports the mismatch."""
  files = ["models/dense_0.1b.gin", "train/cpu.gin", "layouts/tpu_v4_64.gin"]
  devices = "utils.run.mesh_devices = ['cpu:0']"
  without = problems(devices, gin_files=files)
  assert ("utils.run.mesh_devices lists 1 devices but utils.run.mesh_shape = 'batch:16,model:4' "
          "has 64") in without
  assert problems(devices, gin_files=files, extra_flags=["--tpu=my-tpu"]) == ""


def test_validate_reports_an_unknown_flag_in_one_line_with_exit_2(capsys):
  with pytest.raises(SystemExit) as exit_:
    validate._parse_flags(["validate", "--gin_fle=models/glam_tiny.gin"])  # pylint: disable=protected-access
  flags.FLAGS.unparse_flags()
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("brainformer validate: error: Unknown command line flag 'gin_fle'")
  assert "gin_file" in err and err.count("\n") == 1   # absl's suggestion, on the same line
