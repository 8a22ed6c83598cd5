"""Test support: the one way tests run a Mesh-TF graph, and the numpy references.

Running a graph (every test that lowers a mesh graph, and benchmarks/moe_dispatch.py, does
it through this):

  with harness.mesh_graph("batch:2", "batch:batch") as g:   # fresh tf.Graph, seeded
    x = mtf.import_tf_tensor(g.mesh, ...)                    # build on g.mesh
    ...
    with g.session(variables={name: value}) as s:            # lower, init, assign, copy
      y_np, loss_np = s.run([y, loss])                       # export + session.run

`run_layer(layer, x)` is that for one layer: `layer.call(context, x)` inside a minimal
decoder-only Unitransformer context, on one device or a multi-device CPU mesh, returning the
output, the layer's variables (by name, without the scope prefix), the auxiliary losses and
optionally gradients of sum(y * dy) w.r.t. the variables and x.

Numpy references, written from the papers with loops where that is clearer (their own
hand-solvable checks are in test_moe_numpy_reference.py and test_ffn.py): FFN variants,
multi-head attention (T5 relative buckets, Primer's depthwise convolution), norm placements,
MoE gatings (EC eq. 1-4, the capped LP by Dykstra with bisection-solved KL projections,
GShard top-2 with capacity and balance loss, threshold (causal) expert choice).

Shared test helpers that are not references: `task_examples` (a SeqIO task split as numpy),
`problems` (`brainformer train`'s config checks, the UsageError text), `brainformer` (a command
in a new process forked from a server that has imported TensorFlow: what tests use to run one),
`brainformer_script` (the installed console script in a new interpreter),
`brainformer_in_process` (an argparse command in this process) and `copy_of` (a copy of
conftest's shared GLaM tiny run).
"""

import contextlib
import dataclasses
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from absl import flags
import gin
import mesh_tensorflow as mtf
from mesh_tensorflow import placement_mesh_impl
from mesh_tensorflow.transformer import transformer
import numpy as np
from scipy import special
import seqio
from t5.models import mesh_transformer_main  # pylint: disable=unused-import  (defines the flags)
import tensorflow.compat.v1 as tf

from brainformer_tf.cli import main as cli_main
from brainformer_tf.config import errors
from brainformer_tf.config import prepare

TRAIN = tf.estimator.ModeKeys.TRAIN
EVAL = tf.estimator.ModeKeys.EVAL


@dataclasses.dataclass
class MeshSession:
  """A lowered mtf graph in an open tf.Session (initialised, masters copied to slices)."""
  lowering: mtf.Lowering
  session: tf.Session

  def export(self, fetches):
    """The tf form of a structure of mtf Tensors / Operations (tf objects pass through)."""
    def one(item):
      if isinstance(item, mtf.Tensor):
        return self.lowering.export_to_tf_tensor(item)
      if isinstance(item, mtf.Operation):
        return self.lowering.lowered_operation(item)
      return item
    return tf.nest.map_structure(one, fetches)

  def run(self, fetches):
    """session.run of `fetches` (any structure of mtf or tf tensors and operations)."""
    return self.session.run(self.export(fetches))

  def masters(self, variables):
    """{name: value} of the master copies of mtf variables."""
    return self.session.run({v.name: master(v) for v in variables})


