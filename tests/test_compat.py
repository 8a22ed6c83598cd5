"""The compat shims make mesh_tensorflow and t5.models importable on TF 2.15 without torch."""

import subprocess
import sys




def _python(code):
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})


def test_mesh_tensorflow_needs_the_shim_on_this_tensorflow():
  result = _python("import mesh_tensorflow")
  assert result.returncode != 0
  assert "register_tensor_conversion_function" in result.stderr


def test_shim_makes_mesh_tensorflow_and_t5_models_importable():
  result = _python(
      "from brainformer_tf import compat; compat.apply(); compat.apply()\n"
      "import mesh_tensorflow as mtf, t5.models, seqio\n"
      "from t5.models import mesh_transformer_main\n"
      "print(mtf.Dimension('d', 3).size, t5.models.MtfModel.__name__)")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["3", "MtfModel"]


def test_hf_model_is_a_clear_import_error_without_torch():
  result = _python(
      "import importlib.util, sys\n"
      "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
      "from brainformer_tf import compat; compat.apply()\n"
      "import t5.models\n"
      "try:\n"
      "  t5.models.HfPyTorchModel('t5-small', '/tmp/x', 'cpu')\n"
      "except ImportError as e:\n"
      "  print('ImportError:', e)\n")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "ImportError" in result.stdout and "torch" in result.stdout
