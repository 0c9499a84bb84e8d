"""tfprune.export: conversion, verification under both interpreter configurations, the report, bad input.

Models are small MLPs trained for a few seconds on synthetic MNIST-shaped data
(``export_helpers.synthetic_digits``, so the tests run anywhere); one test uses
real MNIST. Sparsity is made with numpy (blocks or top magnitudes) or with
tfprune itself. Conversions are shared per module, since each takes about a second.
"""

import gzip
import json
import os
import pathlib

import keras
import numpy as np
import pytest

import tfprune
from export_helpers import (constant_weights, kernel_nonzeros, leftovers, mnist_slice, synthetic_digits,
                            trained_mlp, zeroed)
from tfprune.export import ExportError, FlatbufferError, TFLiteRun, inspect_tflite, run_tflite, to_tflite
from tfprune.export import _flatbuffer, _quantization, _runtime

# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return synthetic_digits()


@pytest.fixture(scope="module")
def trained(data):
    x, y, _, _ = data
    return trained_mlp(x, y)


@pytest.fixture(scope="module")
def block_sparse(trained):
    return zeroed(trained, block=(16, 1))


@pytest.fixture(scope="module")
def unstructured(trained):
    return zeroed(trained, block=(1, 1))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def dense_float(trained, data, out):
    return to_tflite(trained, out / "dense.tflite", sample_data=data[2], sparse=False)


@pytest.fixture(scope="module")
def block_int8(block_sparse, data, out):
    return to_tflite(block_sparse, out / "block_int8.tflite", quantization="int8",
                     representative_data=data[0][:200], sample_data=data[2])


@pytest.fixture(scope="module")
def unstructured_auto(unstructured, data, out):
    return to_tflite(unstructured, out / "unstructured_auto.tflite", quantization="int8",
                     representative_data=data[0][:200], sample_data=data[2])


# -- conversion and verification ------------------------------------------------------------


def test_float32_export_matches_keras_and_leaves_the_model_alone(trained, dense_float, data):
    before = [w.copy() for w in trained.get_weights()]
    assert os.path.getsize(dense_float.path) == dense_float.size_bytes
    assert dense_float.gzip_bytes == len(gzip.compress(pathlib.Path(dense_float.path).read_bytes(), 9))
    for config in ("default", "no_delegates"):
        assert dense_float.runtime[config]["loads"]
        agreement = dense_float.agreement[config]
        assert agreement["samples"] == min(len(data[2]), 200)  # verify_samples defaults to 200
        assert agreement["max_abs_error"] < 1e-3
        assert agreement["top1_agreement"] == 1.0
    # Shapes come from the file: FULLY_CONNECTED stores (out, in), the Keras kernel transposed.
    shapes = sorted(tuple(t["shape"]) for t in constant_weights(dense_float))
    assert shapes == sorted(tuple(layer.kernel.shape[::-1]) for layer in trained.layers[1:])
    assert dense_float.operators.count("FULLY_CONNECTED") == 2
    assert not dense_float.sparse_encoded
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))
    assert [type(layer).__name__ for layer in trained.layers] == ["Flatten", "Dense", "Dense"]


def test_block_sparse_int8_is_small_stored_sparse_and_loads_with_xnnpack(block_int8, block_sparse, dense_float):
    assert block_int8.works_by_default and block_int8.runtime["no_delegates"]["loads"]
    assert block_int8.sparse_encoded
    weights = constant_weights(block_int8)
    assert all(t["storage"] == "sparse" and t["block"] == [1, 16] and t["dtype"] == "int8" for t in weights)
    # Quantization may round a tiny kept weight to zero, never revive a pruned one.
    for stored, keras_count in zip(sorted(t["nonzero"] for t in weights), kernel_nonzeros(block_sparse)):
        assert 0.97 * keras_count <= stored <= keras_count
    assert dense_float.size_bytes / block_int8.size_bytes > 15
    assert block_int8.agreement["default"]["top1_agreement"] >= 0.95
    assert block_int8.alternatives == []


