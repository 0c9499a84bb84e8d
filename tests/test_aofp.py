"""AOFP: the halving search over each layer's filters, judged on the next layer's output."""

import keras
import numpy as np
import pytest

import tfprune.structured as structured

L = keras.layers


def net(dead=(0, 1, 2, 3), seed=0):
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
        L.GlobalAveragePooling2D(),
        L.Dense(3, name="out"),
    ])
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.1, 0.5, w.shape).astype("float32"))
    conv1 = model.get_layer("conv1")
    kernel, bias = conv1.kernel.numpy(), conv1.bias.numpy()
    kernel[..., list(dead)], bias[list(dead)] = 0.0, 0.0  # these filters output exact zeros
    conv1.kernel.assign(kernel)
    conv1.bias.assign(bias)
    return model


def data(n=64, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 2)).astype("float32")


def test_dead_half_of_the_filters_is_found_and_removed():
    model, x = net(), data()
    before = [w.numpy().copy() for w in model.weights]
    smaller, report = structured.aofp_prune(model, x, tolerance=1e-6)
    assert report.widths["conv1"] == (8, 4)
    assert report.damage["conv1"] <= 1e-6
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)  # the user's model is untouched
    assert report.evaluations > 1 and "conv1" in str(report)


def test_larger_tolerance_prunes_more():
    model, x = net(dead=()), data()
    widths = [structured.aofp_prune(model, x, tolerance=t)[1].widths["conv1"][1] for t in (1e-4, 0.3, 10.0)]
    assert widths[0] >= widths[1] >= widths[2] == 1
    assert widths[0] > widths[2]


def test_budget_is_met_by_raising_the_tolerance():
    model, x = net(dead=()), data()
    base = structured.flops_report(model).total_flops
    smaller, report = structured.aofp_prune(model, x, tolerance=1e-4, budget_flops=base / 3, min_channels=2)
    assert structured.flops_report(smaller).total_flops <= base / 3
    assert report.tolerance > 1e-4 and len(report.tried) > 2
    assert min(w for _, w in report.widths.values()) >= 2


def test_unreachable_budget_and_bad_arguments():
    model, x = net(), data()
    with pytest.raises(ValueError, match="cannot be met.*min_channels=4"):
        structured.aofp_prune(model, x, budget_flops=10, min_channels=4)
    with pytest.raises(ValueError, match="`tolerance` must be a positive number"):
        structured.aofp_prune(model, x, tolerance=-1)
    with pytest.raises(ValueError, match="`data` is required"):
        structured.aofp_prune(model, None)
    with pytest.raises(ValueError, match="not built"):
        structured.aofp_prune(keras.Sequential([L.Dense(2)]), x)


def test_residual_group_is_searched_as_one():
    inputs = keras.Input((6,))
    a = L.Dense(8, name="a")(inputs)
    b = L.Dense(8, name="b")(a)
    s = L.Add(name="add")([a, b])
    outputs = L.Dense(2, name="out")(L.Dense(5, activation="relu", name="c")(s))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    smaller, report = structured.aofp_prune(model, x, tolerance=0.2)
    assert report.widths["a"][1] == report.widths["b"][1] == smaller.get_layer("a").units


def test_nothing_within_tolerance_returns_a_copy():
    model, x = net(dead=()), data()
    smaller, report = structured.aofp_prune(model, x, tolerance=1e-12)
    assert smaller is not model
    assert report.widths["conv1"] == (8, 8) and report.widths["conv2"] == (6, 6)
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
