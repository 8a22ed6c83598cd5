"""The compat shims make mesh_tensorflow and t5.models importable on TF 2.15 without torch."""

import functools
import os
import subprocess
import sys

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import learning_rate_schedules
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import transformer_layers
from mesh_tensorflow.transformer import utils
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness
from brainformer_tf import compat


def _python(code, hook=True, off=""):
  env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
  if not hook:
    env["BRAINFORMER_COMPAT_HOOK"] = "0"
  if off:
    env["BRAINFORMER_COMPAT_OFF"] = off
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, env=env)


def _printed_words(code):
  """The words `code` prints in a fresh venv Python, which must exit 0."""
  result = _python(code)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.split()


@pytest.mark.slow   # subprocess
def test_mesh_tensorflow_needs_the_shim_on_this_tensorflow():
  result = _python("import mesh_tensorflow", hook=False)
  assert result.returncode != 0
  assert "register_tensor_conversion_function" in result.stderr


@pytest.mark.slow   # subprocess
def test_venv_import_hook_applies_every_shim_around_the_first_imports():
  """scripts/setup_env.sh's zz_brainformer_tf_compat.pth: a plain `import mesh_tensorflow` works
  (shims 1-2 ran first) and mesh-tf's utils module gets shims 3-4 once it has loaded."""
  assert _printed_words(
      "import sys\n"
      "assert 'tensorflow' not in sys.modules  # the hook itself imports nothing\n"
      "import mesh_tensorflow as mtf, t5.models\n"
      "from mesh_tensorflow.transformer import utils\n"
      "print(type(utils.tf).__name__, mtf.EinsumOperation.gradient._brainformer_ordered)"
  ) == ["_MeshTfUtilsTf", "True"]


@pytest.mark.slow   # subprocess
def test_importing_the_package_installs_the_shims_once():
  """Without the venv hook, `import brainformer_tf` alone makes mesh-tf importable (shims 1-4)."""
  result = _python(
      "import sys, brainformer_tf\n"
      "assert 'tensorflow' not in sys.modules\n"
      "import mesh_tensorflow as mtf\n"
      "from mesh_tensorflow.transformer import utils\n"
      "print(type(utils.tf).__name__, mtf.EinsumOperation.gradient._brainformer_ordered)",
      hook=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["_MeshTfUtilsTf", "True"]


@pytest.mark.slow   # subprocesses
def test_numerics_patches_switch_off_and_are_listed():
  """BRAINFORMER_COMPAT_OFF leaves mesh-tf's own einsum gradient and step grouping in place;
  `brainformer --version` and compat.status() say so; an unknown name is a one-line exit 2."""
  result = _python(
      "import brainformer_tf, mesh_tensorflow as mtf\n"
      "from mesh_tensorflow.transformer import utils\n"
      "from brainformer_tf import compat\n"
      "print(hasattr(mtf.EinsumOperation.gradient, '_brainformer_ordered'), "
      "utils.tf.order_step, compat.status()['global_step_after_updates'])",
      off="einsum_gradient_operand_order,global_step_after_updates")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["False", "False", "False"]
  version = subprocess.run(
      [sys.executable, "-m", "brainformer_tf.cli.main", "--version"], capture_output=True,
      text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                   "BRAINFORMER_COMPAT_OFF": "einsum_gradient_operand_order"})
  lines = {l.split()[0]: l.split()[1] for l in version.stdout.splitlines()[2:]}
  assert lines == {"tensor_conversion_registry": "on", "hf_model_stub": "on",
                   "einsum_gradient_operand_order": "OFF", "global_step_after_updates": "on",
                   "updates_after_all_gradients": "on", "cpu_bfc_allocator": "on",
                   "assign_sub_in_place": "on"}
  bad = subprocess.run([sys.executable, "-m", "brainformer_tf.cli.main", "--version"],
                       capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "BRAINFORMER_COMPAT_OFF": "bogus"})
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
  assert "bogus" in bad.stderr


@pytest.mark.slow   # subprocesses
def test_importing_brainformer_tf_makes_tf_pool_cpu_memory():
  """Item 6: TF's pooling (BFC) allocator counts the bytes it hands out; importing
  brainformer_tf turns it on, BRAINFORMER_COMPAT_OFF=cpu_bfc_allocator leaves TF's default.
  That default depends on the CPU: malloc, which keeps no statistics, on the AVX2-only machine
  here; a pooling allocator that counts too on the AVX-512 one with AMX (oneDNN's, it seems),
  where on and off print the same."""
  code = ("import tensorflow as tf\n"
          "x = tf.ones([256, 256])\n"
          "try:\n"
          "  print(tf.config.experimental.get_memory_info('CPU:0')['peak'] >= 256 * 256 * 4)\n"
          "except ValueError:\n"
          "  print('malloc')")
  plain = _python(code, hook=False)
  assert plain.returncode == 0, plain.stderr[-2000:]
  assert plain.stdout.split() in (["malloc"], ["True"])
  assert _printed_words("import brainformer_tf\n" + code) == ["True"]
  result = _python("import brainformer_tf\n" + code, off="cpu_bfc_allocator")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == plain.stdout.split()


