"""Config validation (`brainformer validate` / the start of `brainformer train`): one case per
error class, each checked for naming the parameter and where it was bound."""

import os

from absl import flags
import gin
import pytest
from t5.models import mesh_transformer_main  # pylint: disable=unused-import  (defines the flags)

import tasks  # pylint: disable=unused-import
from brainformer_tf.cli import train as train_cli
from brainformer_tf.config import ginutil
from brainformer_tf.config import paths
from brainformer_tf.config import prepare
import harness
from harness import problems

CPU_GIN = os.path.join(paths.gin_dir(), "train", "cpu.gin")
CPU_1 = os.path.join(paths.gin_dir(), "layouts", "cpu_1.gin")
LM_BASE = os.path.join(paths.gin_dir(), "models", "includes", "lm_base.gin")


def line_of(path, prefix):
  """1-based number of the line of `path` that starts with `prefix`."""
  with open(path) as f:
    return next(n for n, line in enumerate(f, 1) if line.startswith(prefix))


MESH_2x3 = ("utils.run.mesh_shape='batch:2,model:3'", "utils.run.mesh_devices=['', '', '', '', '', '']")


def test_shipped_config_is_clean():
  assert problems() == ""


def test_missing_required_binding():
  # a TPU mesh on a config that never says which TPU: tpu_topology is REQUIRED in mesh-tf
  text = problems("utils.run.mesh_shape = @utils.tpu_mesh_shape()")
  assert "tpu_mesh_shape.tpu_topology: REQUIRED but not bound" in text


def test_missing_gin_file_lists_project_models():
  text = problems(gin_files=["models/glam_tiniest.gin", "train/cpu.gin"])
  assert "glam_tiniest.gin" in text and "models/glam_tiny.gin" in text


def test_unknown_parameter_names_it():
  with pytest.raises(ValueError, match="hidden_sise"):
    problems("DenseReluDense.hidden_sise = 64")


def test_malformed_mesh_shape():
  assert "--gin_param: utils.run.mesh_shape = 'batch=2'" in problems("utils.run.mesh_shape='batch=2'")


def test_mesh_devices_count():
  # the recipe holds no device list; layouts/cpu_1.gin pins one CPU device
  text = problems("utils.run.mesh_shape='batch:2'", gin_files=[
      "models/glam_tiny.gin", "train/cpu.gin", "layouts/cpu_1.gin"])
  where = f"{CPU_1}:{line_of(CPU_1, 'utils.run.mesh_devices')}"
  assert f"{where}: utils.run.mesh_devices lists 1 devices" in text


def test_heads_not_divisible_by_model_dim():
  text = problems(*MESH_2x3)
  assert ("make_layer_stack.layers[0] (SelfAttention), " + LM_BASE) in text
  assert "num_heads=4 (dimension 'heads') is split over mesh dimension 'model' of size 3" in text


def test_d_ff_not_divisible_by_model_dim():
  text = problems(*MESH_2x3)
  assert "make_layer_stack.layers[1] (DenseReluDense)" in text
  assert "hidden_size=256 (dimension 'd_ff') is split over mesh dimension 'model'" in text


def test_experts_not_divisible_by_batch_dim():
  text = problems("utils.run.mesh_shape='batch:3'", "utils.run.mesh_devices=['', '', '']")
  assert "make_layer_stack.layers[3] (MoE)" in text
  assert "num_experts=8 (dimension 'experts') is split over mesh dimension 'batch' of size 3" in text


def test_batch_not_divisible_by_batch_dim():
  text = problems("utils.run.mesh_shape='batch:3'", "utils.run.mesh_devices=['', '', '']")
  assert "utils.run.batch_size: sequences per batch=16 (dimension 'batch')" in text


def test_moe_constructor_errors_name_the_layer():
  text = problems("MoE.capacity_factor = 0.0")
  assert "make_layer_stack.layers[3] (MoE): MoE.capacity_factor=0.0: must be > 0" in text


def test_mesh_tf_moe1d_capacity_factor_must_be_positive():
  text = problems("import mesh_tensorflow.transformer.moe",
                  "transformer.make_layer_stack.layers = [@transformer_layers.SelfAttention, "
                  "@moe.MoE1D]", "moe.MoE1D.capacity_factor_eval = 0.0")
  assert "make_layer_stack.layers[1] (MoE1D), --gin_param: MoE1D.capacity_factor_eval = 0.0" in text


def test_sequence_length_exceeds_max_length():
  text = problems("Unitransformer.max_length = 64")
  where = f"{CPU_GIN}:{line_of(CPU_GIN, 'utils.run.sequence_length')}"
  assert f"{where}: utils.run.sequence_length: targets length 128 exceeds" in text
  assert "--gin_param: Unitransformer.max_length = 64" in text


def test_sequence_length_lacks_task_feature():
  text = problems("utils.run.sequence_length = {'inputs': 128}")
  assert "has no 'targets' length for task 'default_corpus_lm'" in text


def test_vocab_not_divisible_by_model_dim():
  text = problems("utils.run.mesh_shape='model:2'", "utils.run.mesh_devices=['', '']",
                  "Unitransformer.vocab_divisor = 1", "vocabulary_settings.vocab_size = 4095")
  assert "--gin_param: vocabulary_settings.vocab_size" in text
  assert "vocab=4095 (dimension 'vocab') is split over mesh dimension 'model' of size 2" in text


def test_step_counts_must_be_positive():
  assert "--gin_param: utils.run.save_checkpoints_steps = 0" in problems(
      "utils.run.save_checkpoints_steps = 0")


