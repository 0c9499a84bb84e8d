"""Data-driven channel scores read calibration data in every structure ``model.fit`` takes."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune.structured as structured

L = keras.layers
N = 24


def two_inputs(as_dict=False):
    """Inputs 'a' (8,) and 'b' (4,), one Dense-ReLU branch each, concatenated, Dense logits."""
    a, b = keras.Input((8,), name="a"), keras.Input((4,), name="b")
    h = L.Concatenate(name="cat")([L.Dense(6, activation="relu", name="da")(a),
                                   L.Dense(5, activation="relu", name="db")(b)])
    out = L.Dense(3, name="out")(h)
    model = keras.Model({"a": a, "b": b} if as_dict else [a, b], out, name="two")
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(N, 8)).astype("float32")
    x2 = rng.normal(size=(N, 4)).astype("float32")
    y = rng.integers(0, 3, N)
    return x1, x2, y


def direct_apoz(model, x1, x2):
    """1 - fraction of zeros of each branch's ReLU output, computed straight from the layers."""
    probe = keras.Model(model.inputs, [model.get_layer("da").output, model.get_layer("db").output])
    acts = probe.predict([x1, x2], verbose=0)
    return {name: 1.0 - (a == 0).mean(axis=0) for name, a in zip(("da", "db"), acts)}


def test_a_list_of_inputs_is_the_inputs_not_x_and_y(arrays):
    x1, x2, _ = arrays
    model = two_inputs()
    scores = structured.apoz(model, [x1, x2], batch_size=10, verbose=0)
    expected = direct_apoz(model, x1, x2)
    assert set(scores) == {"da", "db"}
    for name in expected:
        np.testing.assert_allclose(scores[name], expected[name], atol=1e-6)


@pytest.mark.parametrize("as_dict", [False, True], ids=["list_model", "dict_model"])
def test_a_dict_keyed_by_input_name(arrays, as_dict):
    x1, x2, _ = arrays
    model = two_inputs(as_dict=as_dict)
    scores = structured.apoz(model, {"b": x2, "a": x1}, verbose=0)  # key order must not matter
    expected = direct_apoz(model, x1, x2)
    for name in expected:
        np.testing.assert_allclose(scores[name], expected[name], atol=1e-6)


def test_a_dataset_of_x_y_batches_and_a_generator_match_the_arrays(arrays):
    x1, x2, y = arrays
    model = two_inputs()
    in_memory = structured.taylor(model, ([x1, x2], y), batch_size=8, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(((x1, x2), y)).batch(8)
    from_dataset = structured.taylor(model, dataset, verbose=0)
    dict_dataset = tf.data.Dataset.from_tensor_slices(({"a": x1, "b": x2}, y)).batch(5)
    from_dicts = structured.taylor(model, dict_dataset, verbose=0)
    generator = (([x1[i:i + 6], x2[i:i + 6]], y[i:i + 6]) for i in range(0, N, 6))
    from_generator = structured.taylor(model, generator, verbose=0)
    assert set(in_memory) == {"da", "db"} and in_memory["da"].sum() > 0
    for other in (from_dataset, from_dicts, from_generator):
        for name in in_memory:
            np.testing.assert_allclose(other[name], in_memory[name], rtol=1e-5, atol=1e-7)


def test_a_dataset_of_input_batches_for_apoz(arrays):
    x1, x2, _ = arrays
    model = two_inputs()
    dataset = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(7)  # the two inputs, no labels
    scores = structured.apoz(model, dataset, verbose=0)
    expected = direct_apoz(model, x1, x2)
    for name in expected:
        np.testing.assert_allclose(scores[name], expected[name], atol=1e-6)


def test_sample_weights_scale_each_images_taylor_contribution(arrays):
    x1, x2, y = arrays
    model = two_inputs()
    weights = np.where(np.arange(N) < N // 2, 1.0, 0.0).astype("float32")
    weighted = structured.taylor(model, ([x1, x2], y, weights), verbose=0)
    # Taylor averages over every image: zero-weight images add nothing but still count.
    first_half = structured.taylor(model, ([x1[:N // 2], x2[:N // 2]], y[:N // 2]), verbose=0)
    for name in first_half:
        np.testing.assert_allclose(weighted[name], first_half[name] / 2, rtol=1e-5, atol=1e-7)


def test_x_y_sample_weight_on_a_single_input_model():
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="relu", name="h"), L.Dense(2, name="o")])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 5)).astype("float32"), rng.integers(0, 2, 10)
    plain = structured.taylor(model, (x, y), verbose=0)
    doubled = structured.taylor(model, (x, y, np.full(10, 2.0, "float32")), verbose=0)
    np.testing.assert_allclose(doubled["h"], 2 * plain["h"], rtol=1e-5)
    # (x,) is x, and (x, y) stays (x, y) for a single-input model
    np.testing.assert_allclose(structured.apoz(model, (x,), verbose=0)["h"], structured.apoz(model, x, verbose=0)["h"])


def test_prune_with_data_on_a_two_input_model(arrays):
    x1, x2, _ = arrays
    smaller = structured.prune(two_inputs(), "apoz", ratio=0.5, data=[x1, x2], verbose=0)
    assert smaller.get_layer("da").units == 3 and smaller.get_layer("db").units == 3  # 6 -> 3, 5 -> 3 (rounded)
    assert smaller.predict([x1, x2], verbose=0).shape == (N, 3)


@pytest.mark.parametrize(
    "data, match",
    [
        (lambda x1, x2, y: [x1, x2[:, :3]], r"shape \(24, 3\) for input 'b'.*input 'b' of shape \(None, 4\)"),
        (lambda x1, x2, y: {"a": x1, "b": x2[:, None]}, r"shape \(24, 1, 4\) for input 'b'"),
        (lambda x1, x2, y: {"a": x1}, r"no value for its input 'b'"),
        (lambda x1, x2, y: x1, r"one input array.*takes 2 inputs \('a', 'b'\)"),
        (lambda x1, x2, y: [x1, x2, y, y], r"a list of 4 items.*model 'two' \(2 input\(s\): 'a', 'b'\)"),
        (lambda x1, x2, y: ([x1, x2[:10]], y), r"samples"),
        (lambda x1, x2, y: tf.data.Dataset.from_tensor_slices((x2, x1)).batch(4),
         r"shape \(4, 4\) for input 'a'.*\(None, 8\)"),
    ],
    ids=["list_shape", "dict_rank", "dict_missing", "one_array", "too_many", "lengths", "dataset_swapped"],
)
def test_mismatches_name_the_input(arrays, data, match):
    with pytest.raises(ValueError, match=match):
        structured.apoz(two_inputs(), data(*arrays), verbose=0)


def test_taylor_on_a_model_with_nothing_to_score_warns_and_returns_empty():
    inp = keras.Input((5,))
    model = keras.Model(inp, L.Dense(3, name="only")(inp), name="tiny")  # its one Dense is the output
    model.compile(loss="mse")
    data = (np.zeros((4, 5), "float32"), np.zeros((4, 3), "float32"))
    with pytest.warns(UserWarning, match=r"model 'tiny' has no layer that can lose output channels.*Conv, Dense"):
        assert structured.taylor(model, data, verbose=0) == {}
    with pytest.raises(ValueError, match=r"shape \(4, 6\)"):  # the data is still checked
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structured.apoz(model, np.zeros((4, 6), "float32"), verbose=0)
