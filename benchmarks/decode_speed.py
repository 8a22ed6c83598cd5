"""Decoding speed of the causal zoo families side by side: new tokens per second.

  .venv/bin/python -m benchmarks.decode_speed [--size mini] [--new_tokens 32] [--repeats 2]

For each model (dense, GLaM, Brainformer-1 causal, Primer at --size), batch (1, 16) and mode
(greedy, beam 4), `evaluation.generate.Generator` decodes --new_tokens tokens after a 16-token
prompt per row; the time of --repeats calls after one warm-up call gives new tokens/s (beam:
tokens of the returned best beam; its time also covers the 16 forced prompt steps, see
evaluation/generate.py). Weights are freshly initialised (speed does not depend on
them; nothing is trained). The fp32 matmul peak (oneDNN default) and the CPU flags are
measured and recorded in the same run: compare ratios, not absolute numbers, across machines.
Writes benchmarks/results/decode_speed.json and prints the table.
"""

import argparse
import tempfile
import time

from benchmarks import common
from benchmarks import peak
from brainformer_tf.evaluation import checkpoint
from brainformer_tf.evaluation import generate
from brainformer_tf.evaluation import leakfree

FAMILIES = ("dense", "glam", "brainformer1_causal", "primer")
MODES = {"greedy": dict(), "beam4": dict(beam_size=4, alpha=0.6)}
PROMPT_TOKENS = 16


def time_decode(model_dir, batch, mode, new_tokens, repeats):
  """New tokens per second of `repeats` decodes of `batch` prompts (after one warm-up)."""
  settings = generate.Settings(max_new_tokens=new_tokens, **MODES[mode])
  gen = generate.Generator(model_dir, settings, batch=batch,
                           length=PROMPT_TOKENS + new_tokens + 1)
  prompts = [[(7 * row + i) % 500 + 2 for i in range(PROMPT_TOKENS)] for row in range(batch)]
  gen.generate(prompts)
  start, tokens = time.perf_counter(), 0
  for _ in range(repeats):
    tokens += sum(len(out) for out in gen.generate(prompts))
  seconds = time.perf_counter() - start
  gen.close()
  return {"tokens": tokens, "seconds": seconds, "tokens_per_sec": tokens / seconds}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="mini", choices=("tiny", "mini"))
  p.add_argument("--new_tokens", type=int, default=32)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--batches", default="1,16")
  args = p.parse_args()
  result = {"machine": common.machine_info(),
            "matmul_peak": peak.measure(), "size": args.size, "new_tokens": args.new_tokens,
            "prompt_tokens": PROMPT_TOKENS, "rows": []}
  vocab_size = leakfree.vocabulary().vocab_size
  for family in FAMILIES:
    with tempfile.TemporaryDirectory() as model_dir:
      checkpoint.save_initialised(model_dir, [f"models/{family}_{args.size}.gin"], vocab_size,
                                  PROMPT_TOKENS + args.new_tokens + 1)
      for batch in (int(b) for b in args.batches.split(",")):
        for mode in MODES:
          row = dict(model=f"{family}_{args.size}", batch=batch, mode=mode,
                     **time_decode(model_dir, batch, mode, args.new_tokens, args.repeats))
          print(f"{row['model']:26s} batch {batch:3d} {mode:7s} "
                f"{row['tokens_per_sec']:8.1f} new tokens/s", flush=True)
          result["rows"].append(row)
  path = common.write_json("decode_speed.json", result)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
