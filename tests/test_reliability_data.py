"""Data faults through the project's readers (brainformer_tf/data/records.py, item 3): each bad
file names file:line; with bad_records.skip the bad lines are skipped and counted."""

import gin
import pytest

from brainformer_tf.data import records
from brainformer_tf.data import text


def parse(row):
  return [{"text": records.require(row, "text")}]


@pytest.mark.parametrize("content, line, why", [
    (b'{"text": "ok"}\n{"text": "cut\n', 2, "malformed JSON"),
    (b'{"text": "ok"}\n{"txt": "wrong field"}\n', 2, "missing field 'text'"),
    (b"", 1, "empty"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, content, line, why):
  path = tmp_path / "data.jsonl"
  path.write_bytes(content)
  with pytest.raises(text.CorpusError, match=rf"{path}:{line}: .*{why}"):
    records.read_jsonl(str(path), parse)


def test_non_utf8_names_the_file(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes('{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"))
  with pytest.raises(text.CorpusError, match=str(path)):
    records.read_jsonl(str(path), parse)


def test_skip_and_count_bad_records(tmp_path):
  path = tmp_path / "mixed.jsonl"
  path.write_text('{"text": "a"}\n{"text": \n{"txt": 1}\n{"text": "b"}\n')
  with gin.unlock_config():
    gin.bind_parameter("bad_records.skip", True)
  try:
    assert records.read_jsonl(str(path), parse) == [{"text": "a"}, {"text": "b"}]
    assert records.skipped_counts()[str(path)] == 2
  finally:
    gin.clear_config()
