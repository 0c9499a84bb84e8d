"""Packaging for tfprune: pruning for Keras 3 on TensorFlow."""

import pathlib
import re

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'^__version__ = "([^"]+)"', (_HERE / "tfprune" / "__init__.py").read_text(), re.M
).group(1)

# tf-keras: LSTMs convert to the fused TFLite op only from a Keras 2 model (tfprune/export/_tf_keras_lstm.py).
_TFLITE = ["ai-edge-litert>=1.0", "tf-keras>=2.16"]
# tfmot is only ever imported in subprocesses (tests' reference values, benchmarks):
# importing it sets TF_USE_LEGACY_KERAS=1 globally.
_TFMOT = ["tensorflow-model-optimization>=0.8", "tf-keras>=2.16"]

setup(
    name="tfprune",
    version=_VERSION,
    description="Pruning for Keras 3 on TensorFlow, with export to sparse, quantized TFLite.",
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tfprune", "tfprune.*"]),
    install_requires=["tensorflow>=2.16", "keras>=3.0", "numpy"],
    extras_require={
        "tflite": _TFLITE,
        "plot": ["matplotlib"],
        "bench": _TFMOT + ["matplotlib"],
        "docs": ["mkdocs>=1.6", "mkdocstrings-python>=1.10"],
        # keras-hub: the tests prune KerasHub backbones built from a config (no downloads).
        "dev": ["pytest>=7", "pytest-xdist", "matplotlib", "mkdocs>=1.6", "mkdocstrings-python>=1.10",
                "keras-hub>=0.21"]
        + _TFLITE + _TFMOT,
    },
    entry_points={"console_scripts": ["tfprune=tfprune.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
