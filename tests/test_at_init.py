"""Pruning at initialisation: SNIP, GraSP, SynFlow masks, checked against hand-computable cases."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._pruning.at_init import (
    _grasp_scores,
    _keep_top,
    _Stateless,
    _synflow_scores,
    grasp_masks,
    snip_masks,
    synflow_masks,
)
from tfprune._pruning.fixed_masks import prunable_weights, prune_with_masks
from tfprune._pruning.masks import magnitude_masks

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LOSS64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")  # Keras losses cast to float32


def _mlp(seed=0, extras=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="fc1")]
    if extras:
        layers += [keras.layers.BatchNormalization(name="bn"), keras.layers.Dropout(0.3)]
    layers += [keras.layers.Dense(8, activation="relu", name="fc2"), keras.layers.Dense(3, name="out")]
    return keras.Sequential(layers, name="mlp")


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="out"),
    ])


def _data(n=32, shape=(12,), seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 3, n)


def _kept(masks):
    return int(sum(m.sum() for m in masks.values()))


METHODS = {
    "snip": lambda model, data, s: snip_masks(model, data, s, loss=LOSS),
    "grasp": lambda model, data, s: grasp_masks(model, data, s, loss=LOSS),
    "synflow": lambda model, data, s: synflow_masks(model, s, iterations=10),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.93])
def test_exact_sparsity_and_labels(method, sparsity):
    model = _mlp()
    masks = METHODS[method](model, _data(), sparsity)
    weights = prunable_weights(model)
    assert list(masks) == list(weights) == ["fc1/kernel", "fc2/kernel", "out/kernel"]
    total = sum(int(np.prod(w.shape)) for w in weights.values())
    assert _kept(masks) == round(total * (1 - sparsity))
    for label, mask in masks.items():
        assert mask.shape == tuple(weights[label].shape) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_model_is_not_modified(method):
    """Weights, BatchNorm statistics and the dropout seed stay as they were; SynFlow's abs is on a copy."""
    model = _mlp(extras=True)
    before = [v.numpy().copy() for v in model.variables]
    METHODS[method](model, _data(), 0.8)
    for old, new in zip(before, model.variables):
        np.testing.assert_array_equal(old, new.numpy(), err_msg=new.path)
    assert any(np.any(w < 0) for w in before)  # there were signs to lose


def test_snip_equals_analytic_ranking_on_a_linear_layer():
    """One Dense layer, mean squared error: g = 2/(n k) x^T (x W + b - y), SNIP keeps the top |g * w|."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="lin")])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 5)).astype("float32")
    y = rng.normal(size=(10, 4)).astype("float32")
    w, b = model.get_weights()
    grad = 2.0 / (10 * 4) * x.T @ (x @ w + b - y)
    saliency = np.abs(grad * w)
    expected, _ = magnitude_masks([saliency], 0.6)
    masks = snip_masks(model, (x, y), 0.6, loss="mse")
    np.testing.assert_array_equal(masks["lin/kernel"], expected[0])
    assert masks["lin/kernel"].sum() == 8


def test_snip_averages_batches_of_arrays_and_of_a_dataset_alike():
    model = _mlp()
    x, y = _data(64)
    from_arrays = snip_masks(model, (x, y), 0.7, loss=LOSS, batches=2)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    from_dataset = snip_masks(model, dataset, 0.7, loss=LOSS, batches=2)
    one_batch = snip_masks(model, (x, y), 0.7, loss=LOSS)  # whole arrays: the same mean gradient
    for label in from_arrays:
        np.testing.assert_array_equal(from_arrays[label], from_dataset[label])
        np.testing.assert_array_equal(from_arrays[label], one_batch[label])


def test_model_compiled_loss_is_used_when_loss_is_none():
    model = _mlp()
    model.compile("sgd", LOSS)
    data = _data()
    for label, mask in snip_masks(model, data, 0.8).items():
        np.testing.assert_array_equal(mask, snip_masks(model, data, 0.8, loss=LOSS)[label])


def _tanh_net():
    """A small float64 tanh network: curvature everywhere, so H g is informative and finite differences accurate."""
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((4,), dtype="float64"),
        keras.layers.Dense(5, activation="tanh", name="h", dtype="float64"),
        keras.layers.Dense(3, name="o", dtype="float64"),
    ])


def test_grasp_hessian_vector_product_matches_finite_differences():
    model = _tanh_net()
    rng = np.random.default_rng(2)
    x, y = tf.constant(rng.normal(size=(16, 4))), tf.constant(rng.integers(0, 3, 16))
    net = _Stateless(model, "test")
    values = net.values()
    temperature = 2.0
    vector = [tf.constant(rng.normal(size=values[s].shape)) for s in net.slots.values()]
    hv = net.hessian_vector(values, x, y, LOSS64, temperature, True, vector)

    def grad_at(step):
        moved = list(values)
        for slot, v in zip(net.slots.values(), vector):
            moved[slot] = values[slot] + step * v
        return net.gradient(moved, x, y, LOSS64, temperature, True)

    eps = 1e-5
    for exact, plus, minus in zip(hv, grad_at(eps), grad_at(-eps)):
        np.testing.assert_allclose(exact.numpy(), (plus.numpy() - minus.numpy()) / (2 * eps), rtol=1e-5, atol=1e-9)


def test_grasp_removes_the_highest_scores():
    model = _tanh_net()
    rng = np.random.default_rng(2)
    data = (rng.normal(size=(16, 4)), rng.integers(0, 3, 16))
    scores = _grasp_scores(model, data, 0.5, LOSS64, 1, 200.0, True, "test")
    # S = -w * Hg, normalised by |sum S| + eps
    net = _Stateless(model, "test")
    values = net.values()
    g = net.gradient(values, tf.constant(data[0]), tf.constant(data[1]), LOSS64, 200.0, True)
    hg = net.hessian_vector(values, tf.constant(data[0]), tf.constant(data[1]), LOSS64, 200.0, True, g)
    raw = {label: -values[s].numpy() * h.numpy() for (label, s), h in zip(net.slots.items(), hg)}
    norm = abs(sum(r.sum() for r in raw.values())) + 1e-10
    for label in raw:
        np.testing.assert_allclose(scores[label], raw[label] / norm, rtol=1e-9)
    masks = grasp_masks(model, data, 0.5, loss=LOSS64)
    flat_scores = np.concatenate([scores[label].ravel() for label in masks])
    flat_masks = np.concatenate([masks[label].ravel() for label in masks])
    assert flat_scores[flat_masks == 1].max() <= flat_scores[flat_masks == 0].min()  # the highest went
    assert flat_masks.sum() == round(flat_masks.size * 0.5)


def _linear_chain(seed=0, bias=False):
    """8 -> 8 (large weights) -> 200 (small weights) -> 1, linear: global magnitude empties the wide layer."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, use_bias=bias, name="first"),
        keras.layers.Dense(200, use_bias=bias, name="wide"),
        keras.layers.Dense(1, use_bias=bias, name="last"),
    ])
    rng = np.random.default_rng(seed)
    model.get_layer("first").kernel.assign(rng.normal(size=(8, 8)).astype("float32"))
    model.get_layer("wide").kernel.assign(0.01 * rng.normal(size=(8, 200)).astype("float32"))
    model.get_layer("last").kernel.assign(rng.normal(size=(200, 1)).astype("float32"))
    return model


