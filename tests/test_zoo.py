"""The model zoo: every gin/models file builds, the TPU layouts fit, the minis train."""

import pathlib

import mesh_tensorflow as mtf
from mesh_tensorflow import optimize
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import utils
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.analysis import accounting
from brainformer_tf.analysis import memory
from brainformer_tf.analysis import symbolic
from brainformer_tf.config import ginutil
from brainformer_tf.config import paths

MODELS_DIR = pathlib.Path(paths.gin_dir()) / "models"
ALL_MODELS = sorted(p.stem for p in MODELS_DIR.glob("*.gin"))
FAMILIES = ("dense", "glam", "glam_ec", "brainformer1", "brainformer2", "primer")
ISSUE_FILES = ("dense_0.1b", "dense_1.7b", "dense_8b", "glam_0.1b_32e", "glam_0.1b_64e",
               "glam_1.7b_64e", "glam_8b_64e", "glam_ec_8b_64e", "brainformer1_100m_32e",
               "brainformer1_1b_64e", "brainformer1_8b_64e", "brainformer2_100m_32e",
               "brainformer2_1b_64e", "brainformer2_8b_64e", "primer_1b")
SCALED_DOWN = ["d_model = 32", "d_ff = 64", "num_heads = 2", "d_kv = 8", "num_layers = 1",
               "num_experts = 4"]


def test_zoo_is_complete():
  expected = set(ISSUE_FILES) | {f"{f}_{v}" for f in FAMILIES for v in ("mini", "tiny")}
  assert expected | {"glam_small", "brainformer1_small"} <= set(ALL_MODELS)


def test_small_models_have_the_benchmark_size():
  """Issue 19's `small`: d_model 512, 8 experts, 20-40M activated, Brainformer-1 about GLaM's."""
  counts = {m: accounting.count([f"models/{m}_small.gin"]) for m in ("glam", "brainformer1")}
  for m, c in counts.items():
    assert 20e6 <= c.activated_params <= 40e6, m
    assert ginutil.query("%d_model") == 512 and ginutil.query("%num_experts") == 8
  ratio = counts["brainformer1"].activated_params / counts["glam"].activated_params
  assert 1.0 <= ratio <= 1.2


def test_every_model_builds_scaled_down():
  """One sweep: each file's mtf graph, with its size macros overridden, builds (shapes only)."""
  for model in ALL_MODELS:
    counts = accounting.count([f"models/{model}.gin"], SCALED_DOWN)
    # 1 repeat of <= 8 sub-layers at d=32: the macros really rescale every file
    assert 0 < counts.activated_params <= counts.total_params < 200_000, model


SLOW = pytest.mark.slow   # every model x layout is also built by test_config_matrix.py (slow)


@pytest.mark.parametrize("model,layout", [
    pytest.param("glam_0.1b_32e", "tpu_v4_64", marks=SLOW), ("brainformer1_100m_32e", "tpu_v4_64"),
    pytest.param("glam_1.7b_64e", "tpu_v4_64", marks=SLOW),
    pytest.param("brainformer2_1b_64e", "tpu_v4_64", marks=SLOW),
    pytest.param("glam_8b_64e", "tpu_v4_512", marks=SLOW), ("brainformer1_8b_64e", "tpu_v4_512"),
])
def test_layouts_split_the_full_models(model, layout):
  """blocks.block_layers checks that heads/d_ff/experts divide their mesh dimension."""
  counts = accounting.count([f"models/{model}.gin", f"layouts/{layout}.gin"])
  assert counts.total_params > 0.9e9


def test_layout_mismatch_is_one_line_error():
  """20 heads on an 8-way model axis: the counts do not depend on the mesh (the block is built
  without it), the per-device estimate names the split that fails."""
  files, params = ["models/glam_8b_64e.gin", "layouts/tpu_v4_512.gin"], ["num_heads = 20"]
  assert accounting.count(files, params).total_params > 100e9
  with pytest.raises(memory.LayoutError, match=r"heads=20 \(dimension 'heads'\) is split over "
                                               r"mesh dimension 'model' of size 8"):
    memory.estimate(files, params)


def _train(model, layout=None, steps=3, batch=4, length=32, vocab=64, params=()):
  """Losses of `steps` Adafactor steps on one repeated random batch, lowered on `layout`."""
  files = [f"models/{model}.gin", "train/cpu_mini.gin"] + ([f"layouts/{layout}.gin"] if layout
                                                           else [])
  symbolic.load_gin(files, params)
  ginutil.resolve_default_mesh()   # no layout file: one device, as `brainformer train` does
  mesh_shape = ginutil.query("utils.run.mesh_shape")
  layout_rules = ginutil.query("utils.run.layout_rules")
  with harness.mesh_graph(mesh_shape, layout_rules) as g:
    global_step = tf.train.get_or_create_global_step()
    model_ = utils.build_model(model_type="lm", input_vocab_size=vocab,
                               output_vocab_size=vocab, layout_rules=g.layout_rules,
                               mesh_shape=g.mesh_shape)
    shape = mtf.Shape([mtf.Dimension("batch", batch), mtf.Dimension("length", length)])
    data = np.random.RandomState(0).randint(1, vocab, (batch, length)).astype(np.int32)
    targets = mtf.import_tf_tensor(g.mesh, tf.constant(data), shape)
    _, loss = model_.call_simple(
        inputs=transformer.autoregressive_inputs(targets), targets=targets, compute_loss=True,
        mode=tf.estimator.ModeKeys.TRAIN, sequence_id=mtf.ones(g.mesh, shape, tf.int32))
    variables = g.graph.trainable_variables
    grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
    updates = optimize.AdafactorOptimizer().apply_grads(grads, variables)
    with g.session() as s:
      step = s.export([loss, updates, tf.assign_add(global_step, 1)])
      return [s.session.run(step)[0] for _ in range(steps)]


FAST_MINI = "glam_ec"   # the fast tier trains one family's mini; the others are `slow`


@pytest.mark.parametrize("family", [
    f if f == FAST_MINI else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_mini_trains_a_few_steps(family):
  """The mini's widths and block with one block repeat (graph building dominates CPU time)."""
  losses = _train(f"{family}_mini", params=["num_layers = 1"])
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0]   # fits the repeated batch


@pytest.mark.slow   # multi-step training on 4 slices (scale-out: test_scaleout_equivalence.py)
def test_tiny_moe_trains_on_multi_device_cpu_mesh():
  """layouts/cpu_2x2.gin: experts split over batch, hidden/heads over model (4 CPU slices)."""
  losses = _train("glam_ec_tiny", layout="cpu_2x2", steps=2, params=["num_layers = 1"])
  assert np.all(np.isfinite(losses))
