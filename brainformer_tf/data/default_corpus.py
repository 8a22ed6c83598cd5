"""The embedded default corpus: the Python language reference topics that ship with CPython.

`pydoc_data.topics` is part of the standard library of every CPython install (it backs
`help()`), so it exists on a fresh machine with no download and no ../shared. It holds 79
documents, about 465K characters of English prose with code samples: enough to train and
validate a tiny language model and a few-thousand-piece SentencePiece vocabulary.

Split: a document goes to validation when crc32(its title) % 10 == 0, else to train. Splitting
by document (not by paragraph) keeps near-duplicate neighbouring paragraphs out of validation.
"""

import zlib
from typing import Dict, List

from brainformer_tf.data import text

SPLITS = ("train", "validation")
NAME = "pydoc_topics"


def documents() -> Dict[str, str]:
  """Title -> text of every document in the corpus."""
  try:
    from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise text.CorpusError(
        "the embedded default corpus needs the standard-library module pydoc_data, which this "
        "Python install lacks (some distributions package it separately)") from e
  return dict(topics.topics)


def split_of(title: str) -> str:
  return "validation" if zlib.crc32(title.encode("utf-8")) % 10 == 0 else "train"


def split_paragraphs(split: str) -> List[str]:
  """The paragraphs of one split, in a fixed order (sorted titles, then document order)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} of the default corpus; it has {SPLITS}")
  docs = documents()
  result: List[str] = []
  for title in sorted(docs):
    if split_of(title) == split:
      result.extend(text.paragraphs(docs[title].splitlines()))
  return result