def test_synflow_conserves_flow_layer_by_layer():
    """Tanaka et al. 2020, Theorem 2: in a bias-free linear net each layer's scores sum to R."""
    model = _linear_chain()
    net = _Stateless(model, "test")
    values = [tf.abs(v) for v in net.values()]
    masks = {label: np.ones(values[s].shape, np.float32) for label, s in net.slots.items()}
    scores = _synflow_scores(net, values, masks, tf.ones((1, 8)), "test")
    first, wide, last = (np.abs(model.get_layer(n).kernel.numpy()) for n in ("first", "wide", "last"))
    flow = (np.ones((1, 8)) @ first @ wide @ last).item()
    for label, score in scores.items():
        np.testing.assert_allclose(score.sum(), flow, rtol=1e-5, err_msg=label)


def test_synflow_avoids_the_collapse_global_magnitude_causes():
    model = _linear_chain()
    weights = prunable_weights(model)
    magnitude, _ = magnitude_masks([np.abs(w.numpy()) for w in weights.values()], 0.97)
    assert magnitude[1].sum() == 0  # global magnitude empties "wide"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        masks = synflow_masks(model, 0.97, iterations=20)
    assert all(m.sum() > 0 for m in masks.values())
    assert _kept(masks) == round(sum(m.size for m in masks.values()) * 0.03)


