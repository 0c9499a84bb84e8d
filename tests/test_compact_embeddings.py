"""compact_embeddings: Embedding tables keep only their nonzero rows, outputs unchanged."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.surgery import CompactEmbedding, compact_embeddings


def text_model(vocabulary=60, zero_rows=slice(12, None), mask_zero=False, width=8):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((9,), dtype="int32", name="tokens"),
        keras.layers.Embedding(vocabulary, width, mask_zero=mask_zero, name="embedding"),
        keras.layers.LSTM(5, name="lstm"),
        keras.layers.Dense(1, name="logit"),
    ])
    table = model.get_layer("embedding").embeddings.numpy()
    table[zero_rows] = 0.0
    model.get_layer("embedding").embeddings.assign(table)
    return model


def tokens(vocabulary=60, n=32):
    return np.random.default_rng(1).integers(0, vocabulary, (n, 9)).astype("int32")


def test_only_nonzero_rows_are_stored_and_outputs_are_unchanged(tmp_path):
    model = text_model()
    before = [w.copy() for w in model.get_weights()]
    small = compact_embeddings(model)
    layer = small.get_layer("embedding")
    assert isinstance(layer, CompactEmbedding) and tuple(layer.embeddings.shape) == (13, 8)
    assert not np.any(layer.embeddings.numpy()[-1])  # the row every dropped token shares
    np.testing.assert_array_equal(small.predict(tokens(), verbose=0), model.predict(tokens(), verbose=0))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # original untouched
    small.save(tmp_path / "small.keras")
    loaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_array_equal(loaded.predict(tokens(), verbose=0), model.predict(tokens(), verbose=0))


def test_mask_zero_still_masks_padding():
    model = text_model(mask_zero=True, zero_rows=slice(0, 40))  # padding's own row is among the dropped
    small = compact_embeddings(model)
    x = tokens()
    x[:, :4] = 0
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    mask = small.get_layer("embedding").compute_mask(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), x != 0)


def test_tables_that_would_not_shrink_are_left_alone_unless_named():
    model = text_model(zero_rows=slice(55, None))  # 5 zero rows: the int32 index would cost more
    assert type(compact_embeddings(model).get_layer("embedding")) is keras.layers.Embedding
    named = compact_embeddings(model, ["embedding"]).get_layer("embedding")
    assert isinstance(named, CompactEmbedding) and named.rows == 56


@pytest.mark.parametrize("layers, match", [
    (["nope"], "no layer 'nope'.*'embedding'"),
    (["lstm"], "layer 'lstm' is a LSTM; `layers` may name Embedding layers only"),
])
def test_bad_layer_names_are_refused(layers, match):
    with pytest.raises(ValueError, match=match):
        compact_embeddings(text_model(), layers)


def test_pruning_wrappers_must_be_stripped_first():
    pruned = tfprune.prune_low_magnitude(text_model())
    with pytest.raises(ValueError, match="strip_pruning"):
        compact_embeddings(pruned)


def test_row_pruning_then_compaction_shrinks_the_tflite_file(tmp_path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tf_keras")
    vocabulary = 2000
    model = text_model(vocabulary, zero_rows=slice(0, 0), width=32)
    schedule = tfprune.ConstantSparsity(0.9, 0, frequency=1)
    embedding = tfprune.prune_low_magnitude(model.get_layer("embedding"), schedule, block_size=(1, 32))
    rows = keras.Sequential([keras.Input((9,), dtype="int32"), embedding])
    rows.compile("sgd", "mse")
    rows.fit(tokens(vocabulary), np.zeros((32, 9, 32)), epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    table = tfprune.strip_pruning(rows).layers[-1].embeddings.numpy()
    assert np.count_nonzero(np.any(table != 0, axis=1)) == 200  # whole rows pruned
    model.get_layer("embedding").embeddings.assign(table)

    small = compact_embeddings(model)
    dense = tfprune.export.to_tflite(model, tmp_path / "dense.tflite", quantization="dynamic",
                                     sample_data=tokens(vocabulary), latency_runs=0)
    report = tfprune.export.to_tflite(small, tmp_path / "small.tflite", quantization="dynamic",
                                      sample_data=tokens(vocabulary), latency_runs=0)
    assert report.operators.count("GATHER") == 2 and "UNIDIRECTIONAL_SEQUENCE_LSTM" in report.operators
    assert report.agreement["default"]["max_abs_error"] < 1e-3  # int8 weights: quantization error only
    # int8 table: 2,000 x 32 bytes before; 201 x 32 bytes and a 2,000-entry int32 index after.
    assert report.size_bytes < dense.size_bytes / 2
