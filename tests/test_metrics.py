"""Metric functions on hand-made predictions, with scores worked out by hand."""

import pytest

from brainformer_tf.evaluation import classification
from brainformer_tf.evaluation import qa


@pytest.mark.parametrize("raw,expected", [
    ("The  Eiffel Tower!", "eiffel tower"),        # case, article, punctuation, spaces
    ("an apple, a pear", "apple pear"),
    ("  Theatre  ", "theatre"),                     # "the" inside a word stays
    ("U.S.A.", "usa"),
])
def test_squad_normalisation(raw, expected):
  assert qa.normalize_answer(raw) == expected


def test_exact_match_counts_any_gold_answer():
  targets = [["Denver Broncos", "Broncos"], ["14 December 1972 UTC", "December 1972"],
             ["Paris"], ["Lucy"]]
  predictions = ["the broncos.", "December  1972", "Paris, France", "LUCY"]
  # hits: broncos (2nd gold), December 1972 (2nd gold), miss, hit  -> 3/4
  assert qa.exact_match(targets, predictions) == {"exact_match": 75.0}


def test_squad_v2_f1_partial_overlap_and_no_answer():
  targets = [
      ["the Norman conquest of England"],  # pred "Norman conquest": P=1, R=2/4 -> F1 2/3
      [],                                   # unanswerable, predicted "" -> 1
      [],                                   # unanswerable, predicted text -> 0
      ["Normandy"],                         # predicted "" -> 0
      ["in France", "France"],              # pred "France" -> best 1 (2nd gold)
  ]
  predictions = ["Norman conquest", "", "Rollo", "", "france"]
  scores = qa.squad_v2(targets, predictions)
  assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1 + 0 + 0 + 1) / 5)
  assert scores["exact_match"] == pytest.approx(100 * 2 / 5)


def test_squad_v2_postprocessor_maps_the_no_answer_text_to_empty():
  assert qa.qa_postprocess("Unanswerable.\nQ: next", no_answer_text="unanswerable") == ""
  assert qa.qa_postprocess(" Rollo\n\nQ: x", no_answer_text="unanswerable") == "Rollo"
  assert qa.qa_postprocess(b"x", example={"answers": [b"a", b"b"]}, is_target=True) == ["a", "b"]


def test_lambada_last_word_accuracy():
  targets = [["signs"], ["Shane"], ["dog"], ["Grandmother"]]
  predictions = ["signs.", "shane", "dog and the cat", ""]
  # signs (punctuation stripped) hit; case differs: miss; first word hit; empty: miss
  assert qa.lambada_accuracy(targets, [qa.first_word(p) for p in predictions]) == {
      "accuracy": 50.0}


def test_mismatched_lengths_are_an_error():
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    qa.exact_match([["a"], ["b"]], ["a"])


def test_cola_matthews_correlation():
  # tp=2 tn=1 fp=1 fn=0: (2*1 - 1*0) / sqrt(3*2*1*2) = 2/sqrt(12)
  (metric,) = classification.metric_fns("glue", "cola")
  result = metric([1, 1, 0, 0], [1, 1, 1, 0])
  assert list(result.values())[0] == pytest.approx(100 * 2 / 12 ** 0.5)


def test_mrpc_f1_counts_invalid_predictions_as_wrong():
  f1, accuracy = classification.metric_fns("glue", "mrpc")
  targets, predictions = [1, 1, 0, 0], [1, -1, 0, 1]
  # -1 is flipped to the wrong class (0): tp=1 fn=1 fp=1 -> F1 = 2/(2+1+1) = 0.5
  assert f1(targets, list(predictions)) == {"f1": pytest.approx(50.0)}
  assert accuracy(targets, predictions) == {"accuracy": 50.0}


def test_cb_macro_f1_over_three_classes():
  macro_f1, _ = classification.metric_fns("super_glue", "cb")
  targets, predictions = [0, 0, 1, 2], [0, 1, 1, 2]
  # class 0: P=1 R=1/2 F=2/3; class 1: P=1/2 R=1 F=2/3; class 2: F=1 -> mean 7/9
  assert list(macro_f1(targets, predictions).values())[0] == pytest.approx(100 * 7 / 9)


def test_axb_uses_matthews_and_boolq_accuracy():
  (axb,) = classification.metric_fns("super_glue", "axb")
  assert list(axb([0, 1], [0, 1]).values())[0] == pytest.approx(100.0)
  (boolq,) = classification.metric_fns("super_glue", "boolq")
  assert boolq([1, 0, 1], [1, 1, 1]) == {"accuracy": pytest.approx(200 / 3)}
