"""`brainformer decode`: continue prompts with a trained LM (t5_mesh_transformer's infer mode).

  brainformer decode --checkpoint=runs/bf1 --input=prompts.txt --output=out.txt
                     [--max_new_tokens=32] [--temperature=0] [--top_k=0] [--seed=1234]
                     [--beam_size=1] [--alpha=0.6] [--batch_size=8] [--sequence_length=128]
  echo "The history of" | brainformer decode --checkpoint=runs/bf1

One prompt per input line (--input=- or no --input: stdin), one output line per prompt, in
order (--output=- or no --output: stdout; a file is written when all are done, atomically).
A newline inside a continuation is written as the two characters "\\n" (a backslash as "\\\\"),
so lines stay aligned with the prompts. Greedy by default; --temperature > 0 samples (with
--top_k > 0: from the k most likely tokens); --beam_size > 1 runs beam search with length
penalty ((5 + n) / 6) ** alpha (evaluation/generate.py). A prompt longer than
--sequence_length - --max_new_tokens tokens keeps its end (a warning names it). Models whose
routing reads later tokens (plain or capped expert choice) are refused, as in `eval`.
Sampling with the same --seed repeats exactly (PYTHONHASHSEED is set for that: mesh-tf's op
seeds use Python's str hash). Bad input: one line naming it, exit code 2.
"""

import argparse
import os
import sys
import time

from brainformer_tf import atomic
from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.evaluation import generate

PROG = "brainformer decode"


def add_decoding_flags(p):
  """The flags `decode` and `export` share: generate.Settings, the length, the model's Gin."""
  p.add_argument("--max_new_tokens", type=int, default=32)
  p.add_argument("--sequence_length", type=int, default=128, help="prompt + new tokens")
  p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  p.add_argument("--top_k", type=int, default=0, help="sample from the k most likely (0 = all)")
  p.add_argument("--beam_size", type=int, default=1, help="> 1: beam search")
  p.add_argument("--alpha", type=float, default=0.6, help="beam search length penalty")
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--gin_param", action="append", default=[])


def parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="model dir or model.ckpt-N prefix")
  p.add_argument("--input", default="-", help="prompts, one per line (- = stdin)")
  p.add_argument("--output", default="-", help="continuations, one per line (- = stdout)")
  p.add_argument("--seed", type=int, default=1234)
  p.add_argument("--batch_size", type=int, default=8, help="prompts per decoding pass")
  add_decoding_flags(p)
  return p


def escape(text: str) -> str:
  """One line: backslash -> \\\\, newline -> \\n."""
  return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def read_prompts(path: str):
  """The prompt lines of `path` (- = stdin); UsageError if there is none or it is unreadable."""
  if path == "-":
    lines = sys.stdin.read().split("\n")
  else:
    if not os.path.isfile(path):
      raise errors.UsageError(f"--input={path}: not a file")
    try:
      with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    except UnicodeDecodeError as e:
      raise errors.UsageError(f"--input={path}: not valid UTF-8 ({e.reason} at byte "
                              f"{e.start})") from None
  if lines and lines[-1] == "":
    lines.pop()
  if not lines:
    raise errors.UsageError(f"--input={path}: no prompts (empty input)")
  return lines


def _check_output(path):
  if path != "-":
    prepare.check_writable_dir(os.path.dirname(os.path.abspath(path)), "--output")
    if os.path.isdir(path):
      raise errors.UsageError(f"--output={path} is a directory")


def main(args):
  settings = generate.Settings.from_flags(args)
  settings.check(args.sequence_length)
  if args.batch_size < 1:
    raise errors.UsageError(f"--batch_size={args.batch_size}: must be >= 1")
  _check_output(args.output)
  prompts = read_prompts(args.input)
  gen = generate.Generator(args.checkpoint, settings, args.batch_size, args.sequence_length,
                           args.gin_file, args.gin_param)
  ids = []
  for n, line in enumerate(prompts, start=1):
    encoded = list(gen.vocabulary.encode(line))
    fitted = gen.fit(encoded)
    if len(fitted) < len([i for i in encoded if i > generate.EOS]):
      print(f"{PROG}: warning: prompt {n} has {len(encoded)} tokens; kept its last "
            f"{len(fitted)} (--sequence_length {args.sequence_length} - --max_new_tokens "
            f"{args.max_new_tokens})", file=sys.stderr, flush=True)
    ids.append(fitted)
  mode = (f"beam search (beam {settings.beam_size}, alpha {settings.alpha})"
          if settings.beam_size > 1 else
          "greedy" if not settings.temperature else
          f"sampling (temperature {settings.temperature}, top-k {settings.top_k or 'all'}, "
          f"seed {settings.seed})")
  print(f"{PROG}: {gen.prefix} (step {gen.step}), {len(prompts)} prompts, {mode}",
        file=sys.stderr, flush=True)
  out, start, new_tokens = [], time.time(), 0
  for first in range(0, len(ids), args.batch_size):
    got = gen.generate(ids[first:first + args.batch_size])
    new_tokens += sum(len(g) for g in got)
    out += [escape(gen.vocabulary.decode(g)) + "\n" for g in got]
    print(f"  {len(out)}/{len(ids)} prompts, {new_tokens / (time.time() - start):.1f} new "
          "tokens/s", file=sys.stderr, flush=True)
  gen.close()
  if args.output == "-":
    sys.stdout.writelines(out)
    sys.stdout.flush()
  else:
    atomic.write_lines(args.output, out)
    print(f"{PROG}: wrote {args.output}", file=sys.stderr, flush=True)


def run(argv):
  args = parser().parse_args(argv[1:])
  if args.temperature > 0 and os.environ.get("PYTHONHASHSEED", "random") == "random":
    # mesh-tf seeds each random op with Python's str hash: fix its salt, then start again
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, "-m", "brainformer_tf.cli.main", "decode"] +
              argv[1:], env)
  return prepare.run_reporting(PROG, main, args)
