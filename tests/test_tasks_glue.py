"""GLUE/SuperGLUE tasks: the text of known records, read independently, and bad input."""

import json
import re

import gin
import pytest
import seqio

import tasks  # pylint: disable=unused-import  (registers the tasks)
from brainformer_tf.data import records
from harness import task_examples


def texts(examples):
  return [(ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode())
          for ex in examples]


@pytest.fixture
def data_dir(shared_data, monkeypatch):
  monkeypatch.setenv(records.DATA_DIR_ENV, str(shared_data))
  return shared_data


def jsonl(path, limit):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line, _ in zip(f, range(limit))]


def test_cb_boolq_rte_axb_text_matches_the_records(data_dir):
  cases = {
      ("super_glue_cb_local", "validation", "CB/val.jsonl"):
          lambda r: (f"cb hypothesis: {r['hypothesis']} premise: {r['premise']}", r["label"]),
      ("super_glue_boolq_local", "validation", "BoolQ/val.jsonl"):
          lambda r: (f"boolq passage: {r['passage']} question: {r['question']}",
                     str(r["label"])),
      ("super_glue_rte_local", "train", "RTE/train.jsonl"):
          lambda r: (f"rte hypothesis: {r['hypothesis']} premise: {r['premise']}", r["label"]),
      ("super_glue_axb_local", "test", "AX-b/AX-b.jsonl"):
          lambda r: (f"rte sentence1: {r['sentence1']} sentence2: {r['sentence2']}", r["label"]),
      ("super_glue_wic_local", "validation", "WiC/val.jsonl"):
          lambda r: (f"wic sentence1: {r['sentence1']} sentence2: {r['sentence2']} "
                     f"word: {r['word']}", str(r["label"])),
      ("super_glue_copa_local", "validation", "COPA/val.jsonl"):
          lambda r: (f"copa choice1: {r['choice1']} choice2: {r['choice2']} premise: "
                     f"{r['premise']} question: {r['question']}", f"choice{r['label'] + 1}"),
  }
  for (name, split, file), expected in cases.items():
    rows = jsonl(data_dir / "superglue" / file, 3)
    assert texts(task_examples(name, split, 3)) == [expected(r) for r in rows], name


def test_multirc_one_example_per_answer_option(data_dir):
  row = jsonl(data_dir / "superglue/MultiRC/val.jsonl", 1)[0]
  paragraph = re.sub("<b>|</b>", "", row["passage"]["text"].replace("<br>", " "))
  question = row["passage"]["questions"][0]
  expected = [(f"multirc question: {question['question']} answer: {a['text']} "
               f"paragraph: {paragraph}", str(bool(a["label"]))) for a in question["answers"]]
  got = task_examples("super_glue_multirc_local", "validation", len(expected))
  assert texts(got) == expected
  assert [int(ex["idx/answer"]) for ex in got] == [a["idx"] for a in question["answers"]]


def test_wsc_marks_both_spans(data_dir):
  rows = jsonl(data_dir / "superglue/WSC/val.jsonl", 3)
  for row, (inputs, target) in zip(rows, texts(task_examples("super_glue_wsc_local",
                                                             "validation", 3))):
    assert inputs.startswith("wsc text: ")
    assert f"* {row['target']['span1_text']} *" in inputs
    assert f"# {row['target']['span2_text']} #" in inputs
    assert target == str(row["label"])


def test_unlabelled_test_split_gets_the_unknown_target(data_dir):
  row = jsonl(data_dir / "superglue/CB/test.jsonl", 1)[0]
  assert "label" not in row
  assert texts(task_examples("super_glue_cb_local", "test", 1)) == [
      (f"cb hypothesis: {row['hypothesis']} premise: {row['premise']}", "<unk>")]


def test_tokens_decode_to_the_text(data_dir):
  (ex,) = task_examples("super_glue_cb_local", "validation", 1, {"inputs": 512, "targets": 8})
  vocabulary = seqio.get_mixture_or_task("super_glue_cb_local").output_features[
      "inputs"].vocabulary
  assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
  assert vocabulary.decode(ex["targets"][:-1].tolist()) == ex["targets_pretokenized"].decode()
  assert len(ex["inputs"]) > 20


# --------------------------------------------------------- GLUE tsv files in the official layout

GLUE_FILES = {
    "CoLA/dev.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n"
                    "gj04\t0\t*\tOne more pseudo generalization and I'm giving up.\n",
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming journey . \t1\nunfunny . \t0\n",
    "MRPC/dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                    "1\t1355540\t1355592\tHe said the foodservice pie.\tThe foodservice pie, he said.\n",
    "QQP/dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                   "201359\t303345\t303346\tWhy are African-Americans so beautiful?\t"
                   "Why are hispanics so beautiful?\t0\n",
    "MNLI/dev_matched.tsv":
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t"
        "The new rights are nice enough\tEveryone really likes the newest benefits \t"
        "neutral\tneutral\n",
    "QNLI/dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\t"
                    "The treaty came into force.\tentailment\n",
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\t"
                   "Christopher Reeve had an accident.\tnot_entailment\n",
    "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair. "
                    "It has to be cleaned.\tThe hair has to be cleaned.\t0\n",
    "SST-2/test.tsv": "index\tsentence\n0\tuneasy mishmash of styles . \n",
}


@pytest.fixture
def glue_dir(tmp_path, monkeypatch):
  for relative, content in GLUE_FILES.items():
    path = tmp_path / "glue" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  return tmp_path


