"""Parameter and FLOP accounting of any Gin-configured mesh-tf decoder-only model.

The model's training graph is built symbolically on a tiny batch (analysis/symbolic.py: the
model `brainformer train` builds, shape-only variables). Counts come from
`graph.trainable_variables`:

  embeddings   variables with a `vocab` dimension (input embedding, softmax); excluded from
               both totals, the papers' convention, and reported separately.
  total        every other variable (attention, FFN, experts, routers, norms, relative bias).
  activated    per token: variables of a MoE layer that carry an `experts` dimension count
               with weight experts_per_token / num_experts (top-2: 2, expert choice: capacity
               factor, ...); everything else, routers included, counts fully.
  FLOPs/token  training (forward + backward) = 6 x activated matmul parameters (variables of
               rank >= 2 with a d_model dimension, i.e. not norms, biases or conv taps)
               + 12 x T x sum over attention layers of heads x d_kv (QK^T and AV, forward 4,
               backward 8, no causal halving; T = sequence length). Embedding/softmax matmuls,
               routing/dispatch einsums and element-wise ops are not counted (Kaplan et al.'s
               non-embedding 6N convention; PaLM's 12LHQT attention term).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer_layers

from brainformer_tf.analysis import symbolic
from brainformer_tf.config import ginutil

DEFAULT_VOCAB_SIZE = 256000      # GLaM's SentencePiece vocabulary; only affects `embedding_params`
_BUILD_BATCH, _BUILD_LENGTH = 4, 128  # symbolic build shape; enough tokens for any routing group


@dataclasses.dataclass
class LayerCount:
  name: str               # mesh-tf scope, e.g. block_000/layer_003
  kind: str               # layer class name
  params: int
  activated: float
  matmul_activated: float
  attention_dim: int = 0  # heads x d_kv for attention layers, else 0
  experts_per_token: Optional[float] = None


@dataclasses.dataclass
class Counts:
  total_params: int
  activated_params: float
  flops_per_token: float
  embedding_params: int
  sequence_length: int
  layers: List[LayerCount]

  def as_dict(self) -> Dict[str, float]:
    return {"total_params": self.total_params, "activated_params": round(self.activated_params),
            "flops_per_token": round(self.flops_per_token),
            "embedding_params": self.embedding_params, "sequence_length": self.sequence_length}




def experts_per_token(layer) -> Optional[float]:
  """Average experts that process a token in a MoE layer; None for a non-MoE layer.

  Layers that define `experts_per_token()` (brainformer_tf.layers.moe.MoE) answer themselves;
  mesh-tf's MoE1D: top_2 -> 2, top_n -> top_n_num_experts_per_token, switch/switch_max/ntlb -> 1,
  expert_selection -> capacity_factor_train.
  """
  if callable(getattr(layer, "experts_per_token", None)):
    return float(layer.experts_per_token())
  hparams = getattr(layer, "_hparams", None)
  gating = getattr(hparams, "moe_gating", None)
  if gating is None:
    return None
  table = {"top_2": 2.0, "switch": 1.0, "switch_max": 1.0, "ntlb": 1.0,
           "top_n": float(getattr(hparams, "moe_top_n_num_experts_per_token", 0)),
           "expert_selection": float(getattr(hparams, "moe_capacity_factor_train", 0))}
  if gating not in table:
    raise symbolic.AnalysisError(
        f"{type(layer).__name__} gating {gating!r}: experts per token unknown")
  return table[gating]


def _attention_dim(layer) -> int:
  if (isinstance(layer, transformer_layers.SelfAttention) and
      not isinstance(layer, transformer_layers.EncDecAttention)):
    return int(layer.num_heads) * int(layer.key_value_size)
  return 0


def count_current_config(sequence_length: Optional[int] = None,
                         vocab_size: int = DEFAULT_VOCAB_SIZE, mesh_shape: str = "",
                         layout_rules: str = "") -> Counts:
  """Builds the currently parsed Gin model symbolically and counts it (see module doc).

  mesh_shape / layout_rules: build as laid out on that mesh (e.g. the Gin config's
  utils.run.mesh_shape); the batch is rounded up to a multiple of its batch split. Counts do
  not depend on them.
  """
  model_type = ginutil.query("utils.run.model_type", "bitransformer")
  if model_type not in ("lm", "delimited_lm"):
    raise symbolic.AnalysisError(f"utils.run.model_type={model_type!r}: only decoder-only "
                                 "models ('lm', 'delimited_lm') are counted")
  seq_len = symbolic.sequence_length(sequence_length)
  mesh_shape = mtf.convert_to_shape(mesh_shape)
  layout_rules = mtf.convert_to_layout_rules(layout_rules)
  split = mtf.tensor_dim_to_mesh_dim_size(layout_rules, mesh_shape,
                                          mtf.Dimension("batch", _BUILD_BATCH))
  batch = -(-_BUILD_BATCH // split) * split
  model, graph = symbolic.build_training_graph(batch, _BUILD_LENGTH, vocab_size, mesh_shape,
                                               layout_rules)
  return _count(graph.trainable_variables, model, seq_len)


def _count(variables, model, seq_len: int) -> Counts:
  d_model = model.model_dim.name
  layers = list(model.layer_stack.layers)
  per_layer = {layer.name: LayerCount(layer.name, type(layer).__name__, 0, 0.0, 0.0,
                                      _attention_dim(layer), experts_per_token(layer))
               for layer in layers}
  by_name = {layer.name: layer for layer in layers}
  other = LayerCount("(outside layers)", "", 0, 0.0, 0.0)
  embedding = 0
  for var in variables:
    dims = var.shape.dims
    size = var.shape.size
    if any(d.name == "vocab" for d in dims):
      embedding += size
      continue
    owner = next((n for n in per_layer if f"/{n}/" in f"/{var.name}/"), None)
    entry = per_layer[owner] if owner else other
    fraction = 1.0
    expert_dims = [d for d in dims if d.name == "experts"]
    if expert_dims:
      ept = entry.experts_per_token
      if ept is None:
        raise symbolic.AnalysisError(
            f"variable {var.name} has an experts dimension but its layer "
            f"{type(by_name.get(owner)).__name__} gives no experts per token")
      fraction = ept / expert_dims[0].size
    is_matmul = len(dims) - len(expert_dims) >= 2 and any(d.name == d_model for d in dims)
    entry.params += size
    entry.activated += size * fraction
    if is_matmul:
      entry.matmul_activated += size * fraction
  entries = list(per_layer.values()) + [other]
  total = sum(e.params for e in entries)
  activated = sum(e.activated for e in entries)
  flops = sum(6 * e.matmul_activated + 12 * seq_len * e.attention_dim for e in entries)
  return Counts(total, activated, flops, embedding, seq_len, entries)


def count(gin_files: Sequence[str], gin_params: Sequence[str] = (),
          sequence_length: Optional[int] = None, vocab_size: int = DEFAULT_VOCAB_SIZE,
          module_imports: Sequence[str] = ()) -> Counts:
  """load_gin + count_current_config."""
  symbolic.load_gin(gin_files, gin_params, module_imports)
  return count_current_config(sequence_length, vocab_size)


def human(n: float) -> str:
  """1.2345e9 -> '1.23B' (K, M, B, T)."""
  for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.3g}{unit}"
  return f"{n:.3g}"


# The papers' rows (Brainformer Table 2 = GLaM Table 4, and Table 3), without embeddings:
# model file | paper row | total | activated. docs/zoo.md explains every gap.
_PAPER_TABLE = """
dense_0.1b             | Table 2 0.1B dense             |   130e6 | 130e6
dense_1.7b             | Table 2 1.7B dense             |   1.7e9 | 1.7e9
dense_8b               | Table 2 8B dense               |   8.7e9 | 8.7e9
glam_0.1b_32e          | Table 2 0.1B/32E               |   1.0e9 | 145e6
glam_0.1b_64e          | Table 2 0.1B/64E               |   1.9e9 | 145e6
glam_1.7b_64e          | Table 2 1.7B/64E               |    27e9 | 1.879e9
glam_8b_64e            | Table 2 8B/64E                 |   143e9 | 9.8e9
glam_ec_8b_64e         | Table 3 8B64E GLaM + EC        |   143e9 | 9.8e9
brainformer1_100m_32e  | Table 3 100M32E Brainformer-1  |  3.19e9 | 156e6
brainformer2_100m_32e  | Table 3 100M32E Brainformer-2  |  3.33e9 | 266e6
brainformer1_1b_64e    | Table 3 1B64E Brainformer-1    |    30e9 | 1.38e9
brainformer2_1b_64e    | Table 3 1B64E Brainformer-2    |    52e9 | 1.31e9
brainformer1_8b_64e    | Table 3 8B64E Brainformer-1    |   158e9 | 7.4e9
"""
PAPER_ROWS = tuple((model.strip(), row.strip(), float(total), float(activated))
                   for model, row, total, activated in
                   (line.split("|") for line in _PAPER_TABLE.strip().splitlines()))


def paper_table(sequence_length: Optional[int] = None) -> str:
  """Every PAPER_ROWS model counted next to the paper's numbers, with the relative gaps."""
  lines = [f"{'model file':<22} {'paper row':<31} {'total':>7} {'paper':>6} {'gap':>7}  "
           f"{'activ.':>7} {'paper':>6} {'gap':>7}  {'FLOPs/tok':>9}"]
  for model, row, total, activated in PAPER_ROWS:
    c = count([f"models/{model}.gin"], sequence_length=sequence_length)
    lines.append(
        f"{model:<22} {row:<31} {human(c.total_params):>7} {human(total):>6} "
        f"{c.total_params / total - 1:>+7.1%}  {human(c.activated_params):>7} "
        f"{human(activated):>6} {c.activated_params / activated - 1:>+7.1%}  "
        f"{human(c.flops_per_token):>9}")
  return "\n".join(lines)
