"""Compatibility shims for running mesh-tensorflow 0.1.21 and t5 0.9.4 on TensorFlow 2.15.

Installed once, when `brainformer_tf` is imported: `install_import_hook()` puts a finder first on
sys.meta_path that applies 1-2 just before mesh_tensorflow / t5.models first load and 3-5 right
after mesh_tensorflow.transformer.utils loads, so every module imports mesh-tf at the top like
any package. scripts/setup_env.sh also installs it in the venv (`zz_brainformer_tf_compat.pth`)
so that the stock `t5_mesh_transformer` works; BRAINFORMER_COMPAT_HOOK=0 leaves that one out.

Patches (PATCHES; `brainformer --version` and run_info.json list which are on):
1. `tensor_conversion_registry` (import fix, always on): mesh_tensorflow/tpu_variables.py calls
   `ops.register_tensor_conversion_function`, which TF 2.13+ moved to
   `tensor_conversion_registry` (tensorflow/mesh#392, #396; no release fix). We put the
   function back where mesh-tf looks for it.
2. `hf_model_stub` (import fix, always on): `t5/models/__init__.py` imports
   `t5.models.hf_model`, which imports torch and transformers at module level. When torch is
   not installed we register a stand-in module whose `HfPyTorchModel` raises a clear
   ImportError when used; everything else in t5.models works.
3. `einsum_gradient_operand_order` (speed; float summation order): mesh-tf's einsum gradient
   passes the operands as [dy, other]. For a weight gradient, e.g. experts'
   dW[e,m,h] = einsum(dy[e,g,c,h], x[e,g,c,m]), TF's einsum then computes [e,h,m] and
   transposes it, which doubles the op's time (22 vs 12 ms at 64 experts x 256 x 512, oneDNN
   on; benchmarks/README.md). We order the two operands so that the one holding the output's
   first free dimension comes first; the result is the same einsum.
4. `global_step_after_updates` (numerics: determinism): mesh_tensorflow/transformer/utils.py
   builds the training op as `tf.group(updates + [tf.assign_add(global_step, 1)])` with no
   order between the two. The updates read the global step (learning-rate schedule,
   Adafactor's decay rate), and the increment is ready as soon as the step starts: whichever
   runs first decides whether they read t or t + 1 (t + 1 in 2909 of 3000 steps of a probe).
   Which way it goes varies, so two runs with the same seed can drift apart (seen once in CI:
   1e-4 in loss at step 18). In that module's view of `tf`, `group` makes the increment wait
   for the other grouped ops, as TF's own `Optimizer.apply_gradients` does.
5. `updates_after_all_gradients` (numerics: determinism and correctness): a mesh-tf variable's
   value is the TF variable itself (`Variable.lower` casts it to its own dtype, which is a
   no-op), so every op reads the variable when it runs, and nothing orders those reads before
   the optimizer's assigns. The backward pass of layer 1 reads W2 after W2's update may have
   run, so a gradient can mix old and new weights, at random (two identical runs differed at
   step 2: 7.18521 vs 7.18560; docs/reliability.md). `Optimizer.apply_grads` now passes the
   gradients through one barrier op (identities under control dependencies on every
   gradient), so every update waits until every gradient, and thus every read of the step's
   weights, is done. No copies; the NaN guard's `tf.cond` already imposed the same order.
6. `cpu_bfc_allocator` (speed; set when brainformer_tf is imported): TF's CPU tensors come
   from malloc unless TF_CPU_ALLOCATOR_USE_BFC=true. glibc serves allocations of 32 MB and more
   with fresh mmap'd pages, so every step page-faults its way through each such tensor again:
   at 64 experts a weight gradient (64 x 256 x 512 floats) is one. We set the variable (an
   explicit value in the environment wins), so TF pools CPU memory in its BFC allocator, as it
   does on GPUs. On the AVX2 machine here (2026-12-02, interleaved rounds): the experts'
   weight-gradient einsum 51 -> 29 ms, the expert-choice layer at 64 experts 0.170 -> 0.155 s,
   mesh-tf's MoE1D 0.51 -> 0.40 s, the dense FFN unchanged (benchmarks/README.md).
7. `assign_sub_in_place` (speed; the same numbers): mesh-tf's optimizers end every update with
   `mtf.assign_sub(var, x)`, which it lowers as `tf.assign(v, v - x)`: a Sub writes a new
   tensor the size of the variable and the Assign copies it back. `tf.assign_sub(v, x)`
   subtracts in place (the same float operation in the variable's dtype, as mesh-tf's comment
   on bfloat16 asks). At 64 experts the two passes took 29 ms of a Brainformer-1 mini step's
   566 ms of op time (AVX-512 machine, 2026-12-02; benchmarks/README.md).
Switch 3-7 off (to compare with stock mesh-tf) with
BRAINFORMER_COMPAT_OFF=<comma-separated names> in the environment of the process, before
mesh-tf is imported (6: before brainformer_tf is).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

_HF_MODULE = "t5.models.hf_model"
# name -> what it changes; SWITCHABLE ones can be switched off (BRAINFORMER_COMPAT_OFF)
PATCHES = {
    "tensor_conversion_registry": "import fix (required on TF 2.13+)",
    "hf_model_stub": "import fix (t5.models without torch)",
    "einsum_gradient_operand_order": "speed: no output transpose in einsum gradients",
    "global_step_after_updates": "numerics: updates read step t, then the step increments",
    "updates_after_all_gradients": "numerics: no update runs before every gradient is done",
    "cpu_bfc_allocator": "speed: TF pools CPU memory (no page faults on big tensors each step)",
    "assign_sub_in_place": "speed: variable updates subtract in place (no copy of each weight)",
}
SWITCHABLE = ("einsum_gradient_operand_order", "global_step_after_updates",
              "updates_after_all_gradients", "cpu_bfc_allocator", "assign_sub_in_place")
BFC_VARIABLE, BFC_SET_BY = "TF_CPU_ALLOCATOR_USE_BFC", "BRAINFORMER_SET_TF_CPU_ALLOCATOR"


def enabled(name: str) -> bool:
  """Whether patch `name` is on: everything but what BRAINFORMER_COMPAT_OFF names."""
  off = {x.strip() for x in os.environ.get("BRAINFORMER_COMPAT_OFF", "").split(",") if x.strip()}
  unknown = off - set(SWITCHABLE)
  if unknown:
    raise ValueError(f"BRAINFORMER_COMPAT_OFF: unknown or required patches {sorted(unknown)}; "
                     f"switchable: {', '.join(SWITCHABLE)}")
  return name not in off


def status() -> dict:
  """{patch name: True if on} (what run_info.json and `brainformer --version` show)."""
  return {name: enabled(name) for name in PATCHES}


class _UnavailableHfPyTorchModel:
  """Stand-in for t5's HfPyTorchModel when torch is not installed."""

  def __init__(self, *args, **kwargs):
    raise ImportError(
        "t5.models.HfPyTorchModel needs torch and transformers, which brainformer_tf does not "
        "install (it trains with Mesh-TensorFlow). Install them to use the HF model class.")


