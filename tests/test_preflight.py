"""What `brainformer train` checks after the config and before any graph (config/prepare.py,
issue #17): the model against the checkpoint a resume would restore (every variable by name and
shape; a torn newest index passed over, as the resume passes over it), steps left to train, the
model dir, --gin_file directories, the devices a layout names, the validation data."""

import os

import gin
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.config import prepare
from brainformer_tf.evaluation import checkpoint as checkpoint_lib
import harness
from harness import problems

GLAM = ["models/glam_tiny.gin", "train/cpu.gin"]
BF1 = ["models/brainformer1_tiny.gin", "train/cpu.gin"]


def _variables(gin_files, *params):
  """{name: shape} of the master variables the model of `gin_files` creates."""
  assert problems(*params, gin_files=gin_files, keep_config=True) == ""
  return checkpoint_lib.model_variables("lm", 4096)


def _save(model_dir, variables, step):
  """A checkpoint of zeros holding exactly `variables`, as tf.train.Saver writes it."""
  with tf.Graph().as_default():
    for name, shape in variables.items():
      tf.Variable(np.zeros(shape, np.float32), name=name)
    saver = tf.train.Saver()
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      saver.save(session, os.path.join(model_dir, "model.ckpt"), global_step=step)
  return os.path.join(model_dir, f"model.ckpt-{step}")


@pytest.fixture(scope="module")
def glam(tmp_path_factory):
  variables = _variables(GLAM)
  model_dir = str(tmp_path_factory.mktemp("glam"))
  _save(model_dir, variables, 5)
  return model_dir, variables


def test_matching_checkpoint_passes_and_vocab_or_d_model_changes_are_named(glam):
  model_dir, _ = glam
  assert problems(gin_files=GLAM, model_dir=model_dir) == ""
  text = problems("vocabulary_settings.vocab_size = 2000", "d_model = 32", gin_files=GLAM,
                  model_dir=model_dir)
  assert "vocabulary_settings.vocab_size = 2000 (padded 2048) but the model dir's checkpoint" in text
  assert "has a 4096-row embedding" in text
  assert "Unitransformer.d_model = 32 but the model dir's checkpoint" in text


def test_another_architecture_in_the_model_dir_is_named(glam):
  model_dir, variables = glam
  # Brainformer-1 into GLaM's dir: other layers (named: a MoE router the checkpoint lacks)
  text = problems(gin_files=BF1, model_dir=model_dir)
  assert text.count("\n") == 1 and "--model_dir: model does not match checkpoint" in text
  missing = sorted(set(_variables(BF1)) - set(variables))
  assert f"model variable(s) not in the checkpoint, e.g. {missing[0]}" in text
  # same layers, 16 experts instead of 8: a shape mismatch on an expert/router variable
  text = problems("num_experts = 16", gin_files=GLAM, model_dir=model_dir)
  assert "shape mismatch(es), e.g. " in text
  changed = sorted(n for n, s in _variables(GLAM, "num_experts = 16").items()
                   if list(s) != list(variables[n]))
  assert changed and f"e.g. {changed[0]} " in text


def test_a_torn_newest_index_is_passed_over(glam, tmp_path):
  """The newest checkpoint's index is empty: the check reads the one before it (the one a
  resume restores); a wrong architecture is still caught there."""
  _, variables = glam
  model_dir = str(tmp_path)
  _save(model_dir, variables, 5)
  newest = _save(model_dir, variables, 9)
  open(newest + ".index", "w").close()
  assert problems(gin_files=GLAM, model_dir=model_dir) == ""
  assert "model.ckpt-5:" in problems(gin_files=BF1, model_dir=model_dir)


def test_train_steps_at_or_below_the_checkpoint_step_is_named(glam):
  model_dir, _ = glam   # at step 5
  for steps, fails in ((5, True), (3, True), (6, False)):
    assert problems(f"utils.run.train_steps = {steps}", gin_files=GLAM, keep_config=True) == ""
    if fails:
      with pytest.raises(errors.UsageError, match=f"train_steps = {steps} but --model_dir=.* is "
                                                  "already at step 5: nothing to train"):
        prepare.check_train_steps(model_dir)
    else:
      prepare.check_train_steps(model_dir)
  gin.clear_config()


