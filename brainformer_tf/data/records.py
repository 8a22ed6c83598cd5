"""Readers for local dataset files: JSON lines, tsv and question-answer files (either layout).

Every record is parsed by a caller-supplied function; any problem (malformed JSON, a missing
field, a label outside the label set, ...) becomes a `RecordError` naming `file:line`. By default
the first bad record stops the run; with the Gin binding `bad_records.skip = True` bad records are
skipped, counted (`skipped_counts()`) and logged instead. A file or split with no record left is
always an error.

Local files live under the data directory: Gin `data_dir.path`, else $BRAINFORMER_DATA_DIR.
"""

import ast
import collections
import csv
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import gin
import tensorflow as tf

from brainformer_tf.data import text

DATA_DIR_ENV = "BRAINFORMER_DATA_DIR"

# path -> number of records skipped (only with bad_records.skip = True)
_SKIPPED: "collections.Counter[str]" = collections.Counter()


class RecordError(text.CorpusError):
  """A record of a local dataset file is bad; the message starts with `file:line:`."""


@gin.configurable
def data_dir(path: Optional[str] = None) -> str:
  """The folder holding local datasets: Gin `data_dir.path`, else $BRAINFORMER_DATA_DIR."""
  path = path or os.environ.get(DATA_DIR_ENV)
  if not path:
    raise text.CorpusError(
        f"no data directory for local dataset files: set data_dir.path in Gin "
        f"(--gin_param=\"data_dir.path='/path/to/data'\") or {DATA_DIR_ENV} in the environment")
  return path


def local_path(relative: str) -> str:
  """`relative` under data_dir(); a missing file is an error naming the expected path."""
  path = os.path.join(data_dir(), relative)
  if not tf.io.gfile.exists(path):
    raise text.CorpusError(f"local dataset file not found: {path} (expected under the data "
                           f"directory {data_dir()}, see docs/tasks.md)")
  return path


@gin.configurable
def bad_records(skip: bool = False) -> bool:
  """Whether bad records are skipped and counted (True) or stop the run (False, default)."""
  return skip


def skipped_counts() -> Dict[str, int]:
  """Records skipped so far per file (bad_records.skip = True)."""
  return dict(_SKIPPED)


def require(row: Dict[str, Any], name: str):
  """row[name]; a missing field raises KeyError, reported by the reader with file:line."""
  if not isinstance(row, dict):
    raise RecordError(f"expected a JSON object, got {type(row).__name__}")
  if name not in row:
    raise RecordError(f"missing field {name!r}")
  return row[name]


def label_index(value: str, label_classes: Sequence[str]) -> int:
  """The class index of a label name; a label outside the set is a RecordError."""
  if value not in label_classes:
    raise RecordError(f"label {value!r} is not one of {list(label_classes)}")
  return list(label_classes).index(value)


def _read_lines(path: str) -> List[str]:
  """The lines of a UTF-8 file split on "\\n" only (a U+0085 inside a line stays there)."""
  content = text.read_text_file(path)
  lines = content.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_records(path: str, numbered_rows: Iterator[Tuple[int, Any]],
                  parse: Callable[[Any], Sequence[Any]]) -> List[Any]:
  """Applies `parse` (one raw row -> list of examples) to each row, naming file:line on error."""
  examples: List[Any] = []
  skip = bad_records()
  seen = 0
  for line_number, row in numbered_rows:
    seen += 1
    try:
      if isinstance(row, Exception):
        raise row
      examples.extend(parse(row))
    except (RecordError, ValueError, KeyError, TypeError, IndexError,
            SyntaxError, AttributeError) as e:
      message = f"{path}:{line_number}: {_describe(e)}"
      if not skip:
        raise RecordError(message) from None
      if not _SKIPPED[path]:
        logging.warning("skipping bad records (bad_records.skip = True); first: %s", message)
      _SKIPPED[path] += 1
  if not examples:
    what = "is empty" if not seen else f"has no usable record ({_SKIPPED[path]} skipped)"
    raise RecordError(f"{path}:{max(seen, 1)}: {what} (empty split)")
  if _SKIPPED[path]:
    logging.warning("%s: skipped %d bad records", path, _SKIPPED[path])
  return examples


