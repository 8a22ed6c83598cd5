"""GLUE / SuperGLUE fine-tuning tasks (paper Table 4) as text-to-text tasks.

For each task two registered names: `<benchmark>_<task>_tfds` (TFDS `super_glue/*:1.0.2`,
`glue/*:2.0.0`) and `<benchmark>_<task>_local` (the official files under the data directory:
`superglue/<Task>/{train,val,test}.jsonl`, `glue/<Task>/{train,dev,test}.tsv`). Local records are
converted to exactly the examples TFDS builds, then both go through t5's own text preprocessor,
postprocessor and official metrics (t5.data.glue_utils), so the two sources give the same text.

Mixtures (`_local` and `_tfds` each):
  table4_11tasks_*     BoolQ, CB, CoLA, MNLI, MRPC, QNLI, QQP, RTE, SST-2, WiC, WNLI
  super_glue_full_*    all SuperGLUE tasks: BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC,
                       AX-b, AX-g (the diagnostics have only a test split)
Mixing rates: number of training examples (T5's examples-proportional mixing), see
`finetune_mixture_rate` for Gin options.
"""

import dataclasses
import functools
from typing import Any, Dict, List, Optional

import gin
import seqio
from t5.data import glue_utils
from t5.data import preprocessors as t5_preprocessors
from tensorflow_datasets.text import glue as tfds_glue
from tensorflow_datasets.text import super_glue as tfds_super_glue

from brainformer_tf.data import records
from brainformer_tf.evaluation import classification
from tasks import common

SUPERGLUE_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
MNLI_FILES = {"train": "train.tsv", "validation": "dev_matched.tsv",
              "validation_mismatched": "dev_mismatched.tsv", "test": "test_matched.tsv",
              "test_mismatched": "test_mismatched.tsv"}
MNLI_TFDS_SPLITS = {"train": "train", "validation": "validation_matched",
                    "validation_mismatched": "validation_mismatched", "test": "test_matched",
                    "test_mismatched": "test_mismatched"}


@dataclasses.dataclass(frozen=True)
class Spec:
  """One GLUE/SuperGLUE task."""
  name: str                      # registered as f"{benchmark}_{name}_{local|tfds}"
  benchmark: str                 # "super_glue" | "glue"
  config: str                    # TFDS builder config
  folder: str                    # local folder under superglue/ or glue/
  files: Dict[str, str]          # split -> local file name
  train_size: int                # official number of training examples (mixing rate)
  table4: bool = False
  tfds_splits: Optional[Dict[str, str]] = None
  columns: Optional[Dict[str, str]] = None      # GLUE: feature -> tsv column, if not TFDS's
  headerless: Optional[tuple] = None            # GLUE: column names of header-less files

  @property
  def builder_config(self):
    builder = tfds_super_glue.SuperGlue if self.benchmark == "super_glue" else tfds_glue.Glue
    return builder.builder_configs[self.config]

  @property
  def tfds_name(self):
    version = "1.0.2" if self.benchmark == "super_glue" else "2.0.0"
    return f"{self.benchmark}/{self.config}:{version}"

  def task_name(self, source):
    return f"{self.benchmark}_{self.name}_{source}"