@dataclasses.dataclass
class MeshGraph:
  """An mtf graph and mesh under construction inside their (default) tf.Graph."""
  graph: mtf.Graph
  mesh: mtf.Mesh
  mesh_shape: mtf.Shape
  layout_rules: mtf.LayoutRules
  tf_graph: tf.Graph
  cpu_devices: bool
  grappler: bool

  @property
  def num_devices(self) -> int:
    return max(1, self.mesh_shape.size)

  @contextlib.contextmanager
  def session(self, variables: Optional[Dict[str, np.ndarray]] = None):
    """Lowers the graph on a PlacementMeshImpl, opens a session, runs the variable
    initialisers, assigns `variables` ({full mtf name: value}, trainable or not) to the master
    copies, copies masters to slices and yields a MeshSession. Take variable lists from the
    graph before this: lowering may stack variables (mtf autostack) under other names."""
    devices = ([f"/cpu:{i}" for i in range(self.num_devices)] if self.cpu_devices
               else [""] * self.num_devices)
    # the variables as built: lowering may stack them (mtf autostack) under other names
    by_name = {v.name: v for v in self.graph.all_variables}
    unknown = sorted(set(variables or {}) - set(by_name))
    if unknown:
      raise KeyError(f"no such variables in the graph: {unknown}")
    with self.tf_graph.as_default():
      lowering = mtf.Lowering(self.graph, {self.mesh: placement_mesh_impl.PlacementMeshImpl(
          self.mesh_shape, self.layout_rules, devices)})
      assigns = [tf.assign(master(by_name[name]), value)
                 for name, value in (variables or {}).items()]
      config = tf.ConfigProto()
      if self.cpu_devices:
        config.device_count["CPU"] = self.num_devices
      # Tests run each graph a few times: TF's graph optimizer (Grappler) costs more than it
      # saves there (about a fifth of the MoE and model tests' time), so it is off unless asked.
      config.graph_options.rewrite_options.disable_meta_optimizer = not self.grappler
      with tf.Session(graph=self.tf_graph, config=config) as session:
        session.run(tf.global_variables_initializer())
        if assigns:
          session.run(assigns)
        session.run(lowering.copy_masters_to_slices())
        yield MeshSession(lowering, session)


@contextlib.contextmanager
def mesh_graph(mesh_shape="", layout="", *, seed: Optional[int] = 0, cpu_devices=False,
               grappler=False):
  """A fresh tf.Graph (the default graph inside the block, random seed `seed`) holding an
  mtf graph and its mesh "mesh" of `mesh_shape` with `layout` (strings or mtf objects).

  cpu_devices: place slice i on TF logical device /cpu:i (the session gets as many CPU
    devices), so every cross-slice sum is a real inter-device transfer; else all on "".
  grappler: let TF's graph optimizer rewrite the graph, as in training (timing benchmarks);
    off by default (tests).
  """
  with tf.Graph().as_default() as tf_graph:
    if seed is not None:
      tf.random.set_random_seed(seed)
    graph = mtf.Graph()
    yield MeshGraph(graph=graph, mesh=mtf.Mesh(graph, "mesh"),
                    mesh_shape=mtf.convert_to_shape(mesh_shape),
                    layout_rules=mtf.convert_to_layout_rules(layout), tf_graph=tf_graph,
                    cpu_devices=cpu_devices, grappler=grappler)


def master(variable):
  """The tf.Variable holding an mtf.Variable's master copy (mtf has no public accessor)."""
  return variable._master  # pylint: disable=protected-access


@dataclasses.dataclass
class LayerRun:
  y: np.ndarray
  variables: Dict[str, np.ndarray]
  losses: List[float]
  grads: Optional[Dict[str, np.ndarray]] = None   # variable name (and "x") -> d sum(y*dy)
  fetched: Optional[Dict[str, np.ndarray]] = None
  # every variable (trainable or not) read again after the step, e.g. state the layer assigns
  variables_after: Optional[Dict[str, np.ndarray]] = None


