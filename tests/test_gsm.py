"""GSM (global sparse momentum SGD): the masked momentum step by hand, the exact cut, fit, save, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune


def _model(use_bias=True):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", name="fc1", use_bias=use_bias),
        keras.layers.Dense(3, name="fc2", use_bias=use_bias),
    ], name="tiny")


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


def _grads(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _expected_masks(weights, grads, kernels, q):
    """The top-q of |w * g| over the kernels (the indices in ``kernels``), as the paper ranks them."""
    saliency = np.concatenate([np.abs(weights[i] * grads[i]).ravel() for i in kernels])
    threshold = np.sort(saliency)[::-1][q - 1]
    return {i: (np.abs(weights[i] * grads[i]) >= threshold) & (np.abs(weights[i] * grads[i]) > 0) for i in kernels}


def test_two_steps_match_the_formula_by_hand():
    model = _model()
    lr, momentum, decay, q = 0.1, 0.9, 0.01, 20
    gsm = tfprune.GlobalSparseMomentum(model, keep=q, learning_rate=lr, momentum=momentum, weight_decay=decay)
    x, y = _data()
    variables = model.trainable_variables
    kernels = [i for i, v in enumerate(variables) if v.path.endswith("kernel")]
    velocity = [np.zeros_like(w) for w in _numpy(variables)]
    for step in range(2):
        w = _numpy(variables)
        g = [keras.ops.convert_to_numpy(t) for t in _grads(model, x[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32])]
        masks = _expected_masks(w, g, kernels, q)
        assert sum(int(m.sum()) for m in masks.values()) == q  # no ties on random data
        previous = [v.copy() for v in velocity]
        for i in range(len(w)):
            masked = g[i] * masks[i] if i in masks else g[i]  # biases always get their gradient
            velocity[i] = momentum * velocity[i] + (decay * w[i] + masked)
        expected = [w[i] - lr * velocity[i] for i in range(len(w))]
        gsm.apply(_grads(model, x[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]), variables)
        for got, want in zip(_numpy(variables), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        # Passive weights moved by weight decay and momentum only, with no gradient term.
        k = kernels[0]
        passive = ~masks[k]
        assert passive.any() and np.abs(g[k][passive]).max() > 0
        decay_only = w[k] - lr * (momentum * previous[k] + decay * w[k])
        np.testing.assert_allclose(_numpy(variables)[k][passive], decay_only[passive], rtol=1e-5, atol=1e-7)


def test_weights_that_never_get_the_gradient_decay_geometrically():
    # keep=1: at most one kernel weight is active per step; the others shrink by weight decay through momentum.
    model = _model(use_bias=False)
    gsm = tfprune.GlobalSparseMomentum(model, keep=1, learning_rate=0.05, momentum=0.9, weight_decay=0.1)
    x, y = _data()
    start = [np.abs(w) for w in _numpy(model.trainable_variables)]
    for _ in range(30):
        gsm.apply(_grads(model, x, y), model.trainable_variables)
    end = [np.abs(w) for w in _numpy(model.trainable_variables)]
    shrunk = np.concatenate([(e < 0.5 * s).ravel() for s, e in zip(start, end)])
    assert shrunk.mean() > 0.95  # nearly every weight lost more than half its magnitude


def test_fit_then_cut_reaches_exactly_the_ratio_and_zeros_only_the_small():
    model = _model()
    total = 6 * 8 + 8 * 3
    gsm = tfprune.GlobalSparseMomentum(model, compression=4, learning_rate=0.05, momentum=0.9)
    assert gsm.active_count == total // 4
    model.compile(gsm, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(128)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    before = _numpy(model.weights)
    cut = tfprune.gsm_cut(model, compression=4)
    assert tfprune.gsm_compression(cut) == total / (total // 4)
    rows = tfprune.sparsity_report(cut).rows
    assert sum(r["nonzero"] for r in rows) == total // 4
    # The model itself is untouched; the copy keeps the largest weights.
    for a, b in zip(before, _numpy(model.weights)):
        np.testing.assert_array_equal(a, b)
    kernels = np.concatenate([np.abs(keras.ops.convert_to_numpy(w)).ravel()
                              for w in tfprune.prunable_weights(model).values()])
    cut_kernels = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in tfprune.prunable_weights(cut).values()])
    assert np.abs(cut_kernels[cut_kernels != 0]).min() >= np.sort(kernels)[-(total // 4)]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cut.get_layer("fc1").bias),
                                  keras.ops.convert_to_numpy(model.get_layer("fc1").bias))
    assert cut.compiled  # compiled like the original, ready to evaluate


def test_activity_cut_keeps_what_gsm_was_training():
    model = _model()
    model.compile(tfprune.GlobalSparseMomentum(model, keep=18, learning_rate=0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(128)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    activity = model.optimizer.activity()
    assert set(activity) == {"fc1/kernel", "fc2/kernel"}
    flat = np.concatenate([activity["fc1/kernel"].ravel(), activity["fc2/kernel"].ravel()])
    assert 0 < flat.max() <= 1 and flat.sum() <= 18 + 1e-3  # at most Q active per step, on average
    cut = tfprune.gsm_cut(model, keep=18, by="activity")
    kept = np.concatenate([keras.ops.convert_to_numpy(w).ravel() != 0 for w in tfprune.prunable_weights(cut).values()])
    assert kept.sum() == 18
    assert flat[kept].min() >= flat[~kept].max()
    plain = _model()
    plain.compile("adam", "mse")
    with pytest.raises(ValueError, match="must be compiled with the GlobalSparseMomentum"):
        tfprune.gsm_cut(plain, keep=18, by="activity")
    with pytest.raises(ValueError, match="`by` must be one of"):
        tfprune.gsm_cut(plain, keep=18, by="saliency")


def test_saved_with_its_config_and_resumes(tmp_path):
    model = _model()
    model.compile(tfprune.GlobalSparseMomentum(model, compression=3, learning_rate=0.05, momentum=0.95,
                                               weight_decay=1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "gsm.keras")
    loaded = keras.saving.load_model(tmp_path / "gsm.keras")
    config = loaded.optimizer.get_config()
    assert isinstance(loaded.optimizer, tfprune.GlobalSparseMomentum)
    assert (config["prunable"], config["compression"], config["momentum"], config["weight_decay"]) == (
        ["fc1/kernel", "fc2/kernel"], 3.0, 0.95, 1e-3)
    assert loaded.optimizer.active_count == 72 // 3
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loaded.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"compression": 0.5}, "`compression` must be a number >= 1"),
    ({"compression": 1000}, "keeps no weight"),
    ({"keep": 73}, r"`keep` must be an integer in \[1, 72\]"),
    ({"keep": 0}, "`keep` must be an integer"),
    ({}, "give exactly one of `compression`"),
    ({"compression": 4, "keep": 3}, "give exactly one of `compression`"),
    ({"compression": 4, "momentum": 0.0}, "GSM needs momentum"),
    ({"compression": 4, "momentum": 1.0}, r"`momentum` must be in \(0, 1\)"),
    ({"compression": 4, "weight_decay": -1.0}, "`weight_decay` must be a number >= 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfprune.GlobalSparseMomentum(_model(), **kwargs)


def test_unbuilt_model_and_wrong_model_are_refused():
    unbuilt = keras.Sequential([keras.layers.Dense(3, name="fc")])
    with pytest.raises(ValueError, match="is not built"):
        tfprune.GlobalSparseMomentum(unbuilt, compression=2)
    with pytest.raises(ValueError, match="is not built"):
        tfprune.gsm_cut(unbuilt, compression=2)
    with pytest.raises(TypeError, match="`prunable` must be a keras Model"):
        tfprune.GlobalSparseMomentum("fc1/kernel", compression=2)
    # Compiled on another model than the one it ranks: the build names the missing weights.
    gsm = tfprune.GlobalSparseMomentum(_model(), compression=2)
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="head")])
    other.compile(gsm, "mse")
    with pytest.raises(ValueError, match=r"made for weights \['fc1/kernel'"):
        other.fit(np.zeros((4, 6)), np.zeros((4, 3)), verbose=0)


def test_cut_refuses_bad_ratio_without_touching_the_model():
    model = _model()
    before = _numpy(model.weights)
    with pytest.raises(ValueError, match=r"`keep` must be an integer in \[1, 72\]"):
        tfprune.gsm_cut(model, keep=100)
    for a, b in zip(before, _numpy(model.weights)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_cut_model_exports_with_its_zeros(tmp_path):
    model = _model()
    cut = tfprune.gsm_cut(model, keep=18)
    report = tfprune.export.to_tflite(cut, tmp_path / "gsm.tflite", sample_data=_data(16)[0], latency_runs=1)
    biases = sum(int(np.count_nonzero(keras.ops.convert_to_numpy(layer.bias))) for layer in cut.layers)
    assert report.weight_nonzeros == 18 + biases
