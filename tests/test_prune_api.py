"""prune_low_magnitude / strip_pruning on every supported layer type and model form."""

import numpy as np
import pytest
import keras

import tfprune
from tfprune._pruning.api import pruning_wrappers

SCHEDULE = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1)

# (name, input shape without batch, layer factory, expected number of pruned weights)
LAYER_CASES = [
    ("dense", (12,), lambda: keras.layers.Dense(8), 1),
    ("einsum", (12,), lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=8), 1),
    ("conv1d", (10, 4), lambda: keras.layers.Conv1D(6, 3), 1),
    ("conv2d", (8, 8, 3), lambda: keras.layers.Conv2D(6, 3), 1),
    ("conv3d", (5, 5, 5, 2), lambda: keras.layers.Conv3D(4, 2), 1),
    ("conv1dt", (10, 4), lambda: keras.layers.Conv1DTranspose(6, 3), 1),
    ("conv2dt", (6, 6, 3), lambda: keras.layers.Conv2DTranspose(4, 3), 1),
    ("conv3dt", (4, 4, 4, 2), lambda: keras.layers.Conv3DTranspose(3, 2), 1),
    ("sep1d", (10, 4), lambda: keras.layers.SeparableConv1D(6, 3), 1),
    ("sep2d", (8, 8, 3), lambda: keras.layers.SeparableConv2D(6, 3), 1),
    ("lstm", (7, 5), lambda: keras.layers.LSTM(6), 2),
    ("gru", (7, 5), lambda: keras.layers.GRU(6), 2),
    ("simplernn", (7, 5), lambda: keras.layers.SimpleRNN(6), 2),
    ("bidirectional", (7, 5), lambda: keras.layers.Bidirectional(keras.layers.LSTM(6)), 4),
    ("timedistributed", (4, 9), lambda: keras.layers.TimeDistributed(keras.layers.Dense(5)), 1),
]


def _model_with(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))


def _fit(model, x, steps=3):
    model.compile(keras.optimizers.Adam(0.01), "mse")
    y = np.random.default_rng(0).normal(size=(x.shape[0],) + tuple(model.output_shape[1:]))
    model.fit(x, y, batch_size=len(x) // steps, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])


@pytest.mark.parametrize("name,shape,factory,n_weights", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_each_supported_layer_is_pruned_stripped_and_reloaded(name, shape, factory, n_weights, tmp_path):
    model = _model_with(factory(), shape)
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    (wrapper,) = pruning_wrappers(pruned)
    assert len(wrapper.pruned_weights) == n_weights
    x = np.random.default_rng(1).normal(size=(12,) + shape).astype("float32")
    _fit(pruned, x)
    for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
        w, m = keras.ops.convert_to_numpy(weight), keras.ops.convert_to_numpy(mask)
        assert abs(m.mean() - 0.5) <= 1 / m.size + 1e-9
        assert (w[m == 0] == 0).all()
    stripped = tfprune.strip_pruning(pruned)
    assert not pruning_wrappers(stripped)
    assert type(stripped.layers[1]) is type(wrapper.layer) and stripped.layers[1].name == wrapper.layer.name
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    pruned.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    (again,) = pruning_wrappers(restored)
    for a, b in zip(wrapper.masks, again.masks):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_multi_head_attention_prunes_its_four_projections():
    q = keras.Input((6, 8))
    out = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(q, q)
    pruned = tfprune.prune_low_magnitude(keras.Model(q, out), pruning_schedule=SCHEDULE)
    (wrapper,) = pruning_wrappers(pruned)
    assert [w.path.split("/")[-2] for w in wrapper.pruned_weights] == [
        "query", "key", "value", "attention_output"]
    _fit(pruned, np.random.default_rng(2).normal(size=(8, 6, 8)).astype("float32"))
    report = tfprune.sparsity_report(pruned).to_dict()
    assert len(report["layers"]) == 4 and all(abs(r["sparsity"] - 0.5) < 0.02 for r in report["layers"])


def test_depthwise_is_opt_in():
    model = _model_with(keras.layers.DepthwiseConv2D(3, name="dw"), (8, 8, 4))
    assert not pruning_wrappers(tfprune.prune_low_magnitude(model))
    wrapped = tfprune.prune_low_magnitude(model.get_layer("dw"))
    assert isinstance(wrapped, tfprune.PruneLowMagnitude) and wrapped.pruned_weights[0].shape == (3, 3, 4, 1)


def test_layers_without_weights_pass_through_and_user_model_is_untouched():
    inputs = keras.Input((10,))
    x = keras.layers.Dense(16, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="b")(x))
    before = [w.copy() for w in model.get_weights()]
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    _fit(pruned, np.random.default_rng(3).normal(size=(12, 10)).astype("float32"))
    assert [type(l).__name__ for l in pruned.layers] == [
        "InputLayer", "PruneLowMagnitude", "BatchNormalization", "Dropout", "PruneLowMagnitude"]
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))
    assert all(w.constraint is None for w in model.weights)