def run_layer(layer, x: np.ndarray, *, mode=TRAIN, sequence_id: Optional[np.ndarray] = None,
              mesh_shape="", layout="", dy: Optional[np.ndarray] = None, seed: int = 0,
              scope="layer", variables: Optional[Dict[str, np.ndarray]] = None,
              fetch=None, causal: bool = False) -> LayerRun:
  """Runs `layer` on x [batch, length, d_model] (float32).

  sequence_id: optional int [batch, length], 0 marks padding (Context.nonpadding); None leaves
    the context without a padding mask, as in unpacked evaluation and decoding.
  variables: optional values to assign (by name, trainable or not) before running, e.g. from
    another run; variables not named keep their initial values.
  fetch: optional callable(context, y) -> {name: mtf.Tensor} of extra tensors to return.
  causal: give the context the decoder's causal read/write priorities (position t may attend to
    positions <= t), as Unitransformer does for autoregressive models; needed by attention.
  """
  batch, length, d_model = x.shape
  batch_dim = mtf.Dimension("batch", batch)
  length_dim = mtf.Dimension("length", length)
  model_dim = mtf.Dimension("d_model", d_model)
  with mesh_graph(mesh_shape, layout, seed=seed) as g:
    mesh = g.mesh
    model = transformer.Unitransformer(
        layer_stack=transformer.LayerStack([]), d_model=d_model, input_vocab_size=16,
        output_vocab_size=16, autoregressive=True, max_length=length,
        layout=g.layout_rules, mesh_shape=g.mesh_shape)
    x_mtf = mtf.import_tf_tensor(mesh, tf.constant(x, tf.float32),
                                 mtf.Shape([batch_dim, length_dim, model_dim]))
    seq = None
    if sequence_id is not None:
      seq = mtf.import_tf_tensor(mesh, tf.constant(sequence_id, tf.int32),
                                 mtf.Shape([batch_dim, length_dim]))
    position = mtf.range(mesh, length_dim, tf.int32)
    priority = position if causal else None
    context = transformer.Context(
        model=model, mesh=mesh, batch_dims=[batch_dim], length_dim=length_dim,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32), mode=mode,
        losses=[], sequence_id=seq, position=position, position_is_default=True,
        read_priority=priority, write_priority=priority)
    with tf.variable_scope(scope):
      y = layer.call(context, x_mtf)
    extra = fetch(context, y) if fetch else {}
    mtf_vars = g.graph.trainable_variables
    grad_targets = []
    if dy is not None:
      dy_mtf = mtf.import_tf_tensor(mesh, tf.constant(dy, tf.float32), y.shape)
      objective = mtf.reduce_sum(y * dy_mtf)
      grad_targets = mtf.gradients([objective], [v.outputs[0] for v in mtf_vars] + [x_mtf])
    names = [_short_name(v.name, scope) for v in mtf_vars]
    all_vars = g.graph.all_variables
    all_names = [_short_name(v.name, scope) for v in all_vars]
    values = {v.name: variables[name] for v, name in zip(all_vars, all_names)
              if name in (variables or {})}
    with g.session(values) as s:
      y_np, var_np, loss_np, grad_np, extra_np = s.run(
          [y, [v.outputs[0] for v in mtf_vars], context.losses, grad_targets, extra])
      after_np = s.run([v.outputs[0] for v in all_vars])
  grads = None
  if dy is not None:
    grads = dict(zip(names + ["x"], grad_np))
  return LayerRun(y=y_np, variables=dict(zip(names, var_np)),
                  losses=[float(l) for l in loss_np], grads=grads, fetched=extra_np,
                  variables_after=dict(zip(all_names, after_np)))


def _short_name(name: str, scope: str) -> str:
  prefix = scope + "/"
  return name[len(prefix):] if name.startswith(prefix) else name


# --- numpy references -------------------------------------------------------------------------


def numpy_gelu(x):
  """tanh approximation, as mtf.gelu."""
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "gelu": numpy_gelu,
    "squared_relu": lambda x: np.maximum(x, 0) ** 2,
}


def numpy_ffn(x, variables, activation):
  """y = W_o act(x W_i), or W_o (act(x W_i0) * x W_i1) for the gated_ forms."""
  if activation.startswith("gated_"):
    act = NUMPY_ACTIVATIONS[activation[len("gated_"):]]
    h = act(x @ variables["wi_0/kernel"]) * (x @ variables["wi_1/kernel"])
  else:
    h = NUMPY_ACTIVATIONS[activation](x @ variables["wi/kernel"])
  return h @ variables["wo/kernel"]