_SG, _G = "super_glue", "glue"
SPECS = (
    Spec("boolq", _SG, "boolq", "BoolQ", SUPERGLUE_FILES, 9427, table4=True),
    Spec("cb", _SG, "cb", "CB", SUPERGLUE_FILES, 250, table4=True),
    Spec("copa", _SG, "copa", "COPA", SUPERGLUE_FILES, 400),
    Spec("multirc", _SG, "multirc", "MultiRC", SUPERGLUE_FILES, 27243),
    Spec("record", _SG, "record", "ReCoRD", SUPERGLUE_FILES, 138854),
    Spec("rte", _SG, "rte", "RTE", SUPERGLUE_FILES, 2490, table4=True),
    Spec("wic", _SG, "wic", "WiC", SUPERGLUE_FILES, 5428, table4=True),
    Spec("wsc", _SG, "wsc.fixed", "WSC", SUPERGLUE_FILES, 554),
    Spec("axb", _SG, "axb", "AX-b", {"test": "AX-b.jsonl"}, 0),
    Spec("axg", _SG, "axg", "AX-g", {"test": "AX-g.jsonl"}, 0),
    Spec("cola", _G, "cola", "CoLA", GLUE_FILES, 8551, table4=True,
         headerless=("source", "is_acceptable", "original_label", "sentence")),
    Spec("mnli", _G, "mnli", "MNLI", MNLI_FILES, 392702, table4=True,
         tfds_splits=MNLI_TFDS_SPLITS),
    Spec("mrpc", _G, "mrpc", "MRPC", GLUE_FILES, 3668, table4=True,
         columns={"sentence1": "#1 String", "sentence2": "#2 String"}),
    Spec("qnli", _G, "qnli", "QNLI", GLUE_FILES, 104743, table4=True),
    Spec("rte", _G, "rte", "RTE", GLUE_FILES, 2490),
    Spec("qqp", _G, "qqp", "QQP", GLUE_FILES, 363849, table4=True),
    Spec("sst2", _G, "sst2", "SST-2", GLUE_FILES, 67349, table4=True),
    Spec("wnli", _G, "wnli", "WNLI", GLUE_FILES, 635, table4=True),
)
# RTE is in both benchmarks (same data); Table 4's mixtures use the SuperGLUE copy.


# ----------------------------------------------------------------- local record -> TFDS example

def _string(row, name):
  value = records.require(row, name)
  if not isinstance(value, str):
    raise records.RecordError(f"field {name!r} must be a string, got {value!r}")
  return value


def _integer(row, name):
  value = records.require(row, name)
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise records.RecordError(f"field {name!r} must be an integer, got {value!r}")
  return int(value)