def _describe(e: Exception) -> str:
  if isinstance(e, json.JSONDecodeError):
    return f"malformed JSON line ({e.msg} at column {e.colno})"
  if isinstance(e, KeyError):
    return f"missing field {e}"
  return str(e)


def _json_rows(lines: Sequence[str]) -> Iterator[Tuple[int, Any]]:
  for n, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      yield n, json.loads(line)
    except json.JSONDecodeError as e:
      yield n, e


def read_jsonl(path: str, parse: Callable[[Dict[str, Any]], Sequence[Any]]) -> List[Any]:
  """Parses a JSON-lines file (blank lines ignored) with `parse(row) -> [example, ...]`."""
  return parse_records(path, _json_rows(_read_lines(path)), parse)


def read_tsv(path: str, parse: Callable[[Dict[str, str]], Sequence[Any]],
             fieldnames: Optional[Sequence[str]] = None) -> List[Any]:
  """Parses a GLUE-style tsv (no quoting; a header row unless `fieldnames` is given)."""
  lines = _read_lines(path)
  rows = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
  first = 1
  if fieldnames is None:
    header = next(rows, None)
    if header is None:
      raise RecordError(f"{path}:1: is empty (no header row; empty split)")
    fieldnames, first = header, 2

  def numbered():
    for n, values in enumerate(rows, start=first):
      if not any(v.strip() for v in values):
        continue
      if len(values) != len(fieldnames):
        yield n, RecordError(f"expected {len(fieldnames)} tab-separated columns "
                             f"({', '.join(fieldnames)}), found {len(values)}")
      else:
        yield n, dict(zip(fieldnames, values))
  return parse_records(path, numbered(), parse)


def parse_answer_list(value: str) -> List[str]:
  """A Python/JSON list of answer strings, as in the DPR "question<TAB>answers" files."""
  answers = ast.literal_eval(value)
  if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
    raise RecordError(f"answers must be a list of strings, got {value[:80]!r}")
  if not answers:
    raise RecordError("empty answer list")
  return answers


def csv_unquote(field: str) -> str:
  """Removes CSV quoting (a field in quotes, inner quotes doubled), repeatedly.

  The DPR/anserini topic files quote some fields twice.

  Only a field that is entirely one valid quoted CSV field is unquoted.
  """
  while len(field) >= 2 and field[0] == field[-1] == '"' and '"' not in field[1:-1].replace(
      '""', ""):
    field = field[1:-1].replace('""', '"')
  return field


def _question_answers_json_row(row):
  """{"question": str, "answer" (or "answers"): [str, ...]} -> [{"question", "answers"}]."""
  key = "answers" if isinstance(row, dict) and "answer" not in row and "answers" in row else "answer"
  answers = require(row, key)
  if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
    raise RecordError(f"{key!r} must be a non-empty list of strings, got {answers!r}")
  question = require(row, "question")
  if not isinstance(question, str):
    raise RecordError(f"'question' must be a string, got {question!r}")
  return [{"question": question, "answers": answers}]


def _question_answers_tsv_row(row):
  question, answers = (csv_unquote(f) for f in row)
  return [{"question": question, "answers": parse_answer_list(answers)}]


def _tsv_pairs(lines: Sequence[str]) -> Iterator[Tuple[int, Any]]:
  for n, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    parts = line.split("\t")
    yield n, (tuple(parts) if len(parts) == 2 else RecordError(
        f"expected 'question<TAB>answer list' or a JSON object, found {len(parts)} "
        "tab-separated fields"))


def read_question_answers(path: str) -> List[Dict[str, Any]]:
  """A question-answering file in either layout public copies use -> [{"question", "answers"}].

  The first non-blank line decides:
    JSON lines  {"question": str, "answer": [str, ...]}: NQ-open, and the DPR topic files as
                pyserini distributes some of them (squad, WebQuestions `topics.dpr.wq.*.txt`);
    TSV lines   question<TAB>['answer', ...]: the DPR topic files for NQ and TriviaQA. Lines
                split on "\\n" only (questions may hold U+0085); fields CSV-quoted where they
                contain quotes (see `csv_unquote`).
  """
  lines = _read_lines(path)
  first = next((line for line in lines if line.strip()), "")
  if first.lstrip().startswith("{"):
    return parse_records(path, _json_rows(lines), _question_answers_json_row)
  return parse_records(path, _tsv_pairs(lines), _question_answers_tsv_row)
