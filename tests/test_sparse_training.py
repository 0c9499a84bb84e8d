"""Dynamic sparse training (SET, RigL): constant sparsity, zero-initialised growth, exact resume, strip."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._common import keras_internals
from tfprune._pruning.sparse_training import SET, RigL, drop_and_grow, random_masks

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(3, name="out"),
    ], name="tiny")


def _data(n=32):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0).astype("int64")


def _sparse(sparsity=0.75, distribution="uniform", optimizer="adam", seed=0):
    model = _model()
    sparse = tfprune.prune_with_masks(model, random_masks(model, sparsity, distribution, seed=seed))
    sparse.compile(optimizer, LOSS)
    return sparse


def _counts(masks):
    return {label: int(m.sum()) for label, m in masks.items()}


class _Record(keras.callbacks.Callback):
    """The masks after every step (after the callback before it moved them)."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def on_train_batch_begin(self, batch, logs=None):
        self.masks.append(tfprune.masks_of(self.model))


# -- random_masks -----------------------------------------------------------


def test_random_masks_exact_counts_erk_and_seeded():
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    uniform = random_masks(model, 0.75, "uniform", seed=3)
    assert _counts(uniform) == {"hidden/kernel": 32, "out/kernel": 12}
    erk = random_masks(model, 0.75, "erk", seed=3)
    densities = tfprune._pruning.allocation.erk_densities({"hidden/kernel": (8, 16), "out/kernel": (16, 3)}, 0.75)
    assert _counts(erk) == {label: round(d * size) for (label, d), size in zip(densities.items(), (128, 48))}
    assert erk["out/kernel"].mean() > erk["hidden/kernel"].mean()  # the smaller layer keeps more
    for label, mask in random_masks(model, 0.75, "erk", seed=3).items():
        np.testing.assert_array_equal(mask, erk[label])  # keyed by the seed, not a global state
    assert any(not np.array_equal(m, erk[k]) for k, m in random_masks(model, 0.75, "erk", seed=4).items())
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"sparsity": 0.5, "distribution": "global"}, "distribution"),
    ({"sparsity": 0.5, "seed": 1.5}, "seed"),
])
def test_random_masks_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_masks(_model(), **kwargs)


def test_random_masks_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        random_masks(model, 0.5)


# -- the update rule ---------------------------------------------------------


def test_drop_and_grow_by_hand():
    value = np.array([[0.5, -0.1, 0.0], [0.0, 0.3, 0.0]])
    mask = np.array([[1, 1, 0], [0, 1, 0]], np.float32)
    score = np.array([[9.0, 1.0, 2.0], [5.0, 9.0, 3.0]])
    new, grown = drop_and_grow(value, mask, score, 0.5)  # 3 active: drop floor(1.5) = 1, the -0.1
    np.testing.assert_array_equal(new, [[1, 0, 0], [1, 1, 0]])  # grown where the score is largest, 5.0
    np.testing.assert_array_equal(grown, [[False, False, False], [True, False, False]])
    # the weight just dropped may come back, and is then not counted as grown
    new, grown = drop_and_grow(value, mask, np.array([[0, 7.0, 2], [5, 0, 3]]), 0.5)
    np.testing.assert_array_equal(new, mask)
    assert not grown.any()


def test_cosine_decay_and_update_steps():
    rigl = RigL(data=_data(), drop_fraction=0.3, update_every=10, end_step=100)
    assert rigl.drop_fraction_at(0) == pytest.approx(0.3)
    assert rigl.drop_fraction_at(50) == pytest.approx(0.15)
    assert rigl.drop_fraction_at(25) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert rigl.drop_fraction_at(100) == pytest.approx(0.0)
    assert rigl.drop_fraction_at(150) == pytest.approx(0.0)
    assert [s for s in range(0, 130) if rigl.is_update_step(s)] == list(range(10, 100, 10))
    constant = SET(drop_fraction=0.2, update_every=7)
    assert constant.drop_fraction_at(10_000) == 0.2 and constant.is_update_step(7_000)


# -- in fit -------------------------------------------------------------------


