"""tutorials/mnist_csgd.py runs end to end in its --quick mode on a slice of real MNIST."""

import importlib.util
import pathlib

import numpy as np
import pytest

TUTORIAL = pathlib.Path(__file__).resolve().parent.parent / "tutorials" / "mnist_csgd.py"


@pytest.mark.slow
def test_mnist_csgd_quick(tmp_path, data_dir):
    spec = importlib.util.spec_from_file_location("mnist_csgd", TUTORIAL)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    result = tutorial.main(["--quick", "--data-dir", str(data_dir / "mnist"), "--output-dir", str(tmp_path)])
    # the cut itself loses nothing: same accuracy, the same predictions, logits equal to float rounding
    assert result["cut_accuracy"] == result["csgd_accuracy"]
    assert result["changed_predictions"] == 0 and result["max_logit_change"] < 1e-3
    distance = result["cluster_distance"]
    assert distance[-1] < 1e-6 * distance[0] and np.all(np.diff(distance) < 0)
    assert result["flops"][1] < result["flops"][0] / 3 and result["params"][1] < result["params"][0] / 3
    assert pathlib.Path(result["tflite"]).stat().st_size > 0
    assert (tmp_path / "csgd_distance.png").read_bytes().startswith(b"\x89PNG")
