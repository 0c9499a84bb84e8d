"""tfprune.surgery.register_layer: a user's own layer is cut once its family is registered."""

import keras
import numpy as np
import pytest

import tfprune.surgery as surgery


class MyDense(keras.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="random_normal", name="bias")

    def call(self, x):
        return keras.ops.relu(x @ self.kernel + self.bias)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class MyDenseFamily(surgery.LayerFamily):
    width_key = "units"


def test_a_registered_custom_layer_is_cut_like_zeroing():
    surgery.register_layer(MyDense, MyDenseFamily())
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3, name="head")(MyDense(8, name="mine")(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    zeroed = surgery.zero_channels(model, {"mine": [1, 6]})
    smaller = surgery.remove_channels(model, {"mine": [1, 6]})
    np.testing.assert_allclose(zeroed(x), smaller(x), atol=1e-5)
    assert smaller.get_layer("mine").kernel.shape == (5, 6)
    assert smaller.get_layer("head").kernel.shape == (6, 3)


def test_a_bad_registration_is_refused_clearly():
    with pytest.raises(TypeError, match="must be a tfprune.surgery.LayerFamily"):
        surgery.register_layer(MyDense, "dense")
    with pytest.raises(TypeError, match="must be a keras.layers.Layer subclass"):
        surgery.register_layer(int, MyDenseFamily())
