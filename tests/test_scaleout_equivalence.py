"""One training step of GLaM-tiny and Brainformer-1-tiny on 4- and 8-device CPU meshes equals the
1-device step: same loss and same gradient of every variable, from the same initial values.

Meshes run on real TF logical CPU devices (`/cpu:0..n-1`, from the session's
ConfigProto.device_count), so every cross-slice sum is a real inter-device transfer. Routing
groups: MoE.group_size = sequence length, so each group is one sequence on every layout (the
group count, a multiple of the batch's mesh split, is the batch size everywhere).
"""

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import utils
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf.analysis import symbolic

BATCH, LENGTH, VOCAB = 8, 16, 64
MODEL_PARALLEL = "heads:model,d_ff:model,expert_hidden:model,vocab:model"
LAYOUTS = {  # name -> (mesh_shape, layout_rules)
    "data": ("batch:4", "batch:batch"),
    "data_x_model": ("batch:2,model:2", "batch:batch," + MODEL_PARALLEL),
    "data_x_experts": ("batch:4", "batch:batch,experts:batch"),
    "data_x_experts_x_model_8": ("batch:4,model:2", "batch:batch,experts:batch," + MODEL_PARALLEL),
}
# The fast tier keeps GLaM-tiny with its experts split over the batch axis (4 devices); the
# other layouts and Brainformer-1 tiny (up to 8 devices, about a minute each) are `slow`.
CASES = [pytest.param("glam_tiny", "data", marks=pytest.mark.slow),
         pytest.param("glam_tiny", "data_x_model", marks=pytest.mark.slow),
         ("glam_tiny", "data_x_experts"),
         pytest.param("brainformer1_tiny", "data", marks=pytest.mark.slow),
         pytest.param("brainformer1_tiny", "data_x_model", marks=pytest.mark.slow),
         pytest.param("brainformer1_tiny", "data_x_experts_x_model_8", marks=pytest.mark.slow)]
RTOL = 1e-5


def train_step(model, mesh_shape="", layout="", values=None, group_size=LENGTH):
  """Loss, {variable: gradient} and {variable: initial value} of one step on the mesh."""
  symbolic.load_gin([f"models/{model}.gin"], [
      f"utils.run.mesh_shape = '{mesh_shape}'", f"utils.run.layout_rules = '{layout}'",
      f"brainformer_tf.layers.moe.MoE.group_size = {group_size}", "num_layers = 1"])
  with harness.mesh_graph(mesh_shape, layout, cpu_devices=True) as g:
    lm = utils.build_model(model_type="lm", input_vocab_size=VOCAB, output_vocab_size=VOCAB,
                           layout_rules=g.layout_rules, mesh_shape=g.mesh_shape)
    dims = mtf.Shape([mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)])
    data = np.random.RandomState(0).randint(1, VOCAB, (BATCH, LENGTH)).astype(np.int32)
    targets = mtf.import_tf_tensor(g.mesh, tf.constant(data), dims)
    _, loss = lm.call_simple(inputs=transformer.autoregressive_inputs(targets), targets=targets,
                             compute_loss=True, mode=tf.estimator.ModeKeys.TRAIN,
                             sequence_id=mtf.ones(g.mesh, dims, tf.int32))
    variables = g.graph.trainable_variables
    grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
    with g.session(values) as s:
      cpus = [d for d in s.session.list_devices() if d.device_type == "CPU"]
      assert len(cpus) >= g.num_devices
      initial = s.masters(variables)
      out = s.run([loss] + grads)
  return float(out[0]), dict(zip([v.name for v in variables], out[1:])), initial


_REFERENCE = {}


def reference(model):
  """The 1-device step (cached per model)."""
  if model not in _REFERENCE:
    _REFERENCE[model] = train_step(model)
  return _REFERENCE[model]


def differences(one, many):
  """Max |loss diff| and, over all gradients, max |diff| / max |gradient of that variable|."""
  (loss1, grads1, _), (loss2, grads2, _) = one, many
  rel = {k: float(np.max(np.abs(grads2[k] - g)) / max(np.max(np.abs(g)), 1e-30))
         for k, g in grads1.items()}
  return abs(loss2 - loss1), rel


@pytest.mark.parametrize("model,layout", CASES)
def test_training_step_matches_one_device(model, layout):
  one = reference(model)
  mesh_shape, rules = LAYOUTS[layout]
  many = train_step(model, mesh_shape, rules, values=one[2])
  assert set(many[1]) == set(one[1])
  for name, value in one[2].items():   # the same initial values really were used
    np.testing.assert_array_equal(many[2][name], value)
  loss_diff, rel = differences(one, many)
  worst = max(rel, key=rel.get)
  print(f"{model} {layout}: |dloss| {loss_diff:.2e} (loss {one[0]:.6f}), max grad diff / "
        f"max |grad| {rel[worst]:.2e} at {worst}")
  assert loss_diff <= RTOL * abs(one[0])
  assert rel[worst] <= RTOL, worst
  if "experts" in rules:  # expert weights really are split (not silently replicated)
    assert any("MoE" in name for name in one[1])


@pytest.mark.slow
def test_routing_groups_that_depend_on_the_batch_split_change_the_result():
  """Where the layout legitimately differs: with one 128-token group on 1 device but 4 groups
  on batch:4, expert capacity is shared differently and the step is not the same."""
  one = train_step("glam_tiny", group_size=BATCH * LENGTH)
  many = train_step("glam_tiny", *LAYOUTS["data_x_experts"], values=one[2],
                    group_size=BATCH * LENGTH)
  loss_diff, rel = differences(one, many)
  assert loss_diff > 1e-4 or max(rel.values()) > 1e-3
