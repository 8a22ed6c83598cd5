"""One-shot tasks on the real files: prompts rebuilt from records read here, one demonstration."""

import ast
import csv
import json
import re

import gin
import pytest
import seqio

import tasks  # pylint: disable=unused-import  (registers the tasks)
from brainformer_tf.data import records
from brainformer_tf.data import text
from harness import task_examples

N = 6
LENGTHS = {"inputs": 512, "targets": 16}


@pytest.fixture
def data_dir(shared_data, monkeypatch):
  monkeypatch.setenv(records.DATA_DIR_ENV, str(shared_data))
  return shared_data


def _dpr_tsv(path):
  """Reads a DPR topic file with the csv module (quoted fields), splitting on "\\n" only."""
  with open(path, encoding="utf-8", newline="") as f:
    lines = f.read().split("\n")
  out = []
  for row in csv.reader([l for l in lines if l], delimiter="\t"):
    question = row[0]
    if question.startswith('"') and question.endswith('"'):  # quoted a second time
      question = next(csv.reader([question]))[0]
    out.append((question, ast.literal_eval(row[1])))
  return out


def _split_prompt(inputs):
  demo, query = inputs.split("\n\n")
  return demo, query


def _check_qa(examples, evaluated, pool):
  pool_pairs = {(q, a[0]) for q, a in pool}
  for ex, (question, answers) in zip(examples, evaluated):
    inputs = ex["inputs_pretokenized"].decode()
    assert inputs.count("Q: ") == 2 and inputs.count("\nA:") == 2  # one demonstration
    demo, query = _split_prompt(inputs)
    assert query == f"Q: {question}\nA:"
    demo_q, demo_a = re.fullmatch(r"Q: (.*)\nA: (.*)", demo, re.S).groups()
    assert (demo_q, demo_a) in pool_pairs and demo_q != question
    assert ex["targets_pretokenized"].decode() == answers[0]
    assert [a.decode() for a in ex["answers"]] == answers


def test_nq_open_prompts(data_dir):
  with open(data_dir / "nq_open/NQ-open.dev.jsonl", encoding="utf-8") as f:
    evaluated = [(r["question"], r["answer"]) for r in map(json.loads, f)]
  pool = _dpr_tsv(data_dir / "nq_open/topics.dpr.nq.dev.txt")
  _check_qa(task_examples("nq_open_oneshot_local", "validation", N, LENGTHS), evaluated, pool)
  # "train" = the pool, demonstrations from the rest of the pool
  train = task_examples("nq_open_oneshot_local", "train", N, LENGTHS)
  _check_qa(train, pool, pool)


def test_trivia_qa_prompts_and_doubly_quoted_questions(data_dir):
  evaluated = _dpr_tsv(data_dir / "triviaqa/topics.dpr.trivia.test.txt")
  pool = _dpr_tsv(data_dir / "triviaqa/topics.dpr.trivia.dev.txt")
  _check_qa(task_examples("trivia_qa_oneshot_local", "validation", N, LENGTHS), evaluated, pool)
  quoted = [i for i, (q, _) in enumerate(pool[:200]) if '"' in q]
  assert quoted, "expected a question with quotes among the first 200"
  train = task_examples("trivia_qa_oneshot_local", "train", quoted[0] + 1, LENGTHS)
  assert train[quoted[0]]["inputs_pretokenized"].decode().endswith(
      f"Q: {pool[quoted[0]][0]}\nA:")


