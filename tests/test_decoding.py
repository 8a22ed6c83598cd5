"""One token at a time equals the whole sequence: for every zoo family whose routing is causal,
the log-probabilities of mesh-tf's incremental decoding (a "first_part" pass over a prompt,
then one "incremental" step per token, the loop of Unitransformer.sample_autoregressive with
the true next token fed instead of a sampled one) equal those of one eval-mode pass over the
whole sequence (the reference), at batch 1 and batch > 1.

GLaM's top-2 decodes without capacity (each step routes one token per sequence); the whole
sequence pass has capacity, so the two agree when no token overflows: the test gives GLaM a
capacity factor at which none can (experts x capacity >= 2 x tokens)."""

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import utils
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.analysis import symbolic

VOCAB, LENGTH, PROMPT = 64, 8, 3
F32 = mtf.VariableDType(tf.float32, tf.float32, tf.float32)
MODELS = {
    "dense_tiny": [],
    "glam_tiny": ["MoE.capacity_factor = 8.0"],       # no top-2 overflow in the whole pass
    "glam_ec_causal_tiny": [],
    "brainformer1_causal_tiny": [],
    "primer_tiny": [],
}


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _context(model, mesh, batch_dim, length_dim, mode, **kwargs):
  length_range = mtf.range(mesh, length_dim, tf.int32)
  return transformer.Context(
      model=model, mesh=mesh, batch_dims=[batch_dim], length_dim=length_dim,
      variable_dtype=F32, mode=mode, sequence_id=None, encoder_output=None,
      encoder_sequence_id=None, shared_params=None, encoder_layer_outputs=None,
      write_priority=length_range, encoder_inputs=None, **kwargs)


def decode_and_score(model_name, tokens):
  """(incremental log p [B, LENGTH - PROMPT, V], whole-sequence log p, same positions)."""
  symbolic.load_gin([f"models/{model_name}.gin"], MODELS[model_name])
  batch = tokens.shape[0]
  with harness.mesh_graph(seed=1) as g:
    model = utils.build_model(model_type="lm", input_vocab_size=VOCAB, output_vocab_size=VOCAB,
                              layout_rules=g.layout_rules, mesh_shape=g.mesh_shape)
    batch_dim, length_dim = mtf.Dimension("batch", batch), mtf.Dimension("length", LENGTH)
    shape = mtf.Shape([batch_dim, length_dim])
    targets = mtf.import_tf_tensor(g.mesh, tf.constant(tokens), shape)
    whole, _ = model.call_simple(inputs=transformer.autoregressive_inputs(targets),
                                 targets=targets, compute_loss=False,
                                 mode=tf.estimator.ModeKeys.EVAL, variable_dtype=F32)
    prompt = tokens * (np.arange(LENGTH) < PROMPT)
    prompt_mtf = mtf.import_tf_tensor(g.mesh, tf.constant(prompt), shape)
    length_range = mtf.range(g.mesh, length_dim, tf.int32)
    first = _context(model, g.mesh, batch_dim, length_dim, "first_part", position=length_range,
                     position_is_default=True, new_states=[],
                     initial_position=mtf.constant(g.mesh, PROMPT, [batch_dim], tf.int32),
                     constant_states=[], read_priority=length_range, inputs=prompt_mtf)
    with tf.variable_scope(model.name, reuse=True):
      model._call_internal(first, transformer.autoregressive_inputs(prompt_mtf))  # pylint: disable=protected-access
    states, steps = first.new_states, []
    for position in range(PROMPT, LENGTH):
      here = mtf.constant(g.mesh, position, [batch_dim], tf.int32)
      previous = mtf.import_tf_tensor(g.mesh, tf.constant(tokens[:, position - 1]), [batch_dim])
      step = _context(model, g.mesh, batch_dim, length_dim, "incremental", position=here,
                      states=states, new_states=[], constant_states=first.constant_states,
                      read_priority=here, inputs=previous)
      with tf.variable_scope(model.name, reuse=True):
        steps.append(model._call_internal(step, previous))  # pylint: disable=protected-access
      states = step.new_states
    with g.session() as s:
      whole_np, steps_np = s.run([whole, steps])
  incremental = np.stack(steps_np, axis=1)
  return _log_softmax(incremental), _log_softmax(whole_np[:, PROMPT:])


# ~15 s each: the fast tier keeps Primer at batch 3 (its dconv state is this project's code)
CASES = [pytest.param(m, b, marks=() if (m, b) == ("primer_tiny", 3) else pytest.mark.slow)
         for m in sorted(MODELS) for b in (1, 3)]


@pytest.mark.parametrize("model_name,batch", CASES)
def test_one_token_at_a_time_equals_the_whole_sequence(model_name, batch):
  tokens = np.random.default_rng(batch).integers(2, VOCAB, size=(batch, LENGTH)).astype(np.int32)
  incremental, whole = decode_and_score(model_name, tokens)
  # the vocabulary dim is padded (mesh-tf's vocab_divisor); padded ids get ~0 probability
  assert incremental.shape == whole.shape and whole.shape[:2] == (batch, LENGTH - PROMPT)
  assert np.abs(whole).max() > 1.0   # real log-probabilities, not a constant
  np.testing.assert_allclose(incremental, whole, atol=2e-5, rtol=0)
