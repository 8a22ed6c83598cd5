"""Which Brainformer blocks fit the paper's Brainformer-2 rows of Table 3? A closed-form solver.

    python -m brainformer_tf.analysis.block_fit        # prints the tables docs/zoo.md quotes

The count is brainformer_tf/analysis/accounting.py's convention written out in closed form, so that
every block of the paper's Table 1 search space can be counted in microseconds (the graph
build of accounting.py takes seconds; tests/test_block_fit.py checks that both agree).
With d = d_model, A = heads x d_kv, E experts, m = 3 weight matrices for a gated (GLU)
activation (gated ReLU, gated GeLU: wi_0, wi_1, wo) and m = 2 for a plain one (ReLU, GeLU:
wi, wo), pre-norm RMS scales of size d, no biases, embeddings excluded:

    a   4 d A  +  32 heads  +  d         (q, k, v, o; relative-position bias, 32 buckets; norm)
    f   m_f d H_f  +  d
    g   E m_g d H_g  +  d E  +  d        (experts; router; norm)
    total     = stacks x (n_a a + n_f f + n_g g) + d          (+ d: the final norm)
    activated = the same with each MoE layer's E m_g d H_g replaced by ept m_g d H_g,

ept = experts per token = 2 for top-2 and the capacity factor c for expert choice.

Scales (paper Sec. 3 and 6.1 and the project's rule, docs/zoo.md): a block is described at
100M32E (d in {512, 768, 1024}, 3 stacks, 32 experts); 1B64E doubles d, the hidden sizes and
the heads (head size d_kv = 128 stays), 6 stacks, 64 experts; 8B64E quadruples them, 8 stacks,
64 experts. Under that rule activated(1B64E) / activated(100M32E) is 8 for every block: each
weight matrix has 4x the entries (both of its dims double; the router's are d and E), the
stacks double, and each MoE layer still activates ept experts; only the norms (d) and relative
biases (heads) grow 4x in all, and they are < 0.1% of the count. The paper's Brainformer-2 rows
have 1.31B / 266M = 4.9, so no block fits both (`main` prints the measured range). And at 1B64E the activated
count is at least total x ept / E, so 52B allows ept <= 1.31B x 64 / 52B = 1.6: expert choice
with a capacity factor of 2 or more cannot reach 1.31B at 52B.
"""

import dataclasses
import itertools
from typing import Dict, Iterator, List, Sequence, Tuple

RELATIVE_BUCKETS = 32   # mesh-tf SelfAttention.relative_attention_num_buckets (lm_base.gin)
D_KV = 128              # head size of the size_brainformer_* includes, at every scale
TOLERANCE = 0.05        # |count / paper - 1| that counts as a fit; see TOLERANCE_REASON
TOLERANCE_REASON = (
    "the same count reproduces GLaM 1.7B/64E, GLaM 8B/64E, Brainformer-1 1B64E and 8B64E "
    "within 3.5% (REFERENCE_ROWS), and Table 3 prints 2-3 significant digits")

# Table 1 of the paper (the search space) at 100M32E.
MODEL_DIMS = (512, 768, 1024)
HIDDEN_SIZES = (1536, 2048, 3072, 4096)
HEADS = (12, 16, 20)
MATRICES = (3, 2)   # gated ReLU / gated GeLU count alike (3), ReLU / GeLU alike (2)
ROUTINGS = (("expert_choice", 1.0), ("expert_choice", 2.0), ("expert_choice", 3.0),
            ("expert_choice", 4.0), ("top_2", 2.0))   # top-2's capacity factor adds no params
BLOCK_LENGTH = 8


@dataclasses.dataclass(frozen=True)
class Scale:
  name: str
  width: int       # multiplier of d_model, heads and hidden sizes relative to 100M32E
  stacks: int
  experts: int


SCALES = {s.name: s for s in (Scale("100M32E", 1, 3, 32), Scale("1B64E", 2, 6, 64),
                              Scale("8B64E", 4, 8, 64))}

# Table 3, Brainformer-2: scale -> (total, activated).
PAPER_BRAINFORMER2 = {"100M32E": (3.33e9, 266e6), "1B64E": (52e9, 1.31e9)}