def test_auto_writes_unstructured_int8_dense_and_says_why(unstructured_auto):
    report = unstructured_auto
    assert report.works_by_default
    assert not report.sparse_encoded
    [alternative] = report.alternatives
    assert alternative["encoding"] == "sparse"
    assert not alternative["loads_default"] and alternative["loads_no_delegates"]
    assert alternative["size_bytes"] < report.size_bytes
    assert "FULLY_CONNECTED" in alternative["reason"]
    assert any("block_size=(16, 1)" in note for note in report.notes)
    # Every weight was sparse in the refused file; each says so, under the name the dense file gives it.
    assert len(report.encodings) == 2 and {e["storage"] for e in report.encodings} == {"dense"}
    assert all(e["reason"].startswith("dense: XNNPACK refused the sparse FULLY_CONNECTED") for e in report.encodings)


def test_sparse_true_refuses_a_file_xnnpack_cannot_load(unstructured, data, tmp_path):
    with pytest.raises(ExportError, match="default XNNPACK delegate") as err:
        to_tflite(unstructured, tmp_path / "m.tflite", quantization="dynamic", sparse=True)
    assert "block_size=(16, 1)" in str(err.value) and "require_default_delegate=False" in str(err.value)
    assert leftovers(tmp_path) == []


def test_sparse_true_can_target_an_interpreter_without_delegates(unstructured, tmp_path):
    with pytest.warns(RuntimeWarning, match="does not work under the default XNNPACK delegate"):
        report = to_tflite(unstructured, tmp_path / "m.tflite", quantization="dynamic", sparse=True,
                           require_default_delegate=False)
    assert report.sparse_encoded
    assert not report.works_by_default and report.runtime["no_delegates"]["works"]
    assert report.warnings and "WARNING" in str(report)
    assert leftovers(tmp_path) == ["m.tflite"]


def test_pruned_model_with_wrappers_exports_and_keeps_its_wrappers(trained, data, tmp_path):
    x, y, x_test, _ = data
    pruned = tfprune.prune_low_magnitude(
        trained, pruning_schedule=tfprune.ConstantSparsity(0.8, 0, frequency=1), block_size=(16, 1)
    )
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    report = to_tflite(pruned, tmp_path / "pruned.tflite", quantization="dynamic", sample_data=x_test)
    assert sum(isinstance(layer, tfprune.PruneLowMagnitude) for layer in pruned.layers) == 2
    stripped = tfprune.strip_pruning(pruned)
    # int8 rounding may zero a tiny kept weight, never revive a pruned one.
    for stored, keras_count in zip(sorted(t["nonzero"] for t in constant_weights(report)), kernel_nonzeros(stripped)):
        assert 0.97 * keras_count <= stored <= keras_count
    assert report.works_by_default
    assert report.agreement["default"]["top1_agreement"] >= 0.95
    # Dynamic-range weights in (16, 1) blocks: XNNPACK computes garbage on the sparse file (NaN, or now
    # and then a crash while loading it: undefined behaviour, which the child process contains).
    [alternative] = report.alternatives
    assert not alternative["works_default"] and alternative["works_no_delegates"], alternative["reason"]
    assert "NaN or infinity" in alternative["reason"] or "crashed" in alternative["reason"]
    assert not report.sparse_encoded


def test_dynamic_range_keeps_float_input_and_int8_weights(dense_float, trained, data, tmp_path):
    report = to_tflite(trained, tmp_path / "d.tflite", quantization="dynamic", sparse=False, sample_data=data[2])
    assert report.inputs[0]["dtype"] == "float32"
    # The converter quantizes weights of 1,024 elements or more; fc2 (10x64) stays float.
    dtypes = {tuple(t["shape"]): t["dtype"] for t in constant_weights(report)}
    assert dtypes == {(64, 784): "int8", (10, 64): "float32"}
    assert "QUANTIZE" not in report.operators
    assert report.size_bytes < dense_float.size_bytes / 3