def test_set_keeps_each_layer_count_and_moves_masks():
    sparse = _sparse()
    start = tfprune.masks_of(sparse)
    record = _Record()
    x, y = _data()
    set_cb = SET(drop_fraction=0.3, update_every=2, seed=5)
    sparse.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[set_cb, record])
    assert set_cb.updates == 3  # after steps 2, 4 and 6 of 8
    for masks in record.masks + [tfprune.masks_of(sparse)]:
        assert _counts(masks) == _counts(start)
    assert not np.array_equal(tfprune.masks_of(sparse)["hidden/kernel"], start["hidden/kernel"])
    for label, weight in tfprune.prunable_weights(sparse).items():
        assert np.all(weight.numpy()[tfprune.masks_of(sparse)[label] == 0] == 0)


def test_set_growth_is_seeded():
    def run(seed):
        sparse = _sparse()
        x, y = _data()
        sparse.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0,
                   callbacks=[SET(update_every=2, seed=seed)])
        return tfprune.masks_of(sparse)

    first, again, other = run(1), run(1), run(2)
    for label in first:
        np.testing.assert_array_equal(first[label], again[label])
    assert any(not np.array_equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("make", [lambda: SET(update_every=1000, seed=0),
                                  lambda: RigL(data=_data(), update_every=1000, end_step=5000)])
def test_grown_weights_and_moments_start_at_zero(make):
    sparse = _sparse(optimizer="adam")
    x, y = _data()
    callback = make()  # no update inside this fit: Adam's moments build up at the inactive positions
    sparse.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
    kernel = tfprune.prunable_weights(sparse)["hidden/kernel"]
    slots = keras_internals.optimizer_slots(sparse.optimizer, kernel)
    assert len(slots) == 2  # Adam: momentum and velocity
    before = tfprune.masks_of(sparse)["hidden/kernel"]
    assert all(np.abs(s.numpy()[before == 0]).max() > 0 for s in slots)
    moments = [s.numpy().copy() for s in slots]
    callback.update_masks(1000)
    after = tfprune.masks_of(sparse)["hidden/kernel"]
    grown = (after == 1) & (before == 0)
    assert grown.sum() > 0 and after.sum() == before.sum()
    assert np.all(kernel.numpy()[grown] == 0)
    for slot in slots:
        assert np.all(slot.numpy()[grown] == 0)
    kept = (after == 1) & (before == 1)
    for slot, old in zip(slots, moments):
        np.testing.assert_array_equal(slot.numpy()[kept], old[kept])  # the kept weights' moments are left alone


def test_rigl_grows_where_the_dense_gradient_is_largest():
    # One linear layer, MSE: dL/dW = 2 X^T (X W - Y) / (N * outputs), by hand.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, use_bias=False, name="lin")])
    weights = np.array([[0.9, 0.0], [0.0, -0.8], [0.05, 0.0], [0.0, 0.0]], np.float32)
    model.layers[0].kernel.assign(weights)
    mask = (weights != 0).astype(np.float32)
    sparse = tfprune.prune_with_masks(model, {"lin/kernel": mask})
    sparse.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    gradient = 2 * x.T @ (x @ weights - y) / y.size
    rigl = RigL(data=(x, y), drop_fraction=0.5, update_every=10, end_step=1000, decay="constant", batch_size=None)
    rigl.set_model(sparse)
    rigl.update_masks(10)
    new = tfprune.masks_of(sparse)["lin/kernel"]
    # 3 active: drop floor(1.5) = 1, the 0.05; grow the largest |gradient| among the other 9 positions
    candidates = np.where((mask == 1) & (np.abs(weights) > 0.1), -np.inf, np.abs(gradient))
    expected = (mask == 1) & (np.abs(weights) > 0.1)
    expected.flat[np.argmax(candidates)] = True
    np.testing.assert_array_equal(new, expected.astype(np.float32))


def test_no_update_from_end_step_on():
    sparse = _sparse()
    record = _Record()
    x, y = _data()
    rigl = RigL(data=_data(), update_every=2, end_step=6, batch_size=8)
    sparse.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, callbacks=[rigl, record])
    assert rigl.updates == 2  # after steps 2 and 4; none at 6, 8, 10
    for masks in record.masks[5:]:  # the masks before step 6 onwards
        for label, mask in masks.items():
            np.testing.assert_array_equal(mask, tfprune.masks_of(sparse)[label])


