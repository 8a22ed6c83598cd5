"""One-shot generative evaluation tasks (paper Table 5, GLaM conventions).

`<name>_oneshot_local` reads files under the data directory, `<name>_oneshot_tfds` reads TFDS.
Split "validation" is the set the papers report; where a separate demonstration pool exists
there is also a "train" split (the pool, each prompt with a demonstration from the rest of the
pool) for fine-tuning / smoke training.

Each example's inputs are a one-shot prompt: ONE demonstration, drawn deterministically
(`oneshot_settings.seed`, the task name and the example's index) from the pool, never the
evaluated example itself nor a pool record with the same question; then the query:

  QA (NQ, TriviaQA, WebQuestions, SQuAD-open)   "Q: <q>\\nA: <a>\\n\\nQ: <q>\\nA:"
  SQuADv2                                       "Background: <context>\\nQ: <q>\\nA: <a>\\n\\n"
                                                "Background: <context>\\nQ: <q>\\nA:"
  LAMBADA                                       "<context> <last word>\\n\\n<context>"

targets: the first gold answer (SQuADv2 unanswerable: `oneshot_settings.no_answer_text`;
LAMBADA: the last word); feature "answers": every gold answer, which the metrics use.
Prompts longer than the inputs length are cut at the front (the query is kept).
Decodes are cut at the first newline (LAMBADA: first word) before scoring.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Dict, List, Optional

from absl import logging
import gin
import numpy as np
import seqio
from t5.data import preprocessors as t5_preprocessors
import tensorflow as tf

from brainformer_tf.data import records
from brainformer_tf.data import text
from brainformer_tf.evaluation import qa
from tasks import common


@gin.configurable
def oneshot_settings(seed: int = 1234, separator: str = "\n\n",
                     no_answer_text: str = "unanswerable"):
  """Demonstration seed, text between demonstration and query, SQuADv2 no-answer target."""
  return seed, separator, no_answer_text


OVERRIDE_KEYS = ("validation", "train")


@gin.configurable
def oneshot_local_files(overrides: Optional[Dict[str, Dict[str, str]]] = None):
  """Per-task replacement paths for the local files: {task family: {key: path}}, where key
  "validation" is the evaluated set and "train" the demonstration pool, e.g.
  {"web_questions": {"validation": "/x/topics.dpr.wq.test.txt", "train": "/x/wq.dev.tsv"}}.
  An unknown family or key is an error naming it."""
  overrides = overrides or {}
  families = {spec.name for spec in SPECS}
  for family, files in overrides.items():
    if family not in families:
      raise text.CorpusError(f"oneshot_local_files.overrides: unknown task family {family!r}; "
                             f"known: {', '.join(sorted(families))}")
    unknown = set(files) - set(OVERRIDE_KEYS)
    if unknown:
      raise text.CorpusError(
          f"oneshot_local_files.overrides[{family!r}]: unknown key(s) {sorted(unknown)}; "
          "expected 'validation' (the evaluated set) and/or 'train' (the demonstration pool)")
  return overrides


# ------------------------------------------------------------------------------- local readers

def _lambada_row(row):
  context, word = records.require(row, "context"), records.require(row, "continuation")
  if not isinstance(context, str) or not isinstance(word, str) or not word.strip():
    raise records.RecordError("'context' and 'continuation' must be non-empty strings")
  return [{"context": context, "answers": [word.strip()]}]


def read_lambada_jsonl(path):
  """{"context": all but the last word, "continuation": the last word} lines."""
  return records.read_jsonl(path, _lambada_row)


def read_squad_json(path):
  """The official SQuAD (v1.1/v2.0) JSON file; an unanswerable question gets no answers.

  The file is one JSON document, so errors name the JSON path of the bad question.
  """
  try:
    document = json.loads(text.read_text_file(path))
  except json.JSONDecodeError as e:
    raise records.RecordError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
  out, where = [], f"{path}: top level"
  try:
    for i, article in enumerate(document["data"]):
      where = f"{path}: data[{i}]"
      for j, paragraph in enumerate(article["paragraphs"]):
        for k, q in enumerate(paragraph["qas"]):
          where = f"{path}: data[{i}].paragraphs[{j}].qas[{k}]"
          answers = list(dict.fromkeys(a["text"] for a in q.get("answers", [])))
          if not answers and not q.get("is_impossible", False):
            raise records.RecordError("no answers and not marked is_impossible")
          out.append({"context": paragraph["context"], "question": q["question"],
                      "answers": answers})
  except KeyError as e:
    raise records.RecordError(f"{where}: missing field {e}") from None
  except (TypeError, records.RecordError) as e:
    raise records.RecordError(f"{where}: {e}") from None
  if not out:
    raise records.RecordError(f"{path}:1: no questions (empty split)")
  return out


# ------------------------------------------------------------------------------- TFDS converters

def _s(x):
  return tf.compat.as_text(x)


def _dedupe(answers):
  return list(dict.fromkeys(_s(a) for a in answers))


def _tfds_nq(ex):
  return {"question": _s(ex["question"]), "answers": _dedupe(ex["answer"])}


def _tfds_trivia(ex):
  return {"question": _s(ex["question"]),
          "answers": _dedupe(list(ex["answer"]["aliases"]) + [ex["answer"]["value"]])}


def _tfds_webq(ex):
  return {"question": _s(ex["question"]), "answers": _dedupe(ex["answers"])}


def _tfds_squad(ex):
  answers = [] if ex["is_impossible"] else _dedupe(ex["answers"]["text"])
  return {"context": _s(ex["context"]), "question": _s(ex["question"]), "answers": answers}


def _tfds_lambada(ex):
  words = _s(ex["passage"]).rstrip().rsplit(" ", 1)
  if len(words) != 2:
    raise records.RecordError("passage has no context before its last word")
  return {"context": words[0], "answers": [words[1]]}


# ------------------------------------------------------------------------------------- formats

def _qa_prompt(rec, answer):
  return f"Q: {rec['question']}\nA:" + (f" {answer}" if answer is not None else "")


def _squad_prompt(rec, answer):
  return (f"Background: {rec['context']}\nQ: {rec['question']}\nA:" +
          (f" {answer}" if answer is not None else ""))


def _lambada_prompt(rec, answer):
  return rec["context"] + (f" {answer}" if answer is not None else "")


def _target(rec):
  return rec["answers"][0] if rec["answers"] else oneshot_settings()[2]


@dataclasses.dataclass(frozen=True)
class Spec:
  """One one-shot task family."""
  name: str
  prompt: Callable[[Dict[str, Any], Optional[str]], str]
  metric: Callable
  postprocess: Callable
  local_read: Callable[[str], List[Dict[str, Any]]]
  local_eval: str                      # file of the evaluated set, under the data dir
  local_pool: Optional[str] = None     # demonstration pool file (None: the evaluated set)
  tfds_name: Optional[str] = None
  tfds_eval: str = "validation"
  tfds_pool: Optional[str] = None
  tfds_convert: Optional[Callable] = None


def _squad_postprocess(output, example=None, is_target=False):
  return qa.qa_postprocess(output, example, is_target, no_answer_text=oneshot_settings()[2])


_QA = dict(prompt=_qa_prompt, metric=qa.exact_match, postprocess=qa.qa_postprocess)
SPECS = (
    Spec("nq_open", local_read=records.read_question_answers,
         local_eval="nq_open/NQ-open.dev.jsonl", local_pool="nq_open/topics.dpr.nq.dev.txt",
         tfds_name="natural_questions_open:1.0.0", tfds_pool="train", tfds_convert=_tfds_nq,
         **_QA),
    Spec("trivia_qa", local_read=records.read_question_answers,
         local_eval="triviaqa/topics.dpr.trivia.test.txt",
         local_pool="triviaqa/topics.dpr.trivia.dev.txt",
         tfds_name="trivia_qa/unfiltered.nocontext:1.1.0", tfds_pool="train",
         tfds_convert=_tfds_trivia, **_QA),
    Spec("web_questions", local_read=records.read_question_answers,
         local_eval="webquestions/topics.dpr.wq.test.txt",
         local_pool="webquestions/topics.dpr.wq.dev.txt",
         tfds_name="web_questions:1.0.0", tfds_eval="test", tfds_pool="train",
         tfds_convert=_tfds_webq, **_QA),
    Spec("squad_v2", prompt=_squad_prompt, metric=qa.squad_v2, postprocess=_squad_postprocess,
         local_read=read_squad_json, local_eval="squad_v2/dev-v2.0.json",
         local_pool="squad_v2/train-v2.0.json", tfds_name="squad/v2.0:3.0.0",
         tfds_pool="train", tfds_convert=_tfds_squad),
    Spec("squad_open", local_read=records.read_question_answers,
         local_eval="squad_open/topics.dpr.squad.test.txt", **_QA),
    Spec("lambada", prompt=_lambada_prompt, metric=qa.lambada_accuracy,
         postprocess=qa.lambada_postprocess, local_read=read_lambada_jsonl,
         local_eval="lambada/lambada_openai.jsonl", tfds_name="lambada:1.0.0",
         tfds_eval="test", tfds_convert=_tfds_lambada),
)


# --------------------------------------------------------------------------- building prompts

def draw_demonstration(records_, pool, index, same_pool, seed, name):
  """Index into `pool` of the demonstration for evaluated record `index` (deterministic).

  `same_pool`: the pool is the evaluated set, so `index` itself is excluded. A pool record
  with the evaluated question/context is never used either.
  """
  rng = np.random.default_rng([seed, index, sum(name.encode())])
  query = records_[index].get("question", records_[index].get("context"))
  n = len(pool) - 1 if same_pool else len(pool)
  if n < 1:
    raise records.RecordError(f"{name}: a one-shot prompt needs at least 2 records")
  for _ in range(100):
    j = int(rng.integers(n))
    if same_pool and j >= index:
      j += 1
    if pool[j].get("question", pool[j].get("context")) != query:
      return j
  raise records.RecordError(f"{name}: no demonstration differs from record {index}")


def oneshot_examples(spec: Spec, evaluated, pool, same_pool):
  """{"inputs", "targets", "answers", "idx", "demo_idx"} for each evaluated record."""
  seed, separator, _ = oneshot_settings()
  out = []
  for i, rec in enumerate(evaluated):
    j = draw_demonstration(evaluated, pool, i, same_pool, seed, spec.name)
    demo = pool[j]
    out.append({
        "inputs": spec.prompt(demo, _target(demo)) + separator + spec.prompt(rec, None),
        "targets": _target(rec), "answers": list(rec["answers"]), "idx": i, "demo_idx": j})
  return out


def _local_files(spec):
  """(evaluated-set file, pool file or None), Gin overrides first; a missing evaluated set is
  named. A pool file that is absent (and not named by an override) is None: the evaluated set
  is then its own pool, each record's demonstration drawn from the others (logged once)."""
  overrides = oneshot_local_files().get(spec.name, {})
  eval_file = overrides.get("validation") or records.local_path(spec.local_eval)
  pool_file = overrides.get("train")
  if pool_file is None and spec.local_pool:
    pool_file = os.path.join(records.data_dir(), spec.local_pool)
    if not tf.io.gfile.exists(pool_file):
      _warn_no_pool(spec.name, pool_file, eval_file)
      pool_file = None
  return eval_file, pool_file


