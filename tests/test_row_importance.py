"""prune_low_magnitude(..., row_importance=...): magnitudes weighted per row before ranking."""

import numpy as np
import pytest
import keras

import tfprune

VOCABULARY, WIDTH = 40, 8


def embedding_model(table):
    model = keras.Sequential([keras.Input((6,), dtype="int32"),
                              keras.layers.Embedding(VOCABULARY, WIDTH, name="embedding")])
    model.get_layer("embedding").embeddings.assign(table)
    return model


def prune_once(layer, model_input, target_shape, sparsity, **kwargs):
    """Wraps ``layer``, runs one mask update with a zero learning rate, and returns the stripped weight."""
    wrapped = tfprune.prune_low_magnitude(layer, tfprune.ConstantSparsity(sparsity, 0, frequency=1), **kwargs)
    model = keras.Sequential([keras.Input(model_input.shape[1:], dtype=model_input.dtype), wrapped])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(model_input, np.zeros((len(model_input),) + target_shape), epochs=1, verbose=0,
              callbacks=[tfprune.UpdatePruningStep()])
    return keras.ops.convert_to_numpy(tfprune.strip_pruning(model).layers[-1].weights[0])


def test_embedding_rows_are_ranked_by_magnitude_times_count():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    # Tokens never seen get the largest rows: plain magnitude keeps them, count-weighted drops them.
    counts = np.arange(VOCABULARY, 0, -1).astype("float32")
    counts[-10:] = 0.0
    table[-10:] *= 50.0
    tokens = rng.integers(0, VOCABULARY, size=(8, 6)).astype("int32")
    layer = embedding_model(table).get_layer("embedding")

    kept = {}
    for name, importance in (("magnitude", None), ("weighted", counts)):
        pruned = prune_once(layer, tokens, (6, WIDTH), 0.75, block_size=(1, WIDTH), row_importance=importance)
        kept[name] = set(np.flatnonzero(np.any(pruned != 0, axis=1)))
    score = np.abs(table).mean(axis=1) * counts
    assert kept["weighted"] == set(np.argsort(-score)[:VOCABULARY // 4])
    assert kept["magnitude"] == set(np.argsort(-np.abs(table).mean(axis=1))[:VOCABULARY // 4])
    assert set(range(VOCABULARY - 10, VOCABULARY)) <= kept["magnitude"]
    assert not kept["weighted"] & set(range(VOCABULARY - 10, VOCABULARY))


def test_dense_weights_are_ranked_by_magnitude_times_input_importance():
    rng = np.random.default_rng(1)
    layer = keras.layers.Dense(5, name="fc")
    layer.build((None, 12))
    kernel = rng.normal(size=(12, 5)).astype("float32")
    layer.kernel.assign(kernel)
    importance = rng.uniform(0, 3, size=12).astype("float32")
    pruned = prune_once(layer, rng.normal(size=(4, 12)).astype("float32"), (5,), 0.6, row_importance=importance)
    score = np.abs(kernel) * importance[:, None]
    keep = 24  # 40% of 60 weights
    expected = np.zeros(score.size, bool)
    expected[np.argsort(-score.ravel())[:keep]] = True
    assert np.array_equal(pruned.ravel() != 0, expected)
    assert np.array_equal(pruned.ravel()[expected], kernel.ravel()[expected])


def test_row_importance_is_saved_and_loaded(tmp_path):
    counts = np.arange(VOCABULARY, dtype="float32")
    layer = embedding_model(np.ones((VOCABULARY, WIDTH), "float32")).get_layer("embedding")
    wrapped = tfprune.prune_low_magnitude(layer, block_size=(1, WIDTH), row_importance=counts)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), wrapped])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").layers[-1]
    assert np.array_equal(loaded.row_importance, counts)
    assert loaded.get_config()["row_importance"] == wrapped.get_config()["row_importance"]


@pytest.mark.parametrize("importance, kwargs, match", [
    (np.ones(VOCABULARY - 1), {}, r"layer 'embedding'.*39 entries.*\(40, 8\) has 40 rows"),
    (-np.ones(VOCABULARY), {}, "negative, NaN or infinite"),
    (np.full(VOCABULARY, np.nan), {}, "negative, NaN or infinite"),
    (np.ones((VOCABULARY, 1)), {}, "1-D array"),
    (np.ones(VOCABULARY), {"sparsity_m_by_n": (2, 4)}, "sparsity_m_by_n"),
    (np.ones(VOCABULARY), {"granularity": "global"}, "granularity='layer'"),
])
def test_bad_row_importance_names_the_layer_and_leaves_it_alone(importance, kwargs, match):
    layer = embedding_model(np.ones((VOCABULARY, WIDTH), "float32")).get_layer("embedding")
    with pytest.raises(ValueError, match=match):
        tfprune.prune_low_magnitude(layer, row_importance=importance, **kwargs)
    assert layer.embeddings.constraint is None


def test_row_importance_needs_one_rank_2_weight_and_a_single_layer():
    lstm = keras.layers.LSTM(4, name="lstm")
    lstm.build((None, 3, 4))
    with pytest.raises(ValueError, match=r"layer 'lstm', LSTM.*only pruned weight is rank 2"):
        tfprune.prune_low_magnitude(lstm, row_importance=np.ones(4))
    model = embedding_model(np.ones((VOCABULARY, WIDTH), "float32"))
    with pytest.raises(ValueError, match="only with a single layer.*clone_function"):
        tfprune.prune_low_magnitude(model, row_importance=np.ones(VOCABULARY))
