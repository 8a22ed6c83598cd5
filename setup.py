"""brainformer_tf: Brainformer / GLaM mixture-of-experts LMs on Mesh-TensorFlow.

Install with scripts/setup_env.sh, which installs the pinned stack (requirements/*.txt; t5, seqio
and tensorflow-text need --no-deps, see requirements/nodeps.txt) and then this package.
"""

import pathlib

import setuptools

ROOT = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (ROOT / "requirements" / name).read_text().splitlines()
  return [l.split("#")[0].strip() for l in lines if l.split("#")[0].strip()]


setuptools.setup(
    name="brainformer_tf",
    version="0.1.0",
    description="Brainformer and GLaM mixture-of-experts language models on Mesh-TensorFlow",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=setuptools.find_packages(include=["brainformer_tf", "brainformer_tf.*",
                                               "tasks", "tasks.*"]) + [
                                                   "brainformer_tf.gin_configs"],
    # The Gin model zoo ships inside the package as brainformer_tf/gin_configs.
    package_dir={"brainformer_tf.gin_configs": "gin"},
    package_data={"brainformer_tf.gin_configs": ["*.gin", "**/*.gin"]},
    install_requires=_requirements("base.txt"),
    extras_require={"test": _requirements("test.txt")},
    entry_points={"console_scripts": ["brainformer = brainformer_tf.cli.main:main"]},
)
