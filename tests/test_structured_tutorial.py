"""tutorials/mnist_structured.py runs end to end in its --quick mode on a slice of real MNIST."""

import importlib.util
import pathlib

import pytest

TUTORIAL = pathlib.Path(__file__).resolve().parent.parent / "tutorials" / "mnist_structured.py"


@pytest.mark.slow
def test_mnist_structured_quick(tmp_path, data_dir):
    spec = importlib.util.spec_from_file_location("mnist_structured", TUTORIAL)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    rows = tutorial.main(["--quick", "--data-dir", str(data_dir / "mnist"), "--output-dir", str(tmp_path)])
    assert [r["model"] for r in rows] == ["baseline", "slimming", "apoz", "entropy"]
    base = rows[0]
    for row in rows[1:]:
        assert all(a < b for a, b in zip(row["widths"], base["widths"])), row["model"]
        assert row["flops_ratio"] > 2 and row["params"] < base["params"]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms"] > 0
    sizes = {r["model"]: pathlib.Path(r["tflite"]).stat().st_size for r in rows}
    assert all(pathlib.Path(r["tflite"]).parent == tmp_path for r in rows)
    assert max(sizes[m] for m in ("slimming", "apoz", "entropy")) < sizes["baseline"]
