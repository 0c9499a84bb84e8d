"""export/check_tflite.py, run as CI and a phone would: a subprocess with only numpy and ai-edge-litert."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from export_helpers import synthetic_digits, trained_mlp, zeroed
from tfprune.export import _runtime, to_tflite

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "export" / "check_tflite.py"


def check(*args, importtime=False):
    command = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(SCRIPT)] + [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    x, y, x_test, y_test = synthetic_digits(train=1000, test=100)
    folder = tmp_path_factory.mktemp("check")
    model = trained_mlp(x, y, epochs=2)
    # Half the blocks keep the model well above chance, so accuracies below mean something.
    blocks, unstructured = zeroed(model, block=(16, 1), sparsity=0.5), zeroed(model, block=(1, 1))
    to_tflite(blocks, folder / "blocks.tflite", quantization="int8", representative_data=x[:100])
    to_tflite(blocks, folder / "int8_io.tflite", quantization="int8", io_dtype="int8", representative_data=x[:100])
    with pytest.warns(RuntimeWarning):
        to_tflite(unstructured, folder / "no_xnnpack.tflite", quantization="int8", representative_data=x[:100],
                  sparse=True, require_default_delegate=False)
    np.save(folder / "x.npy", x_test)
    np.save(folder / "y.npy", y_test)
    return folder


def test_loads_runs_and_reports_without_tensorflow(exported):
    result = check(exported / "blocks.tflite", importtime=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "loads with the default delegate (XNNPACK)" in out
    assert "shape [1, 28, 28], float32" in out
    assert out.count("sparse 1x16 blocks") == 2
    assert re.search(r"latency: [\d.]+ ms median of 100 invokes", out)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ai_edge_litert" in imported and "numpy" in imported
    assert not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "tfprune")}


def test_accuracy_on_given_inputs_matches_the_interpreter_run_by_tfprune(exported):
    result = check(exported / "blocks.tflite", "--input", exported / "x.npy", "--labels", exported / "y.npy")
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"top-1 accuracy on 100 labelled samples: ([\d.]+)", result.stdout).group(1))
    interpreter = _runtime.load(exported / "blocks.tflite", "default")
    [logits] = _runtime.run(interpreter, [np.load(exported / "x.npy")])
    assert printed == pytest.approx(np.mean(logits.argmax(-1) == np.load(exported / "y.npy")), abs=1e-4)


def test_int8_input_is_quantized_with_the_tensor_parameters(exported):
    result = check(exported / "int8_io.tflite", "--input", exported / "x.npy", "--labels", exported / "y.npy")
    assert result.returncode == 0, result.stderr
    assert re.search(r"input .*shape \[1, 28, 28\], int8, quantized: real = \(q - -?\d+\) \* [\d.e-]+", result.stdout)
    accuracy = float(re.search(r"accuracy on 100 labelled samples: ([\d.]+)", result.stdout).group(1))
    float_io = check(exported / "blocks.tflite", "--input", exported / "x.npy", "--labels", exported / "y.npy")
    reference = float(re.search(r"accuracy on 100 labelled samples: ([\d.]+)", float_io.stdout).group(1))
    # Far above chance (0.1), and as good as the float-input file: the input was quantized right.
    assert accuracy > 0.3 and abs(accuracy - reference) <= 0.03


def test_a_file_xnnpack_refuses_fails_unless_delegates_are_off(exported):
    refused = check(exported / "no_xnnpack.tflite")
    assert refused.returncode == 1
    assert "does not load with the default delegate" in refused.stderr
    assert check(exported / "no_xnnpack.tflite", "--no-delegate").returncode == 0


def test_missing_corrupt_and_mismatched_inputs(exported, tmp_path):
    missing = check(tmp_path / "none.tflite")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes((exported / "blocks.tflite").read_bytes()[:300])
    assert check(corrupt).returncode == 1
    np.save(tmp_path / "flat.npy", np.zeros((3, 784), "float32"))
    mismatched = check(exported / "blocks.tflite", "--input", tmp_path / "flat.npy")
    assert mismatched.returncode == 2 and "expects (n, 28, 28)" in mismatched.stderr
