"""`brainformer vocab`: trains a SentencePiece vocabulary on text files.

  brainformer vocab --output=my.model --vocab_size=8000 books/*.txt web.txt

The model (unigram, T5 special ids pad=0 eos=1 unk=2, byte fallback) is the kind the tasks use
by default; point every task at it with the Gin binding
`vocabulary_settings.model_file = "my.model"`.
"""

import argparse
import glob
import os

import sentencepiece

from brainformer_tf.config import errors
from brainformer_tf.data import text
from brainformer_tf.data import vocab

PROG = "brainformer vocab"


def _parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
  p.add_argument("files", nargs="+", help="text files or glob patterns to train on")
  p.add_argument("--output", required=True, help="where to write the .model file")
  p.add_argument("--vocab_size", type=int, default=vocab.DEFAULT_VOCAB_SIZE,
                 help=f"number of pieces (default {vocab.DEFAULT_VOCAB_SIZE})")
  return p


def _expand(patterns):
  found = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not matches or not all(os.path.isfile(m) for m in matches):
      raise errors.UsageError(f"no text file matches {pattern!r}")
    found.extend(matches)
  return found


def run(argv) -> int:
  args = _parser().parse_args(argv[1:])
  try:
    if args.vocab_size < 8:
      raise errors.UsageError(f"--vocab_size={args.vocab_size}: must be at least 8")
    files = _expand(args.files)
    path = vocab.train_sentencepiece(args.output, args.vocab_size, files)
  except (errors.UsageError, text.CorpusError, OSError) as e:
    return errors.report(PROG, e)
  except RuntimeError as e:  # sentencepiece's own errors, e.g. a vocab_size too large
    return errors.report(PROG, f"sentencepiece: {e}")
  pieces = sentencepiece.SentencePieceProcessor(model_file=path).get_piece_size()
  short = (f": the text supports no more than that (asked for {args.vocab_size}; "
           "hard_vocab_limit=False)" if pieces < args.vocab_size else "")
  print(f"{PROG}: wrote {path} ({pieces} pieces{short}, trained on {len(files)} files)")
  return 0
