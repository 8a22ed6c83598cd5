"""LM tasks yield tokenized examples whose decoded text is the source text."""

import ast
import json
import re
import unicodedata
import zlib

import gin
from pydoc_data import topics
import pytest
import seqio
import tensorflow.compat.v1 as tf

import tasks  # pylint: disable=unused-import  (registers the tasks)
from brainformer_tf.data import default_corpus
from brainformer_tf.data import text
from brainformer_tf.data import vocab


def _reference_paragraphs(raw: str):
  """Independent reading of a text: blank-line separated blocks, whitespace collapsed."""
  blocks = re.split(r"\n\s*\n", raw)
  return [" ".join(b.split()) for b in blocks if b.strip()]


def _decoded_targets(task_name, split, length, limit=None):
  task = seqio.get_mixture_or_task(task_name)
  vocabulary = task.output_features["targets"].vocabulary
  with tf.Graph().as_default():
    ds = task.get_dataset({"targets": length}, split=split, shuffle=False, num_epochs=1)
    if limit:
      ds = ds.take(limit)
    ids = [ex["targets"].tolist() for ex in tfds_numpy(ds)]
  return vocabulary, ids


def tfds_numpy(ds):
  it = tf.data.make_one_shot_iterator(ds).get_next()
  with tf.Session() as session:
    while True:
      try:
        yield session.run(it)
      except tf.errors.OutOfRangeError:
        return


def _nfkc(s):
  return unicodedata.normalize("NFKC", s)


def test_vocabulary_uses_t5_special_ids_and_the_configured_size():
  v = vocab.DEFAULT_VOCABULARY
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  assert v.vocab_size == vocab.DEFAULT_VOCAB_SIZE


def test_default_corpus_validation_examples_decode_to_its_paragraphs():
  expected = []
  for title in sorted(topics.topics):
    if zlib.crc32(title.encode()) % 10 == 0:
      expected.extend(_reference_paragraphs(topics.topics[title]))
  assert len(expected) > 100
  vocabulary, examples = _decoded_targets("default_corpus_lm", "validation", 4096, limit=60)
  for ids, paragraph in zip(examples, expected):
    assert ids[-1] == vocabulary.eos_id
    assert vocabulary.decode(ids[:-1]) == _nfkc(paragraph)


def test_long_paragraphs_are_split_into_pieces_that_fit_the_length(tmp_path):
  words = " ".join(f"word{i}" for i in range(300))
  (tmp_path / "train.txt").write_text(f"short line\n\n{words}\nmore of it\n")
  with _gin_bindings(f"local_text_files.train = ['{tmp_path}/train.txt']"):
    vocabulary, examples = _decoded_targets("local_text_lm", "train", 32)
  assert all(len(ids) <= 32 and ids[-1] == vocabulary.eos_id for ids in examples)
  assert vocabulary.decode(examples[0][:-1]) == "short line"
  rejoined = "".join(vocabulary.decode(ids[:-1]) for ids in examples[1:])
  assert rejoined.replace(" ", "") == (words + " more of it").replace(" ", "")
  assert len(examples) > 3


class _gin_bindings:
  """Parses Gin bindings for the duration of a with-block."""

  def __init__(self, *bindings):
    self.bindings = bindings

  def __enter__(self):
    gin.clear_config()
    gin.parse_config(list(self.bindings))

  def __exit__(self, *exc):
    gin.clear_config()


def test_default_corpus_docstrings_are_cached_under_their_fingerprint(tmp_path, monkeypatch):
  """Read once (json's module docstring among them, found by an independent ast read), then
  from the cache file; a corrupt cache file is rebuilt; a cache folder that cannot be created
  is skipped."""
  monkeypatch.setenv("BRAINFORMER_CACHE_DIR", str(tmp_path))
  default_corpus.docstring_documents.cache_clear()
  try:
    first = default_corpus.docstring_documents()
    with open(json.__file__, encoding="utf-8") as f:
      assert ast.get_docstring(ast.parse(f.read())) in first["json/__init__.py"]
    (cached,) = tmp_path.glob("default_corpus_docstrings_*.json")
    assert default_corpus.fingerprint() in cached.name
    default_corpus.docstring_documents.cache_clear()
    with monkeypatch.context() as m:
      m.setattr(default_corpus, "read_docstring_documents", lambda: pytest.fail("re-read"))
      assert default_corpus.docstring_documents() == first
    cached.write_text("{not json")
    default_corpus.docstring_documents.cache_clear()
    assert default_corpus.docstring_documents() == first
    assert json.loads(cached.read_text()) == first
    # A cache folder that cannot be created (a file in its place): read, nothing written.
    monkeypatch.setenv("BRAINFORMER_CACHE_DIR", str(cached))
    default_corpus.docstring_documents.cache_clear()
    assert default_corpus.docstring_documents() == first
  finally:
    default_corpus.docstring_documents.cache_clear()


def test_local_text_files_from_the_environment(tmp_path, monkeypatch):
  (tmp_path / "a.txt").write_text("Alpha beta gamma.\n\nDelta epsilon.\n")
  monkeypatch.setenv("BRAINFORMER_TEXT_VALIDATION", str(tmp_path / "*.txt"))
  vocabulary, examples = _decoded_targets("local_text_lm", "validation", 64)
  assert [vocabulary.decode(ids[:-1]) for ids in examples] == [
      "Alpha beta gamma.", "Delta epsilon."]


@pytest.mark.parametrize("content,message", [
    (b"\n  \n\n", "text file is empty"),
    (b"good line\nbad \xff byte\n", ":2: not valid UTF-8"),
])
def test_bad_text_files_are_named(tmp_path, content, message):
  path = tmp_path / "corpus.txt"
  path.write_bytes(content)
  with pytest.raises(text.CorpusError, match=re.escape(message)) as info:
    text.file_paragraphs([str(path)])
  assert str(path) in str(info.value)


def test_missing_local_files_are_named(tmp_path):
  with _gin_bindings(f"local_text_files.train = ['{tmp_path}/nope*.txt']"):
    with pytest.raises(text.CorpusError, match="no file matches .*nope"):
      _decoded_targets("local_text_lm", "train", 32)