def test_lambada_demonstration_is_another_passage(data_dir):
  with open(data_dir / "lambada/lambada_openai.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  passages = {r["context"] + " " + r["continuation"]: i for i, r in enumerate(rows)}
  for i, ex in enumerate(task_examples("lambada_oneshot_local", "validation", N, LENGTHS)):
    inputs = ex["inputs_pretokenized"].decode()
    suffix = "\n\n" + rows[i]["context"]
    assert inputs.endswith(suffix)
    demo = inputs[:-len(suffix)]
    assert demo in passages and passages[demo] != i
    assert ex["targets_pretokenized"].decode() == rows[i]["continuation"]


def test_demonstrations_are_deterministic_and_follow_the_seed(data_dir):
  def demos():
    return [ex["inputs_pretokenized"] for ex in
            task_examples("squad_open_oneshot_local", "validation", N, LENGTHS)]
  first, again = demos(), demos()
  gin.parse_config("oneshot_settings.seed = 7")
  try:
    reseeded = demos()
  finally:
    gin.clear_config()
  assert first == again and first != reseeded


def test_long_prompts_keep_the_query(data_dir):
  (ex,) = task_examples("lambada_oneshot_local", "validation", 1, {"inputs": 24, "targets": 8})
  vocabulary = seqio.get_mixture_or_task("lambada_oneshot_local").output_features[
      "inputs"].vocabulary
  assert len(ex["inputs"]) == 24 and ex["inputs"][-1] == 1
  tail = vocabulary.decode(ex["inputs"][:-1].tolist())
  assert ex["inputs_pretokenized"].decode().endswith(tail.strip())


SQUAD_V2 = {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{
    "context": "The Normans were the people who gave their name to Normandy.",
    "qas": [
        {"question": "Who gave their name to Normandy?", "id": "a",
         "answers": [{"text": "The Normans", "answer_start": 0},
                     {"text": "Normans", "answer_start": 4}], "is_impossible": False},
        {"question": "Who gave their name to Paris?", "id": "b", "answers": [],
         "plausible_answers": [{"text": "Normans", "answer_start": 4}],
         "is_impossible": True}]}]}]}


def test_squad_v2_official_json_and_no_answer(tmp_path, monkeypatch):
  for name in ("train-v2.0.json", "dev-v2.0.json"):
    (tmp_path / "squad_v2").mkdir(exist_ok=True)
    (tmp_path / "squad_v2" / name).write_text(json.dumps(SQUAD_V2))
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  answered, impossible = task_examples("squad_v2_oneshot_local", "validation", 2, LENGTHS)
  context = SQUAD_V2["data"][0]["paragraphs"][0]["context"]
  assert answered["inputs_pretokenized"].decode() == (
      f"Background: {context}\nQ: Who gave their name to Paris?\nA: unanswerable\n\n"
      f"Background: {context}\nQ: Who gave their name to Normandy?\nA:")
  assert answered["targets_pretokenized"].decode() == "The Normans"
  assert answered["answers"].tolist() == [b"The Normans", b"Normans"]
  assert impossible["targets_pretokenized"].decode() == "unanswerable"
  assert impossible["answers"].tolist() == []
  task = seqio.get_mixture_or_task("squad_v2_oneshot_local")
  targets = [task.postprocess_fn(None, example=ex, is_target=True)
             for ex in (answered, impossible)]
  predictions = [task.postprocess_fn(p) for p in ("Normans\nQ: more", "Unanswerable")]
  assert task.metric_fns[0](targets, predictions) == {"f1": 100.0, "exact_match": 100.0}


def test_bad_qa_lines_are_named(tmp_path, monkeypatch):
  folder = tmp_path / "nq_open"
  folder.mkdir()
  (folder / "NQ-open.dev.jsonl").write_text(
      '{"question": "q1", "answer": ["a"]}\n{"question": "q2", "answer": []}\n')
  (folder / "topics.dpr.nq.dev.txt").write_text("q3\t['x']\nq4\tnot a list\n")
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  with pytest.raises(records.RecordError, match=re.escape(
      f"{folder}/topics.dpr.nq.dev.txt:2:")):
    task_examples("nq_open_oneshot_local", "validation", 1)
  (folder / "topics.dpr.nq.dev.txt").write_text("q3\t['x']\nq4\t['y']\n")
  with pytest.raises(records.RecordError, match=re.escape(
      f"{folder}/NQ-open.dev.jsonl:2: 'answer' must be a non-empty list")):
    task_examples("nq_open_oneshot_local", "validation", 1)


def test_every_oneshot_task_is_registered():
  names = seqio.TaskRegistry.names()
  for family in ("nq_open", "trivia_qa", "web_questions", "squad_v2", "lambada"):
    assert {f"{family}_oneshot_local", f"{family}_oneshot_tfds"} <= names
  assert "squad_open_oneshot_local" in names


