"""Soft filter pruning: the right filters zeroed, coupled layers alike, recovery, exact removal, bad input."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.structured import SoftFilterPruning


def _cnn(batch_norm=True, use_bias=True):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 2)), keras.layers.Conv2D(6, 3, name="conv1", use_bias=use_bias)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn1"))
    layers += [keras.layers.ReLU(), keras.layers.Conv2D(4, 3, name="conv2", use_bias=use_bias), keras.layers.ReLU(),
               keras.layers.Flatten(), keras.layers.Dense(3, name="out", use_bias=use_bias)]
    return keras.Sequential(layers, name="cnn")


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, 3, n)


def _kernel(model, name):
    return keras.ops.convert_to_numpy(model.get_layer(name).kernel)


def _norms(model, name):
    k = _kernel(model, name)
    return np.sqrt((k.reshape(-1, k.shape[-1]) ** 2).sum(axis=0))


def _prune_once(sfp, model, epoch=0):
    sfp.set_model(model)
    sfp.on_train_begin()
    sfp.on_epoch_end(epoch, {})


def test_zeroes_the_lowest_l2_filters_of_each_layer_and_only_their_kernel():
    model = _cnn()
    before = {n: _kernel(model, n) for n in ("conv1", "conv2")}
    bias = keras.ops.convert_to_numpy(model.get_layer("conv1").bias).copy()
    expected = {"conv1": sorted(np.argsort(_norms(model, "conv1"))[:3].tolist()),
                "conv2": sorted(np.argsort(_norms(model, "conv2"))[:2].tolist())}
    sfp = SoftFilterPruning(ratio=0.5)
    _prune_once(sfp, model)
    assert sfp.cut == expected  # the output layer "out" is never pruned
    for name, indices in expected.items():
        after = _kernel(model, name)
        assert not after[..., indices].any()
        keep = [i for i in range(after.shape[-1]) if i not in indices]
        np.testing.assert_array_equal(after[..., keep], before[name][..., keep])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1").bias), bias)
    assert sfp.history == [{"epoch": 0, "zeroed": 5, "recovered": 0}]


def test_coupled_layers_are_zeroed_alike():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    x = keras.layers.ReLU()(keras.layers.Add()([a, b]))
    outputs = keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    mean = (_norms(model, "a") + _norms(model, "b")) / 2
    sfp = SoftFilterPruning(ratio=0.5)
    _prune_once(sfp, model)
    lowest = sorted(np.argsort(mean)[:2].tolist())
    assert sfp.cut == {"a": lowest, "b": lowest}
    assert not _kernel(model, "a")[..., lowest].any() and not _kernel(model, "b")[..., lowest].any()


def test_zeroed_filters_keep_training_and_grow_back():
    model = _cnn()
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(128)
    sfp = SoftFilterPruning(ratio=0.5)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[sfp])
    zeroed = sfp.cut["conv1"]
    assert not _kernel(model, "conv1")[..., zeroed].any()
    # A zeroed filter's channel outputs its BatchNorm beta; where beta > 0 the ReLU passes gradients back to it.
    beta = keras.ops.convert_to_numpy(model.get_layer("bn1").beta)[zeroed]
    assert (beta > 0).any()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # no callback: the filters are free to move
    grown = _norms(model, "conv1")[zeroed] > 0
    assert grown[beta > 0].all()


def test_history_counts_recovered_filters_and_frequency_skips_epochs():
    model = _cnn()
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(128)
    sfp = SoftFilterPruning(ratio=0.5, frequency=2)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[sfp])
    assert [h["epoch"] for h in sfp.history] == [1, 3]
    assert all(h["zeroed"] == 5 for h in sfp.history)
    assert history.history["sfp_recovered"] == [sfp.history[0]["recovered"], sfp.history[1]["recovered"]]
    # Recovered = zeroed at epoch 1 but not at epoch 3: checked against a recount.
    assert 0 <= sfp.history[1]["recovered"] <= 5


def test_a_filter_that_grows_back_is_kept_and_counted_as_recovered():
    model = _cnn()
    sfp = SoftFilterPruning(ratio={"conv1": 0.5})
    _prune_once(sfp, model, epoch=0)
    grown = sfp.cut["conv1"][0]
    kernel = model.get_layer("conv1").kernel
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[..., grown] = 10.0  # as if training had made it the strongest filter
    kernel.assign(value)
    sfp.on_epoch_end(1, {})
    assert grown not in sfp.cut["conv1"] and len(sfp.cut["conv1"]) == 3
    assert sfp.history[-1] == {"epoch": 1, "zeroed": 3, "recovered": 1}
    assert (_kernel(model, "conv1")[..., grown] == 10.0).all()


def test_removal_matches_the_zeroed_channels_and_leaves_the_model_alone():
    model = _cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(64)
    sfp = SoftFilterPruning(ratio=0.5)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[sfp])
    weights = [w.copy() for w in model.get_weights()]
    smaller = sfp.remove()
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert smaller.get_layer("conv1").filters == 3 and smaller.get_layer("conv2").filters == 2
    zeroed = tfprune.surgery.zero_channels(model, sfp.cut)
    np.testing.assert_allclose(smaller.predict(x, verbose=0), zeroed.predict(x, verbose=0), atol=1e-5)
    assert smaller.compiled


def test_without_bias_the_trained_model_itself_equals_the_removed_one():
    model = _cnn(batch_norm=False, use_bias=False)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(64)
    sfp = SoftFilterPruning(ratio=0.5)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[sfp])
    smaller = sfp.remove()
    assert smaller.count_params() < model.count_params()
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_ratio_dict_and_min_channels():
    model = _cnn()
    sfp = SoftFilterPruning(ratio={"conv1": 0.9}, min_channels=2)
    _prune_once(sfp, model)
    assert list(sfp.cut) == ["conv1"] and len(sfp.cut["conv1"]) == 4  # 6 filters, at least 2 kept


@pytest.mark.parametrize("kwargs, error, message", [
    ({"ratio": 1.0}, ValueError, r"`ratio` must be a number in \[0, 1\)"),
    ({"ratio": -0.1}, ValueError, r"`ratio` must be a number in \[0, 1\)"),
    ({"ratio": {"conv1": 2}}, ValueError, r"`ratio\['conv1'\]` must be a number"),
    ({"ratio": 0.3, "frequency": 0}, ValueError, "`frequency` must be a positive integer"),
    ({"ratio": 0.3, "min_channels": 0}, ValueError, "`min_channels` must be a positive integer"),
    ({"ratio": 0.3, "criterion": "apoz"}, ValueError, "needs calibration data"),
    ({"ratio": 0.3, "criterion": "nope"}, ValueError, "Unknown scoring method 'nope'"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        SoftFilterPruning(**kwargs)


def test_unbuilt_model_and_unknown_layer_are_refused():
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="is not built"):
        SoftFilterPruning(0.5).remove(unbuilt)
    model = _cnn()
    sfp = SoftFilterPruning(ratio={"bn1": 0.5})
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="`ratio` names 'bn1'"):
        _prune_once(sfp, model)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="has not been used in fit yet"):
        SoftFilterPruning(0.5).remove()
