"""Plain text -> paragraphs, the unit of one language-modelling example.

A paragraph is a run of non-empty lines; its lines are joined with single spaces (hard-wrapped
books become one line per paragraph, one-paragraph-per-line files such as WikiText stay as
they are). Paragraphs are what the LM tasks tokenize, split to the sequence length and pack.
"""

import os
from typing import Iterable, Iterator, List, Sequence

import tensorflow as tf


class CorpusError(ValueError):
  """A text source is missing, empty or unreadable; the message names the file."""


def paragraphs(lines: Iterable[str]) -> Iterator[str]:
  """Yields the blank-line separated paragraphs of `lines`, each joined into one line."""
  current: List[str] = []
  for line in lines:
    stripped = " ".join(line.split())
    if stripped:
      current.append(stripped)
    elif current:
      yield " ".join(current)
      current = []
  if current:
    yield " ".join(current)


def read_text_file(path: str) -> str:
  """Reads a UTF-8 text file; the error names the file and the line that is not UTF-8."""
  if not tf.io.gfile.exists(path):
    raise CorpusError(f"text file not found: {path}")
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise CorpusError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None


def file_paragraphs(paths: Sequence[str]) -> List[str]:
  """All paragraphs of the given files, in order; rejects missing and empty files."""
  if not paths:
    raise CorpusError("no text files were given")
  result: List[str] = []
  for path in paths:
    found = list(paragraphs(read_text_file(os.fspath(path)).splitlines()))
    if not found:
      raise CorpusError(f"text file is empty (no non-blank line): {path}")
    result.extend(found)
  return result
