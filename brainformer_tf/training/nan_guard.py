"""Non-finite guard: no update and no checkpoint from a batch whose loss or gradients are NaN/Inf.

`install()` (run by `brainformer train` after Gin is parsed) adds two things to the model:
  * a probe sub-layer at the end of every `LayerStack.sublayers_per_layer`, counting the
    non-finite values of each layer's output (the first such layer is the one that broke);
  * `nan_guard_optimizer` around `utils.run.optimizer`: it flags each variable's gradient whose
    sum is non-finite (one read of it) and, if any is flagged, hands the inner optimizer all-zero
    gradients, so that the parameters do not move (Adafactor: a zero update; its moment
    estimates decay one step).
`NonFiniteHook` reads the loss and the probes every step. Gin `nan_guard.policy`:
  "stop" (default): raise `NonFiniteError` naming the step and the first non-finite layer
    output (or variable gradient); the raise skips the final checkpoint save, and the zeroed
    update keeps any checkpoint saved at that step finite;
  "skip": log the batch as skipped in train_log.jsonl and go on; after
    `max_consecutive_skips` skipped steps in a row, stop as above;
  "off": no probes, no wrapper, no hook.
Fault injection (tests): `nan_guard.fault_step = N`, `nan_guard.fault_layer = "block_001/layer_002"`
adds NaN to that layer's output at step N (fed by the hook, so the step is exact).
"""

import collections
import contextlib
import math

from absl import logging
import gin
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from brainformer_tf.training import progress

PROBES = "brainformer_nonfinite_probes"               # the probes' scalar tensors
PROBE_LABELS = "brainformer_nonfinite_probe_labels"   # "<kind>\t<label>", same order
FAULT_FEED = "brainformer_nonfinite_fault_feed"
POLICIES = ("stop", "skip", "off")

Settings = collections.namedtuple(
    "Settings", "policy max_consecutive_skips fault_step fault_layer")


class NonFiniteError(RuntimeError):
  """Training met a non-finite loss or gradient and the policy says stop."""


@gin.configurable("nan_guard")
def settings(policy="stop", max_consecutive_skips=3, fault_step=None, fault_layer=None):
  """The guard's Gin settings (see the module docstring)."""
  if policy not in POLICIES:
    raise ValueError(f"nan_guard.policy = {policy!r}: expected one of {', '.join(POLICIES)}")
  return Settings(policy, max_consecutive_skips, fault_step, fault_layer)


class _Probe(mtf.Operation):
  """Exports a scalar to TF under `label` (lowered into the PROBES collection)."""

  def __init__(self, kind, label, x):
    super().__init__([x], x.mesh, name="nonfinite_probe")
    self._kind, self._label = kind, label
    self._outputs = [mtf.Tensor(self, x.shape, x.dtype)]

  def lower(self, lowering):
    lowered = lowering.tensors[self.inputs[0]].to_laid_out_tensor()
    # two collections of serialisable items (tensors, strings): the meta graph keeps both
    tf.add_to_collection(PROBES, lowered.tensor_list[0])
    tf.add_to_collection(PROBE_LABELS, f"{self._kind}\t{self._label}")
    lowering.set_tensor_lowering(self.outputs[0], lowered)

  @property
  def has_gradient(self):
    return False


def _nonfinite_count(x):
  flags = mtf.cwise(lambda t: tf.cast(tf.logical_not(tf.math.is_finite(t)), tf.float32), [x],
                    output_dtype=tf.float32, name="nonfinite")
  return mtf.reduce_sum(flags)


def _fault(x):
  """NaN at the step the hook feeds through FAULT_FEED, else 0."""
  flag = tf.placeholder_with_default(False, [], name="nonfinite_fault")
  tf.add_to_collection(FAULT_FEED, flag)
  value = tf.where(flag, tf.constant(math.nan, x.dtype), tf.constant(0, x.dtype))
  return mtf.import_tf_tensor(x.mesh, value, mtf.Shape([]))


@gin.configurable("nan_guard_probe")
def sublayer_probe(x, layer_stack, context):
  """LayerStack sub-layer: probes x (the layer's output) for non-finite values."""
  del layer_stack
  label = f"{tf.get_variable_scope().name} ({type(context.current_layer).__name__})"
  fault_layer = settings().fault_layer
  if fault_layer and tf.get_variable_scope().name.endswith(fault_layer):
    x += _fault(x)
  _Probe("output", label, _nonfinite_count(x))
  return x


def _nonfinite_flag(g):
  """1.0 if g holds a NaN or Inf, else 0.0, from one read of g: its sum is then non-finite.

  (A sum of finite values beyond float32's range, ~3e38, also reads as non-finite.)
  """
  total = mtf.reduce_sum(g)
  return mtf.cwise(lambda t: tf.cast(tf.logical_not(tf.math.is_finite(t)), tf.float32),
                   [total], output_dtype=tf.float32, name="nonfinite_gradient")