def numpy_buckets(query_pos, memory_pos, num_buckets, max_distance=128):
  """T5 relative position buckets for a decoder: distance n = max(q - m, 0)."""
  n = np.maximum(query_pos[:, None] - memory_pos[None, :], 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    large = max_exact + (np.log(np.maximum(n, 1) / max_exact) / np.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(np.int64)
  return np.where(n < max_exact, n, np.minimum(large, num_buckets - 1))


def numpy_dconv(u, taps, sequence_id):
  """u [b, t, h, k]; taps [width, h, k]; out[t] = sum_i taps[i] * u[t - i] within a segment."""
  out = np.zeros_like(u)
  for t in range(u.shape[1]):
    for i in range(taps.shape[0]):
      if t - i >= 0:
        same = (sequence_id[:, t] == sequence_id[:, t - i])[:, None, None]
        out[:, t] += taps[i] * u[:, t - i] * same
  return out


def numpy_attention(x, var, heads, d_kv, sequence_id, num_buckets=None, dconv_width=0):
  """Causal multi-head attention; weights laid out as mesh-tf's combined [d_model, heads*d_kv]."""
  b, t, _ = x.shape
  proj = {n: (x @ var[n]).reshape(b, t, heads, d_kv) for n in "qkv"}
  if dconv_width:
    proj = {n: numpy_dconv(proj[n], np.stack([var[f"{n}_dconv/w_{i}"]
                                              for i in range(dconv_width)]), sequence_id)
            for n in "qkv"}
  logits = np.einsum("bqhk,bmhk->bhqm", proj["q"], proj["k"])  # scale folded into W_q init
  pos = np.arange(t)
  if num_buckets:
    logits += var["relative_attention_bias"][:, numpy_buckets(pos, pos, num_buckets)][None]
  visible = (pos[None, :] <= pos[:, None])[None] & (
      sequence_id[:, :, None] == sequence_id[:, None, :])
  logits = np.where(visible[:, None], logits, -1e9)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  o = np.einsum("bhqm,bmhk->bqhk", w, proj["v"]).reshape(b, t, heads * d_kv)
  return o @ var["o"]


NORM_EPS = 1e-6


def numpy_norm(x, variables, prefix, norm_type):
  """RMS norm (scale) or layer norm (scale, bias) over the last axis, mesh-tf's epsilon."""
  if norm_type == "rms":
    scale = variables[prefix + "rms_norm/scale"]
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + NORM_EPS) * scale
  scope = prefix + "norm/layer_norm/layer_norm_"
  centred = x - x.mean(-1, keepdims=True)
  return (centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + NORM_EPS)
          * variables[scope + "scale"] + variables[scope + "bias"])


def numpy_stack(x, variables, placements, norm_type, activation):
  """A stack of DenseFFN sub-layers layer_000, layer_001, ... with norm placements:
  pre: x + F(N(x)); post: N(x + F(x)); sandwich: x + N2(F(N(x))); final N unless post."""
  for i, placement in enumerate(placements):
    layer = {k.split("/", 1)[1]: v for k, v in variables.items()
             if k.startswith(f"layer_{i:03d}/")}
    weights = {k[len("DenseFFN/"):]: v for k, v in layer.items() if k.startswith("DenseFFN/")}
    h = numpy_norm(x, layer, "", norm_type) if placement in ("pre", "sandwich") else x
    h = numpy_ffn(h, weights, activation)
    if placement == "sandwich":
      h = numpy_norm(h, layer, "post_", norm_type)
    x = x + h
    if placement == "post":
      x = numpy_norm(x, layer, "", norm_type)
  return x if placements[-1] == "post" else numpy_norm(x, variables, "", norm_type)


# MoE: tokens [B, L, M] are routed in groups of S consecutive tokens (row-major), as the layer
# groups them; variables are the layer's ("router/kernel" [M, E], expert FFN weights [E, ...]).