def test_model_dir_under_a_file_or_read_only_is_named(tmp_path):
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(errors.UsageError, match=f"{tmp_path}/a_file is a file, not a directory"):
    prepare.check_writable_dir(str(tmp_path / "a_file" / "run"))
  if os.geteuid() != 0:   # root writes anywhere
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(errors.UsageError, match="is not writable"):
      prepare.check_writable_dir(str(tmp_path / "ro" / "run"))
  prepare.check_writable_dir(str(tmp_path / "new" / "deeper"))   # creatable: fine
  assert not (tmp_path / "new").exists()


def test_gin_file_naming_a_directory_is_named():
  ginutil.add_search_paths()
  with pytest.raises(errors.UsageError, match="--gin_file=layouts is a directory"):
    ginutil.check_gin_files(["models/glam_tiny.gin", "layouts"])
  ginutil.check_gin_files(["models/glam_tiny.gin", "layouts/cpu_1.gin"])


def test_devices_this_machine_lacks_are_named():
  assert problems(gin_files=GLAM + ["layouts/gpu_8.gin"], keep_config=True) == ""
  if any(d.device_type == "GPU" for d in tf.config.list_logical_devices()):
    pytest.skip("this machine has a GPU")
  with pytest.raises(errors.UsageError, match="mesh_devices lists 'gpu:0', which this machine "
                                              "does not have"):
    prepare.check_local_devices()
  assert problems(gin_files=GLAM + ["layouts/cpu_8.gin"], keep_config=True) == ""
  prepare.check_local_devices()   # eight slices on cpu:0 exist
  gin.clear_config()


def test_a_missing_validation_file_is_found_before_training(tmp_path):
  train = tmp_path / "train.txt"
  train.write_text("A paragraph of training text that is long enough to read.\n\n" * 40)
  params = ["MIXTURE_NAME = 'local_text_lm'", f"local_text_files.train = ['{train}']",
            f"local_text_files.validation = ['{tmp_path}/missing.txt']"]
  prepare.import_modules(())   # the project's tasks (local_text_files)
  assert problems(*params, gin_files=GLAM, keep_config=True) == ""
  split = prepare._validates_after_training()  # pylint: disable=protected-access
  assert split == "validation"   # train/cpu.gin's train_with_progress validates after training
  with pytest.raises(prepare.user_errors(), match="local_text_files.validation: no file matches"):
    prepare.check_mixture_or_task("local_text_lm", split,
                                  ginutil.query("utils.run.sequence_length"))
  prepare.check_mixture_or_task("local_text_lm", "train", ginutil.query("utils.run.sequence_length"))
  gin.clear_config()


def test_device_names_normalise():
  assert [prepare._device_name(d) for d in (  # pylint: disable=protected-access
      "/job:localhost/replica:0/task:0/device:GPU:1", "gpu:1", "/device:CPU:0", "")] == [
          "gpu:1", "gpu:1", "cpu:0", ""]


@pytest.mark.slow
def test_train_refuses_a_checkpoint_of_another_model_before_building(glam_tiny_run, tmp_path):
  """`brainformer train` of Brainformer-1 into (a copy of) the shared real GLaM tiny run's
  dir: exit 2 naming the mismatch, and the dir keeps exactly its files."""
  model_dir = harness.copy_of(glam_tiny_run, tmp_path / "m")
  before = sorted(os.listdir(model_dir))
  bad = harness.brainformer("train", f"--model_dir={model_dir}", *[f"--gin_file={f}" for f in BF1],
                            "--gin_param=utils.run.train_steps = 30", cwd=tmp_path)
  assert bad.returncode == 2
  assert "--model_dir: model does not match checkpoint" in bad.stderr
  assert "Traceback" not in bad.stderr
  assert sorted(os.listdir(model_dir)) == before


def test_gin_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_bytes(b"d_model = 64\nnum_heads = 4  # caf\xe9\n")
  with pytest.raises(errors.UsageError, match=f"--gin_file={bad}: {bad}:2: not valid UTF-8"):
    ginutil.check_gin_files(["models/glam_tiny.gin", str(bad)])


def test_unknown_task_is_named_without_listing_every_registered_name(caplog):
  prepare.import_modules(())
  with caplog.at_level("INFO"):
    with pytest.raises(errors.UsageError, match="MIXTURE_NAME='no_such_task' is not a registered"):
      prepare.check_mixture_or_task("no_such_task", "validation", {"targets": 8})
  assert not [r for r in caplog.records if "Available" in r.getMessage()]