def _patch_tensor_conversion_registry():
  from tensorflow.python.framework import ops  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import \
      tensor_conversion_registry  # pylint: disable=g-import-not-at-top
  if not hasattr(ops, "register_tensor_conversion_function"):
    ops.register_tensor_conversion_function = (
        tensor_conversion_registry.register_tensor_conversion_function)


def _stub_hf_model_without_torch():
  if _HF_MODULE in sys.modules or importlib.util.find_spec("torch") is not None:
    return
  stub = types.ModuleType(_HF_MODULE)
  stub.__doc__ = "Stand-in installed by brainformer_tf.compat: torch is not installed."
  stub.HfPyTorchModel = _UnavailableHfPyTorchModel
  sys.modules[_HF_MODULE] = stub


class _MeshTfUtilsTf(types.ModuleType):
  """tensorflow.compat.v1 as mesh_tensorflow/transformer/utils.py sees it: `group` runs the
  global-step increment after the ops grouped with it (item 4); `Print` passes its input
  through once `quiet` is set (silence_mesh_tf_step_print)."""

  def __init__(self, tf_module):
    super().__init__(tf_module.__name__)
    self._tf = tf_module
    self.quiet = False
    self.order_step = enabled("global_step_after_updates")

  def __getattr__(self, name):
    return getattr(self._tf, name)

  def group(self, *inputs, **kwargs):
    if not self.order_step:
      return self._tf.group(*inputs, **kwargs)
    step = self._tf.train.get_global_step()
    ops = [getattr(x, "op", x) for x in self._tf.nest.flatten(inputs)]
    increments = [op for op in ops if step is not None and op.inputs
                  and op.type in ("AssignAdd", "AssignAddVariableOp")
                  and op.inputs[0].op is step.op]
    if increments and len(increments) < len(ops):
      others = [op for op in ops if op not in increments]
      for op in increments:
        op._add_control_inputs(others)  # pylint: disable=protected-access
    return self._tf.group(*inputs, **kwargs)

  def Print(self, input_, *args, **kwargs):  # pylint: disable=invalid-name
    if self.quiet:
      return input_
    return self._tf.Print(input_, *args, **kwargs)