WQ = [("what is the capital of peru?", ["Lima"]),
      ("who wrote \"hamlet\"?", ["William Shakespeare", "Shakespeare"]),
      ("where is the eiffel tower?", ["Paris"]),
      ("what language do they speak in brazil?", ["Portuguese"])]


def _write_jsonl(path, pairs, key="answer"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps({"question": q, key: a}) + "\n" for q, a in pairs))


def _write_tsv(path, pairs):
  path.parent.mkdir(parents=True, exist_ok=True)
  rows = []
  for q, a in pairs:   # DPR quoting: a field with a quote is CSV-quoted
    rows.append(('"' + q.replace('"', '""') + '"' if '"' in q else q) + "\t" + repr(a))
  path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("evaluated_layout,pool_layout", [("jsonl", "tsv"), ("tsv", "jsonl")])
def test_qa_files_are_read_in_either_public_layout(tmp_path, monkeypatch, evaluated_layout,
                                                   pool_layout):
  """WebQuestions topics as pyserini ships them (JSON lines) or question-TAB-list, either file."""
  writers = {"jsonl": _write_jsonl, "tsv": _write_tsv}
  pool = [("who painted the mona lisa?", ["Leonardo da Vinci"]),
          ("how many legs does a spider have?", ["8", "eight"])]
  writers[evaluated_layout](tmp_path / "webquestions/topics.dpr.wq.test.txt", WQ)
  writers[pool_layout](tmp_path / "webquestions/topics.dpr.wq.dev.txt", pool)
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  examples = task_examples("web_questions_oneshot_local", "validation", 10, LENGTHS)
  assert len(examples) == len(WQ)
  _check_qa(examples, WQ, pool)


def test_missing_pool_draws_demonstrations_from_the_evaluated_set(tmp_path, monkeypatch):
  """No dev file next to the test topics: each prompt's demonstration is another evaluated
  record (never itself); split train, which is the pool, names the missing file."""
  _write_jsonl(tmp_path / "webquestions/topics.dpr.wq.test.txt", WQ, key="answers")
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  examples = task_examples("web_questions_oneshot_local", "validation", 10, LENGTHS)
  assert len(examples) == len(WQ)
  _check_qa(examples, WQ, WQ)   # _check_qa also asserts the demonstration is not the record
  with pytest.raises(text.CorpusError, match=re.escape(
      str(tmp_path / "webquestions/topics.dpr.wq.dev.txt"))):
    task_examples("web_questions_oneshot_local", "train", 1, LENGTHS)


def test_override_keys_name_the_evaluated_set_and_the_pool(tmp_path, monkeypatch):
  """The documented override (docs/tasks.md): 'validation' = evaluated set, 'train' = pool;
  an unknown key or family is an error naming it."""
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path / "empty"))
  pool = [("who painted the mona lisa?", ["Leonardo da Vinci"]),
          ("how many legs does a spider have?", ["8", "eight"])]
  _write_jsonl(tmp_path / "d/wq.test.jsonl", WQ)
  _write_tsv(tmp_path / "d/wq.dev.tsv", pool)
  gin.parse_config(
      f"oneshot_local_files.overrides = {{'web_questions': {{'validation': "
      f"'{tmp_path}/d/wq.test.jsonl', 'train': '{tmp_path}/d/wq.dev.tsv'}}}}")
  _check_qa(task_examples("web_questions_oneshot_local", "validation", 10, LENGTHS), WQ, pool)
  train = task_examples("web_questions_oneshot_local", "train", 10, LENGTHS)
  assert len(train) == len(pool)
  _check_qa(train, pool, pool)
  gin.clear_config()
  gin.parse_config("oneshot_local_files.overrides = {'web_questions': {'test': '/x'}}")
  with pytest.raises(text.CorpusError, match=r"overrides\['web_questions'\]: unknown key\(s\) \['test'\]"):
    task_examples("web_questions_oneshot_local", "validation", 1, LENGTHS)
  gin.clear_config()
  gin.parse_config("oneshot_local_files.overrides = {'webquestions': {'train': '/x'}}")
  with pytest.raises(text.CorpusError, match="unknown task family 'webquestions'"):
    task_examples("web_questions_oneshot_local", "validation", 1, LENGTHS)