def moe_groups(a, group_size):
  """[B, L, ...] -> [G, S, ...] in row-major token order, as the layer groups tokens."""
  flat = a.reshape((-1,) + a.shape[2:])
  return flat.reshape((flat.shape[0] // group_size, group_size) + a.shape[2:])


def numpy_router_scores(x, variables, group_size):
  """(grouped x [G, S, M] float64, S = softmax(x W_g) over experts [G, S, E])."""
  xg = moe_groups(x.astype(np.float64), group_size)
  return xg, special.softmax(xg @ variables["router/kernel"], axis=-1)


def _numpy_expert(x_tokens, variables, e, activation):
  """FFN of expert e on tokens [N, M]."""
  per_expert = {k: v[e] for k, v in variables.items() if k != "router/kernel"}
  return numpy_ffn(x_tokens, per_expert, activation)


def _numpy_combine(xg, assignments, variables, activation, shape):
  """y[g, s] = sum over (g, s, e, weight) of weight * FFN_e(x[g, s])."""
  y = np.zeros_like(xg)
  for g, s, e, w in assignments:
    y[g, s] += w * _numpy_expert(xg[g, s][None], variables, e, activation)[0]
  return y.reshape(shape)


def real_capacity(capacity, n_real, capacity_factor, num_experts):
  """Slots of a group holding n_real real tokens: round(cf * n / E) (half up), at least 1 if
  n > 0, at most the static capacity (None: the static capacity)."""
  if capacity_factor is None:
    return capacity
  rounded = int(np.floor(capacity_factor * n_real / num_experts + 0.5))
  return min(capacity, max(rounded, min(int(n_real), 1)))


def numpy_expert_choice(x, variables, *, group_size, k, activation="relu", real=None, key=None,
                        capacity_factor=None):
  """EC eq. 1-4: each expert e takes the k tokens of its group with the largest key (default
  S[:, e]); output weighted by S. With capacity_factor, k follows the group's real tokens
  (real_capacity). Returns (y, list of (g, s, e, gate))."""
  xg, s = numpy_router_scores(x, variables, group_size)
  real = np.ones(s.shape[:2]) if real is None else moe_groups(real, group_size)
  key = s if key is None else key
  assignments = []
  for g in range(s.shape[0]):
    k_g = real_capacity(k, real[g].sum(), capacity_factor, s.shape[2])
    for e in range(s.shape[2]):
      order = sorted(range(s.shape[1]), key=lambda t: (-real[g, t], -key[g, t, e]))
      assignments += [(g, t, e, s[g, t, e]) for t in order[:k_g] if real[g, t]]
  return _numpy_combine(xg, assignments, variables, activation, x.shape), assignments


def water_fill(y, total):
  """KL projection of exp(y) (1-D) onto {sum = total, A <= 1}: min(0, y + mu), mu by bisection."""
  lo, hi = -2000.0, 2000.0
  for _ in range(60):
    mu = (lo + hi) / 2
    if np.minimum(1.0, np.exp(np.minimum(y + mu, 0))).sum() > total:
      hi = mu
    else:
      lo = mu
  return np.minimum(y + (lo + hi) / 2, 0)


def numpy_capped_lp(scores, k, b, lam=1e-3, iterations=100):
  """Dykstra for max <S,A> + lam H(A) s.t. column sums k, row sums <= b, 0 <= A <= 1 (one group
  [S, E]); returns A."""
  log_a = scores / lam
  q1, q2 = np.zeros_like(log_a), np.zeros_like(log_a)
  for _ in range(iterations):
    y = log_a + q1
    log_a = np.stack([water_fill(y[:, e], k) for e in range(y.shape[1])], axis=1)
    q1 = y - log_a
    y = log_a + q2
    rows = []
    for t in range(y.shape[0]):
      clipped = np.minimum(y[t], 0)
      rows.append(clipped if np.exp(clipped).sum() <= b else water_fill(y[t], b))
    log_a = np.stack(rows)
    q2 = y - log_a
  return np.exp(log_a)


def numpy_top_2(x, variables, *, group_size, capacity, activation="relu", real=None,
                capacity_factor=None):
  """GShard top-2: first choices served in group order, then second choices, each while the
  expert has < capacity tokens (with capacity_factor: real_capacity of the group). Returns
  (y, assignments, balance loss)."""
  xg, s = numpy_router_scores(x, variables, group_size)
  real = np.ones(s.shape[:2]) if real is None else moe_groups(real, group_size)
  assignments, losses = [], []
  for g in range(s.shape[0]):
    ranked = np.argsort(-s[g], axis=1, kind="stable")
    first, second = ranked[:, 0], ranked[:, 1]
    load = np.zeros(s.shape[2])
    cap = real_capacity(capacity, real[g].sum(), capacity_factor, s.shape[2])
    for choice in (first, second):
      for t in range(s.shape[1]):
        e = choice[t]
        if real[g, t] and load[e] < cap:
          load[e] += 1
          g1, g2 = s[g, t, first[t]], s[g, t, second[t]]
          assignments.append((g, t, e, s[g, t, e] / (g1 + g2)))
    n = real[g].sum()
    if n:
      density = np.array([(real[g] * (first == e)).sum() for e in range(s.shape[2])]) / n
      proxy = (s[g] * real[g][:, None]).sum(0) / n
      losses.append(s.shape[2] * (density * proxy).sum())
  return (_numpy_combine(xg, assignments, variables, activation, x.shape), assignments,
          np.mean(losses))


def numpy_threshold_choice(x, variables, *, group_size, thresholds, capacity=None,
                           activation="relu"):
  """Causal EC: token t to expert e iff S[t,e] >= tau_e; with a capacity, tokens are served by
  increasing position (then group order) while the expert has room."""
  xg, s = numpy_router_scores(x, variables, group_size)
  length = x.shape[1]
  positions = moe_groups(np.tile(np.arange(length), (x.shape[0], 1)), group_size)
  assignments = []
  for g in range(s.shape[0]):
    order = sorted(range(s.shape[1]), key=lambda t: (positions[g, t], t))
    load = np.zeros(s.shape[2])
    for t in order:
      for e in range(s.shape[2]):
        if s[g, t, e] >= thresholds[e] and (capacity is None or load[e] < capacity):
          load[e] += 1
          assignments.append((g, t, e, s[g, t, e]))
  return _numpy_combine(xg, assignments, variables, activation, x.shape), assignments


# --- shared helpers that are not references -------------------------------------------------


TASK_LENGTHS = {"inputs": 32, "targets": 8}


def task_examples(name, split, limit, lengths=None):
  """The first `limit` preprocessed examples of a SeqIO task split, as numpy dicts
  (sequence lengths `lengths`, default TASK_LENGTHS)."""
  task = seqio.get_mixture_or_task(name)
  with tf.Graph().as_default():
    ds = task.get_dataset(lengths or TASK_LENGTHS, split=split, shuffle=False, num_epochs=1,
                          try_in_mem_cache=False).take(limit)
    it = tf.data.make_one_shot_iterator(ds).get_next()
    out = []
    with tf.Session() as session:
      for _ in range(limit):
        try:
          out.append(session.run(it))
        except tf.errors.OutOfRangeError:
          break
  return out


GLAM_CPU = ("models/glam_tiny.gin", "train/cpu.gin")


def problems(*params, gin_files=GLAM_CPU, model_dir="", extra_flags=(), keep_config=False):
  """The UsageError text from parsing + checking like `brainformer train` ("" if fine).

  extra_flags: more command-line flags (e.g. "--tpu=name"); keep_config: leave the parsed Gin
  config in place for the caller (e.g. to build the graph), instead of clearing it.
  """
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["validate", f"--model_dir={model_dir}"] + [f"--gin_file={f}" for f in gin_files]
              + [f"--gin_param={p}" for p in params] + list(extra_flags))
  try:
    prepare.parse_and_check(flags.FLAGS)
  except errors.UsageError as e:
    return str(e)
  finally:
    if not keep_config:
      gin.clear_config()
  return ""


# `brainformer train` flags of the shared run (conftest.glam_tiny_run): GLaM tiny on the CPU
# recipe and the one-device layout (the stock `t5_mesh_transformer` needs the layout named;
# test_stock_cli runs it with these flags), every step logged. The runs of test_cli_train and
# test_reliability_runs are this command with more flags (none that changes a training loss).
GLAM_TINY_RUN = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin",
                 "--gin_file=layouts/cpu_1.gin",
                 "--gin_param=utils.run.batch_size = ('sequences_per_batch', 4)",
                 "--gin_param=utils.run.save_checkpoints_steps = 10",
                 "--gin_param=train_with_progress.log_every_n_steps = 1",
                 "--gin_param=train_with_progress.final_eval_steps = 2"]