def _order_global_step_increment():
  from mesh_tensorflow.transformer import utils  # pylint: disable=g-import-not-at-top
  if not isinstance(utils.tf, _MeshTfUtilsTf):
    utils.tf = _MeshTfUtilsTf(utils.tf)


def silence_mesh_tf_step_print():
  """Stops mesh-tf's training graph from printing "step, tf_loss[...]" to stderr every step.

  mesh_tensorflow/transformer/utils.py wraps the CPU training loss in tf.Print, which writes
  straight to stderr (no log level hides it). Only that module's view of `tf` is changed.
  """
  apply()
  from mesh_tensorflow.transformer import utils  # pylint: disable=g-import-not-at-top
  utils.tf.quiet = True


def einsum_operand_order(operands, output_dims):
  """Two operands ordered so that the first output dim found in only one of them is in the
  first operand (TF's einsum then needs no output transpose); other cases unchanged."""
  if len(operands) != 2:
    return list(operands)
  first, second = operands
  for dim in output_dims:
    in_first, in_second = dim in first.shape.dims, dim in second.shape.dims
    if in_first != in_second:
      return [first, second] if in_first else [second, first]
  return [first, second]


def _order_einsum_gradient_operands():
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top  (patched in place)
  if (not enabled("einsum_gradient_operand_order") or
      getattr(mtf.EinsumOperation.gradient, "_brainformer_ordered", False)):
    return

  def gradient(self, grad_ys):
    xs = self.inputs
    return [mtf.einsum(einsum_operand_order([grad_ys[0]] + xs[:i] + xs[i + 1:],
                                            xs[i].shape.dims), xs[i].shape)
            for i in range(len(xs))]

  gradient._brainformer_ordered = True  # pylint: disable=protected-access
  mtf.EinsumOperation.gradient = gradient


def gradient_barrier(grads):
  """`grads` (mtf Tensors or None), each available only once all of them are computed."""
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top  (patched in place)
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

  class GradientBarrier(mtf.Operation):
    """Identity on every input, run after all inputs exist (lowered with control deps)."""

    def __init__(self, xs):
      super().__init__(xs, xs[0].mesh, name="gradient_barrier")
      self._outputs = [mtf.Tensor(self, x.shape, x.dtype) for x in xs]
      self._splittable_dims, self._unsplittable_dims = (
          self._initialize_all_dimensions_as_splittable())

    def lower(self, lowering):
      mesh_impl = lowering.mesh_impl(self)
      laid_out = [lowering.tensors[x].to_laid_out_tensor() for x in self.inputs]
      with tf.control_dependencies([t for lt in laid_out for t in lt.tensor_list]):
        for out, lt in zip(self.outputs, laid_out):
          lowering.set_tensor_lowering(
              out, mesh_impl.LaidOutTensor([tf.identity(t) for t in lt.tensor_list]))

    @property
    def has_gradient(self):
      return False

  present = [g for g in grads if g is not None]
  if not present or any(g.mesh is not present[0].mesh for g in present):
    return list(grads)
  barrier = iter(GradientBarrier(present).outputs)
  return [None if g is None else next(barrier) for g in grads]