def test_nan_policy_must_be_known():
  text = problems("nan_guard.policy = 'ignore'")
  assert "--gin_param: nan_guard.policy: nan_guard.policy = 'ignore': expected one of" in text


def test_fused_gelu_switch_must_be_a_bool():
  text = problems("fused_gelu.enabled = 'no'")
  assert ("--gin_param: fused_gelu.enabled: fused_gelu.enabled='no': must be True or False"
          in text)
  assert problems("fused_gelu.enabled = False") == ""


def test_run_mode_must_be_one_of_mesh_tfs():
  text = problems("utils.run.mode = 'export_predict'")
  assert "--gin_param: utils.run.mode = 'export_predict': expected one of train," in text
  assert problems("utils.run.mode = 'export'") == ""


def test_block_spec_errors_name_the_sublayer():
  if not os.path.exists(os.path.join(paths.gin_dir(), "models", "brainformer1_tiny.gin")):
    pytest.skip("Brainformer block models not present")
  files = ["models/brainformer1_tiny.gin", "train/cpu.gin"]
  assert problems(gin_files=files) == ""
  text = problems("blocks.block_layers.spec = 'a g[c=0] f'", gin_files=files)
  assert "--gin_param: blocks.block_layers.spec:" in text and "1" in text and "c" in text


@pytest.mark.slow
def test_cli_validate_and_train_report_before_building_a_graph(tmp_path):
  """Both commands exit 2 with the same list; train writes no checkpoint."""
  args = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin",
          "--gin_param=MoE.capacity_factor = -1.0", "--gin_param=Unitransformer.max_length = 64"]
  outputs = []
  for command in ("validate", "train"):
    proc = harness.brainformer(command, f"--model_dir={tmp_path}/m", *args, cwd=tmp_path,
                               timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    outputs.append([l for l in proc.stderr.splitlines() if "problem" in l or l.startswith("  ")])
    assert f"brainformer {command}: error: 2 problem(s) in the Gin config:" in proc.stderr
  assert outputs[0][1:] == outputs[1][1:]
  assert not (tmp_path / "m").exists() or not list((tmp_path / "m").glob("*.index"))


def _train_in_process(args):
  """`brainformer train` with the given flags in this process (cli/train.py's main): its exit
  code. Only for bad input: a good config would train."""
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(["brainformer train"] + args)
    return train_cli._main(None)  # pylint: disable=protected-access
  finally:
    flags.FLAGS.unparse_flags()
    gin.clear_config()


def test_train_reports_bad_input_before_building_a_graph_in_process(tmp_path, capsys):
  """The fast form of the subprocess test above: cli/train.py exits 2 with one report, the
  config's problems being the validate checks' (problems()), and writes nothing."""
  args = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin"]
  assert _train_in_process(args) == 2
  assert "brainformer train: error: --model_dir is required" in capsys.readouterr().err
  params = ["MoE.capacity_factor = -1.0", "Unitransformer.max_length = 64"]
  model_dir = tmp_path / "m"
  assert _train_in_process([f"--model_dir={model_dir}"] + args
                           + [f"--gin_param={p}" for p in params]) == 2
  err = capsys.readouterr().err
  assert err.startswith("brainformer train: error: 2 problem(s) in the Gin config:")
  assert problems(*params) in err
  assert not model_dir.exists()


@pytest.mark.parametrize("gin_files", [
    ["models/glam_tiny.gin", "train/glam.gin"],
    ["models/brainformer1_8b_64e.gin", "train/glam.gin", "layouts/tpu_v4_512.gin"],
])
def test_paper_recipe_validates(gin_files):
  # train/glam.gin binds learning_rate_schedules.product_learning_rate, a name mesh-tf's
  # optimize module also defines: the REQUIRED check must not look it up by its short name
  assert problems(gin_files=gin_files) == ""


def test_no_layout_runs_on_one_device_and_tpu_takes_the_topology_flag():
  for tpu, expected in (("", ""), ("my-tpu", "v3-8")):
    gin.clear_config()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["validate", "--gin_file=models/glam_tiny.gin", "--gin_file=train/glam.gin",
                 f"--tpu={tpu}", "--tpu_topology=v3-8"])
    prepare.parse_and_check(flags.FLAGS)
    if tpu:
      assert ginutil.query("utils.tpu_mesh_shape.tpu_topology") == expected
      assert isinstance(ginutil.query("utils.run.mesh_shape"), gin.config.ConfigurableReference)
    else:
      assert ginutil.query("utils.run.mesh_shape") == expected
  gin.clear_config()


@pytest.mark.parametrize("params,expected", [
    (["d_model = 'abc'"], "d_model = 'abc' (Unitransformer.d_model): must be a positive integer"),
    (["d_model = -64"], "d_model = -64 (Unitransformer.d_model): must be a positive integer"),
    (["num_heads = 0"], "num_heads = 0 (Gin num_heads or SelfAttention.num_heads)"),
    (["MoE.capacity_factor = 0.001"], "capacity_factor=0.001 with a routing group of 256 tokens "
                                      "and num_experts=8 gives k = round(0.001 * 256 / 8) = 0"),
])
def test_sizes_graph_building_would_reject_are_named_first(params, expected):
  # issue 17: validate said "config OK" and train then crashed in graph building
  assert expected in problems(*params)


def test_block_spec_capacity_that_rounds_to_zero_names_the_sub_layer():
  text = problems("blocks.block_layers.spec = 'a g[c=0.001] f'", "num_experts = 8",
                  gin_files=["models/dense_tiny.gin", "train/cpu.gin"])
  assert "layer 1 (MoE)" in text and "= 0 tokens per expert" in text
