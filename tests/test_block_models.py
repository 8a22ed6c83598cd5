"""Whole decoder-only models from the gin/models block files.

The block machinery against plain mesh-tf layer lists (same variables, same outputs given the
same values), every block model file builds, and Brainformer-1 tiny trains on CPU.
"""

import dataclasses
from typing import Dict, List, Sequence

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import mesh_tensorflow.transformer.utils  # pylint: disable=unused-import  (registers utils.run)
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.config import paths

VOCAB = 64


@dataclasses.dataclass
class LmRun:
  losses: List[float]          # loss before each training step (one entry when steps=0)
  logits: np.ndarray           # [batch, length, vocab] of the last evaluation
  variables: Dict[str, np.ndarray]
  layers: list                 # the layer objects of the stack


def run_lm(gin_files: Sequence[str], tokens: np.ndarray, params: Sequence[str] = (),
           variables: Dict[str, np.ndarray] = None, train_steps: int = 0,
           mode=tf.estimator.ModeKeys.EVAL) -> LmRun:
  """Builds the gin-configured Unitransformer on tokens [batch, length] and evaluates it.

  variables: values to assign by full name first. train_steps: Adafactor steps on the same
  batch (mode TRAIN), recording the loss before each step.
  """
  gin.clear_config()
  gin.add_config_file_search_path(paths.gin_dir())
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(params))
    batch, length = tokens.shape
    with harness.mesh_graph() as g:
      stack = transformer.make_layer_stack()
      model = transformer.Unitransformer(
          layer_stack=stack, input_vocab_size=VOCAB, output_vocab_size=VOCAB,
          autoregressive=True, max_length=length, layout=g.layout_rules,
          mesh_shape=g.mesh_shape)
      shape = mtf.Shape([mtf.Dimension("batch", batch), mtf.Dimension("length", length)])
      targets = mtf.import_tf_tensor(g.mesh, tf.constant(tokens, tf.int32), shape)
      sequence_id = mtf.ones(g.mesh, shape, tf.int32)
      logits, loss = model.call_simple(
          transformer.autoregressive_inputs(targets, sequence_id=sequence_id), targets,
          compute_loss=True, mode=mode, sequence_id=sequence_id)
      mtf_vars = g.graph.trainable_variables
      updates = []
      if train_steps:
        grads = mtf.gradients([loss], [v.outputs[0] for v in mtf_vars])
        updates = mtf.optimize.AdafactorOptimizer(learning_rate=0.01).apply_grads(
            grads, mtf_vars)
      with g.session(variables) as s:
        step = None
        if updates:
          step = tf.group(s.export(updates) + [s.lowering.copy_slices_to_masters()])
        loss_tf, losses = s.export(loss), []
        for _ in range(train_steps):
          losses.append(float(s.session.run(loss_tf)))
          s.session.run(step)
        loss_np, logits_np = s.run([loss, logits])
        values = s.run({v.name: v.outputs[0] for v in mtf_vars})
    return LmRun(losses + [float(loss_np)], logits_np[..., :VOCAB], values, stack.layers)
  finally:
    gin.clear_config()


def _tokens(batch=2, length=32, seed=0):
  return np.random.RandomState(seed).randint(1, VOCAB, size=(batch, length)).astype(np.int32)


def _randomized(run, seed=1):
  """Random values for every variable, so norm scales and biases are not at their init."""
  rng = np.random.RandomState(seed)
  return {k: (rng.randn(*v.shape) * max(float(np.std(v)), 0.3)).astype(np.float32)
          for k, v in run.variables.items()}


