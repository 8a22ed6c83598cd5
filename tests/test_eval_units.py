"""Evaluation pieces without a model: metrics (hand-computed), prompts, rank features, tables,
the files an evaluation run writes."""

import json

import numpy as np
import pytest
import seqio
from t5.data import glue_utils
import tensorflow.compat.v1 as tf
from tensorflow_datasets.text import super_glue

from brainformer_tf.evaluation import classification
from brainformer_tf.evaluation import decode
from brainformer_tf.evaluation import qa
from brainformer_tf.evaluation import rank
from brainformer_tf.evaluation import run_dir
from brainformer_tf.evaluation import tables
import tasks  # pylint: disable=unused-import  (registers the tasks)
from tasks import oneshot


@pytest.mark.parametrize("text, expected", [
    ("The  Eiffel-Tower!", "eiffeltower"),      # lower, punctuation removed inside words
    ("An apple a day", "apple day"),            # articles only as whole words
    ("theater Anthem", "theater anthem"),       # ... not as prefixes
    ("  1,000.5 ", "10005"),
    ("“curly”", "“curly”"),                     # official SQuAD: ASCII punctuation only
    ("A", ""),
])
def test_squad_normalisation(text, expected):
  assert qa.normalize_answer(text) == expected


def test_exact_match_any_gold():
  targets = [["Paris", "paris france"], ["1972"], ["the Beatles"]]
  predictions = ["the Paris.", "December 1972", "Beatles"]
  assert qa.exact_match(targets, predictions) == {"exact_match": pytest.approx(200 / 3)}


def test_f1_and_squad_v2_no_answer():
  # "the cat sat" -> [cat, sat]; gold [cat, sat, on, mat]: P = 1, R = 1/2, F1 = 2/3
  assert qa.f1_score("the cat sat", ["cat sat on the mat"]) == pytest.approx(2 / 3)
  assert qa.f1_score("dog", ["cat sat on the mat", "a dog"]) == 1.0  # best gold
  scores = qa.squad_v2([[], [], ["cat sat on the mat"]], ["", "cat", "the cat sat"])
  assert scores["f1"] == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)
  assert scores["exact_match"] == pytest.approx(100 / 3)


def test_lambada_last_word():
  assert qa.first_word("“dog”, he said") == "dog"
  assert qa.lambada_accuracy([["dog"], ["cat"]], ["dog.", "cats"]) == {"accuracy": 50.0}


def test_cb_macro_f1_and_cola_matthews():
  cb = {}
  for fn in classification.metric_fns("super_glue", "cb"):
    cb.update(fn([0, 1, 2, 0], [0, 1, 1, 2]))
  # class F1: 0 -> P1 R.5 = 2/3; 1 -> P.5 R1 = 2/3; 2 -> 0.  Accuracy 2/4.
  assert cb["mean_3class_f1"] == pytest.approx(100 * 4 / 9)
  assert cb["accuracy"] == 50.0
  (cola,) = classification.metric_fns("glue", "cola")
  # TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
  assert cola([1, 1, 0, 0], [1, 0, 0, 0])["matthews_corrcoef"] == pytest.approx(
      100 * 2 / np.sqrt(12))


def test_oneshot_prompt_format(shared_data, monkeypatch):
  monkeypatch.setenv("BRAINFORMER_DATA_DIR", str(shared_data))
  spec = next(s for s in oneshot.SPECS if s.name == "nq_open")
  evaluated = [{"question": "q one", "answers": ["a1"]}, {"question": "q two", "answers": ["a2"]}]
  pool = [{"question": "demo q", "answers": ["demo a", "other"]}]
  (ex0, ex1) = oneshot.oneshot_examples(spec, evaluated, pool, same_pool=False)
  assert ex0["inputs"] == "Q: demo q\nA: demo a\n\nQ: q one\nA:"
  assert ex1["targets"] == "a2" and ex1["answers"] == ["a2"]
  # The registered task's real prompts end with the open query.
  ds = seqio.get_mixture_or_task("nq_open_oneshot_local").get_dataset(
      {"inputs": 512, "targets": 16}, split="validation", shuffle=False)
  with tf.Session() as session:
    first = session.run(tf.data.make_one_shot_iterator(ds).get_next())
  text = first["inputs_pretokenized"].decode()
  assert text.count("\nA:") == 2 and text.endswith("\nA:") and "\n\nQ: " in text


