"""Per-device memory of a Gin-configured model on a Mesh-TF layout (`brainformer params --mesh`).

The model is built symbolically at the microbatch's real shape with the recipe's mesh_shape and
layout_rules (analysis/symbolic.py, no lowering). Every tensor below is a named mtf Shape, divided
by the mesh dimensions the layout splits its dimensions over (`per_device`), so the estimate
follows the layout exactly. B = sequences per microbatch, L = sequence length, a = bytes of the
activation dtype, s = bytes of the master (and slice) dtype.

  parameters   sum over variables of per_device(var) x s (+ a bf16 slice copy when
               slice_dtype != master_dtype)
  gradients    the same count in slice bytes (mtf materialises every gradient before
               apply_grads; with microbatches they are the accumulation buffer)
  optimizer    Adafactor: factored (two largest dims >= min_dim_size_to_factor) -> row +
               column second moments per_device(var - d0) + per_device(var - d1), else a full
               per_device(var); beta1 > 0 adds a first moment per_device(var). Adam: 2 x var.
               Slots in float32.
  activations  kept for the backward pass of one microbatch, summed over sub-layers:
               every sub-layer   2 x [B, L, d_model]            (input, normed input)
               attention         4 x [B, L, heads, d_kv]        (q, k, v, pre-output)
                                 2 x [B, heads, L, L]           (scores, probabilities)
               dense FFN         (n_in + 1) x [B, L, d_ff]      (n_in = 2 for GLU, else 1)
               MoE               2 x [G, S, E] float32          (router logits, scores)
                                 4 x [E, G, C, d_model]         (expert in/out, both layouts)
                                 (n_in + 1) x [experts, G, C, expert_hidden]
                                 2 x [G, E, C, S]               (one-hot dispatch/combine, einsum only)
               output            2 x [B, L, vocab] float32      (logits, log-softmax) + [B, L, d_model]
  G, S = the layer's routing groups (a multiple of the batch's mesh split), C = its expert
  capacity. Workspace, fragmentation, XLA's own buffers and recomputation are not modelled.
"""

import dataclasses
import math
from typing import Dict, Optional, Sequence

from mesh_tensorflow import optimize
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import moe as mtf_moe
from mesh_tensorflow.transformer import transformer_layers
from mesh_tensorflow.transformer import utils

from brainformer_tf.analysis import accounting
from brainformer_tf.analysis import symbolic
from brainformer_tf.config import ginutil
from brainformer_tf.config import paths
from brainformer_tf.layers import ffn
from brainformer_tf.layers import layout
from brainformer_tf.layers.moe import MoE
from brainformer_tf.layers.moe import router

# Dimension names the shared recipes may split although a given model lacks them (a dense
# model has no experts): rules for them are no-ops, not typos.
_UNUSED_OK = frozenset({"ensemble", "outer_batch", "batch", "experts", "expert_hidden", "d_ff",
                        "heads", "vocab", "d_kv", "length", "d_model"})
# Dimensions the MoE routing code keeps whole on every device (slicewise ops split only groups).
_NEVER_SPLIT = frozenset({"expert_unsplit", "batch_unsplit", "group", "expert_capacity"})
# Mesh dimensions of mesh-tf's default rules: a rule naming one the mesh lacks is a documented
# no-op (defaults.gin), so one set of rules serves every mesh. Any other absent name is a typo.
_STANDARD_MESH_DIMS = frozenset({"batch", "model", "ensemble"})
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 2.0 ** 30


class LayoutError(symbolic.AnalysisError):
  """A mesh_shape / layout_rules that cannot lay out this model; names the Gin parameter."""


@dataclasses.dataclass
class MemoryEstimate:
  mesh_shape: str
  layout_rules: str
  num_devices: int
  sequences_per_batch: int
  sequence_length: int
  num_microbatches: int
  bytes: Dict[str, float]          # parameters, gradients, optimizer, activations (per device)
  activations_by_kind: Dict[str, float]

  @property
  def total(self) -> float:
    return sum(self.bytes.values())

  def as_dict(self) -> dict:
    return {"mesh_shape": self.mesh_shape, "layout_rules": self.layout_rules,
            "num_devices": self.num_devices, "sequences_per_batch": self.sequences_per_batch,
            "sequence_length": self.sequence_length, "num_microbatches": self.num_microbatches,
            **{f"{k}_gib": round(v / GIB, 3) for k, v in self.bytes.items()},
            "total_gib": round(self.total / GIB, 3)}