def _assert_equivalent(block_files, block_params, list_files, list_params, rename):
  """Same variable names (after `rename` of the block model's names) and shapes, and the
  same loss and logits when the list model's random values are loaded into the block model."""
  tokens = _tokens()
  reference = run_lm(list_files, tokens, list_params)
  values = _randomized(reference)
  reference = run_lm(list_files, tokens, list_params, variables=values)
  block = run_lm(block_files, tokens, block_params)
  names = {rename(name): name for name in block.variables}
  assert sorted(names) == sorted(reference.variables)
  for name, block_name in names.items():
    assert block.variables[block_name].shape == reference.variables[name].shape, name
  block = run_lm(block_files, tokens, block_params,
                 variables={names[k]: v for k, v in values.items()})
  np.testing.assert_allclose(block.logits, reference.logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(block.losses, reference.losses, rtol=1e-5)


def _dense_ffn_as_dense_relu_dense(name):
  return name.replace("/DenseFFN/", "/DenseReluDense/")


@pytest.mark.slow   # the fast tier keeps the GLaM block's equivalence below
def test_vanilla_block_equals_mesh_tf_layer_list():
  """dense_tiny.gin's (a f) x 4 == lm_base with [SelfAttention, DenseReluDense] x 4."""
  list_params = ["d_model = 64", "d_ff = 256", "num_heads = 4", "d_kv = 16", "num_layers = 4",
                 "transformer.make_layer_stack.layers = [@transformer_layers.SelfAttention, "
                 "@transformer_layers.DenseReluDense]",
                 "DenseReluDense.activation = ['relu']"]
  _assert_equivalent(["models/dense_tiny.gin"], [], ["models/includes/lm_base.gin"],
                     list_params, _dense_ffn_as_dense_relu_dense)


def test_glam_block_equals_glam_layer_list():
  """glam_block_tiny.gin's (a f)(a g) == glam_tiny.gin's [SA, DenseReluDense, SA, MoE] list."""
  _assert_equivalent(["models/glam_block_tiny.gin"], [], ["models/glam_tiny.gin"], [],
                     _dense_ffn_as_dense_relu_dense)


MODEL_FILES = [  # (gin file, sub-layer letters, layer classes)
    ("dense_tiny.gin", "af" * 4, {"SelfAttention", "DenseFFN"}),
    ("primer_tiny.gin", "af" * 4, {"MultiDConvHeadAttention", "DenseFFN"}),
    ("glam_block_tiny.gin", "afag" * 2, {"SelfAttention", "DenseFFN", "MoE"}),
    ("brainformer1_tiny.gin", "agfagfgf" * 2, {"SelfAttention", "DenseFFN", "MoE"}),
    ("brainformer2_tiny.gin", "agfagggg" * 2, {"SelfAttention", "DenseFFN", "MoE"}),
]
KINDS = {"SelfAttention": "a", "MultiDConvHeadAttention": "a", "DenseFFN": "f", "MoE": "g"}
FAST_RUNS = ("glam_block_tiny.gin", "brainformer1_tiny.gin")   # the other files' runs: slow


@pytest.mark.parametrize("gin_file,letters,classes", MODEL_FILES)
def test_block_model_files_stack_their_letters(gin_file, letters, classes):
  """Every block file's layer stack, without a graph (the runs below build and run it)."""
  layers = _stack_layers(gin_file)
  assert "".join(KINDS[type(l).__name__] for l in layers) == letters
  assert {type(l).__name__ for l in layers} == classes


@pytest.mark.parametrize("gin_file,letters,classes", [
    case if case[0] in FAST_RUNS else pytest.param(*case, marks=pytest.mark.slow)
    for case in MODEL_FILES])
def test_block_model_files_build(gin_file, letters, classes):
  run = run_lm([f"models/{gin_file}"], _tokens(batch=2, length=16))
  assert "".join(KINDS[type(l).__name__] for l in run.layers) == letters
  assert {type(l).__name__ for l in run.layers} == classes
  assert np.isfinite(run.losses[0]) and 3.0 < run.losses[0] < 6.0  # about ln(vocab) at init


def _stack_layers(gin_file):
  gin.clear_config()
  gin.add_config_file_search_path(paths.gin_dir())
  try:
    gin.parse_config_files_and_bindings([f"models/{gin_file}"], [])
    return transformer.make_layer_stack().layers
  finally:
    gin.clear_config()


def test_brainformer2_turns_block1s_last_two_ffns_into_ec_c2_moe_layers():
  """Block 2 (docs/zoo.md): a g f a g g g g, expert choice c = 2, Block 1's widths."""
  one, two = _stack_layers("brainformer1_tiny.gin"), _stack_layers("brainformer2_tiny.gin")
  kinds = {"SelfAttention": "a", "DenseFFN": "f", "MoE": "g"}
  assert "".join(kinds[type(l).__name__] for l in two) == "agfagggg" * 2
  moes = [l for l in two if type(l).__name__ == "MoE"]
  assert len(moes) == 10
  assert {(l.gating, l.capacity_factor, l.hidden_size, l.num_experts, l.activation)
          for l in moes} == {("expert_choice", 2.0, 128, 8, "gated_gelu")}
  block1_moe = next(l for l in one if type(l).__name__ == "MoE")
  assert (block1_moe.hidden_size, block1_moe.num_experts) == (128, 8)
  assert {(l.hidden_size, l.activation) for l in one + two if type(l).__name__ == "DenseFFN"
          } == {(128, "gated_gelu")}


@pytest.mark.slow   # multi-step training (the fast tier trains a mini in test_zoo.py)
def test_brainformer1_tiny_trains_and_loss_falls():
  """a g f a g f g f stacked twice: 6 Adafactor steps on a repetitive batch."""
  tokens = np.tile(np.arange(1, 9, dtype=np.int32), (4, 4))   # [4, 32], period 8
  run = run_lm(["models/brainformer1_tiny.gin"], tokens, train_steps=6,
               mode=tf.estimator.ModeKeys.TRAIN)
  print("Brainformer-1 tiny losses:", [round(l, 3) for l in run.losses])
  assert all(np.isfinite(run.losses))
  assert run.losses[-1] < 0.6 * run.losses[0]