def _zero_unless(ok, g):
  """g where the scalar `ok` is 1, else zeros (tf.cond: no copy of g when ok)."""
  return mtf.slicewise(
      lambda okv, t: tf.cond(okv > 0, lambda: t, lambda: tf.zeros_like(t)), [ok, g],
      output_shape=g.shape, output_dtype=g.dtype, splittable_dims=g.shape.dims,
      grad_function=0, name="guarded_gradient")


class _GuardedOptimizer(mtf.optimize.Optimizer):
  """Passes zero gradients to `inner` when any gradient value is non-finite.

  The check reads each gradient once (a sum) and copies none: one pass over the parameters per
  step, which matters when they outnumber the batch's activations (many experts, small batch).
  """

  def __init__(self, inner):
    self._inner = inner

  def apply_grads(self, grads, variables):
    flags = []
    for g, v in zip(grads, variables):
      if g is not None:
        flags.append(_nonfinite_flag(g))
        _Probe("gradient", v.name, flags[-1])
    ok = mtf.cast(mtf.equal(mtf.add_n(flags), 0.0), tf.float32)
    safe = [None if g is None else _zero_unless(ok, g) for g in grads]
    return self._inner.apply_grads(safe, variables)

  def apply_grad(self, grad, var):
    return self._inner.apply_grad(grad, var)


@gin.configurable("nan_guard_optimizer")
def guarded_optimizer(learning_rate, optimizer=gin.REQUIRED):
  """`utils.run.optimizer` wrapper: `optimizer(learning_rate=...)` behind the guard."""
  return _GuardedOptimizer(optimizer(learning_rate=learning_rate))


def install():
  """Rebinds Gin so the model gets the probes and the guarded optimizer (unless policy off)."""
  if settings().policy == "off":
    return
  sublayers = [repr(s) for s in gin.query_parameter("LayerStack.sublayers_per_layer")]
  optimizer = gin.query_parameter("utils.run.optimizer")
  if "@nan_guard_probe" in sublayers:
    return
  with gin.unlock_config():
    gin.parse_config([
        f"LayerStack.sublayers_per_layer = [{', '.join(sublayers + ['@nan_guard_probe'])}]",
        f"nan_guard_optimizer.optimizer = {optimizer!r}",
        "utils.run.optimizer = @nan_guard_optimizer",
    ])


class _NoHook(tf.train.SessionRunHook):

  def __init__(self, *args, **kwargs):
    del args, kwargs


@contextlib.contextmanager
def replacing_estimator_nan_hook():
  """The Estimator adds tf.train.NanTensorHook, which stops on any NaN loss before "skip" can
  act; while the guard is on (it also catches Inf and names the layer) that hook is a no-op."""
  if settings().policy == "off":
    yield
    return
  original = tf.train.NanTensorHook
  tf.train.NanTensorHook = _NoHook
  try:
    yield
  finally:
    tf.train.NanTensorHook = original


class NonFiniteHook(tf.train.SessionRunHook):
  """Checks loss and probes each step; stops or skips per `nan_guard.policy`."""

  def __init__(self, model_dir):
    self._model_dir = model_dir
    self._settings = settings()
    self._skips = 0

  def begin(self):
    self._loss = tf.get_collection(tf.GraphKeys.LOSSES)[0]
    self._step = tf.train.get_global_step()
    self._probes = [tuple(kind_label.split("\t", 1)) + (tensor,) for kind_label, tensor in
                    zip(tf.get_collection(PROBE_LABELS), tf.get_collection(PROBES))]
    self._fault = tf.get_collection(FAULT_FEED)

  def after_create_session(self, session, coord):
    self._current = int(session.run(self._step))

  def before_run(self, run_context):
    feed = {}
    if self._current + 1 == self._settings.fault_step:
      feed = {flag: True for flag in self._fault}
    return tf.train.SessionRunArgs([self._loss, [t for _, _, t in self._probes]], feed)

  def after_run(self, run_context, run_values):
    self._current += 1
    loss, counts = run_values.results
    bad = [(kind, label, n) for (kind, label, _), n in zip(self._probes, counts) if n]
    if math.isfinite(loss) and not bad:
      self._skips = 0
      return
    what = "loss" if not math.isfinite(loss) else "gradient"
    message = f"non-finite {what} at step {self._current} (loss {loss})"
    if bad:
      kind, label, n = bad[0]
      message += (f"; first non-finite layer output: {label} ({int(n)} values)" if kind == "output"
                  else f"; first non-finite gradient of: {label}")
    if self._settings.policy == "skip" and self._skips < self._settings.max_consecutive_skips:
      self._skips += 1
      logging.warning("skipped the update of step %d: %s", self._current, message)
      progress.append_record(self._model_dir, {"step": self._current, "skipped": message})
      return
    if self._settings.policy == "skip":
      message += f"; {self._skips} consecutive steps already skipped"
    raise NonFiniteError(message + "; its update was not applied; stopped (every checkpoint "
                         "written is finite)")