def parse_mesh(mesh_shape: str, layout_rules: str):
  """mtf Shape and LayoutRules, or a LayoutError naming utils.run.mesh_shape / layout_rules."""
  try:
    shape = mtf.convert_to_shape(mesh_shape or "")
  except (ValueError, TypeError) as e:
    raise LayoutError(f"utils.run.mesh_shape={mesh_shape!r}: {e}") from None
  try:
    rules = mtf.convert_to_layout_rules(layout_rules or "")
  except (ValueError, TypeError) as e:
    raise LayoutError(f"utils.run.layout_rules={layout_rules!r}: {e}") from None
  return shape, rules


def check_layout(mesh_shape: str, layout_rules: str, model_dims: Sequence[str]):
  """Rejects rules that would silently not split (unknown names) or break MoE routing.

  A rule to an absent mesh dimension is allowed for mesh-tf's standard names (batch, model,
  ensemble: the same rules serve a 1-device mesh) and an error for any other name.
  model_dims: every dimension name of the model's graph. Errors name utils.run.layout_rules.
  """
  shape, rules = parse_mesh(mesh_shape, layout_rules)
  mesh_names = [d.name for d in shape.dims]
  for tensor_dim, mesh_dim in sorted(rules._pairs):  # pylint: disable=protected-access
    where = f"utils.run.layout_rules={layout_rules!r}: rule {tensor_dim}:{mesh_dim}"
    if tensor_dim in _NEVER_SPLIT:
      raise LayoutError(f"{where}: {tensor_dim!r} is a MoE routing dimension and must stay "
                        "whole; split 'batch' (groups) or 'experts' instead")
    if tensor_dim not in model_dims:
      if tensor_dim in _UNUSED_OK:
        continue
      raise LayoutError(f"{where}: {tensor_dim!r} is not a dimension of this model; its "
                        f"dimensions are {sorted(set(model_dims))}")
    if mesh_dim not in mesh_names and mesh_dim not in _STANDARD_MESH_DIMS:
      raise LayoutError(f"{where}: mesh dimension {mesh_dim!r} is not in "
                        f"utils.run.mesh_shape={mesh_shape!r} (dimensions {mesh_names})")


def per_device(shape, mesh_shape, layout_rules, what: str = "") -> int:
  """Elements of one device's slice of an mtf Shape under the layout (exact division)."""
  try:
    tensor_layout = layout_rules.tensor_layout(shape, mesh_shape)
  except ValueError as e:
    raise LayoutError(f"utils.run.layout_rules: {what or shape}: {e}") from None
  size = 1
  for dim, axis in zip(shape.dims, tensor_layout.tensor_axis_to_mesh_axis):
    problem = layout.split_problem(dim.name, dim, mesh_shape, layout_rules)
    if problem:
      raise LayoutError(f"utils.run.mesh_shape / utils.run.layout_rules: {what or shape}: "
                        f"{problem}")
    size *= dim.size // (1 if axis is None else mesh_shape.dims[axis].size)
  return size


def _slot_elements(var_shape, optimizer, count):
  """Optimizer slot elements per device for one variable (see module doc)."""
  if isinstance(optimizer, optimize.AdafactorOptimizer):
    dims = optimizer._factored_dims(var_shape)  # pylint: disable=protected-access
    total = count(var_shape) if dims is None else (count(var_shape - dims[0]) +
                                                   count(var_shape - dims[1]))
    if optimizer._beta1:  # pylint: disable=protected-access
      total += count(var_shape)
    return total
  if isinstance(optimizer, optimize.AdamWeightDecayOptimizer):
    return 2 * count(var_shape)
  raise symbolic.AnalysisError(
      f"utils.run.optimizer={type(optimizer).__name__}: slots not modelled (Adafactor, Adam)")


