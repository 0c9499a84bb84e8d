"""Network slimming's L1 penalty on BN gammas, and the iterative recipe."""

import keras
import numpy as np
import pytest

import tfprune.structured as structured

L = keras.layers


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((16,)),
        L.Dense(24, name="fc1"), L.BatchNormalization(name="bn1"), L.ReLU(),
        L.Dense(12, name="fc2"), L.BatchNormalization(name="bn2"), L.ReLU(),
        L.Dense(3, name="out"),
    ], name="mlp")


def _data(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    return x, y


def _gammas(model):
    return np.concatenate([np.abs(np.array(l.gamma)) for l in model.layers if isinstance(l, L.BatchNormalization)])


def _train(model, l1, epochs=8):
    x, y = _data()
    if l1 is not None:
        model = structured.set_slimming_penalty(model, l1=l1)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def test_penalty_drives_gammas_toward_zero():
    plain = _train(mlp(), None)
    slimmed = _train(mlp(), 5e-2)
    assert np.mean(_gammas(slimmed)) < 0.5 * np.mean(_gammas(plain))
    assert np.sum(_gammas(slimmed) < 0.05) > np.sum(_gammas(plain) < 0.05)


def test_penalty_is_a_serializable_regularizer_on_every_gamma(tmp_path):
    model = mlp()
    before = [np.array(w) for w in model.weights]
    sparse = structured.set_slimming_penalty(model, l1=1e-3)
    assert all(np.array_equal(np.array(w), b) for w, b in zip(model.weights, before))
    assert all(getattr(l, "gamma_regularizer", None) is None for l in model.layers)
    bns = [l for l in sparse.layers if isinstance(l, L.BatchNormalization)]
    assert [l.gamma_regularizer.get_config()["l1"] for l in bns] == pytest.approx([1e-3, 1e-3])
    np.testing.assert_allclose(float(sum(sparse.losses)), 1e-3 * _gammas(model).sum(), rtol=1e-5)
    for a, b in zip(sparse.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    sparse.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("bn1").gamma_regularizer.get_config()["l1"] == pytest.approx(1e-3)
    stripped = structured.set_slimming_penalty(sparse, l1=0)
    assert stripped.get_layer("bn1").gamma_regularizer is None and not stripped.losses


def test_penalty_arguments_are_checked():
    with pytest.raises(ValueError, match=r"`l1` must be a number >= 0"):
        structured.set_slimming_penalty(mlp(), l1=-1)
    no_bn = keras.Sequential([keras.Input((4,)), L.Dense(2)], name="plain")
    with pytest.raises(ValueError, match=r"'plain' has no BatchNormalization"):
        structured.set_slimming_penalty(no_bn)


def test_slimming_end_to_end_global_percentile():
    sparse = _train(mlp(), 1e-2)
    slim = structured.prune(sparse, "bn_scale", ratio=0.5, scope="global", min_channels=2)
    kept = {name: slim.get_layer(name).units for name in ("fc1", "fc2")}
    assert sum(kept.values()) == round(0.5 * 36)
    gammas = np.concatenate([np.abs(np.array(sparse.get_layer(n).gamma)) for n in ("bn1", "bn2")])
    threshold = np.sort(gammas)[18 - 1]
    kept_gammas = np.concatenate([np.abs(np.array(slim.get_layer(n).gamma)) for n in ("bn1", "bn2")])
    assert kept_gammas.min() >= threshold  # the global percentile of |gamma|
    x, _ = _data(8)
    assert slim.predict(x, verbose=0).shape == (8, 3)


def test_iterative_prune_with_fit_kwargs_and_callable():
    x, y = _data()
    model = mlp()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    small, history = structured.iterative_prune(
        model, "l2_norm", ratio_per_step=0.25, steps=2,
        fine_tune=dict(x=x, y=y, epochs=1, batch_size=64), verbose=0,
    )
    assert [h["step"] for h in history] == [1, 2]
    assert history[0]["params"] > history[1]["params"]
    assert small.get_layer("fc1").units == 24 - 6 - round(0.25 * 18)
    calls = []
    small2, _ = structured.iterative_prune(
        model, "apoz", ratio_per_step=0.25, steps=3, data=x, fine_tune=lambda m: calls.append(m), verbose=0
    )
    assert len(calls) == 3 and small2.get_layer("fc2").units < 12


def test_iterative_prune_arguments():
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1"):
        structured.iterative_prune(mlp(), steps=0)
    with pytest.raises(ValueError, match=r"`ratio_per_step` must be a number in \[0, 1\)"):
        structured.iterative_prune(mlp(), ratio_per_step=1.0)
    with pytest.raises(ValueError, match=r"not compiled"):
        structured.iterative_prune(mlp(), fine_tune=dict(epochs=1))