def test_int8_with_integer_input_and_output(block_sparse, data, tmp_path):
    report = to_tflite(block_sparse, tmp_path / "io.tflite", quantization="int8", io_dtype="int8",
                       representative_data=data[0][:200], sample_data=data[2])
    for tensor in report.inputs + report.outputs:
        assert tensor["dtype"] == "int8" and tensor["quantization"]["scales"] == 1
    assert "QUANTIZE" not in report.operators and "DEQUANTIZE" not in report.operators
    assert report.agreement["default"]["top1_agreement"] >= 0.95
    assert report.settings["io_dtype"] == "int8"


def test_float16_stores_half_precision_weights(trained, dense_float, tmp_path):
    report = to_tflite(trained, tmp_path / "h.tflite", quantization="float16", sparse=False)
    assert {t["dtype"] for t in constant_weights(report)} == {"float16"}
    assert "DEQUANTIZE" in report.operators
    assert 0.4 < report.size_bytes / dense_float.size_bytes < 0.6


def test_auto_never_writes_a_sparse_file_that_computes_garbage(block_sparse, data, tmp_path):
    # float16 weights in (16, 1) blocks: ai-edge-litert 2.3.0 computes NaN from the sparse file.
    report = to_tflite(block_sparse, tmp_path / "h.tflite", quantization="float16", sample_data=data[2])
    assert report.works_by_default and report.agreement["default"]["max_abs_error"] < 0.05
    for alternative in report.alternatives:
        assert not alternative["works_default"]
        assert "wrong outputs" in alternative["reason"] or "fails" in alternative["reason"]


def test_per_tensor_quantization_shrinks_a_small_sparse_file(block_sparse, block_int8, data, tmp_path):
    report = to_tflite(block_sparse, tmp_path / "pt.tflite", quantization="int8", per_channel=False,
                       representative_data=data[0][:200], sample_data=data[2])
    assert all(t["quantization"]["scales"] == 1 for t in constant_weights(report))
    assert report.size_bytes < block_int8.size_bytes
    assert report.agreement["default"]["top1_agreement"] >= 0.9


def test_model_with_two_inputs_and_two_outputs_matches_keras_per_output(tmp_path):
    a, b = keras.Input((6,), name="left"), keras.Input((3,), name="right")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4, name="da")(a), keras.layers.Dense(4, name="db")(b)])
    model = keras.Model([a, b], [keras.layers.Dense(2, name="small")(joined), keras.layers.Dense(5, name="big")(joined)])
    rng = np.random.default_rng(1)
    samples = [rng.random((20, 6), dtype=np.float32), rng.random((20, 3), dtype=np.float32)]
    report = to_tflite(model, tmp_path / "two.tflite", sample_data=samples, sparse=False)
    assert report.agreement["default"]["max_abs_error"] < 1e-4
    assert sorted(tuple(t["shape"]) for t in report.outputs) == [(1, 2), (1, 5)]


def test_real_mnist_block_sparse_int8_keeps_the_keras_predictions(tmp_path):
    x, y, x_test, y_test = mnist_slice(train=2000, test=200)
    model = zeroed(trained_mlp(x, y), block=(16, 1), sparsity=0.5)
    report = to_tflite(model, tmp_path / "mnist.tflite", quantization="int8", representative_data=x[:200],
                       sample_data=x_test, latency_runs=0)
    assert report.works_by_default and report.sparse_encoded
    assert report.agreement["default"]["top1_agreement"] >= 0.95
    [logits] = run_tflite(report.path, x_test, repeats=0).outputs
    keras_accuracy = np.mean(keras.ops.convert_to_numpy(model(x_test)).argmax(-1) == y_test)
    accuracy = np.mean(logits.argmax(-1) == y_test)
    assert accuracy > 0.5 and abs(accuracy - keras_accuracy) <= 0.03


# -- running a file -------------------------------------------------------------------------