@dataclasses.dataclass(frozen=True)
class Block:
  """A block by composition and widths (the paper: the order of the sub-layers barely matters).

  All attention layers share `heads`, all dense FFNs `ffn_hidden`/`ffn_matrices`, all MoE
  layers `moe_hidden`/`moe_matrices` and the routing.
  """
  attention: int
  ffn: int
  moe: int
  heads: int
  ffn_hidden: int
  moe_hidden: int
  ffn_matrices: int = 3
  moe_matrices: int = 3
  gating: str = "expert_choice"
  capacity_factor: float = 1.0
  d_kv: int = D_KV

  @property
  def experts_per_token(self) -> float:
    return 2.0 if self.gating == "top_2" else self.capacity_factor

  def scaled(self, width: int) -> "Block":
    """The block with heads and hidden sizes multiplied by `width` (d_kv kept)."""
    return dataclasses.replace(self, heads=self.heads * width,
                               ffn_hidden=self.ffn_hidden * width,
                               moe_hidden=self.moe_hidden * width)

  def spec(self, order: str, experts: int) -> str:
    """blocks.block_layers spec text with every setting explicit, e.g. order "a g f a g g g g"."""
    letters = order.split()
    if sorted(letters) != sorted("a" * self.attention + "f" * self.ffn + "g" * self.moe):
      raise ValueError(f"order {order!r} is not a {self.composition} block")
    act = {3: "gated_gelu", 2: "gelu"}
    flag = "top2" if self.gating == "top_2" else "ec"
    text = {"a": f"a[h={self.heads},d_kv={self.d_kv}]",
            "f": f"f[H={self.ffn_hidden},act={act[self.ffn_matrices]}]",
            "g": (f"g[{flag},E={experts},c={self.capacity_factor:g},H={self.moe_hidden},"
                  f"act={act[self.moe_matrices]}]")}
    return " ".join(text[letter] for letter in letters)

  @property
  def composition(self) -> str:
    return f"{self.attention}a {self.ffn}f {self.moe}g"


def count(block: Block, d_model: int, experts: int, stacks: int) -> Tuple[float, float]:
  """(total, activated) parameters of `stacks` x block (module docstring formula)."""
  d = d_model
  attention = 4 * d * block.heads * block.d_kv + RELATIVE_BUCKETS * block.heads + d
  ffn = block.ffn_matrices * d * block.ffn_hidden + d
  expert = block.moe_matrices * d * block.moe_hidden
  moe_rest = d * experts + d
  dense = block.attention * attention + block.ffn * ffn + block.moe * moe_rest
  total = stacks * (dense + block.moe * experts * expert) + d
  activated = stacks * (dense + block.moe * block.experts_per_token * expert) + d
  return total, activated


def count_at(block: Block, d_model_100m: int, scale: Scale) -> Tuple[float, float]:
  """count() of the block described at 100M32E, scaled to `scale` by the project's rule."""
  return count(block.scaled(scale.width), d_model_100m * scale.width, scale.experts,
               scale.stacks)


@dataclasses.dataclass(frozen=True)
class Candidate:
  block: Block
  d_model: int                  # at 100M32E
  gaps: Tuple[float, ...]       # count / paper - 1: 100M total, 100M activated, 1B total, 1B act.

  def fits(self, which: Sequence[int], tolerance: float = TOLERANCE) -> bool:
    return all(abs(self.gaps[i]) <= tolerance for i in which)

  @property
  def agrees_with_text(self) -> bool:
    """Paper Sec. 6.1: d = 1024 at 100M, FFN and MoE hidden < 3072, fewer attention layers
    than a vanilla transformer's 4 in 8 sub-layers, and a capacity factor larger than Block 1's
    expert-choice c = 1."""
    b = self.block
    return (self.d_model == 1024 and b.moe_hidden < 3072 and (b.ffn == 0 or b.ffn_hidden < 3072)
            and b.attention < BLOCK_LENGTH // 2 and b.gating == "expert_choice"
            and b.capacity_factor > 1)


def gaps(block: Block, d_model_100m: int) -> Tuple[float, ...]:
  out = []
  for name in ("100M32E", "1B64E"):
    total, activated = count_at(block, d_model_100m, SCALES[name])
    paper_total, paper_activated = PAPER_BRAINFORMER2[name]
    out += [total / paper_total - 1, activated / paper_activated - 1]
  return tuple(out)


def blocks() -> Iterator[Tuple[Block, int]]:
  """Every (block, d_model at 100M) of the search space: 8 sub-layers with at least one `a`
  and one `g`, one width and activation class per layer type, one routing."""
  for n_a in range(1, BLOCK_LENGTH):
    for n_g in range(1, BLOCK_LENGTH - n_a + 1):
      n_f = BLOCK_LENGTH - n_a - n_g
      ffn_options = itertools.product(HIDDEN_SIZES, MATRICES) if n_f else [(0, 3)]
      for (h_f, m_f), h_g, m_g, heads, (gating, c), d in itertools.product(
          list(ffn_options), HIDDEN_SIZES, MATRICES, HEADS, ROUTINGS, MODEL_DIMS):
        yield Block(n_a, n_f, n_g, heads, h_f, h_g, m_f, m_g, gating, c), d


def candidates() -> List[Candidate]:
  return [Candidate(b, d, gaps(b, d)) for b, d in blocks()]


BLOCK1 = Block(2, 3, 3, 20, 2048, 2048, 3, 3, "expert_choice", 1.0)  # brainformer1.gin at 100M

# Rows the same count must reproduce: (label, block, d_model, experts, stacks, paper total,
# paper activated). GLaM's (a f)(a g) is 2 a, 1 gated FFN, 1 plain-ReLU top-2 MoE per block.
REFERENCE_ROWS = (
    ("GLaM 1.7B/64E (Table 2)", Block(2, 1, 1, 16, 8192, 8192, 3, 2, "top_2", 2.0), 2048, 64,
     12, 27e9, 1.879e9),
    ("GLaM 8B/64E (Table 2)", Block(2, 1, 1, 32, 16384, 16384, 3, 2, "top_2", 2.0), 4096, 64,
     16, 143e9, 9.8e9),
    ("Brainformer-1 1B64E (Table 3)", BLOCK1.scaled(2), 2048, 64, 6, 30e9, 1.38e9),
    ("Brainformer-1 8B64E (Table 3)", BLOCK1.scaled(4), 4096, 64, 8, 158e9, 7.4e9),
)

