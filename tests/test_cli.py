"""The ``tfprune`` command line: export, inspect, report, and one-line errors with status 2."""

import json
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

import tfprune
from tfprune.cli import main
from export_helpers import synthetic_digits, trained_mlp, zeroed


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    x, y, x_test, _ = synthetic_digits(train=1000, test=100)
    folder = tmp_path_factory.mktemp("cli")
    model = zeroed(trained_mlp(x, y, epochs=1), block=(16, 1))
    model.save(folder / "model.keras")
    np.save(folder / "calib.npy", x[:100])
    np.save(folder / "samples.npy", x_test)
    return folder


def run_ok(capsys, argv):
    assert main(argv) == 0
    captured = capsys.readouterr()
    return captured.out


def run_error(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfprune: error: "), captured.err
    return lines[0]


def test_export_int8_writes_a_verified_file_and_prints_the_report(files, capsys):
    out = files / "model_int8.tflite"
    text = run_ok(capsys, ["export", str(files / "model.keras"), "-o", str(out), "--quantize", "int8",
                           "--representative", str(files / "calib.npy"), "--samples", str(files / "samples.npy"),
                           "--sparse", "auto"])
    assert out.is_file()
    assert "sparse 1x16 blocks" in text and "default (XNNPACK)" in text


def test_export_json_and_inspect_json_describe_the_same_file(files, capsys):
    out = files / "model_float.tflite"
    exported = json.loads(run_ok(capsys, ["export", str(files / "model.keras"), "-o", str(out), "--json"]))
    inspected = json.loads(run_ok(capsys, ["inspect", str(out), "--json"]))
    assert exported["size_bytes"] == inspected["size_bytes"] == out.stat().st_size
    assert exported["tensors"] == inspected["tensors"]
    assert inspected["runtime"]["default"]["works"] is True
    assert inspected["agreement"] == {}


def test_inspect_prints_tables_from_the_file_alone(files, capsys):
    out = files / "model_dyn.tflite"
    run_ok(capsys, ["export", str(files / "model.keras"), "-o", str(out), "--quantize", "dynamic", "--sparse", "false"])
    text = run_ok(capsys, ["inspect", str(out), "--no-run"])
    assert "FULLY_CONNECTED" in text and "int8" in text and "latency" in text


def test_report_counts_nonzeros_of_a_model_saved_with_wrappers(files, capsys, tmp_path):
    import keras

    model = keras.saving.load_model(files / "model.keras")
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    pruned.save(tmp_path / "wrapped.keras")
    text = run_ok(capsys, ["report", str(tmp_path / "wrapped.keras")])
    assert "fc1" in text and "fc2" in text
    report = json.loads(run_ok(capsys, ["report", str(files / "model.keras"), "--json"]))
    expected = {layer.name: int(np.count_nonzero(layer.kernel)) for layer in model.layers[1:]}
    assert {row["layer"]: row["nonzero"] for row in report["layers"]} == expected


@pytest.mark.parametrize("command", ["export", "inspect", "report"])
def test_missing_file(command, capsys, tmp_path):
    argv = [command, str(tmp_path / "nothing.bin")] + (["-o", str(tmp_path / "o.tflite")] if command == "export" else [])
    assert "no such file" in run_error(capsys, argv)


def test_a_file_that_is_not_a_model(capsys, tmp_path):
    fake = tmp_path / "notes.keras"
    fake.write_text("shopping list")
    assert "cannot load" in run_error(capsys, ["report", str(fake)])
    assert "cannot load" in run_error(capsys, ["export", str(fake), "-o", str(tmp_path / "o.tflite")])


def test_a_corrupt_flatbuffer(capsys, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(struct.pack("<I", 10_000) + b"TFL3" + bytes(100))  # root table past the end
    message = run_error(capsys, ["inspect", str(broken)])
    assert "broken.tflite" in message and "corrupt or truncated" in message
    text_file = tmp_path / "text.tflite"
    text_file.write_text("not a flatbuffer at all")
    assert "not the TFLite file identifier" in run_error(capsys, ["inspect", str(text_file)])


def test_bad_representative_data_and_unwritable_output(files, capsys, tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((10, 784), "float32"))
    message = run_error(capsys, ["export", str(files / "model.keras"), "-o", str(tmp_path / "o.tflite"),
                                 "--quantize", "int8", "--representative", str(tmp_path / "flat.npy")])
    assert "expected (n, 28, 28)" in message
    (tmp_path / "junk.npy").write_text("junk")
    assert "cannot read" in run_error(capsys, ["export", str(files / "model.keras"), "-o", str(tmp_path / "o.tflite"),
                                              "--quantize", "int8", "--representative", str(tmp_path / "junk.npy")])
    assert "does not exist" in run_error(capsys, ["export", str(files / "model.keras"),
                                                  "-o", str(tmp_path / "no" / "o.tflite")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.npy", "junk.npy"]


def test_console_script_help_and_error_without_traceback(tmp_path):
    script = pathlib.Path(sys.executable).with_name("tfprune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tfprune.cli"]
    shown = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "examples:" in shown.stdout and "tfprune export" in shown.stdout
    failed = subprocess.run(command + ["inspect", str(tmp_path / "missing.tflite")],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    # TensorFlow's own import chatter may precede it; ours is exactly one line.
    ours = [line for line in failed.stderr.splitlines() if line.startswith("tfprune:")]
    assert ours == [f"tfprune: error: no such file: '{tmp_path / 'missing.tflite'}'"]


@pytest.mark.parametrize("target", ["model.keras", "link.keras", "calib.npy"])
def test_export_refuses_to_write_over_its_own_inputs(files, capsys, target):
    link = files / "link.keras"
    if not link.exists():
        link.symlink_to(files / "model.keras")
    before = (files / "model.keras").read_bytes(), (files / "calib.npy").read_bytes()
    line = run_error(capsys, ["export", str(files / "model.keras"), "-o", str(files / target),
                              "--representative", str(files / "calib.npy")])
    assert "would destroy it" in line and target in line
    assert ((files / "model.keras").read_bytes(), (files / "calib.npy").read_bytes()) == before