def _order_updates_after_gradients():
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top  (patched in place)
  apply_grads = mtf.optimize.Optimizer.apply_grads
  if (not enabled("updates_after_all_gradients") or
      getattr(apply_grads, "_brainformer_ordered", False)):
    return

  def ordered_apply_grads(self, grads, variables):
    return apply_grads(self, gradient_barrier(grads), variables)

  ordered_apply_grads._brainformer_ordered = True  # pylint: disable=protected-access
  ordered_apply_grads.__doc__ = apply_grads.__doc__
  mtf.optimize.Optimizer.apply_grads = ordered_apply_grads


def _assign_sub_in_place():
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top  (patched in place)
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  ops = mtf.ops
  if not enabled("assign_sub_in_place") or getattr(ops.assign_sub_slice, "_brainformer", False):
    return

  def assign_sub_slice(variable, slice_var, val):
    """slice_var -= val in the slice's dtype, in place (mtf.assign_sub's per-slice update)."""
    return tf.assign_sub(slice_var, tf.cast(val, variable.slice_dtype))

  assign_sub_slice._brainformer = True  # pylint: disable=protected-access
  ops.assign_sub_slice = assign_sub_slice   # mtf.assign_sub looks it up here when called


class _ImportHook(importlib.abc.MetaPathFinder):
  """Applies the shims around the first imports of mesh-tf and t5.models (see the docstring)."""

  def find_spec(self, name, path, target=None):
    del target
    if name in ("mesh_tensorflow", "t5.models"):
      _patch_tensor_conversion_registry()
      _stub_hf_model_without_torch()
    if name != "mesh_tensorflow.transformer.utils":
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      return spec
    exec_module = spec.loader.exec_module

    def exec_then_apply(module):
      exec_module(module)
      apply()
    spec.loader.exec_module = exec_then_apply
    return spec


def _pool_cpu_allocator():
  """Item 6: TF_CPU_ALLOCATOR_USE_BFC=true unless the environment sets it (TF reads it when it
  first creates its CPU allocator, so this must run before any TF session or eager op). Child
  processes inherit the variable; one started with the patch off drops it again if a
  brainformer_tf process set it (BFC_SET_BY marks that), not if a user did."""
  try:
    on = enabled("cpu_bfc_allocator")
  except ValueError:  # a bad BRAINFORMER_COMPAT_OFF: the CLI names it (exit 2), not the import
    return
  if on and BFC_VARIABLE not in os.environ:
    os.environ.update({BFC_VARIABLE: "true", BFC_SET_BY: "brainformer_tf"})
  elif not on and os.environ.pop(BFC_SET_BY, None):
    os.environ.pop(BFC_VARIABLE, None)


def install_import_hook():
  """Puts _ImportHook first on sys.meta_path (once; imports nothing) and applies item 6. If
  mesh-tf was imported before brainformer_tf, applies the shims now (mesh-tf may then have
  failed to import)."""
  _pool_cpu_allocator()
  if "mesh_tensorflow.transformer.utils" in sys.modules:
    apply()
  if not any(isinstance(f, _ImportHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _ImportHook())


def apply():
  """Applies every shim. Safe to call more than once."""
  _pool_cpu_allocator()
  _patch_tensor_conversion_registry()
  _stub_hf_model_without_torch()
  _order_einsum_gradient_operands()
  _order_global_step_increment()
  _order_updates_after_gradients()
  _assign_sub_in_place()
