"""Dynamic network surgery: the mask rule, its schedule, splicing, and the tfprune workflow around it."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._pruning.api import pruning_wrappers


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, activation="relu", name="fc1"),
        keras.layers.Dense(3, name="fc2"),
    ])


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype("float32"), rng.integers(0, 3, n)


def compile_sgd(model, learning_rate=0.05):
    model.compile(keras.optimizers.SGD(learning_rate, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(model, x, y, epochs=1, batch_size=16, **kwargs):
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[tfprune.UpdatePruningStep()], **kwargs)


def wrapper_of(model, name):
    return next(w for w in pruning_wrappers(model) if w.layer.name == name)


def test_forward_uses_masked_weights_and_masked_weights_keep_learning():
    x, y = data()
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.5, iter_stop=1))
    fit(model, x, y, epochs=3)
    fc1 = wrapper_of(model, "fc1")
    kernel, mask = fc1.layer.kernel.numpy(), fc1.masks[0].numpy()
    assert 0 < (mask == 0).sum() < mask.size
    # The masks froze after step 0; the weights under a zero mask changed since
    # (they get the gradient of W * T), yet none of them reaches the output.
    np.testing.assert_allclose(model.predict(x, verbose=0), tfprune.strip_pruning(model).predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    initial = {name: w.numpy() for name, w in zip(("k", "b"), mlp().layers[0].weights)}
    moved = kernel[mask == 0] != initial["k"][mask == 0]
    assert moved.mean() > 0.5


def test_a_pruned_weight_that_grows_past_b_is_spliced_back_and_one_below_a_is_cut():
    x, y = data()
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.0, iter_stop=100, gamma=0.0), learning_rate=0.0)
    fit(model, x[:16], y[:16])  # one step: statistics, thresholds and a first update
    fc1 = wrapper_of(model, "fc1")
    a, b = fc1.bounds()
    assert a > 0 and b == pytest.approx(a * 1.1 / 0.9)
    kernel, mask = fc1.layer.kernel.numpy(), fc1.masks[0].numpy()
    np.testing.assert_array_equal(mask, (np.abs(kernel) > a).astype(mask.dtype))
    # Grow one pruned weight past b, shrink one kept weight below a, and put one in between.
    pruned_at = tuple(np.argwhere(mask == 0)[0])
    kept_at = tuple(np.argwhere(mask == 1)[0])
    between = tuple(np.argwhere(mask == 0)[1])
    kernel[pruned_at] = 1.01 * b
    kernel[kept_at] = 0.99 * a
    kernel[between] = (a + b) / 2
    fc1.layer.kernel.assign(kernel)
    spliced_before = int(fc1.spliced_count.numpy())
    fit(model, x[:16], y[:16])  # gamma=0: the probability is 1 at every step
    mask = fc1.masks[0].numpy()
    assert mask[pruned_at] == 1 and mask[kept_at] == 0 and mask[between] == 0
    assert int(fc1.spliced_count.numpy()) == spliced_before + 1


def test_updates_follow_the_probability_schedule_draw_for_draw():
    x, y = data(n=400)
    seed, gamma, power = 7, 0.05, 1.5
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.0, gamma=gamma, power=power, seed=seed,
                                                iter_stop=10_000, prune_bias=False))
    fit(model, x, y, epochs=2, batch_size=4)  # 200 steps
    fc1, fc2 = wrapper_of(model, "fc1"), wrapper_of(model, "fc2")
    expected = {}
    for wrapper, layer_seed in ((fc1, seed), (fc2, seed + 1)):
        draws = [float(tf.random.stateless_uniform((), seed=tf.constant([layer_seed, i], tf.int64)))
                 for i in range(200)]
        expected[wrapper.layer.name] = sum(d < wrapper.update_probability(i) for i, d in enumerate(draws))
    assert int(fc1.mask_updates.numpy()) == expected["fc1"]
    assert int(fc2.mask_updates.numpy()) == expected["fc2"]
    # The probability decays as (1 + gamma * iter) ** -power: about 29 updates in 200 steps.
    mean = sum((1 + gamma * i) ** -power for i in range(200))
    assert abs(expected["fc1"] - mean) < 4 * np.sqrt(mean)
    assert fc1.update_probability(0) == 1.0 and fc1.update_probability(10_000) == 0.0


def test_iter_stop_freezes_the_masks():
    x, y = data()
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.3, gamma=0.0, iter_stop=3))
    fit(model, x, y)  # 4 steps: updates at 0, 1, 2
    masks = [m.numpy().copy() for w in pruning_wrappers(model) for m in w.masks]
    fit(model, x, y, epochs=3)
    assert all(int(w.mask_updates.numpy()) == 3 for w in pruning_wrappers(model))
    for before, w in zip(masks, [m for w in pruning_wrappers(model) for m in w.masks]):
        np.testing.assert_array_equal(before, w.numpy())


def test_strip_gives_exact_zeros_and_reports_agree():
    x, y = data()
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.5))
    fit(model, x, y, epochs=2)
    stripped = tfprune.strip_pruning(model)
    assert not any(isinstance(layer, tfprune.PruneLowMagnitude) for layer in stripped.layers)
    for wrapper, layer in zip(pruning_wrappers(model), stripped.layers):
        for mask, weight in zip(wrapper.masks, (layer.kernel, layer.bias)):
            np.testing.assert_array_equal(weight.numpy() == 0, mask.numpy() == 0)
    wrapped, plain = tfprune.sparsity_report(model), tfprune.sparsity_report(stripped)
    assert wrapped.total_params == plain.total_params == mlp().count_params()
    assert wrapped.total_nonzero == plain.total_nonzero < plain.total_params
    assert [r["nonzero"] for r in wrapped.rows if r["weight"] == "kernel"] == [r["nonzero"] for r in plain.rows]


@pytest.mark.parametrize("layer, shape, dtype, masked", [
    (keras.layers.Conv2D(6, 3, name="conv"), (8, 8, 2), "float32", 2),  # kernel, bias
    (keras.layers.Embedding(50, 8, name="embedding"), (6,), "int32", 1),
    (keras.layers.LSTM(6, name="lstm"), (5, 4), "float32", 3),  # kernel, recurrent kernel, bias
])
def test_conv_embedding_and_recurrent_layers(layer, shape, dtype, masked):
    keras.utils.set_random_seed(1)
    base = keras.Sequential([keras.Input(shape, dtype=dtype), layer, keras.layers.Flatten(),
                             keras.layers.Dense(2, name="out")])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (32,) + shape) if dtype == "int32" else rng.normal(size=(32,) + shape).astype(dtype)
    y = rng.integers(0, 2, 32)
    model = compile_sgd(tfprune.dynamic_surgery(base, c={layer.name: 0.5}))
    fit(model, x, y)
    [wrapper] = pruning_wrappers(model)
    assert len(wrapper.masks) == len(wrapper.pruned_weights) == masked
    assert 0 < tfprune.sparsity_report(model).rows[0]["sparsity"] < 1
    np.testing.assert_allclose(model.predict(x, verbose=0), tfprune.strip_pruning(model).predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    x, y = data(n=96)
    straight = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.5, gamma=0.1, seed=3))
    fit(straight, x, y, epochs=4)

    first = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.5, gamma=0.1, seed=3))
    fit(first, x, y, epochs=2)
    first.save(tmp_path / "half.keras")
    keras.backend.clear_session()
    resumed = keras.saving.load_model(tmp_path / "half.keras")
    assert isinstance(resumed.layers[0], tfprune.DynamicSurgery)
    fit(resumed, x, y, epochs=2)

    for a, b in zip(pruning_wrappers(straight), pruning_wrappers(resumed)):
        for name in ("statistics", "pruned_count", "spliced_count", "mask_updates", "pruning_step"):
            np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
        for va, vb in zip(a.masks + a.layer.weights, b.masks + b.layer.weights):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)


def test_export_strips_surgery_wrappers(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tfprune.export import to_tflite

    x, y = data()
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c=0.5))
    fit(model, x, y)
    report = to_tflite(model, tmp_path / "dns.tflite", sample_data=x, latency_runs=0)
    assert report.works_by_default
    nonzero = sum(r["nonzero"] for r in tfprune.sparsity_report(model).rows if r["weight"] == "kernel")
    stored = [t for t in report.tensors if t["constant"] and t["shape"] in ([16, 12], [3, 16])]
    assert len(stored) == 2 and sum(t["nonzero"] for t in stored) == nonzero


def test_deprecated_dynamic_surgery_c_warns_and_gives_the_same_c():
    base = mlp()
    with pytest.warns(DeprecationWarning, match="dynamic_surgery_c_for_sparsity"):
        old = tfprune.dynamic_surgery_c(base, {"fc1": 0.9})
    assert old == tfprune.dynamic_surgery_c_for_sparsity(base, {"fc1": 0.9})


def test_dynamic_surgery_c_for_sparsity_hits_the_requested_first_sparsity():
    base = mlp()
    c = tfprune.dynamic_surgery_c_for_sparsity(base, {"fc1": 0.9, "fc2": 0.5})
    x, y = data(n=16)
    model = compile_sgd(tfprune.dynamic_surgery(base, c=c, iter_stop=1), learning_rate=0.0)
    fit(model, x, y)
    assert 1 - wrapper_of(model, "fc1").masks[0].numpy().mean() == pytest.approx(0.9, abs=0.02)
    assert 1 - np.concatenate([m.numpy().ravel() for m in wrapper_of(model, "fc2").masks]).mean() == (
        pytest.approx(0.5, abs=0.05))


@pytest.mark.parametrize("kwargs, message", [
    ({"gamma": -1.0}, "`gamma` must be a number >= 0"),
    ({"power": -0.5}, "`power` must be a number >= 0"),
    ({"iter_stop": -3}, "`iter_stop` must be an integer >= 0"),
    ({"c": float("nan")}, "`c` must be a finite number"),
    ({"c": {"nope": 1.0}}, "`c` names layer 'nope', but model"),
    ({"c": {"flatten": 1.0}}, "which cannot be pruned"),
])
def test_bad_arguments_are_rejected_and_the_model_is_untouched(kwargs, message):
    base = keras.Sequential([keras.Input((4, 3)), keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(2, name="fc")])
    before = [w.copy() for w in base.get_weights()]
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        tfprune.dynamic_surgery(base, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(before, base.get_weights()))
    assert not any(isinstance(layer, tfprune.PruneLowMagnitude) for layer in base.layers)


def test_a_c_that_prunes_everything_warns_with_the_sparsity():
    x, y = data(n=16)
    model = compile_sgd(tfprune.dynamic_surgery(mlp(), c={"fc1": 50.0}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, x, y)
    [warning] = [w for w in caught if "dynamic_surgery" in str(w.message)]
    assert "layer 'fc1'" in str(warning.message) and "100.00%" in str(warning.message)


def test_training_without_the_callback_fails_clearly():
    x, y = data(n=16)
    model = compile_sgd(tfprune.dynamic_surgery(mlp()))
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        model.fit(x, y, verbose=0)
