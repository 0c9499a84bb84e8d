"""The tutorials run end to end on a slice of the real data (their --quick mode)."""

import importlib.util
import pathlib

import keras
import pytest

import tfprune

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "tutorials"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_mnist_magnitude_quick(tmp_path, data_dir):
    tutorial = _load("mnist_magnitude")
    results = tutorial.main(["--quick", "--data-dir", str(data_dir / "mnist"), "--output-dir", str(tmp_path)])
    names = [name for name, _ in results]
    assert names == ["baseline", "pruned 80%", "pruned 90%"]
    for (name, model), target in zip(results[1:], (0.8, 0.9)):
        rows = tfprune.sparsity_report(model).rows
        assert all(abs(r["sparsity"] - target) <= 1 / r["params"] + 1e-9 for r in rows), name
    assert (tmp_path / "mnist_pruned.tflite").stat().st_size > 0
    reloaded = keras.saving.load_model(tmp_path / "mnist_pruned.keras")
    assert tfprune.sparsity_report(reloaded).total_sparsity > 0.85