def test_functional_model_nested_in_sequential():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Dense(5, name="inner_dense")(inner_in), name="inner")
    outer = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(2, name="head")])
    pruned = tfprune.prune_low_magnitude(outer, pruning_schedule=SCHEDULE)
    assert sorted(w.layer.name for w in pruning_wrappers(pruned)) == ["head", "inner_dense"]
    _fit(pruned, np.random.default_rng(4).normal(size=(12, 6)).astype("float32"))
    stripped = tfprune.strip_pruning(pruned)
    assert not pruning_wrappers(stripped)
    assert isinstance(stripped.get_layer("inner"), keras.Model)
    x = np.ones((2, 6), "float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-6)


def test_list_of_layers_and_single_layer():
    layers = tfprune.prune_low_magnitude([keras.layers.Dense(4), keras.layers.Conv2D(2, 3)])
    assert all(isinstance(l, tfprune.PruneLowMagnitude) for l in layers)
    model = keras.Sequential([keras.Input((5,)), tfprune.prune_low_magnitude(keras.layers.Dense(3))])
    assert len(pruning_wrappers(model)) == 1


def test_custom_prunable_layer():
    class Scale(keras.layers.Layer, tfprune.PrunableLayer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

        def get_prunable_weights(self):
            return [self.w]

    model = keras.Sequential([keras.Input((8,)), Scale()])
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    (wrapper,) = pruning_wrappers(pruned)
    _fit(pruned, np.random.default_rng(5).normal(size=(12, 8)).astype("float32"))
    assert int(keras.ops.convert_to_numpy(wrapper.masks[0]).sum()) == 4


def test_subclassed_model_wrapped_in_init_trains_and_strips():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = tfprune.prune_low_magnitude(keras.layers.Dense(3), pruning_schedule=SCHEDULE)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    assert len(pruning_wrappers(tfprune.prune_low_magnitude(net))) == 1, "its own wrapper is kept, not doubled"
    net.compile("adam", "mse")
    net.fit(np.ones((8, 4), "float32"), np.ones((8, 3)), verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert int(keras.ops.convert_to_numpy(net.fc.masks[0]).sum()) == 6
    stripped = tfprune.strip_pruning(net)
    assert type(stripped) is Net and isinstance(stripped.fc, keras.layers.Dense)
    assert not pruning_wrappers(stripped)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stripped(x)), keras.ops.convert_to_numpy(net(x)), atol=1e-6)


def _dense_model():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="d1"), keras.layers.Dense(2, name="d2")])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(block_size=(2, 2, 2)), "block_size"),
        (dict(block_size=(0, 1)), "block_size"),
        (dict(block_pooling_type="MEDIAN"), "block_pooling_type"),
        (dict(sparsity_m_by_n=(4, 4)), "sparsity_m_by_n"),
        (dict(sparsity_m_by_n=(5, 4)), "sparsity_m_by_n"),
        (dict(sparsity_m_by_n=(2, 4), block_size=(4, 1)), "not both"),
        (dict(granularity="channel"), "granularity"),
        (dict(pruning_schedule=0.5), "pruning_schedule"),
        (dict(block_size="ab"), "block_size"),
        (dict(block_size=4), "block_size"),
        (dict(block_size=(1.5, 1)), "block_size"),
        (dict(sparsity_m_by_n=(2.5, 4)), "sparsity_m_by_n"),
        (dict(pruning_policy="x"), "pruning_policy"),
    ],
)
def test_bad_arguments_are_rejected_before_anything_changes(kwargs, message):
    model = _dense_model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        tfprune.prune_low_magnitude(model, **kwargs)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


def test_block_size_that_does_not_fit_the_rank_names_the_layer():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv")])
    with pytest.raises(ValueError, match=r"layer 'conv'.*rank-2"):
        tfprune.prune_low_magnitude(model, block_size=(4, 1))
    assert all(w.constraint is None for w in model.weights)


def test_m_by_n_on_an_embedding_names_the_layer():
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 8, name="emb")])
    with pytest.raises(ValueError, match="layer 'emb'.*sparsity_m_by_n"):
        tfprune.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))


def test_explicit_layer_that_cannot_be_pruned():
    class OwnKernel(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

        def call(self, x):
            return x @ self.w

    with pytest.raises(ValueError, match=r"layer 'own' \(OwnKernel\) cannot be pruned"):
        tfprune.prune_low_magnitude(OwnKernel(name="own"))
    with pytest.raises(ValueError, match="cannot be pruned"):
        tfprune.prune_low_magnitude([keras.layers.Dense(3), OwnKernel()])


def test_pruned_models_keep_their_wrappers_and_unbuilt_ones_are_refused_where_needed():
    pruned = tfprune.prune_low_magnitude(_dense_model())
    again = tfprune.prune_low_magnitude(pruned)
    assert [w.layer.name for w in pruning_wrappers(again)] == ["d1", "d2"]
    with pytest.raises(ValueError, match="already wrapped"):
        tfprune.prune_low_magnitude(pruned.layers[0])
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        tfprune.dynamic_surgery(unbuilt)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(3)

        def call(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match="not built"):
        tfprune.prune_low_magnitude(Net())


def test_pruning_policy_selects_layers():
    class OnlyD2(tfprune.PruningPolicy):
        def allow_pruning(self, layer):
            return layer.name == "d2"

    pruned = tfprune.prune_low_magnitude(_dense_model(), pruning_policy=OnlyD2())
    assert [w.layer.name for w in pruning_wrappers(pruned)] == ["d2"]


def test_sparsity_report_counts_and_prints():
    model = _dense_model()
    weights = model.get_weights()
    weights[0][:4] = 0.0
    model.set_weights(weights)
    report = tfprune.sparsity_report(model)
    d1 = report.to_dict()["layers"][0]
    assert (d1["layer"], d1["params"], d1["nonzero"]) == ("d1", 128, 64)
    assert report.total_params == model.count_params()
    text = str(report)
    assert "d1" in text and "50.00%" in text and "all parameters" in text


def test_sparsity_report_of_something_else_names_the_argument():
    with pytest.raises(TypeError, match="sparsity_report: `model` must be a Keras model or layer. Received: NoneType"):
        tfprune.sparsity_report(None)
