"""copy_layer builds each copy once, holding the source values, and never lets the copies share writes."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune._common.layers import copy_layer


@keras.saving.register_keras_serializable(package="test_copy_once")
class CountingInit(keras.initializers.Initializer):
    calls = 0

    def __call__(self, shape, dtype=None):
        CountingInit.calls += 1
        return keras.ops.ones(shape, dtype=dtype)


def _dense(units=6, inputs=5, seed=0):
    layer = keras.layers.Dense(units, kernel_initializer=CountingInit())
    layer.build((None, inputs))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal((inputs, units)).astype(np.float32), rng.standard_normal(units).astype(np.float32)])
    return layer


def test_a_copy_holds_the_values_without_running_the_initializer():
    layer = _dense()
    before = CountingInit.calls
    clone = copy_layer(layer)
    assert CountingInit.calls == before
    for a, b in zip(clone.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert clone.kernel is not layer.kernel


def test_writes_to_either_side_stay_on_that_side():
    layer = _dense()
    original = layer.get_weights()
    clone = copy_layer(layer)
    clone.kernel.assign(np.zeros((5, 6), np.float32))
    np.testing.assert_array_equal(layer.kernel.numpy(), original[0])
    layer.bias.assign_add(np.ones(6, np.float32))
    np.testing.assert_array_equal(clone.bias.numpy(), original[1])


def test_given_values_are_held_and_bad_shapes_named():
    layer = _dense()
    values = [np.full((5, 6), 2.0, np.float32), np.arange(6, dtype=np.float32)]
    clone = copy_layer(layer, values)
    np.testing.assert_array_equal(clone.kernel.numpy(), values[0])
    values[0][0, 0] = 7.0  # the copy does not alias the caller's array
    assert clone.kernel.numpy()[0, 0] == 2.0
    with pytest.raises(ValueError, match=r"weight '.*kernel' of its copy has shape \(5, 6\).*\(6, 5\)"):
        copy_layer(layer, [np.zeros((6, 5), np.float32), np.zeros(6, np.float32)])


@keras.saving.register_keras_serializable(package="test_copy_once")
class AssignsInBuild(keras.layers.Layer):
    """Sets a non-weight variable in build: the deferred route would lose that, so the plain one is used."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 2), initializer="zeros")
        self.scale = self.add_variable(shape=(), initializer="zeros", trainable=False)
        self.scale.assign(3.0)

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.scale


def test_a_layer_assigning_in_build_is_copied_the_plain_way():
    layer = AssignsInBuild()
    layer.build((None, 4))
    layer.w.assign(np.ones((4, 2), np.float32))
    clone = copy_layer(layer)
    np.testing.assert_array_equal(clone.w.numpy(), np.ones((4, 2), np.float32))
    assert float(clone.scale.numpy()) == 3.0


def test_training_the_pruned_model_leaves_the_original_and_the_stripped_copy_alone():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])
    original = [w.copy() for w in model.get_weights()]
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, 0, frequency=2))
    pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x, y = np.random.default_rng(1).standard_normal((32, 8)), np.zeros((32, 3))
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    for a, b in zip(model.get_weights(), original):
        np.testing.assert_array_equal(a, b)
    stripped = tfprune.strip_pruning(pruned)
    frozen = [w.copy() for w in stripped.get_weights()]
    kernel = stripped.layers[0].kernel.numpy()
    assert np.count_nonzero(kernel) == kernel.size // 2
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    model.layers[0].kernel.assign(np.ones((8, 16), np.float32))
    for a, b in zip(stripped.get_weights(), frozen):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(pruned.layers[0].layer.kernel.numpy(), np.ones((8, 16)))