def test_bfc_setting_follows_the_patch_switch_and_leaves_a_users_value(monkeypatch):
  """A child started with the patch off drops the variable its brainformer_tf parent set; a
  value the user set stays either way."""
  for name in (compat.BFC_VARIABLE, compat.BFC_SET_BY, "BRAINFORMER_COMPAT_OFF"):
    monkeypatch.delenv(name, raising=False)
  compat._pool_cpu_allocator()  # pylint: disable=protected-access
  assert os.environ[compat.BFC_VARIABLE] == "true"
  monkeypatch.setenv("BRAINFORMER_COMPAT_OFF", "cpu_bfc_allocator")
  compat._pool_cpu_allocator()  # pylint: disable=protected-access  (as in the child)
  assert compat.BFC_VARIABLE not in os.environ and compat.BFC_SET_BY not in os.environ
  monkeypatch.setenv(compat.BFC_VARIABLE, "false")  # the user's
  for off in ("cpu_bfc_allocator", ""):
    monkeypatch.setenv("BRAINFORMER_COMPAT_OFF", off)
    compat._pool_cpu_allocator()  # pylint: disable=protected-access
    assert os.environ[compat.BFC_VARIABLE] == "false"


@pytest.mark.slow
def test_shim_makes_mesh_tensorflow_and_t5_models_importable():
  assert _printed_words(
      "from brainformer_tf import compat; compat.apply(); compat.apply()\n"
      "import mesh_tensorflow as mtf, t5.models, seqio\n"
      "from t5.models import mesh_transformer_main\n"
      "print(mtf.Dimension('d', 3).size, t5.models.MtfModel.__name__)") == ["3", "MtfModel"]


@pytest.mark.slow
def test_hf_model_is_a_clear_import_error_without_torch():
  result = _python(
      "import importlib.util, sys\n"
      "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
      "from brainformer_tf import compat; compat.apply()\n"
      "import t5.models\n"
      "try:\n"
      "  t5.models.HfPyTorchModel('t5-small', '/tmp/x', 'cpu')\n"
      "except ImportError as e:\n"
      "  print('ImportError:', e)\n")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "ImportError" in result.stdout and "torch" in result.stdout


def test_einsum_gradient_operands_ordered_and_exact():
  """Weight gradient of an expert einsum: same values as numpy, computed by a TF einsum whose
  first operand holds the output's first free dim (no output transpose; compat item 3)."""
  dims = {n: mtf.Dimension(n, s) for n, s in dict(e=3, g=2, c=4, m=5, h=6).items()}
  shape = lambda names: mtf.Shape([dims[n] for n in names])
  rng = np.random.RandomState(0)
  x_np, w_np, r_np = rng.randn(3, 2, 4, 5), rng.randn(3, 5, 6), rng.randn(3, 2, 4, 6)
  with harness.mesh_graph() as g:
    x = mtf.import_tf_tensor(g.mesh, tf.constant(x_np, tf.float32), shape("egcm"))
    r = mtf.import_tf_tensor(g.mesh, tf.constant(r_np, tf.float32), shape("egch"))
    w = mtf.get_variable(g.mesh, "w", shape("emh"),
                         initializer=tf.constant_initializer(w_np), dtype=tf.float32)
    loss = mtf.reduce_sum(mtf.einsum([x, w], shape("egch")) * r)
    dw = mtf.gradients([loss], [w])[0]
    with g.session() as s:
      got = s.run(dw)
    einsums = [op for op in g.tf_graph.get_operations() if op.type == "Einsum"
               and op.outputs[0].shape.as_list() == [3, 5, 6]]
  np.testing.assert_allclose(got, np.einsum("egcm,egch->emh", x_np, r_np), rtol=1e-5, atol=1e-5)
  assert len(einsums) == 1
  assert einsums[0].inputs[0].shape.as_list() == [3, 2, 4, 5]  # x first, then dy


@pytest.mark.parametrize("mesh_shape,layout", [("", ""), ("m:2", "h:m")])
def test_assign_sub_subtracts_in_place(mesh_shape, layout):
  """Compat item 7: mtf.assign_sub(w, x) leaves w - x, each slice updated by one AssignSub
  (no Sub writing a copy); on one device and with w split over two."""
  rng = np.random.RandomState(0)
  w_np, x_np = rng.randn(2, 2, 6).astype(np.float32)
  dims = [mtf.Dimension("d", 2), mtf.Dimension("h", 6)]
  with harness.mesh_graph(mesh_shape, layout, cpu_devices=bool(mesh_shape)) as g:
    w = mtf.get_variable(g.mesh, "w", dims, initializer=tf.constant_initializer(w_np),
                         dtype=tf.float32)
    x = mtf.import_tf_tensor(g.mesh, tf.constant(x_np), mtf.Shape(dims))
    update = mtf.assign_sub(w.operation, x)
    with g.session() as s:
      s.run(update)
      s.run(s.lowering.copy_slices_to_masters())
      got = s.masters([w.operation])["w"]
    ops = g.tf_graph.get_operations()
    variables = {op for op in ops if op.type == "VariableV2"}
    subtracts_variable = [op for op in ops if op.type == "Sub" and any(
        t.op in variables or t.op.type == "Identity" and t.op.inputs[0].op in variables
        for t in op.inputs)]
  np.testing.assert_array_equal(got, w_np - x_np)
  assert sum(op.type == "AssignSub" for op in ops) == g.num_devices
  assert not subtracts_variable