def test_glue_tsv_files_give_t5_glue_text(glue_dir):
  del glue_dir
  expected = {
      "glue_cola_local": [("cola sentence: Our friends won't buy this analysis.", "acceptable"),
                          ("cola sentence: One more pseudo generalization and I'm giving up.",
                           "unacceptable")],
      "glue_sst2_local": [("sst2 sentence: it 's a charming journey . ", "positive"),
                          ("sst2 sentence: unfunny . ", "negative")],
      "glue_mrpc_local": [("mrpc sentence1: He said the foodservice pie. sentence2: The "
                           "foodservice pie, he said.", "equivalent")],
      "glue_qqp_local": [("qqp question1: Why are African-Americans so beautiful? question2: "
                          "Why are hispanics so beautiful?", "not_duplicate")],
      "glue_mnli_local": [("mnli hypothesis: Everyone really likes the newest benefits  "
                           "premise: The new rights are nice enough", "neutral")],
      "glue_qnli_local": [("qnli question: What came into force? sentence: The treaty came "
                           "into force.", "entailment")],
      "glue_rte_local": [("rte sentence1: Dana Reeve died. sentence2: Christopher Reeve had an "
                          "accident.", "not_entailment")],
      "glue_wnli_local": [("wnli sentence1: The drain is clogged with hair. It has to be "
                           "cleaned. sentence2: The hair has to be cleaned.", "not_entailment")],
  }
  for name, pairs in expected.items():
    assert texts(task_examples(name, "validation", 5)) == pairs, name
  assert texts(task_examples("glue_sst2_local", "test", 5)) == [
      ("sst2 sentence: uneasy mishmash of styles . ", "<unk>")]


# ------------------------------------------------------------------------------------ bad input

def _write(tmp_path, relative, content):
  path = tmp_path / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(content, encoding="utf-8")
  return path


GOOD_CB = '{"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0}\n'


@pytest.mark.parametrize("bad_line,message", [
    ('{"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 1}',
     "label 'maybe' is not one of"),
    ('{"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 1',
     "malformed JSON line"),
    ('{"premise": "p", "label": "neutral", "idx": 1}', "missing field 'hypothesis'"),
])
def test_bad_jsonl_record_names_file_and_line(tmp_path, monkeypatch, bad_line, message):
  path = _write(tmp_path, "superglue/CB/val.jsonl", GOOD_CB + GOOD_CB + bad_line + "\n")
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  with pytest.raises(records.RecordError, match=re.escape(f"{path}:3: ") + ".*" +
                     re.escape(message)):
    task_examples("super_glue_cb_local", "validation", 5)


def test_bad_tsv_label_and_empty_split(glue_dir):
  _write(glue_dir, "glue/SST-2/dev.tsv", "sentence\tlabel\ngood . \t1\nodd . \t7\n")
  with pytest.raises(records.RecordError, match=re.escape(
      f"{glue_dir}/glue/SST-2/dev.tsv:3: label '7' is not one of")):
    task_examples("glue_sst2_local", "validation", 5)
  _write(glue_dir, "glue/QNLI/dev.tsv", "index\tquestion\tsentence\tlabel\n")
  with pytest.raises(records.RecordError, match=re.escape(
      f"{glue_dir}/glue/QNLI/dev.tsv:1: is empty")):
    task_examples("glue_qnli_local", "validation", 5)


def test_skip_policy_skips_and_counts_bad_records(tmp_path, monkeypatch):
  path = _write(tmp_path, "superglue/CB/val.jsonl",
                GOOD_CB + "{broken\n" + GOOD_CB.replace('"neutral"', '"yes"') + GOOD_CB)
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  gin.parse_config("bad_records.skip = True")
  try:
    got = task_examples("super_glue_cb_local", "validation", 5)
  finally:
    gin.clear_config()
  assert [t for _, t in texts(got)] == ["neutral", "neutral"]
  assert records.skipped_counts()[str(path)] == 2


def test_missing_file_and_missing_data_dir_are_named(tmp_path, monkeypatch):
  monkeypatch.setenv(records.DATA_DIR_ENV, str(tmp_path))
  with pytest.raises(records.text.CorpusError, match=re.escape(
      f"local dataset file not found: {tmp_path}/superglue/BoolQ/train.jsonl")):
    task_examples("super_glue_boolq_local", "train", 1)
  monkeypatch.delenv(records.DATA_DIR_ENV)
  with pytest.raises(records.text.CorpusError, match="BRAINFORMER_DATA_DIR"):
    task_examples("super_glue_boolq_local", "train", 1)


def test_registry_lists_every_task_and_mixture():
  names = seqio.TaskRegistry.names()
  for task in ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "axb", "axg"):
    assert {f"super_glue_{task}_local", f"super_glue_{task}_tfds"} <= names
  for task in ("cola", "mnli", "mrpc", "qnli", "qqp", "sst2", "wnli"):
    assert {f"glue_{task}_local", f"glue_{task}_tfds"} <= names
  table4 = seqio.get_mixture_or_task("table4_11tasks_local")
  assert sorted(t.name for t in table4.tasks) == sorted(
      ["super_glue_boolq_local", "super_glue_cb_local", "glue_cola_local", "glue_mnli_local",
       "glue_mrpc_local", "glue_qnli_local", "glue_qqp_local", "super_glue_rte_local",
       "glue_sst2_local", "super_glue_wic_local", "glue_wnli_local"])
  assert len(seqio.get_mixture_or_task("super_glue_full_tfds").tasks) == 10
