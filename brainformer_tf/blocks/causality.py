"""Which layers of a built model let a token's score depend on later tokens of its row.

Attention in a decoder-only LM is causal; routing may not be. When scoring (eval mode, each
sequence its own routing group), plain and capped expert choice take each expert's top-k
over the row, and capacity-limited top-2 serves second choices after every first choice of
the row: a token's output can change with later tokens. `expert_choice_causal` routes each
token by thresholds alone, and dense / Primer layers do not route. (Decoding one token at a
time is a different question: top-2 then has no capacity limit and is causal; docs/moe.md.)
"""

from typing import List

from brainformer_tf.layers.moe import layer as moe_layer
from brainformer_tf.layers.moe import router

# Gatings whose scoring-time routing reads other tokens of the row.
ROW_READING_GATINGS = router.NON_CAUSAL_GATINGS + ("top_2",)


def layers_routing_by(model, gatings) -> List[str]:
  """"layer i (Class, gating)" of every MoE layer of a built Unitransformer whose gating is in
  `gatings` (mesh-tf's own MoE1D / MoE2D count as capacity-limited group routing).

  Reads the layers actually built (a `g[ec]` block spec, a Gin default), never the Gin text.
  Layer constructors only record settings: no graph is needed.
  """
  found = []
  for index, layer in enumerate(getattr(model.layer_stack, "_layers", [])):
    name = type(layer).__name__
    if isinstance(layer, moe_layer.MoE):
      if layer.gating in gatings:
        found.append(f"layer {index} ({name}, gating {layer.gating!r})")
    elif name in ("MoE1D", "MoE2D") and "top_2" in gatings:
      found.append(f"layer {index} ({name})")
  return found


def noncausal_layers(model) -> List[str]:
  """Layers whose routing reads the rest of the row when scoring ([]: every token's score
  depends on earlier tokens only)."""
  return layers_routing_by(model, ROW_READING_GATINGS)


def routing_is_causal(model) -> bool:
  return not noncausal_layers(model)