def _label_name(value):
  """A jsonl label as the string TFDS stores (bools -> "True"/"False")."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (str, int)):
    return str(value)
  raise records.RecordError(f"label must be a string or boolean, got {value!r}")


INT_FEATURES = frozenset(("span1_index", "span2_index", "start1", "start2", "end1", "end2"))


def _superglue_label(config, row, split):
  if "label" not in row:
    if split != "test":
      raise records.RecordError("missing field 'label'")
    return -1
  value = row["label"]
  if config.name == "copa":
    if value not in (0, 1) or isinstance(value, bool):
      raise records.RecordError(f"label {value!r} is not one of [0, 1]")
    value = "choice2" if value else "choice1"
  return records.label_index(_label_name(value), config.label_classes)


def superglue_examples(config, row, split) -> List[Dict[str, Any]]:
  """The TFDS `super_glue/<config>` examples of one jsonl row (as TFDS's _generate_examples)."""
  if config.name == "multirc":
    passage = records.require(row, "passage")
    out = []
    for question in records.require(passage, "questions"):
      for answer in records.require(question, "answers"):
        if "label" not in answer and split != "test":
          raise records.RecordError("missing field 'label' in an answer")
        label = answer.get("label")
        out.append({
            "paragraph": _string(passage, "text"), "question": _string(question, "question"),
            "answer": _string(answer, "text"),
            "label": -1 if label is None else records.label_index(
                _label_name(bool(label)), config.label_classes),
            "idx": {"paragraph": _integer(row, "idx"), "question": _integer(question, "idx"),
                    "answer": _integer(answer, "idx")}})
    return out
  if config.name == "record":
    passage = records.require(row, "passage")
    _string(passage, "text")
    records.require(passage, "entities")
    return [{"passage": passage["text"], "query": _string(qa, "query"),
             "entities": tfds_super_glue._get_record_entities(passage),  # pylint: disable=protected-access
             "answers": tfds_super_glue._get_record_answers(qa),  # pylint: disable=protected-access
             "idx": {"passage": _integer(row, "idx"), "query": _integer(qa, "idx")}}
            for qa in records.require(row, "qas")]
  if config.name.startswith("wsc"):
    row = dict(row, **records.require(row, "target"))
  example = {f: _integer(row, f) if f in INT_FEATURES else _string(row, f)
             for f in config.features}
  if config.name == "wsc.fixed":
    example = tfds_super_glue._fix_wst(example)  # pylint: disable=protected-access
  example["idx"] = _integer(row, "idx")
  example["label"] = _superglue_label(config, row, split)
  return [example]


def glue_examples(spec, row, split) -> List[Dict[str, Any]]:
  """The TFDS `glue/<config>` example of one tsv row; "idx" is set by the caller."""
  config = spec.builder_config
  columns = spec.columns or config.text_features
  example = {feature: _string(row, column) for feature, column in columns.items()}
  if config.label_column in row:
    value = row[config.label_column]
    if value in config.label_classes:
      example["label"] = config.label_classes.index(value)
    elif value.isdigit() and int(value) < len(config.label_classes):
      example["label"] = int(value)
    else:
      raise records.RecordError(
          f"label {value!r} is not one of {config.label_classes} (or their indices)")
  elif split.startswith("test"):
    example["label"] = -1
  else:
    raise records.RecordError(f"missing field {config.label_column!r}")
  return [example]


def local_examples(spec, split):
  """Parses the local file of `spec`/`split` (cached) into TFDS-format examples."""
  if split not in spec.files:
    raise ValueError(f"{spec.task_name('local')} has no split {split!r}")
  top = "superglue" if spec.benchmark == "super_glue" else "glue"
  path = records.local_path(f"{top}/{spec.folder}/{spec.files[split]}")

  def load():
    if spec.benchmark == "super_glue":
      return records.read_jsonl(
          path, lambda row: superglue_examples(spec.builder_config, row, split))
    headerless = spec.headerless if not split.startswith("test") else None
    examples = records.read_tsv(path, lambda row: glue_examples(spec, row, split),
                                fieldnames=headerless)
    return [dict(ex, idx=i) for i, ex in enumerate(examples)]
  return common.cached(("glue", spec.name, split), [path], load)


def _local_dataset(split, shuffle_files=False, seed=None, spec=None):
  del shuffle_files, seed  # seqio shuffles examples after preprocessing
  return common.examples_dataset(local_examples(spec, split))


# ------------------------------------------------------------------------------ registration

@gin.configurable
def finetune_mixture_rate(train_size: int, equal: bool = False,
                          maximum: Optional[float] = None) -> float:
  """Mixing rate of a fine-tuning task: its training-set size (capped at `maximum`), or 1."""
  if equal:
    return 1.0
  rate = float(train_size)
  return min(rate, maximum) if maximum else rate


def _rate(spec, unused_task):
  return finetune_mixture_rate(spec.train_size) if spec.train_size else 0.0


def register(spec: Spec, source: str):
  """Registers one GLUE/SuperGLUE task from "local" files or "tfds"."""
  config = spec.builder_config
  if source == "tfds":
    data_source = seqio.TfdsDataSource(tfds_name=spec.tfds_name, splits=spec.tfds_splits)
  else:
    data_source = seqio.FunctionDataSource(
        functools.partial(_local_dataset, spec=spec), splits=tuple(spec.files))
  preprocessors = [glue_utils.get_glue_text_preprocessor(config)]
  if config.name == "record":
    preprocessors = [t5_preprocessors.record]
  return seqio.TaskRegistry.add(
      spec.task_name(source), source=data_source,
      preprocessors=preprocessors + list(common.TEXT_TO_TEXT_PREPROCESSORS),
      output_features=common.text_to_text_features(),
      postprocess_fn=glue_utils.get_glue_postprocess_fn(config),
      metric_fns=classification.metric_fns(spec.benchmark, spec.config))


def _mixture(name, specs, source):
  seqio.MixtureRegistry.add(
      name, [(s.task_name(source), functools.partial(_rate, s) if s.train_size else 1.0)
             for s in specs])


for _spec in SPECS:
  for _source in ("local", "tfds"):
    register(_spec, _source)

for _source in ("local", "tfds"):
  _mixture(f"table4_11tasks_{_source}", [s for s in SPECS if s.table4], _source)
  _mixture(f"super_glue_full_{_source}", [s for s in SPECS if s.benchmark == _SG], _source)