def test_rigl_from_a_dataset():
    sparse = _sparse()
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    rigl = RigL(data=dataset, update_every=2, end_step=100)
    sparse.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[rigl])
    assert rigl.updates == 1 and len(rigl._batches) == 4


@pytest.mark.parametrize("make", [
    lambda: SET(drop_fraction=0.3, update_every=3, seed=2),
    lambda: RigL(data=_data(), drop_fraction=0.3, update_every=3, end_step=14, seed=2, batch_size=8),
], ids=["SET", "RigL"])
def test_save_reload_continue_equals_uninterrupted(make, tmp_path):
    x, y = _data()
    fit = dict(batch_size=8, shuffle=False, verbose=0)
    straight = _sparse()
    straight.fit(x, y, epochs=4, callbacks=[make()], **fit)

    first = _sparse()
    first.fit(x, y, epochs=2, callbacks=[make()], **fit)
    first.save(tmp_path / "mid.keras")
    loaded = keras.saving.load_model(tmp_path / "mid.keras")
    loaded.fit(x, y, epochs=2, callbacks=[make()], **fit)

    for label, mask in tfprune.masks_of(straight).items():
        np.testing.assert_array_equal(tfprune.masks_of(loaded)[label], mask)
    for a, b in zip(straight.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_strip_gives_plain_layers_with_the_zeros():
    sparse = _sparse(0.8, "erk")
    x, y = _data()
    sparse.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[RigL(data=(x, y), update_every=2, end_step=3)])
    masks = tfprune.masks_of(sparse)
    stripped = tfprune.strip_pruning(sparse)
    assert not any(isinstance(layer, tfprune.PruningWrapper) for layer in stripped.layers)
    for label, weight in tfprune.prunable_weights(stripped).items():
        value = weight.numpy()
        assert np.all(value[masks[label] == 0] == 0)
        assert np.count_nonzero(value) <= masks[label].sum()
    np.testing.assert_allclose(stripped.predict(x, verbose=0), sparse.predict(x, verbose=0), atol=1e-6)


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: SET(drop_fraction=0.0), "drop_fraction"),
    (lambda: SET(drop_fraction=1.0), "drop_fraction"),
    (lambda: SET(drop_fraction=True), "drop_fraction"),
    (lambda: SET(update_every=0), "update_every"),
    (lambda: SET(update_every=2.5), "update_every"),
    (lambda: SET(update_every=10, end_step=5), "end_step"),
    (lambda: SET(decay="linear"), "decay"),
    (lambda: SET(decay="cosine"), "end_step"),
    (lambda: SET(seed="a"), "seed"),
    (lambda: RigL(end_step=100), "`data` is required"),
    (lambda: RigL(data=(np.zeros((4, 8)), np.zeros(3)), end_step=100), "one label per example"),
    (lambda: RigL(data=np.zeros((4, 8)), end_step=100), r"\(x, y\)"),
    (lambda: RigL(data=_data()), "end_step"),
    (lambda: RigL(data=_data(), end_step=100, batch_size=0), "batch_size"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_rigl_data_of_the_wrong_shape():
    sparse = _sparse()
    x, y = _data()
    with pytest.raises(ValueError, match="does not fit model"):
        sparse.fit(x, y, epochs=1, verbose=0,
                   callbacks=[RigL(data=(np.zeros((4, 5), "float32"), np.zeros(4, "int64")), end_step=100)])


@pytest.mark.parametrize("make_model, message", [
    (lambda m: tfprune.prune_low_magnitude(m, tfprune.PolynomialDecay(0.0, 0.5, 0, 10, frequency=2)),
     "not held by fixed masks"),
    (lambda m: m, "no pruning wrappers"),
])
def test_callback_refuses_models_not_made_by_prune_with_masks(make_model, message):
    model = make_model(_model())
    model.compile("adam", LOSS)
    x, y = _data()
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[SET(update_every=2)])


def test_steps_per_execution_refused():
    model = _model()
    sparse = tfprune.prune_with_masks(model, random_masks(model, 0.5))
    sparse.compile("adam", LOSS, steps_per_execution=2)
    x, y = _data()
    with pytest.raises(ValueError, match="steps_per_execution"):
        sparse.fit(x, y, epochs=1, verbose=0, callbacks=[SET(update_every=2)])
