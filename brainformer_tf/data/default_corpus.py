"""The embedded default corpus: English documentation text that ships with CPython itself.

Two sources, both part of every CPython install, so the corpus exists on a fresh machine with no
download and no ../shared:
  * `pydoc_data.topics`: the language reference topics behind `help()` (79 documents, ~465K
    characters), and
  * the docstrings (at least 200 characters long) of the standard library's Python modules,
    read with `ast` without importing anything (~560 modules, ~1.1M characters; test suites,
    idlelib, tkinter, lib2to3 and site-packages are left out).
Together about 400K SentencePiece tokens: enough for tiny and mini models to train for a few
hundred steps without repeating the data many times. The exact text follows the Python patch
version; caches (vocabularies) are keyed by content.

Reading the docstrings parses every module (seconds of CPU, paid by every training, validation
and scoring process), so the result is cached in `config.paths.cache_dir()` under the corpus
fingerprint below: the same fingerprint means the same text, and a cache that cannot be read
or written is rebuilt or skipped.

Split: a document (a topic, or a module's docstrings) goes to validation when crc32 of its name
(the topic title, or the module path relative to the stdlib folder) % 10 == 0, else to train.
Splitting by document keeps near-duplicate neighbouring paragraphs out of validation.
"""

import ast
import functools
import hashlib
import json
import os
import platform
import sysconfig
from typing import Dict, List, Tuple
import zlib

try:
  from pydoc_data import topics
except ImportError:  # some distributions package it separately
  topics = None

from brainformer_tf import atomic
from brainformer_tf.config import paths
from brainformer_tf.data import text

SPLITS = ("train", "validation")
_LAYOUT_VERSION = 2  # bump when the reading or splitting rules change
_SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
                 "turtledemo", "tkinter", "ensurepip", "__pycache__"}
_MIN_DOCSTRING_CHARS = 200


def topic_documents() -> Dict[str, str]:
  """Title -> text of the language reference topics."""
  if topics is None:
    raise text.CorpusError(
        "the embedded default corpus needs the standard-library module pydoc_data, which this "
        "Python install lacks (some distributions package it separately)")
  return dict(topics.topics)


def _module_docstrings(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return ""
  docs = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node)
      if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
        docs.append(doc)
  return "\n\n".join(docs)


def _stdlib_modules() -> List[Tuple[str, str]]:
  """(relative '/'-separated name, path) of the stdlib .py files the corpus reads, sorted."""
  stdlib = sysconfig.get_paths()["stdlib"]
  modules = []
  for root, dirs, files in os.walk(stdlib):
    dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        modules.append((os.path.relpath(path, stdlib).replace(os.sep, "/"), path))
  return modules


def read_docstring_documents() -> Dict[str, str]:
  """Stdlib module path (relative, '/'-separated) -> its long docstrings, blank-line joined."""
  result = {}
  for name, path in _stdlib_modules():
    docs = _module_docstrings(path)
    if docs:
      result[name] = docs
  return result


@functools.lru_cache(maxsize=None)
def docstring_documents() -> Dict[str, str]:
  """read_docstring_documents(), through the cache file of this fingerprint."""
  path = None
  try:  # cache_dir() creates the folder: a read-only home must not stop the corpus
    path = os.path.join(paths.cache_dir(), f"default_corpus_docstrings_{fingerprint()}.json")
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    pass
  result = read_docstring_documents()
  if path:
    try:
      atomic.write_json(path, result)
    except OSError:
      pass  # a read-only cache: the next process reads the modules again
  return result


@functools.lru_cache(maxsize=None)
def fingerprint() -> str:
  """A cheap identity of the corpus text (for cache keys) without reading the corpus.

  Hashes the corpus layout version, the Python version, the topics' titles and lengths and the
  names and sizes of the stdlib files read: the same fingerprint means the same text.
  """
  digest = hashlib.sha256(f"{_LAYOUT_VERSION} {platform.python_version()}".encode())
  for title, body in sorted(topic_documents().items()):
    digest.update(f"{title}:{len(body)}\n".encode())
  for name, path in _stdlib_modules():
    digest.update(f"{name}:{os.path.getsize(path)}\n".encode())
  return digest.hexdigest()[:12]


def split_of(name: str) -> str:
  return "validation" if zlib.crc32(name.encode("utf-8")) % 10 == 0 else "train"


@functools.lru_cache(maxsize=None)
def split_paragraphs(split: str) -> Tuple[str, ...]:
  """The paragraphs of one split in a fixed order: topics (sorted), then modules (sorted)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} of the default corpus; it has {SPLITS}")
  result: List[str] = []
  for docs in (topic_documents(), docstring_documents()):
    for name in sorted(docs):
      if split_of(name) == split:
        result.extend(text.paragraphs(docs[name].splitlines()))
  return tuple(result)