def test_rank_label_classes_and_features():
  task = type("T", (), {"name": "cb", "postprocessor": glue_utils.get_glue_postprocess_fn(
      super_glue.SuperGlue.builder_configs["cb"])})
  assert rank.label_classes(task) == ["entailment", "contradiction", "neutral"]
  lengths = {"inputs": 5, "targets": 4}
  delimited = rank.candidate_features([[7, 8, 1, 0, 0]], [[3], [4, 5, 6, 9]], lengths, False)
  np.testing.assert_array_equal(delimited["inputs"], [[7, 8, 1, 0, 0], [7, 8, 1, 0, 0]])
  np.testing.assert_array_equal(delimited["targets"], [[3, 1, 0, 0], [4, 5, 6, 1]])
  cont = rank.candidate_features([[7, 8, 9, 1, 0]], [[3], [4, 5]], lengths, True)
  np.testing.assert_array_equal(cont["targets"], [[8, 9, 3, 1], [9, 4, 5, 1]])  # front cut
  assert set(cont) == {"targets"}


def test_strip_inputs_eos():
  example = decode.strip_inputs_eos({"inputs": tf.constant([5, 6, 1, 0]),
                                     "targets": tf.constant([1])})
  with tf.Session() as session:
    out = session.run(example)
  assert out["inputs"].tolist() == [5, 6, 0, 0] and out["targets"].tolist() == [1]


def test_tables_paper_layout():
  runs = {"A": {"super_glue_cb_local": {"mean_3class_f1": 40.0, "accuracy": 50.0},
                "super_glue_rte_local": {"accuracy": 60.0}},
          "B": {"super_glue_rte_local": {"accuracy": 55.0}}}
  assert tables.table4(runs) == ("| model | CB | RTE | Avg |\n|---|---|---|---|\n"
                                 "| A | 50.0 / 40.0 | 60.0 | 55.0 |\n| B | - | 55.0 | 55.0 |")
  one = {"A": {"nq_open_oneshot_local": {"exact_match": 1.25},
               "squad_open_oneshot_local": {"exact_match": 0.0}}}
  assert tables.table5(one) == ("| model | NQ (exact_match) | SQuAD-open (exact_match) |\n"
                                "|---|---|---|\n| A | 1.2 | 0.0 |")


def test_run_dir_files_hold_plain_json_of_numpy_values(tmp_path):
  out = str(tmp_path / "eval")
  records = [{"prediction": np.int64(2), "score": np.float32(0.5)}, {"prediction": "entailment"},
             {"ids": np.array([3, 1, 4], np.int32)}]   # decode records hold token id arrays
  run_dir.write_predictions(out, "cb", "rank", records)
  run_dir.write_config(out, "cb", "a = 1\n")
  run_dir.write_scores(out, {"step": np.int64(5),
                            "scores": {"cb": {"rank": {"accuracy": np.float64(75.0)}}}})
  lines = (tmp_path / "eval" / "cb.rank.predictions.jsonl").read_text().splitlines()
  assert [json.loads(l) for l in lines] == [
      {"prediction": 2, "score": 0.5}, {"prediction": "entailment"}, {"ids": [3, 1, 4]}]
  assert (tmp_path / "eval" / "operative_config.cb.gin").read_text() == "a = 1\n"
  assert run_dir.read_scores(out) == {"step": 5, "scores": {"cb": {"rank": {"accuracy": 75.0}}}}
