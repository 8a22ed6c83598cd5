"""TFDS sources through the real TFDS code path, on tfds.testing.mock_data (no download)."""

import re

import pytest
import tensorflow_datasets as tfds

import tasks  # pylint: disable=unused-import  (registers the tasks)
from brainformer_tf.data import records
from harness import task_examples

LENGTHS = {"inputs": 64, "targets": 16}


@pytest.fixture(autouse=True)
def mock_tfds():
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def test_super_glue_and_glue_from_tfds():
  for name, prefix, labels in [
      ("super_glue_cb_tfds", "cb hypothesis: ", {"entailment", "contradiction", "neutral"}),
      ("glue_mnli_tfds", "mnli hypothesis: ", {"entailment", "neutral", "contradiction"}),
  ]:
    examples = task_examples(name, "validation", 4, LENGTHS)
    assert len(examples) == 4
    for ex in examples:
      inputs = ex["inputs_pretokenized"].decode()
      assert inputs.startswith(prefix) and " premise: " in inputs
      assert ex["targets_pretokenized"].decode() in labels


def test_oneshot_from_tfds_has_one_demonstration_from_the_pool():
  examples = task_examples("nq_open_oneshot_tfds", "validation", 4, LENGTHS)
  assert len(examples) == 4
  for ex in examples:
    inputs = ex["inputs_pretokenized"].decode()
    demo, query = inputs.split("\n\n")
    assert demo.startswith("Q: ") and "\nA: " in demo
    assert query.startswith("Q: ") and query.endswith("\nA:") and demo[:-1] not in query
    if len(ex["answers"]):
      assert ex["targets_pretokenized"] == ex["answers"][0]


def test_bad_tfds_record_is_named_by_split_and_number():
  # some mock LAMBADA passages are one random word: no context to predict the last word from
  with pytest.raises(records.RecordError, match=re.escape("tfds:lambada:1.0.0/test:") +
                     r"\d+: passage has no context before its last word"):
    task_examples("lambada_oneshot_tfds", "validation", 4, LENGTHS)


def test_c4_lm_from_tfds():
  examples = task_examples("c4_lm_tfds", "train", 3, {"targets": 16})
  assert examples and all(ex["targets"][-1] == 1 and len(ex["targets"]) <= 16
                          for ex in examples)