def test_run_tflite_gives_the_outputs_the_report_agreed_on_and_a_latency(block_int8, block_sparse, data):
    x_test = data[2][:50]
    result = run_tflite(block_int8.path, x_test, repeats=20)
    assert isinstance(result, TFLiteRun) and result.configuration == "default"
    [logits] = result.outputs
    assert logits.shape == (50, 10) and logits.dtype == np.float32
    keras_logits = keras.ops.convert_to_numpy(block_sparse(x_test))
    assert np.mean(logits.argmax(-1) == keras_logits.argmax(-1)) >= 0.95
    assert result.latency_ms > 0 and result.invokes == 20
    from_bytes = run_tflite(pathlib.Path(block_int8.path).read_bytes(), x_test, delegates=False, repeats=0)
    assert from_bytes.latency_ms is None and from_bytes.configuration == "no_delegates"
    assert np.allclose(from_bytes.outputs[0], logits, atol=1e-5)


def test_run_tflite_names_what_is_wrong(block_int8, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(3, 784\); expected \(n, 28, 28\)"):
        run_tflite(block_int8.path, np.zeros((3, 784), "float32"))
    with pytest.raises(FileNotFoundError, match="no file"):
        run_tflite(tmp_path / "none.tflite", None)
    (tmp_path / "junk.tflite").write_bytes(b"junk" * 10)
    with pytest.raises(FlatbufferError, match=r"run_tflite: '.*junk\.tflite' is not a readable \.tflite file"):
        run_tflite(tmp_path / "junk.tflite")
    assert len(run_tflite(block_int8.path, repeats=0).outputs[0]) == 1  # one random sample


# -- quantization modes ---------------------------------------------------------------------


def test_each_mode_is_one_object_with_a_clear_error():
    assert _quantization.resolve(None) is _quantization.FLOAT32
    assert _quantization.resolve(_quantization.INT8) is _quantization.INT8
    assert _quantization.INT8.needs_representative_data and not _quantization.DYNAMIC.needs_representative_data
    assert _quantization.FLOAT16.io_dtypes == ("float32",)
    with pytest.raises(ValueError, match=r"to_tflite: `quantization` must be one of \(None, 'dynamic', 'int8', "
                                         r"'float16'\)\. Received: 'int4'"):
        _quantization.resolve("int4")


# -- the flatbuffer reader -------------------------------------------------------------------


def test_reader_agrees_with_the_interpreter_on_every_tensor(block_int8):
    interpreter = _runtime.load(block_int8.path, "no_delegates")
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    assert len(details) == len(block_int8.tensors)
    for tensor in block_int8.tensors:
        d = details[tensor["index"]]
        assert tensor["name"] == d["name"]
        assert tensor["shape"] == d["shape"].tolist()
        assert tensor["dtype"] == np.dtype(d["dtype"]).name
        assert (tensor["storage"] == "sparse") == bool(d["sparsity_parameters"])
        scales = d["quantization_parameters"]["scales"]
        assert (tensor["quantization"] or {}).get("scales", 0) == len(scales)
        if tensor["storage"] == "sparse":
            stored = interpreter.get_tensor(tensor["index"])
            assert tensor["stored_values"] == stored.size
            assert tensor["nonzero"] == np.count_nonzero(stored)


def test_inspect_reads_the_same_file_without_the_model(block_int8):
    report = inspect_tflite(block_int8.path)
    assert report.tensors == block_int8.tensors and report.operators == block_int8.operators
    assert report.works_by_default and report.runtime["default"]["latency_ms"] > 0
    assert report.agreement == {}
    quiet = inspect_tflite(block_int8.path, run=False)
    assert quiet.runtime == {} and quiet.tensors == block_int8.tensors


@pytest.mark.parametrize("damage", ["truncate", "identifier", "random", "empty"])
def test_corrupt_files_raise_a_flatbuffer_error(block_int8, tmp_path, damage):
    data = pathlib.Path(block_int8.path).read_bytes()
    broken = {
        "truncate": data[: len(data) // 3],
        "identifier": data[:4] + b"NOPE" + data[8:],
        "random": np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "empty": b"",
    }[damage]
    path = tmp_path / "broken.tflite"
    path.write_bytes(broken)
    with pytest.raises(FlatbufferError, match="broken.tflite"):
        inspect_tflite(path)


def test_truncated_tables_are_reported_not_misread(block_int8):
    data = pathlib.Path(block_int8.path).read_bytes()
    # Keep the header and root table, cut inside the vectors that follow.
    with pytest.raises(FlatbufferError, match="corrupt or truncated|past the end"):
        _flatbuffer.read_model(data[:200] if len(data) > 200 else data[:-1])


def test_report_prints_tables_and_json(block_int8):
    text = str(block_int8)
    for fragment in ("sparse 1x16 blocks", "FULLY_CONNECTED", "default (XNNPACK)", "no delegates", "gzipped"):
        assert fragment in text
    parsed = json.loads(block_int8.to_json())
    assert parsed["size_bytes"] == block_int8.size_bytes
    assert parsed["runtime"]["default"]["loads"] is True
    assert parsed["tensors"] == block_int8.to_dict()["tensors"]
    assert "works" in repr(block_int8)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 784), "float32"), r"shape \(10, 784\); expected \(n, 28, 28\)"),
    (np.zeros((28, 28), "float32"), r"one sample: add the batch axis"),
    (np.zeros((10, 28, 28), "uint8"), r"dtype uint8; expected floating point.*/ 255"),
    ({"pixels": np.zeros((10, 28, 28), "float32")}, r"keys must be the model's input names \['image'\]"),
])
def test_representative_data_is_checked_before_conversion(trained, tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        to_tflite(trained, tmp_path / "m.tflite", quantization="int8", representative_data=bad)
    assert leftovers(tmp_path) == []


def test_int8_without_data_points_to_dynamic(trained, tmp_path):
    with pytest.raises(ValueError, match="representative_data.*quantization='dynamic'"):
        to_tflite(trained, tmp_path / "m.tflite", quantization="int8")


@pytest.mark.parametrize("kwargs, message", [
    ({"quantization": "int4"}, "`quantization` must be one of"),
    ({"sparse": "yes"}, "`sparse` must be 'auto', True or False"),
    ({"io_dtype": "int8"}, "needs quantization='int8'"),
])
def test_bad_options_are_named(trained, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_tflite(trained, tmp_path / "m.tflite", **kwargs)


def test_recurrent_layer_under_int8_is_named_and_dynamic_works(tmp_path):
    model = keras.Sequential([keras.Input((12, 8)), keras.layers.LSTM(16, name="my_lstm"), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((16, 12, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"layer 'my_lstm' \(LSTM\).*quantization='dynamic'"):
        to_tflite(model, tmp_path / "lstm.tflite", quantization="int8", representative_data=x)
    assert leftovers(tmp_path) == []
    report = to_tflite(model, tmp_path / "lstm.tflite", quantization="dynamic", sample_data=x)
    assert report.works_by_default and report.agreement["default"]["max_abs_error"] < 0.05


def test_op_without_a_tflite_kernel_names_its_layer(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                              keras.layers.Lambda(keras.ops.arctan, name="my_atan"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"layer 'my_atan' \(Lambda\) uses the TensorFlow op tf.Atan"):
        to_tflite(model, tmp_path / "m.tflite")
    assert leftovers(tmp_path) == []


def test_int8_layer_left_in_float_is_named(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                              keras.layers.Lambda(keras.ops.sin, name="my_sin"), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((32, 8), dtype=np.float32)
    with pytest.warns(RuntimeWarning, match=r"SIN \(layer 'my_sin'\)"):
        report = to_tflite(model, tmp_path / "m.tflite", quantization="int8", representative_data=x)
    assert any("my_sin" in w for w in report.warnings)


def test_unwritable_destinations_fail_before_converting(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_tflite(trained, tmp_path / "missing" / "m.tflite")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        to_tflite(trained, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        to_tflite(trained, blocker / "m.tflite")
    assert leftovers(tmp_path) == ["file"]


def test_failed_verification_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous version")

    def refuse(path, configuration, *args, **kwargs):
        return _runtime.RunResult(configuration, loads=False, error="simulated refusal")

    monkeypatch.setattr(_runtime, "probe", refuse)
    with pytest.raises(ExportError, match="does not work under any interpreter configuration"):
        to_tflite(trained, target, sparse=False)
    assert leftovers(tmp_path) == ["m.tflite"] and target.read_bytes() == b"previous version"