@functools.lru_cache(maxsize=None)
def _warn_no_pool(name, pool_file, eval_file):
  logging.warning("%s: no demonstration pool file %s; demonstrations are drawn from the "
                  "evaluated set %s (never the record itself)", name, pool_file, eval_file)


def _local_records(spec, split, eval_file, pool_file):
  """(evaluated records, pool or None when the evaluated set is its own pool)."""
  if pool_file is None:
    if split == "train":
      raise text.CorpusError(
          f"{spec.name}_oneshot_local split 'train' is the demonstration pool, and its file "
          f"is missing: {os.path.join(records.data_dir(), spec.local_pool)} (or set "
          f"oneshot_local_files.overrides = {{{spec.name!r}: {{'train': <path>}}}})")
    return spec.local_read(eval_file), None
  pool = spec.local_read(pool_file)
  if split == "train":
    return pool, None
  return spec.local_read(eval_file), pool


def _tfds_records(spec, tfds_split):
  """The converted examples of a TFDS split; bad ones are named "tfds:<name>/<split>:<n>"."""
  source = seqio.TfdsDataSource(tfds_name=spec.tfds_name)

  examples = []
  with tf.Graph().as_default():
    ds = source.get_dataset(split=tfds_split, shuffle=False)
    next_example = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
    with tf.compat.v1.Session() as session:
      while True:
        try:
          examples.append(session.run(next_example))
        except tf.errors.OutOfRangeError:
          break
  return records.parse_records(f"tfds:{spec.tfds_name}/{tfds_split}",
                               enumerate(examples, start=1), lambda ex: [spec.tfds_convert(ex)])


