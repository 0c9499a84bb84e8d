"""NISP: importance propagated back from the outputs, s_in = |W|^T s_out, through the channel graph."""

import warnings

import keras
import numpy as np
import pytest

import tfprune.structured as structured

L = keras.layers


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return model


def test_two_dense_layers_by_hand():
    model = randomize(keras.Sequential([
        keras.Input((3,)), L.Dense(4, activation="relu", name="h1"), L.Dense(5, name="h2"), L.Dense(2, name="out"),
    ]))
    w2, w3 = model.get_layer("h2").kernel.numpy(), model.get_layer("out").kernel.numpy()
    s_h2 = [sum(abs(w3[i, o]) * 1.0 for o in range(2)) for i in range(5)]
    s_h1 = [sum(abs(w2[i, j]) * s_h2[j] for j in range(5)) for i in range(4)]
    scores = structured.nisp(model)
    assert set(scores) == {"h1", "h2"}  # 'out' is the model output: it cannot lose units
    np.testing.assert_allclose(scores["h2"], s_h2, rtol=1e-5)
    np.testing.assert_allclose(scores["h1"], s_h1, rtol=1e-5)
    np.testing.assert_allclose(structured.channel_scores(model, "nisp")["h1"], s_h1, rtol=1e-5)


def test_output_importance_weights_the_outputs():
    model = randomize(keras.Sequential([keras.Input((3,)), L.Dense(4, name="h"), L.Dense(2, name="out")]))
    w = np.abs(model.get_layer("out").kernel.numpy())
    np.testing.assert_allclose(structured.nisp(model, output_importance=[2.0, 0.0])["h"], 2 * w[:, 0], rtol=1e-5)
    with pytest.raises(ValueError, match="output_importance"):
        structured.nisp(model, output_importance=[1.0, 1.0, 1.0])


def test_conv_batchnorm_flatten_by_hand():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(3, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)  # (2, 2, 3)
    x = L.Flatten()(x)  # position p, channel c -> p * 3 + c
    outputs = L.Dense(2, name="out")(x)
    model = randomize(keras.Model(inputs, outputs))
    w = np.abs(model.get_layer("out").kernel.numpy())  # (12, 2)
    bn = model.get_layer("bn")
    scale = np.abs(bn.gamma.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    flat = w.sum(axis=1)
    expected_conv = np.array([sum(flat[p * 3 + c] for p in range(4)) for c in range(3)]) * scale
    np.testing.assert_allclose(structured.nisp(model)["conv"], expected_conv, rtol=1e-5)


def test_residual_fork_adds_importance():
    inputs = keras.Input((6,))
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    s = L.Add()([a, b])
    outputs = L.Dense(2, name="out")(s)
    model = randomize(keras.Model(inputs, outputs))
    s_sum = np.abs(model.get_layer("out").kernel.numpy()).sum(axis=1)
    wb = np.abs(model.get_layer("b").kernel.numpy())
    scores = structured.nisp(model)
    np.testing.assert_allclose(scores["b"], s_sum, rtol=1e-5)
    np.testing.assert_allclose(scores["a"], s_sum + wb @ s_sum, rtol=1e-5)  # through the Add and through 'b'


def test_prune_by_name_removes_the_least_important():
    model = randomize(keras.Sequential([keras.Input((3,)), L.Dense(6, name="h"), L.Dense(2, name="out")]))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[[1, 4]] *= 1e-3  # two hidden units barely reach the outputs
    model.get_layer("out").kernel.assign(kernel)
    before = [w.numpy().copy() for w in model.weights]
    small, report = structured.prune(model, "nisp", ratio=1 / 3, return_report=True)
    assert report.removed["h"] == [1, 4]
    assert small.get_layer("h").units == 4
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)  # the user's model is untouched


def test_uncrossable_layer_is_reported():
    inputs = keras.Input((5,))
    a = L.Dense(4, name="a")(inputs)
    n = L.LayerNormalization(name="ln")(a)
    b = L.Dense(4, name="b")(n)
    outputs = L.Dense(2, name="out")(b)
    model = randomize(keras.Model(inputs, outputs))
    with pytest.warns(UserWarning, match="could not be propagated back through 1 node.*'ln'"):
        scores = structured.nisp(model)
    assert "b" in scores and "a" not in scores


def test_no_warning_on_a_plain_cnn():
    model = randomize(keras.Sequential([
        keras.Input((6, 6, 1)), L.Conv2D(4, 3, activation="relu", name="c1"), L.DepthwiseConv2D(3, name="dw"),
        L.SeparableConv2D(3, 1, name="sep"), L.GlobalAveragePooling2D(), L.Dense(2, name="out"),
    ]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        scores = structured.nisp(model)
    assert set(scores) == {"c1", "sep"}
    assert all(np.all(v > 0) for v in scores.values())


def test_unbuilt_model_gets_a_clear_error():
    with pytest.raises(ValueError, match="not built"):
        structured.nisp(keras.Sequential([L.Dense(2)]))
