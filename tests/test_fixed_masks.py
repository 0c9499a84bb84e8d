"""prune_with_masks: masks chosen outside training, held fixed through fit, save, resume, strip."""

import keras
import numpy as np
import pytest

import tfprune


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.Dense(3, name="out"),
    ])


def _random_masks(model, keep=0.3, seed=0, names=None):
    rng = np.random.default_rng(seed)
    return {label: (rng.random(w.shape) < keep).astype(np.float32)
            for label, w in tfprune.prunable_weights(model).items()
            if names is None or label.split("/")[0] in names}


def _data(n=64):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 6, 6, 1)).astype("float32"), rng.integers(0, 3, n)


def test_labels_name_layer_and_weight():
    assert list(tfprune.prunable_weights(_model())) == ["conv/kernel", "hidden/kernel", "out/kernel"]


def test_masks_hold_through_training_and_strip(tmp_path):
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    masks = _random_masks(model)
    pruned = tfprune.prune_with_masks(model, masks)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data()
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    for label, mask in tfprune.masks_of(pruned).items():
        np.testing.assert_array_equal(mask, masks[label])
    stripped = tfprune.strip_pruning(pruned)
    for label, weight in tfprune.prunable_weights(stripped).items():
        value = weight.numpy()
        assert np.all(value[masks[label] == 0] == 0), label
        assert np.count_nonzero(value) == int(masks[label].sum()), label  # the kept weights trained
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())  # the user's model is untouched


def test_only_named_layers_are_wrapped_and_resume_is_exact(tmp_path):
    model = _model()
    masks = _random_masks(model, names={"hidden"})
    pruned = tfprune.prune_with_masks(model, masks)
    assert [w.layer.name for w in tfprune._pruning.pruning_wrappers(pruned)] == ["hidden"]
    pruned.compile("sgd", "sparse_categorical_crossentropy")
    x, y = _data()
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    path = tmp_path / "ck.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(tfprune.masks_of(loaded)["hidden/kernel"], masks["hidden/kernel"])
    assert loaded.layers[2].pruning_schedule == tfprune.KeepMasks(pruned.layers[2].pruning_schedule.sparsity)


@pytest.mark.parametrize("change, message", [
    (lambda m: {**m, "nope/kernel": m["out/kernel"]}, "no prunable weight"),
    (lambda m: {"conv/kernel": m["conv/kernel"][..., :2]}, "shape"),
    (lambda m: {**m, "out/kernel": m["out/kernel"] * 0.5}, "only 0 and 1"),
    (lambda m: {}, "non-empty dict"),
])
def test_bad_masks_are_refused(change, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        tfprune.prune_with_masks(model, change(_random_masks(model)))


def test_schedule_or_policy_cannot_be_given():
    model = _model()
    with pytest.raises(ValueError, match="pruning_schedule"):
        tfprune.prune_with_masks(model, _random_masks(model), pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