def test_einsum_operand_order_rule():
  e, s, m, h = (mtf.Dimension(n, 2) for n in "esmh")
  mesh = mtf.Mesh(mtf.Graph(), "m")
  t = lambda *d: mtf.zeros(mesh, mtf.Shape(list(d)))
  dy, x, w = t(e, s, h), t(e, s, m), t(e, m, h)
  assert compat.einsum_operand_order([dy, x], [e, m, h]) == [x, dy]   # dW: x holds m
  assert compat.einsum_operand_order([dy, w], [e, s, m]) == [dy, w]   # dX: dy holds s
  assert compat.einsum_operand_order([dy, x, w], [e]) == [dy, x, w]   # 3 operands: unchanged


def _ancestors(ops):
  seen, stack = set(), list(ops)
  while stack:
    op = stack.pop()
    if op not in seen:
      seen.add(op)
      stack += [t.op for t in op.inputs] + list(op.control_inputs)
  return seen


def _training_graph():
  """mesh-tf's real training graph (model_fn, Adafactor, noam schedule) of a 2-layer model:
  (graph, global step variable, train op)."""
  model = transformer.Unitransformer(
      layer_stack=transformer.LayerStack(
          [transformer_layers.DenseReluDense(hidden_size=8)] * 2, sublayers_initial=[],
          sublayers_per_layer=[transformer.sublayer_call_layer, transformer.sublayer_residual],
          sublayers_final=[]),
      d_model=8, input_vocab_size=16, output_vocab_size=16, autoregressive=True, max_length=4)
  model_fn = utils.tpu_estimator_model_fn(
      "lm", model, vocabulary=None, model_dir="/nonexistent", use_tpu=False, mesh_shape="",
      layout_rules="", batch_size=2, sequence_length={"targets": 4}, autostack=True,
      keep_checkpoint_max=1, save_checkpoints_steps=10,
      learning_rate_schedule=functools.partial(
          learning_rate_schedules.learning_rate_schedule_noam, total_train_steps=100),
      optimizer=mtf.optimize.AdafactorOptimizer, mesh_devices=[""])
  with tf.Graph().as_default() as graph:
    step = tf.train.get_or_create_global_step()
    spec = model_fn({"targets": tf.ones([2, 4], tf.int32)}, None, tf.estimator.ModeKeys.TRAIN)
  return graph, step, spec.train_op


def test_global_step_increment_waits_for_every_update_that_reads_the_step():
  """Every read of the global step that feeds a parameter update happens before the step's
  increment (compat item 4)."""
  graph, step, train_op = _training_graph()
  grouped = _ancestors([train_op])
  increments = [op for op in grouped if op.type in ("AssignAdd", "AssignAddVariableOp")
                and op.inputs[0].op is step.op]
  updates = [op for op in grouped if op.type in ("Assign", "AssignVariableOp")]
  step_reads = {op for op in graph.get_operations()
                if any(t.op is step.op for t in op.inputs) and op not in increments}
  assert len(increments) == 1 and updates
  feeding_updates = step_reads & _ancestors(updates)
  assert feeding_updates  # the schedule and Adafactor's decay rate read the step
  assert feeding_updates <= _ancestors(increments)


def _readers(variable, ops):
  """The ops in `ops` that read `variable`'s buffer: its consumers, and the consumers of its
  Identity ops (which alias the buffer, so an in-place assign changes what they pass on)."""
  aliases, readers, frontier = {variable}, set(), [variable]
  while frontier:
    source = frontier.pop()
    for op in ops:
      if any(t.op is source for t in op.inputs):
        if op.type == "Identity" and op not in aliases:
          aliases.add(op)
          frontier.append(op)
        elif op.type != "Identity":
          readers.add(op)
  return readers


def test_every_read_of_a_weight_in_the_step_precedes_its_update():
  """In the same graph, every op of the training step that reads a trainable variable (forward,
  backward, optimizer) is an ancestor of that variable's assign, so no gradient sees a weight
  already updated in the same step (compat item 5). Stock mesh-tf fails this: the backward
  pass's read of layer 2's weights (dx = dy w2^T) does not feed w2's own update."""
  graph, _, train_op = _training_graph()
  step_ops = _ancestors([train_op])
  assigns = [op for op in step_ops if op.type in ("Assign", "AssignSub")]   # AssignSub: item 7
  weights = {op.inputs[0].op for op in assigns} & {
      v.op for v in graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)}
  assert len(weights) >= 4   # wi and wo (autostack stacks them over layers), embeddings
  late = []
  for weight in weights:
    updates = [op for op in assigns if op.inputs[0].op is weight]
    before = _ancestors(updates)
    readers = _readers(weight, step_ops) - set(updates)
    assert readers
    late += [f"{op.name} reads {weight.name}" for op in readers - before]
  assert not late, late[:5]
