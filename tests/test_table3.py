"""benchmarks.table3's bookkeeping on synthetic runs (numbers worked out by hand)."""

import json
import os

import pytest

from benchmarks import table3


def test_run_order_interleaves_and_gives_each_model_its_seeds():
  order = table3.run_order(["glam", "dense", "brainformer1"])
  # glam and brainformer1 have 3 seeds: all of them first; dense (2 seeds) after
  assert order == [(1, "glam"), (1, "brainformer1"), (2, "brainformer1"), (2, "glam"),
                   (3, "glam"), (3, "brainformer1"), (1, "dense"), (2, "dense")]


def test_interpolation_and_steps_to_loss():
  curve = [{"step": 500, "leak_free": 5.0}, {"step": 1000, "leak_free": 4.0},
           {"step": 2000, "leak_free": 3.5}]
  assert table3.interpolate(curve, 750) == pytest.approx(4.5)
  assert table3.interpolate(curve, 2000) == pytest.approx(3.5)
  assert table3.steps_to_loss(curve, 4.5) == pytest.approx(750)
  assert table3.steps_to_loss(curve, 3.75) == pytest.approx(1500)
  assert table3.steps_to_loss(curve, 3.0) is None


def test_throughput_leaves_out_a_resume_gap():
  records = [{"step": s, "time": 100.0 + s * 0.5, "loss": 1.0} for s in range(0, 50)]
  records += [{"step": s, "time": 1000.0 + s * 0.5, "loss": 1.0} for s in range(50, 100)]
  assert table3.throughput(records) == pytest.approx(2.0)


def _run(model, seed, curve, wiki, lambada, gap=None):
  final = {"wikitext2_test": {"leak_free_log_ppl": wiki, "whole_sequence_log_ppl": wiki + 0.01},
           "lambada": {"leak_free_log_ppl": lambada, "whole_sequence_log_ppl": lambada}}
  if gap is not None:
    for s in final.values():
      s["future_information_gap"] = {"mean": gap, "se": 0.001}
  return {"model": model, "seed": seed, "steps": 2000, "steps_per_sec_loaded": 1.0,
          "validation_curve": [{"step": s, "leak_free": l} for s, l in curve],
          "final": final}


def test_report_means_ratios_and_equal_wallclock(tmp_path):
  runs = [_run("glam", 1, [(1000, 5.0), (2000, 4.0)], 4.0, 4.5),
          _run("glam", 2, [(1000, 5.2), (2000, 4.2)], 4.2, 4.7),
          _run("brainformer1", 1, [(1000, 4.5), (2000, 3.5)], 3.5, 4.0, gap=-0.01),
          _run("brainformer1", 2, [(1000, 4.7), (2000, 3.7)], 3.7, 4.2, gap=-0.03)]
  runs[2]["final"]["wikitext2_test"]["leak_free_log_ppl_by_quarter"] = [5.0, 4.0, 4.0, 4.0]
  runs[3]["final"]["wikitext2_test"]["leak_free_log_ppl_by_quarter"] = [5.0, 3.0, 3.0, 3.0]
  os.makedirs(tmp_path / "runs")
  for r in runs:
    with open(tmp_path / "runs" / f"{r['model']}_s{r['seed']}.json", "w") as f:
      json.dump(r, f)
  with open(tmp_path / "timing.json", "w") as f:
    json.dump({"runs": [{"model": "glam", "steps_per_sec": 4.0},
                        {"model": "brainformer1", "steps_per_sec": 2.0}]}, f)
  data, text = table3.report(str(tmp_path))
  bf, glam = data["table"]["brainformer1"], data["table"]["glam"]
  assert bf["wikitext2_leak_free"]["mean"] == pytest.approx(3.6)
  assert bf["wikitext2_leak_free"]["std"] == pytest.approx(0.1414, abs=1e-4)
  assert bf["future_information_gap"]["wikitext2_test"]["mean"] == pytest.approx(-0.02)
  # GLaM seed 1 ends at 4.0: BF-1 seed 1 gets there at 1500 of 2000 steps (4.5 -> 3.5)
  assert bf["steps_to_glam_final_loss"] == pytest.approx([0.75, 0.75])
  assert bf["steps_per_sec_over_glam"] == pytest.approx(0.5)
  # equal wall-clock: GLaM's 2000 steps take 500 s; BF-1 reaches step 1000 by then
  assert data["equal_wallclock_s"] == pytest.approx(500)
  assert bf["equal_wallclock"]["step"] == pytest.approx(1000)
  assert bf["equal_wallclock"]["wikitext2_leak_free"]["mean"] == pytest.approx(4.6)
  assert "future_information_gap" not in glam
  assert glam["wikitext2_leak_free_q2_q4"] is None      # runs scored before by-quarter losses
  assert bf["wikitext2_leak_free_q2_q4"]["mean"] == pytest.approx(3.5)
  assert "brainformer1" in text and (tmp_path / "table3_validation.png").exists()
  assert "| 0.500 | 4.600 +- 0.141 (1000) |" in text   # BF-1 seeds at step 1000: 4.5, 4.7
