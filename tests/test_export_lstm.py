"""LSTMs export as TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM op, with their zeros in the file."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.export import to_tflite

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tf_keras")


def text_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12,), dtype="int32", name="tokens"),
        keras.layers.Embedding(50, 8, name="embedding"),
        keras.layers.LSTM(6, name="lstm"),
        keras.layers.Dense(1, name="logit"),
    ])


def tokens(n=16):
    return np.random.default_rng(0).integers(0, 50, (n, 12)).astype("int32")


def test_lstm_is_fused_and_agrees_with_keras(tmp_path):
    report = to_tflite(text_model(), tmp_path / "lstm.tflite", sample_data=tokens(), latency_runs=0)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in report.operators and "WHILE" not in report.operators
    assert report.settings["fused_lstm"] is True
    assert report.works_by_default
    assert report.agreement["default"]["max_abs_error"] < 1e-5
    assert any("resetVariableTensors" in note for note in report.notes)


def test_fuse_lstm_false_keeps_the_keras_3_loop(tmp_path):
    report = to_tflite(text_model(), tmp_path / "loop.tflite", sample_data=tokens(), latency_runs=0,
                       fuse_lstm=False)
    assert "WHILE" in report.operators and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in report.operators


def test_pruned_weights_reach_the_file_as_zeros(tmp_path):
    model = text_model()
    weights = [w * (np.random.default_rng(1).random(w.shape) > 0.8) if w.ndim == 2 else w
               for w in model.get_weights()]
    model.set_weights(weights)
    report = to_tflite(model, tmp_path / "pruned.tflite", quantization="dynamic", sample_data=tokens(),
                       latency_runs=0)
    keras_nonzero = sum(r["nonzero"] for r in tfprune.sparsity_report(model).rows)
    # The fused op splits the LSTM kernels into one tensor per gate; the zeros stay zeros.
    file_nonzero = sum(t["nonzero"] for t in report.tensors if t["constant"] and len(t["shape"]) == 2)
    assert file_nonzero == keras_nonzero


def test_a_branching_model_keeps_the_loop_and_says_why(tmp_path):
    inputs = keras.Input((12,), dtype="int32")
    embedded = keras.layers.Embedding(50, 8)(inputs)
    merged = keras.layers.Concatenate()([keras.layers.LSTM(4)(embedded), keras.layers.GlobalMaxPooling1D()(embedded)])
    model = keras.Model(inputs, keras.layers.Dense(1)(merged))
    report = to_tflite(model, tmp_path / "branch.tflite", sample_data=tokens(), latency_runs=0)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in report.operators
    assert any("WHILE loop" in note and "single chain" in note for note in report.notes)
    with pytest.raises(ValueError, match="fuse_lstm=True, but model .* is not a single chain"):
        to_tflite(model, tmp_path / "branch2.tflite", sample_data=tokens(), fuse_lstm=True)
    assert not (tmp_path / "branch2.tflite").exists()