def _examples(spec, source, split):
  """The one-shot examples of a split (parsed and built once per process)."""
  files = _local_files(spec) if source == "local" else ()

  def load():
    if source == "local":
      evaluated, pool = _local_records(spec, split, *files)
    else:
      evaluated = _tfds_records(spec, spec.tfds_pool if split == "train" else spec.tfds_eval)
      pool = (_tfds_records(spec, spec.tfds_pool)
              if spec.tfds_pool and split != "train" else None)
    if pool is None:
      return oneshot_examples(spec, evaluated, evaluated, same_pool=True)
    return oneshot_examples(spec, evaluated, pool, same_pool=False)
  key = ("oneshot", spec.name, source, split, oneshot_settings())
  return common.cached(key, [f for f in files if f], load)


def _dataset(split, shuffle_files=False, seed=None, spec=None, source=None):
  del shuffle_files, seed
  examples = [{k: v for k, v in ex.items() if k != "demo_idx"}
              for ex in _examples(spec, source, split)]
  return common.examples_dataset(examples)


# A prompt longer than the inputs length loses its beginning (the demonstration), not the query.
KEEP_END_OF_PROMPT = functools.partial(t5_preprocessors.trim_tokens_at_front, keys_to_trim=["inputs"])


def register(spec: Spec, source: str):
  """Registers `<name>_oneshot_<source>`."""
  has_pool = spec.local_pool if source == "local" else spec.tfds_pool
  splits = ("validation", "train") if has_pool else ("validation",)
  return seqio.TaskRegistry.add(
      f"{spec.name}_oneshot_{source}",
      source=seqio.FunctionDataSource(
          functools.partial(_dataset, spec=spec, source=source), splits=splits),
      preprocessors=[seqio.preprocessors.tokenize, KEEP_END_OF_PROMPT,
                     seqio.preprocessors.append_eos_after_trim],
      output_features=common.text_to_text_features(),
      postprocess_fn=spec.postprocess, metric_fns=[spec.metric])


for _spec in SPECS:
  register(_spec, "local")
  if _spec.tfds_name:
    register(_spec, "tfds")

seqio.MixtureRegistry.add(
    "table5_oneshot_local", [(f"{s.name}_oneshot_local", 1.0) for s in SPECS
                             if s.name in ("nq_open", "trivia_qa", "web_questions", "squad_v2",
                                           "lambada")])
seqio.MixtureRegistry.add(
    "table5_oneshot_tfds", [(f"{s.name}_oneshot_tfds", 1.0) for s in SPECS if s.tfds_name])