def _activations(model, batch, length, vocab, mesh, rules, act_bytes):
  """Activation bytes per device by kind for one microbatch (module doc)."""
  dim = mtf.Dimension
  b, l, d = dim("batch", batch), dim("length", length), model.model_dim

  def size(dims, nbytes=act_bytes):
    return per_device(mtf.Shape(dims), mesh, rules) * nbytes

  out = {"residual": 0.0, "attention": 0.0, "ffn": 0.0, "moe": 0.0,
         "output": 2 * size([b, l, dim("vocab", vocab)], 4) + size([b, l, d])}
  for layer in model.layer_stack.layers:
    out["residual"] += 2 * size([b, l, d])
    if isinstance(layer, transformer_layers.SelfAttention):
      heads = dim("heads", layer.num_heads)
      out["attention"] += (4 * size([b, l, heads, dim("d_kv", layer.key_value_size)]) +
                           2 * size([b, heads, l, dim("memory_length", length)]))
    elif isinstance(layer, ffn.DenseFFN):
      out["ffn"] += (ffn.num_input_matrices(layer.activation) + 1) * size(
          [b, l, dim("d_ff", layer.hidden_size)])
    elif isinstance(layer, transformer_layers.DenseReluDense):
      n_in = len(layer.activation) if isinstance(layer.activation, (list, tuple)) else 1
      out["ffn"] += (n_in + 1) * size([b, l, dim("d_ff", layer.hidden_size)])
    elif isinstance(layer, MoE):
      num_groups, group = mtf_moe._split_into_groups(  # pylint: disable=protected-access
          batch * length, layer.group_size, mtf.tensor_dim_to_mesh_dim_size(rules, mesh, b))
      cf = layer.capacity_factor
      if layer.gating == "expert_choice_causal":
        cf *= layer.config.causal_capacity_multiplier
      cap = router.num_slots(cf, group, layer.num_experts, layer.config)
      g, s, c = dim("batch", num_groups), dim("group", group), dim("expert_capacity", cap)
      e_un, e = dim("expert_unsplit", layer.num_experts), dim("experts", layer.num_experts)
      g_un, h = dim("batch_unsplit", num_groups), dim("expert_hidden", layer.hidden_size)
      moe = 2 * size([g, s, e_un], 4)
      moe += 2 * size([e_un, g, c, d]) + 2 * size([e, g_un, c, d])
      moe += (ffn.num_input_matrices(layer.activation) + 1) * size([e, g_un, c, h])
      if layer.dispatch == "einsum":
        moe += 2 * size([g, e_un, c, s])
      out["moe"] += moe
    else:
      raise symbolic.AnalysisError(
          f"layer {layer.name} ({type(layer).__name__}): activations not modelled")
  return out


