"""EagleEye: candidates within the FLOP budget, adaptive BatchNorm, the best candidate returned."""

import keras
import numpy as np
import pytest

import tfprune
import tfprune.structured as structured

L = keras.layers


def net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv2")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn2")(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, size=(n, 8, 8, 1)).astype("float32")
    return x, rng.integers(0, 3, n)


def test_adaptive_bn_is_the_average_of_the_batch_statistics():
    model, (x, _) = net(), data()
    before = model.get_layer("bn1").moving_mean.numpy().copy()
    adapted = structured.adapt_batchnorm(model, x, batches=3, batch_size=32)
    np.testing.assert_array_equal(model.get_layer("bn1").moving_mean.numpy(), before)  # original untouched
    conv = np.asarray(model.get_layer("conv1")(x))  # (96, 8, 8, 8)
    batches = conv.reshape(3, 32, 8, 8, 8)
    mean = batches.mean(axis=(1, 2, 3)).mean(axis=0)
    var = batches.var(axis=(1, 2, 3)).mean(axis=0)
    bn = adapted.get_layer("bn1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == model.get_layer("bn1").momentum  # the layer's own momentum is restored


def test_candidates_meet_the_budget_and_the_best_is_returned():
    model, (x, y) = net(), data()
    base = structured.flops_report(model).total_flops
    budget = base / 2
    best, report = structured.eagleeye(model, x, budget_flops=budget, validation_data=(x[:48], y[:48]),
                                       candidates=4, bn_batches=2, batch_size=32, seed=1)
    assert len(report.rows) == 4
    assert all(0.9 * budget <= r["flops"] <= budget for r in report.rows)
    assert structured.flops_report(best).total_flops == report.rows[report.best]["flops"]
    assert report.rows[report.best]["score"] == max(r["score"] for r in report.rows)
    assert len({tuple(sorted(r["widths"].items())) for r in report.rows}) == 4  # distinct candidates
    again = tfprune.surgery.remove_channels(model, report.rows[2]["channels"])  # a candidate, rebuilt
    assert structured.flops_report(again).total_flops == report.rows[2]["flops"]
    assert "picked" in str(report)


def test_adaptive_bn_changes_the_picked_models_statistics():
    model, (x, y) = net(), data()
    budget = structured.flops_report(model).total_flops / 2
    best, report = structured.eagleeye(model, x, budget_flops=budget, validation_data=(x[:48], y[:48]),
                                       candidates=1, bn_batches=2, batch_size=32)
    kept = [i for i in range(8) if i not in report.rows[0]["channels"].get("conv1", [])]
    inherited = model.get_layer("bn1").moving_mean.numpy()[kept]
    assert not np.allclose(best.get_layer("bn1").moving_mean.numpy(), inherited)
    plain, _ = structured.eagleeye(model, x, budget_flops=budget, validation_data=(x[:48], y[:48]),
                                   candidates=1, adaptive_bn=False)
    np.testing.assert_allclose(plain.get_layer("bn1").moving_mean.numpy(), inherited)


def test_bad_input():
    model, (x, y) = net(), data()
    base = structured.flops_report(model).total_flops
    with pytest.raises(ValueError, match="cannot be met"):
        structured.eagleeye(model, x, budget_flops=10, validation_data=(x, y))
    with pytest.raises(ValueError, match="not below"):
        structured.eagleeye(model, x, budget_flops=2 * base, validation_data=(x, y))
    with pytest.raises(ValueError, match="`validation_data` is required"):
        structured.eagleeye(model, x, budget_flops=base / 2, validation_data=None)
    with pytest.raises(ValueError, match="no labels"):
        structured.eagleeye(model, x, budget_flops=base / 2, validation_data=x)
    with pytest.raises(ValueError, match="`window`"):
        structured.eagleeye(model, x, budget_flops=base / 2, validation_data=(x, y), window=0)
    with pytest.raises(ValueError, match="`data` is required"):
        structured.eagleeye(model, None, budget_flops=base / 2, validation_data=(x, y))


def test_few_distinct_cuts_warn_and_return_what_was_found():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="h"), L.BatchNormalization(), L.Dense(2, name="out")])
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.zeros(32, int)
    budget = structured.flops_report(model).total_flops - 1
    with pytest.warns(UserWarning, match="distinct candidates"):
        best, report = structured.eagleeye(model, x, budget_flops=budget, validation_data=(x, y), candidates=3,
                                           window=0.5, bn_batches=1, batch_size=32)
    assert 1 <= len(report.rows) < 3