GLAM_TINY_RUN_STEPS = 40


def brainformer_script(*args, cwd="/", timeout=600):
  """Runs the venv's `brainformer` console script (from `/` by default: gin/ must be found
  from any directory)."""
  command = [str(pathlib.Path(sys.executable).parent / "brainformer"), *args]
  return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout)


# The server of `brainformer()`'s processes: imports TensorFlow, mesh-tf, t5 and the tasks once
# (in the environment of the test process that starts it), then forks a process per command.
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["harness", "brainformer_tf.cli.train", "tasks"])


def brainformer(*args, cwd="/", env=None,
                input=None,  # pylint: disable=redefined-builtin  (subprocess.run's name)
                timeout=600, stderr_to_stdout=False):
  """`brainformer <args>` in a new process, as `subprocess.run(..., capture_output=True,
  text=True)` returns it, ~10 s sooner: the process is forked from a server that has already
  imported TensorFlow, mesh-tf, t5 and the tasks, and runs the command's `main()` with its own
  argv, directory, environment (`env` replaces it, as in subprocess), stdin (`input`) and
  stdout/stderr at the file-descriptor level (TF's C++ output too); absl flags and Gin start
  unparsed, as in a new interpreter. The exit code is main()'s, 1 with a traceback on an
  exception, -signal if killed (a fault hook's SIGKILL). stderr_to_stdout: both into stdout
  (stderr=subprocess.STDOUT), stderr "". What needs a new interpreter (import hooks, the
  console script, TF's import-time output) runs real processes: test_compat, test_stock_cli,
  test_documented_commands and test_bad_inputs' output tests do."""
  with tempfile.TemporaryDirectory() as tmp:
    streams = [os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr")]
    for path, text in zip(streams, (input or "", "", "")):
      pathlib.Path(path).write_text(text)
    environ = dict(os.environ if env is None else env)
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    targets = streams[:2] + streams[1:2] if stderr_to_stdout else streams
    proc = _FORKSERVER.Process(target=_forked_main, args=(list(args), str(cwd), environ, targets))
    proc.start()
    proc.join(timeout)
    timed_out = proc.exitcode is None
    if timed_out:
      proc.kill()
      proc.join()
    out, err = (pathlib.Path(path).read_text(errors="replace") for path in streams[1:])
  if timed_out:
    raise subprocess.TimeoutExpired(["brainformer", *args], timeout, out, err)
  return subprocess.CompletedProcess(["brainformer", *args], proc.exitcode, out, err)


def _forked_main(args, cwd, environ, streams):
  """In the forked process: the command as a new interpreter would run it."""
  os.chdir(cwd)
  os.environ.clear()
  os.environ.update(environ)
  write = os.O_WRONLY | os.O_APPEND  # appending: stdout and stderr may be one file
  for fd, (path, mode) in enumerate(zip(streams, (os.O_RDONLY, write, write))):
    opened = os.open(path, mode)
    os.dup2(opened, fd)
    os.close(opened)
  sys.stdin = open(0, closefd=False)  # pylint: disable=consider-using-with
  sys.argv = ["brainformer", *args]
  sys.exit(cli_main.main(sys.argv))


def brainformer_in_process(argv, capfd):
  """`brainformer <argv>` in this process, for an argparse command (eval, params, search...: no
  absl flags to re-parse): (exit code, what it wrote to stderr)."""
  capfd.readouterr()
  code = cli_main.main(["brainformer", *argv])
  return code, capfd.readouterr().err


def copy_of(run, destination):
  """A copy of a run's model dir at `destination` (a path that does not exist yet)."""
  shutil.copytree(run[0], destination)
  return destination