def _num_microbatches(batch, length, mesh, rules):
  per_replica = ginutil.query(
      "utils.serialize_num_microbatches.tokens_per_microbatch_per_replica")
  if not per_replica:
    return 1
  replicas = mtf.tensor_dim_to_mesh_dim_size(rules, mesh, mtf.Dimension("batch", batch))
  return max(1, batch * length // replicas // int(per_replica))


def _sequences_per_batch(explicit: Optional[int], length: int) -> int:
  if explicit:
    return int(explicit)
  bound = ginutil.query("utils.run.batch_size")
  if isinstance(bound, (list, tuple)) and len(bound) == 2:
    kind, n = bound
    if kind == "sequences_per_batch":
      return int(n)
    if kind == "tokens_per_batch":
      return max(1, int(n) // length)
  return 1024   # GLaM recipe (gin/train/glam.gin)


def estimate(gin_files: Sequence[str], gin_params: Sequence[str] = (), mesh: str = None,
             layout_rules: str = None, sequences_per_batch: Optional[int] = None,
             sequence_length: Optional[int] = None,
             vocab_size: int = accounting.DEFAULT_VOCAB_SIZE) -> MemoryEstimate:
  """Per-device bytes of the model of `gin_files` on `mesh` (a layouts/*.gin name, or a mesh
  string such as "batch:64,model:8"); layout_rules overrides the recipe's rules."""
  files, params = list(gin_files), list(gin_params)
  if mesh and ":" not in mesh:
    layout = mesh if mesh.endswith(".gin") else f"layouts/{mesh}.gin"
    if layout.startswith("layouts/") and layout not in paths.gin_files("layouts"):
      raise LayoutError(f"--mesh={mesh}: no {layout}; the layouts are "
                        f"{', '.join(f[8:-4] for f in paths.gin_files('layouts'))} (or give a "
                        "mesh string such as 'batch:4,model:2')")
    files.append(layout)
  elif mesh is not None:   # a mesh string; "" = one device
    params.append(f"utils.run.mesh_shape = {mesh!r}")
  if layout_rules:
    params.append(f"utils.run.layout_rules = {layout_rules!r}")
  symbolic.load_gin(files, params)
  mesh_str, rules_str = ginutil.query("utils.run.mesh_shape"), ginutil.query(
      "utils.run.layout_rules")
  if not isinstance(mesh_str, str) or not isinstance(rules_str, str):
    raise LayoutError("utils.run.mesh_shape / utils.run.layout_rules must be strings for the "
                      f"estimate (got {mesh_str!r}); pass --mesh=<layout> or a mesh string")
  mesh_shape, rules = parse_mesh(mesh_str, rules_str)
  length = symbolic.sequence_length(sequence_length)
  batch = _sequences_per_batch(sequences_per_batch, length)
  micro = _num_microbatches(batch, length, mesh_shape, rules)
  micro_batch = batch // micro
  model, graph = symbolic.build_training_graph(micro_batch, length, vocab_size, mesh_shape,
                                               rules)
  model_dims = {d.name for op in graph.operations for t in op.outputs for d in t.shape.dims}
  check_layout(mesh_str, rules_str, model_dims)

  dtypes = utils.get_variable_dtype()
  master, slice_ = dtypes.master_dtype.name, dtypes.slice_dtype.name
  act_bytes = _BYTES[dtypes.activation_dtype.name]
  optimizer_cls = ginutil.query("utils.run.optimizer")
  optimizer = (optimizer_cls.scoped_configurable_fn() if hasattr(
      optimizer_cls, "scoped_configurable_fn") else optimize.AdafactorOptimizer())
  params = slots = 0
  for var in graph.trainable_variables:
    count = lambda s, name=var.name: per_device(s, mesh_shape, rules, f"variable {name}")
    params += count(var.shape)
    slots += _slot_elements(var.shape, optimizer, count)
  param_bytes = params * _BYTES[master] + (params * _BYTES[slice_] if slice_ != master else 0)
  acts = _activations(model, micro_batch, length, vocab_size, mesh_shape, rules, act_bytes)
  return MemoryEstimate(
      mesh_shape=mesh_str, layout_rules=rules_str, num_devices=max(1, mesh_shape.size),
      sequences_per_batch=batch, sequence_length=length, num_microbatches=micro,
      bytes={"parameters": float(param_bytes), "gradients": float(params * _BYTES[slice_]),
             "optimizer": float(slots * 4), "activations": float(sum(acts.values()))},
      activations_by_kind=acts)


def fmt_gib(n: float) -> str:
  return f"{n / GIB:.2f}"


def format_estimate(est: MemoryEstimate, device_gib: Optional[float] = None) -> str:
  lines = [f"mesh {est.mesh_shape} ({est.num_devices} devices), rules {est.layout_rules}",
           f"batch {est.sequences_per_batch} x {est.sequence_length} tokens, "
           f"{est.num_microbatches} microbatch(es); per device, GiB:"]
  for name, value in est.bytes.items():
    lines.append(f"  {name:<12} {fmt_gib(value):>9}")
  for name, value in est.activations_by_kind.items():
    lines.append(f"    {name:<12} {fmt_gib(value):>7}")
  lines.append(f"  {'total':<12} {fmt_gib(est.total):>9}")
  if device_gib:
    lines.append("  " + fit_note(est, device_gib))
  return "\n".join(lines)


def fit_note(est: MemoryEstimate, device_gib: float) -> str:
  """Whether the estimate fits device_gib, and what would make it fit."""
  budget = device_gib * GIB
  if est.total <= budget:
    return f"fits in {device_gib:g} GiB per device"
  static = est.total - est.bytes["activations"]
  if static >= budget:
    return (f"does NOT fit in {device_gib:g} GiB: parameters, gradients and slots alone take "
            f"{fmt_gib(static)} GiB; use more devices")
  factor = math.ceil(est.bytes["activations"] / (budget - static))
  return (f"does NOT fit in {device_gib:g} GiB: activations must shrink {factor}x "
          "(utils.serialize_num_microbatches or more data-parallel devices)")
