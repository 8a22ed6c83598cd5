"""results/summary.json: one entry per performance target of the benchmarks issue.

  .venv/bin/python -m benchmarks.summary              # rebuild from the results JSON files
  .venv/bin/python -m benchmarks.summary --markdown   # print the README tables

Every benchmark calls `update()` when it finishes, so summary.json always reflects the results
files on disk; nothing here measures or hard-codes a number. The CPU kinds here differ (AVX2 vs
AVX-512: matmul peak, oneDNN's kernels), so `update()` first files each performance benchmark's
results under results/by_machine/<kind>/ (common.machine_kind; a run replaces the last one of
its kind only), and every target is judged on each kind measured. Each entry:
  {"target": threshold, "met": bool (on every kind measured), "command": how to rerun,
   "detail": what the value is, "value", "scale", "machine": of the newest measurement,
   "by_machine": {kind: {"value", "met", "scale", "command", "machine"}}}
"machine" = {"cpu", "kind", "cpu_flags", "date_utc", "load_average"}. A target whose benchmark
has not been run is absent.
"""

import argparse
import json
import os

from benchmarks import common

BY_MACHINE = "by_machine"
MFU_TARGET = 0.35


def _load(name):
  path = os.path.join(common.RESULTS, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _entry(value, target, met, command, scale, detail):
  return {"value": value, "target": target, "met": bool(met) if value is not None else False,
          "command": command, "scale": scale, "detail": detail}


def training_targets(data):
  out = {}
  if not data:
    return out
  table, cmd, scale = data["table"], data["command"], data["scale"]
  bf, glam = table.get("brainformer1", {}).get("wallclock"), table.get("glam", {}).get("wallclock")
  if bf and glam:
    out["bf1_lower_val_loss_than_glam_same_wallclock"] = _entry(
        bf["val_loss"], glam["val_loss"], bf["val_loss"] < glam["val_loss"], cmd, scale,
        f"Brainformer-1 mini WikiText-2 test log-perplexity, whole-sequence (not leak-free), "
        f"after {data['budget_s']:g}s (mean of {bf['seeds']} seeds); target = GLaM mini's")
    ratio = bf["steps_per_sec"] / glam["steps_per_sec"]
    out["bf1_steps_per_sec_over_glam"] = _entry(
        ratio, 1.0, ratio >= 1.0, cmd, scale,
        "Brainformer-1 mini steps/s / GLaM mini steps/s (same wall-clock runs, seed means)")
    conv = data.get("convergence_brainformer1_vs_glam", {})
    frac = conv.get("fraction")
    out["bf1_wallclock_to_glam_final_loss"] = _entry(
        frac, 0.5, frac is not None and frac <= 0.5, cmd, scale,
        "fraction of GLaM's wall-clock Brainformer-1 needs to reach GLaM's final (10-step "
        "smoothed) training loss; null = never reached within the budget")
  mfu = {model: row["wallclock"]["mfu"] for model, row in table.items()
         if not model.startswith("_") and "wallclock" in row}
  peak = (f"best-of-N fp32 matmul peak (oneDNN {data['peak_gflops']['mfu_denominator']}, "
          f"{data['peak_gflops'][data['peak_gflops']['mfu_denominator']]:.1f} GFLOP/s)")
  for size, suffix in (("mini", ""), ("small", "_small")):
    bf1, glam = mfu.get("brainformer1" + suffix), mfu.get("glam" + suffix)
    if bf1 and glam:
      out["bf1_mfu_over_glam" + suffix] = _entry(
          bf1 / glam, 1.0, bf1 / glam >= 1.0, cmd, scale,
          f"Brainformer-1 {size} MFU / GLaM {size} MFU = steps/s ratio x FLOPs/token ratio "
          f"({bf1:.1%} / {glam:.1%})")
  for size in ("mini", "small"):
    sized = {m: v for m, v in mfu.items() if m.endswith("_small") == (size == "small")}
    if sized:
      worst = min(sized, key=sized.get)
      out[f"every_{size}_model_mfu"] = _entry(
          sized[worst], MFU_TARGET, sized[worst] >= MFU_TARGET, cmd, scale,
          f"lowest MFU of the {size} models ({worst}; model FLOPs = activated params + "
          f"attention, x tokens/s / {peak}): " + ", ".join(
              f"{m} {v:.1%}" for m, v in sorted(sized.items(), key=lambda kv: kv[1])))
  return out


def overhead_targets(data):
  out = {}
  if not data:
    return out
  rows = data["rows"]
  if rows:
    worst = max(rows, key=lambda r: r["expert_choice_over_dense"])
    out["expert_choice_layer_over_dense_ffn"] = _entry(
        worst["expert_choice_over_dense"], 1.15, worst["expert_choice_over_dense"] <= 1.15,
        data["command"], data["scale"],
        "worst expert-choice / equal-FLOPs dense FFN fwd+bwd time ratio over experts "
        f"{sorted({r['num_experts'] for r in rows})} and group sizes "
        f"{sorted({r['group_size'] for r in rows})} (at {worst['num_experts']} experts, "
        f"group {worst['group_size']})")
  if data["rows"]:
    worst = max(r["expert_choice_over_top2_mesh_tf"] for r in data["rows"])
    out["expert_choice_over_top2_time"] = _entry(
        worst, 1.0, worst <= 1.0, data["command"], data["scale"],
        "worst expert-choice / mesh-tf stock top-2 MoE1D fwd+bwd time at capacity factor 2 "
        "(equal capacity) over all cells; "
        f"vs this project's top-2: {max(r['expert_choice_over_top2_ours'] for r in data['rows']):.3f}")
  return out


def scaling_targets(data):
  out = {}
  if not data:
    return out
  model = data.get("model_experts")
  lo, hi = (data.get("layer_experts") or {}).get("from_to", [8, 64])
  if model and model.get("growth") is not None:
    out["step_time_growth_8_to_64_experts"] = _entry(
        model["growth"], 0.15, model["growth"] < 0.15, data["command"], data["scale"],
        f"Brainformer-1 mini training step time at {hi} experts / at {lo} experts - 1 (fixed "
        f"activated params); layer-only (expert-choice fwd+bwd): "
        f"{data['layer_experts']['growth']:.3f}")
  elif data.get("layer_experts"):
    g = data["layer_experts"]["growth"]
    out["step_time_growth_8_to_64_experts"] = _entry(
        g, 0.15, g < 0.15, data["command"], data["scale"],
        f"expert-choice layer fwd+bwd time at {hi} experts / at {lo} - 1 (fixed activated "
        "params)")
  return out


def peer_targets(data):
  """benchmarks.moe_peer: this project's expert-choice layer vs TF Model Garden's MoeLayer."""
  if not data or not data["rows"]:
    return {}
  worst = max(r["ours_over_peer"] for r in data["rows"])
  load = data["machine"]["load_average"][0]
  return {"expert_choice_over_model_garden_moe": _entry(
      worst, 0.5, worst <= 0.5, data["command"], data["scale"],
      "worst this project's expert-choice MoE / TF Model Garden MoeLayer (experts choose) "
      "fwd+bwd time (same shapes, groups and capacity; separate processes, alternating) over "
      f"experts {sorted({r['num_experts'] for r in data['rows']})} and groups "
      f"{sorted({r['group_size'] for r in data['rows']})}; load average {load:.1f} at start "
      f"on {data['machine']['cores']} cores")}


def table3_targets(data):
  """Leak-free Table 3 (benchmarks.table3): BF-1 vs GLaM at equal tokens and wall-clock, and
  the paper's ordering BF-1 < Search-w-Top2 < GLaM."""
  out = {}
  if not data:
    return out
  table, cmd = data["table"], "python -m benchmarks.table3"
  scale = f"{data['runs']} of 20 runs"
  bf, glam = table.get("brainformer1"), table.get("glam")
  if bf and glam:
    b, g = bf["wikitext2_leak_free"], glam["wikitext2_leak_free"]
    out["bf1_leak_free_below_glam_equal_tokens"] = _entry(
        b["mean"], g["mean"], b["mean"] < g["mean"], cmd, scale,
        f"Brainformer-1 mini leak-free WikiText-2 test log-ppl after 2000 steps, mean of "
        f"{b['n']} seed(s) (std {b['std']:.3f}); target = GLaM mini's ({g['n']} seed(s), std "
        f"{g['std']:.3f})")
    bw, gw = bf.get("equal_wallclock"), glam.get("equal_wallclock")
    if bw and gw and bw["wikitext2_leak_free"] and gw["wikitext2_leak_free"]:
      b, g = bw["wikitext2_leak_free"]["mean"], gw["wikitext2_leak_free"]["mean"]
      out["bf1_leak_free_below_glam_equal_wallclock"] = _entry(
          b, g, b < g, cmd, scale,
          f"leak-free WikiText-2 log-ppl at {data['equal_wallclock_s']:.0f} s of idle-machine "
          "training (interpolated between checkpoints); target = GLaM mini's")
  search = table.get("search_top2")
  if bf and glam and search:
    values = [table[m]["wikitext2_leak_free"]["mean"] for m in ("brainformer1", "search_top2",
                                                                "glam")]
    out["table3_order_bf1_search_glam"] = _entry(
        values[0], values[1], values[0] < values[1] < values[2], cmd, scale,
        "leak-free WikiText-2 log-ppl means BF-1 < Search-w-Top2 < GLaM (paper Table 3): "
        + " / ".join(f"{v:.3f}" for v in values))
  return out


# The performance benchmarks, filed per CPU kind, and the targets read off each.
SOURCES = {"training_efficiency.json": training_targets, "moe_overhead.json": overhead_targets,
           "scaling.json": scaling_targets, "moe_peer.json": peer_targets}


def _kind(m: dict) -> str:
  """A results file's CPU kind: as filed, else from its flags (common.machine_kind)."""
  return m.get("kind") or common.machine_kind(m.get("cpu_flags") or [])


def _machine(data) -> dict:
  m = data.get("machine") or {}
  return {"cpu": m.get("cpu"), "cpu_flags": m.get("cpu_flags"), "kind": _kind(m),
          "date_utc": m.get("date_utc"), "load_average": m.get("load_average")}


def archive():
  """Files each performance benchmark's results under by_machine/<kind>/ (unknown kinds
  excepted), so a run on one kind of CPU does not erase the other kind's."""
  for name in SOURCES:
    data = _load(name)
    kind = _machine(data)["kind"] if data else "other"
    if kind != "other":
      common.write_json(os.path.join(BY_MACHINE, kind, name), data)


def _kinds():
  path = os.path.join(common.RESULTS, BY_MACHINE)
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def build():
  """Every target on every CPU kind filed (and Table 3, whose kind was not recorded)."""
  measured = []  # (entries, machine) per results file
  for kind in _kinds():
    for name, targets in SOURCES.items():
      data = _load(os.path.join(BY_MACHINE, kind, name))
      if data:
        measured.append((targets(data), dict(_machine(data), kind=kind)))
  table3 = _load("table3/table3.json")
  if table3:
    machine = _machine(table3)
    measured.append((table3_targets(table3), dict(
        machine, kind=machine["kind"] if machine["cpu_flags"] else "unrecorded")))
  entries = {}
  for found, machine in measured:
    for name, e in found.items():
      kinds = dict(entries.get(name, {}).get("by_machine", {}))
      kinds[machine["kind"]] = {k: e[k] for k in ("value", "met", "scale", "command", "detail")}
      kinds[machine["kind"]]["machine"] = machine
      newest = max(kinds.values(), key=lambda k: k["machine"]["date_utc"] or "")
      entries[name] = dict(e, **{k: newest[k] for k in ("value", "scale", "command", "detail",
                                                        "machine")},
                           met=all(k["met"] for k in kinds.values()), by_machine=kinds)
  return entries


def update():
  archive()
  entries = build()
  path = common.write_json("summary.json", entries)
  print(f"summary: {sum(e['met'] for e in entries.values())}/{len(entries)} targets met on "
        f"every CPU kind measured -> {path}")
  return entries


def _table(caption, header, rows):
  """Lines of a markdown table under `caption`: header cells, rows of formatted cells."""
  return ([caption + "\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(row) + " |" for row in rows] + [""])


def _kind_tables(load) -> list:
  """Lines of the tables of the performance benchmarks whose results `load(name)` returns."""
  out = []
  te = load("training_efficiency.json")
  if te:
    m = te["machine"]
    out.append(f"Item 1 ({te['scale']} scale: {te['budget_s']:g} s of training per run, seeds "
               f"{te['seeds']}; {_where(m)}, {te['load_average_end'][0]:.1f} at end, "
               f"{m['cores']} cores; "
               f"peak fp32 matmul {te['peak_gflops']['on']:.1f} GFLOP/s oneDNN on, "
               f"{te['peak_gflops']['off']:.1f} off; runs with oneDNN {m['onednn']}):\n")
    out.append("| model | activated params | MFLOPs/token | steps/s | tokens/s | MFU | "
               "val log-ppl, whole-sequence (WikiText-2 test; not leak-free) | seed spread | train loss @ step "
               f"{te['table'].get('_common_step')} |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for model, row in te["table"].items():
      if model.startswith("_") or "wallclock" not in row:
        continue
      w, at = row["wallclock"], row.get("train_loss_at_common_step")
      out.append(f"| {model} | {row['activated_params']:,} | {row['flops_per_token'] / 1e6:.1f} "
                 f"| {w['steps_per_sec']:.3f} | {w['tokens_per_sec']:.0f} | {w['mfu']:.1%} | "
                 f"{w['val_loss']:.3f} | {w['val_loss_spread']:.3f} | "
                 f"{'-' if at is None else f'{at:.3f}'} |")
    out.append("")
  mo = load("moe_overhead.json")
  if mo:
    out += _table(
        f"Item 2 (fwd+bwd / equal-FLOPs dense FFN; {_where(mo['machine'])}):",
        ["experts", "group", "expert choice", "top-2 (ours, gather)", "top-2 (mesh-tf MoE1D)",
         "EC / MoE1D"],
        [[f"{r['num_experts']}", f"{r['group_size']}", f"{r['expert_choice_over_dense']:.2f}",
          f"{r['top2_ours_over_dense']:.2f}", f"{r['top2_mesh_tf_over_dense']:.2f}",
          f"{r['expert_choice_over_top2_mesh_tf']:.2f}"] for r in mo["rows"]])
  sc = load("scaling.json")
  if sc:
    out.append(f"Item 3 ({_where(sc['machine'])}):\n")
    out.append("| experts | EC layer s | MoE1D layer s | Brainformer-1 mini step s |")
    out.append("|---|---|---|---|")
    model = {r["num_experts"]: r["step_s"] for r in sc.get("model_experts", {}).get("rows", [])
             if r["sequences_per_batch"] == 16}
    for r in sc["layer_experts"]["rows"]:
      ms = model.get(r["num_experts"])
      out.append(f"| {r['num_experts']} | {r['expert_choice_s']:.3f} | {r['top2_mesh_tf_s']:.3f} "
                 f"| {'-' if ms is None else f'{ms:.3f}'} |")
    out.append("")
    by_tokens = sc.get("model_experts", {}).get("growth_by_tokens") or {}
    if len(by_tokens) > 1:
      out.append("Brainformer-1 mini step-time growth from the fewest to the most experts, by "
                 "tokens per step: " + ", ".join(f"{t}: {g:+.0%}" for t, g in by_tokens.items())
                 + "\n")
    out.append("| tokens/batch | EC layer s | us/token |")
    out.append("|---|---|---|")
    for r in sc["layer_tokens"]["rows"]:
      out.append(f"| {r['tokens']} | {r['expert_choice_s']:.3f} | {r['us_per_token']:.1f} |")
    out.append("")
  mp = load("moe_peer.json")
  if mp:
    out += _table(
        f"This project's expert-choice MoE vs TF Model Garden's MoeLayer (fwd+bwd s; "
        f"{_where(mp['machine'])}):",
        ["experts", "group", "ours", "peer", "ours / peer", "ours / its dense",
         "peer / its dense"],
        [[f"{r['num_experts']}", f"{r['group_size']}", f"{r['ours_s']:.3f}", f"{r['peer_s']:.3f}",
          f"{r['ours_over_peer']:.2f}", f"{r['ours_over_ours_dense']:.2f}",
          f"{r['peer_over_peer_dense']:.2f}"] for r in mp["rows"]])
  return out


def _where(m: dict) -> str:
  """'<cpu> (<kind>: <flags>), <date>, load <1-min load average> at start'."""
  flags = " ".join(m.get("cpu_flags") or []) or "flags not recorded"
  return (f"{m['cpu']} ({_kind(m)}: {flags}), {m['date_utc']}, load "
          f"{m['load_average'][0]:.1f} at start")


def markdown() -> str:
  """The README tables, rendered from the results filed per CPU kind, then the targets."""
  out = []
  for kind in _kinds():
    out.append(f"**{kind}**\n")
    out += _kind_tables(lambda name, kind=kind: _load(os.path.join(BY_MACHINE, kind, name)))
  entries = build()
  if entries:
    kinds = sorted({k for e in entries.values() for k in e["by_machine"]})
    out.append("| target | threshold | " + " | ".join(kinds) + " | met on every kind |")
    out.append("|---|---|" + "---|" * len(kinds) + "---|")
    for name, e in entries.items():
      cells = []
      for kind in kinds:
        m = e["by_machine"].get(kind)
        value = "-" if m is None else "never" if m["value"] is None else f"{m['value']:.3f}"
        cells.append(value if m is None else
                     f"{value} ({'met' if m['met'] else 'not met'}, {m['scale']})")
      out.append(f"| {name} | {e['target']:.3f} | " + " | ".join(cells) +
                 f" | {'yes' if e['met'] else 'no'} |")
  return "\n".join(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--markdown", action="store_true",
                 help="print the README tables instead of rebuilding summary.json")
  if p.parse_args().markdown:
    print(markdown())
  else:
    update()


if __name__ == "__main__":
  main()