# The project's Brainformer-2 (gin/models/includes/brainformer2.gin, docs/zoo.md): a block that
# agrees with the paper's text, keeps Block 1's widths (size_brainformer_*) and comes within
# 0.2 points of the nearest such block to the reachable numbers; Block 1 with its last two
# dense FFNs made MoE layers.
CHOSEN = Block(2, 1, 5, 20, 2048, 2048, 3, 3, "expert_choice", 2.0)
CHOSEN_D_MODEL = 1024
CHOSEN_ORDER = "a g f a g g g g"


def _act(matrices: int) -> str:
  return {3: "glu", 2: "plain"}[matrices]


def _row(c: Candidate) -> str:
  b = c.block
  ffn = f"{b.ffn_hidden}/{_act(b.ffn_matrices)}" if b.ffn else "-"
  routing = "top2" if b.gating == "top_2" else f"ec c={b.capacity_factor:g}"
  gaps_text = " ".join(f"{g:+7.1%}" for g in c.gaps)
  return (f"{b.composition:<11} {c.d_model:>5} {b.heads:>5} {ffn:>11} "
          f"{b.moe_hidden}/{_act(b.moe_matrices):<5} {routing:<8} {gaps_text}")


HEADER = (f"{'block':<11} {'d':>5} {'heads':>5} {'ffn H/act':>11} {'moe H/act':<10} "
          f"{'routing':<8} {'100M tot':>7} {'100M act':>7} {'1B tot':>7} {'1B act':>7}")


def summary(all_candidates: Sequence[Candidate], top: int = 12) -> Dict[str, object]:
  """The numbers `main` prints: fits of all four Brainformer-2 numbers and of three of them,
  the activated 1B/100M ratio range, and the text-agreeing blocks nearest the reachable three."""
  ratios = [count_at(c.block, c.d_model, SCALES["1B64E"])[1] /
            count_at(c.block, c.d_model, SCALES["100M32E"])[1] for c in all_candidates]
  reachable = (0, 1, 2)   # both totals and the 100M activated count (1B activated: see doc)
  text = sorted((c for c in all_candidates if c.agrees_with_text),
                key=lambda c: max(abs(c.gaps[i]) for i in reachable))
  return {
      "ratio_range": (min(ratios), max(ratios)),
      "all_four": [c for c in all_candidates if c.fits((0, 1, 2, 3))],
      "miss_100m_activated": [c for c in all_candidates if c.fits((0, 2, 3))],
      "miss_1b_activated": [c for c in all_candidates if c.fits((0, 1, 2))],
      "text_nearest": text[:top],
  }


def main() -> None:
  cands = candidates()
  s = summary(cands)
  print(f"Reference rows (tolerance {TOLERANCE:.0%}: {TOLERANCE_REASON}):")
  for label, block, d, experts, stacks, paper_total, paper_activated in REFERENCE_ROWS:
    total, activated = count(block, d, experts, stacks)
    print(f"  {label:<31} total {total / 1e9:7.2f}B ({total / paper_total - 1:+.1%})  "
          f"activated {activated / 1e9:6.3f}B ({activated / paper_activated - 1:+.1%})")
  low, high = s["ratio_range"]
  print(f"\n{len(cands)} blocks. activated 1B64E / 100M32E ranges {low:.3f}..{high:.3f} over "
        f"the space; the paper's Brainformer-2: {1.31e9 / 266e6:.2f}.")
  print("Gaps are count / paper - 1 against Brainformer-2: 100M32E 3.33B / 266M, "
        "1B64E 52B / 1.31B. glu = gated ReLU or GeLU, plain = ReLU or GeLU.")
  sections = (("Fit all four numbers", s["all_four"]),
              ("Fit three: both totals and 1B activated (100M activated missed)",
               s["miss_100m_activated"]),
              ("Fit three: both totals and 100M activated (1B activated missed)",
               s["miss_1b_activated"]),
              ("Agree with the paper's text (d 1024, hidden < 3072, < 4 a, ec c > 1), nearest "
               "to the three reachable numbers", s["text_nearest"]))
  for title, rows in sections:
    print(f"\n{title} (within {TOLERANCE:.0%} unless nearest): {len(rows)}")
    if rows:
      print("  " + HEADER)
      for c in rows:
        print("  " + _row(c))
  print(f"\nChosen ({CHOSEN_ORDER}): " + _row(Candidate(CHOSEN, CHOSEN_D_MODEL,
                                                         gaps(CHOSEN, CHOSEN_D_MODEL))))
  for name, scale in SCALES.items():
    total, activated = count_at(CHOSEN, CHOSEN_D_MODEL, scale)
    print(f"  {name}: total {total / 1e9:.2f}B, activated {activated / 1e9:.3f}B")


if __name__ == "__main__":
  main()