def test_collapse_is_warned_naming_the_layer():
    """Two parallel layers see the same gradient, so SNIP ranks them by |w|: the tiny one is emptied."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    tiny = keras.layers.Dense(4, name="tiny", kernel_initializer=keras.initializers.Constant(1e-6))(inputs)
    big = keras.layers.Dense(4, name="big")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([tiny, big]))
    x, y = _data(16, (8,))
    with pytest.warns(RuntimeWarning, match="layer collapse.*'tiny/kernel'"):
        masks = snip_masks(model, (x, y), 0.5, loss=LOSS)
    assert masks["tiny/kernel"].sum() == 0 and masks["big/kernel"].sum() == 32


def test_synflow_float64_agrees_and_subclassed_models_need_input_shape():
    model = _cnn()
    single = synflow_masks(model, 0.9, iterations=5)
    double = synflow_masks(model, 0.9, iterations=5, dtype="float64")
    agree = np.mean(np.concatenate([(single[k] == double[k]).ravel() for k in single]))
    assert agree > 0.99  # only near-ties can differ

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(6, activation="relu", name="a")
            self.b = keras.layers.Dense(2, name="b")

        def call(self, x):
            return self.b(self.a(x))

    net = Net()
    net(np.zeros((1, 5), "float32"))
    masks = synflow_masks(net, 0.5, iterations=3, input_shape=(5,))
    assert _kept(masks) == 21
    with pytest.raises(ValueError, match="input_shape"):
        synflow_masks(net, 0.5)
    with pytest.raises(ValueError, match="float64"):
        synflow_masks(net, 0.5, input_shape=(5,), dtype="float64")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_trains_with_exact_zeros_saves_reloads_and_strips(method, tmp_path):
    model = _cnn()
    x, y = _data(48, (6, 6, 1))
    masks = METHODS[method](model, (x[:16], y[:16]), 0.8)
    sparse = prune_with_masks(model, masks)
    sparse.compile("adam", LOSS)
    sparse.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    path = tmp_path / "sparse.keras"
    sparse.save(path)
    loaded = keras.saving.load_model(path)
    for label, mask in tfprune.masks_of(loaded).items():
        np.testing.assert_array_equal(mask, masks[label])
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(loaded)
    for label, weight in prunable_weights(stripped).items():
        value = weight.numpy()
        assert np.all(value[masks[label] == 0] == 0), label
        assert np.count_nonzero(value) == int(masks[label].sum()), label


@pytest.mark.parametrize("call, error, message", [
    (lambda m, d: snip_masks(m, d, 1.0, loss=LOSS), ValueError, r"snip_masks: `sparsity` must be a number in \[0, 1\)"),
    (lambda m, d: grasp_masks(m, d, -0.1, loss=LOSS), ValueError, r"grasp_masks: `sparsity`"),
    (lambda m, d: synflow_masks(m, 1.5), ValueError, r"synflow_masks: `sparsity`"),
    (lambda m, d: snip_masks(m, None, 0.5, loss=LOSS), ValueError, r"snip_masks: `data` is required.*synflow_masks needs no data"),
    (lambda m, d: grasp_masks(m, None, 0.5, loss=LOSS), ValueError, r"grasp_masks: `data` is required"),
    (lambda m, d: snip_masks(m, d[0], 0.5, loss=LOSS), ValueError, r"snip_masks: `data` must be labelled.*without labels"),
    (lambda m, d: snip_masks(m, (d[0][:, :5], d[1]), 0.5, loss=LOSS), ValueError, r"snip_masks: `data` does not fit model 'mlp'"),
    (lambda m, d: snip_masks(m, (d[0], d[1][:5]), 0.5, loss=LOSS), ValueError, r"different numbers of examples"),
    (lambda m, d: snip_masks(m, [(d[0], d[1], d[1])], 0.5, loss=LOSS), ValueError, r"each batch of `data` must be \(x, y\)"),
    (lambda m, d: snip_masks(m, d, 0.5), ValueError, r"snip_masks: `loss` is None and model 'mlp' is not compiled"),
    (lambda m, d: grasp_masks(m, d, 0.5, loss="no_such_loss"), ValueError, r"grasp_masks: `loss` 'no_such_loss' is not"),
    (lambda m, d: snip_masks(m, d, 0.5, loss=3), ValueError, r"snip_masks: `loss` must be"),
    (lambda m, d: snip_masks(m, d, 0.5, loss=LOSS, batches=0), ValueError, r"snip_masks: `batches` must be"),
    (lambda m, d: snip_masks(m, d, 0.5, loss=LOSS, batches=100), ValueError, r"fewer than batches=100"),
    (lambda m, d: grasp_masks(m, d, 0.5, loss=LOSS, temperature=0), ValueError, r"grasp_masks: `temperature`"),
    (lambda m, d: synflow_masks(m, 0.5, iterations=0), ValueError, r"synflow_masks: `iterations`"),
    (lambda m, d: synflow_masks(m, 0.5, dtype="float16"), ValueError, r"synflow_masks: `dtype`"),
    (lambda m, d: snip_masks("model", d, 0.5, loss=LOSS), TypeError, r"snip_masks: `model` must be a keras Model"),
])
def test_bad_input_is_refused_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call(_mlp(), _data())


def test_unbuilt_model_and_token_inputs_are_refused():
    unbuilt = keras.Sequential([keras.layers.Dense(3)], name="unbuilt")
    for call in (lambda: snip_masks(unbuilt, _data(), 0.5, loss=LOSS), lambda: synflow_masks(unbuilt, 0.5)):
        with pytest.raises(ValueError, match="model 'unbuilt' is not built"):
            call()
    keras.utils.set_random_seed(0)
    tokens = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(10, 3),
                               keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="integer inputs"):
        synflow_masks(tokens, 0.5)


def test_synflow_on_inputs_of_unknown_length_needs_input_shape():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(4, name="d"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2, name="o")])
    with pytest.raises(ValueError, match="unknown size.*input_shape="):
        synflow_masks(model, 0.5)
    assert _kept(synflow_masks(model, 0.5, iterations=2, input_shape=(5, 3))) == 10
