"""keras.ops calls and layers that own layers inside Functional graphs: channels flow, block, never crash."""

import keras
import numpy as np
import pytest
from keras import ops

import tfprune.structured as structured
import tfprune.surgery as surgery

L = keras.layers


def _x(model, n=4, seed=0):
    return np.random.default_rng(seed).random((n, *model.input_shape[1:])).astype("float32")


def _same_as_zeroed(model, channels):
    """remove_channels computes what zero_channels does: the cut went through every op exactly."""
    x = _x(model)
    smaller = surgery.remove_channels(model, channels)
    zeroed = surgery.zero_channels(model, channels)
    np.testing.assert_allclose(smaller.predict(x, verbose=0), zeroed.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    return smaller


def _group(model, layer):
    return next(g for g in surgery.coupled_groups(model) if layer in g.layers)


def test_dense_plus_a_scalar_is_pruned():
    inp = keras.Input((8,))
    h = L.Dense(16, name="hidden")(inp) + 1.0
    model = keras.Model(inp, L.Dense(2, name="out")(h))
    assert _group(model, "hidden").removable == 16
    smaller = structured.prune(model, ratio=0.5, verbose=0)
    assert smaller.get_layer("hidden").units == 8 and smaller.get_layer("out").kernel.shape == (8, 2)
    assert smaller.predict(_x(model), verbose=0).shape == (4, 2)


def test_binary_op_between_two_tensors_couples_them():
    inp = keras.Input((4, 8))
    a, b = L.Dense(16, name="a")(inp), L.Dense(16, name="b")(inp)
    h = ops.mean(ops.relu(a * b), axis=1)
    model = keras.Model(inp, L.Dense(2, name="out")(h))
    assert _group(model, "a").layers == ("a", "b")
    smaller = _same_as_zeroed(model, {"a": [0, 3, 5]})
    assert smaller.get_layer("b").units == 13  # naming one member cuts the coupled group


def test_shape_ops_keeping_the_channel_axis_pass_the_cut():
    inp = keras.Input((4, 8))
    h = L.Dense(16, name="a")(inp)
    h = ops.reshape(h, (-1, 2, 2, 16))
    h = ops.transpose(h, (0, 2, 1, 3))
    h = ops.cumsum(h[:, 0], axis=1)
    h = ops.squeeze(ops.expand_dims(h, 1), axis=1)
    h = ops.maximum(h * 2.0, h[:, :1] - 1.0)  # a scalar and a slice that keeps every channel
    model = keras.Model(inp, L.Dense(2, name="out")(h))
    smaller = _same_as_zeroed(model, {"a": [1, 2, 15]})
    assert smaller.get_layer("a").units == 13


def test_concatenate_op_offsets_channels():
    inp = keras.Input((4, 8))
    h = ops.concatenate([ops.relu(L.Dense(6, name="a")(inp)), L.Dense(5, name="b")(inp)], axis=-1)
    model = keras.Model(inp, L.Dense(2, name="out")(h))
    smaller = _same_as_zeroed(model, {"a": [0], "b": [4]})
    assert smaller.get_layer("out").kernel.shape == (9, 2)


def test_a_constant_of_last_dim_one_broadcasts():
    inp = keras.Input((4, 8))
    h = L.Dense(16, name="a")(inp) * np.full((4, 1), 2.0, "float32")
    model = keras.Model(inp, L.Dense(2)(h))
    _same_as_zeroed(model, {"a": [7]})


@pytest.mark.parametrize("op, why", [
    (lambda h: ops.softmax(h), "'softmax' (keras.ops Softmax): it works across the channel axis"),
    (lambda h: ops.sum(h, axis=-1, keepdims=True), "(keras.ops Sum): it works across the channel axis"),
    (lambda h: h * np.ones(16, "float32"), "constant of shape (16,)"),
    (lambda h: h[..., :8], "(keras.ops GetItem): it indexes the channel axis"),
    (lambda h: ops.transpose(h, (0, 2, 1))[:, :, :4], "(keras.ops Transpose): it moves the channel axis"),
    (lambda h: ops.expand_dims(h, -1)[..., 0], "(keras.ops ExpandDims): it adds an axis after the channels"),
    (lambda h: ops.reshape(h, (-1, 64))[:, :16], "(keras.ops Reshape): it moves channels off the last axis"),
    (lambda h: ops.matmul(h, np.ones((16, 3), "float32")), "(keras.ops Matmul): it contracts the channel axis"),
    (lambda h: ops.einsum("bij,bkj->bik", h, h), "(keras.ops Einsum): an operation whose channel mapping"),
])
def test_an_op_over_the_channel_axis_blocks_only_its_group(op, why):
    inp = keras.Input((4, 8))
    h = L.Dense(16, name="a")(inp)
    side = L.Dense(6, name="side")(inp)
    out = L.Concatenate()([L.Flatten()(op(h)), L.Flatten()(L.Dense(3, name="c")(side))])
    model = keras.Model(inp, L.Dense(2)(out))
    group = _group(model, "a")
    assert group.removable == 0 and why in group.blocked_by
    with pytest.raises(ValueError, match="Channel 0 of 'a' cannot be removed"):
        surgery.remove_channels(model, {"a": [0]})
    smaller = structured.prune(model, ratio=0.5, verbose=0)  # the other groups are still cut
    assert smaller.get_layer("a").units == 16 and smaller.get_layer("side").units == 3


class Double(keras.Operation):
    def call(self, x):
        return x * 2.0

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype)


def test_register_operation_lets_a_cut_through_a_custom_op():
    def build():
        inp = keras.Input((8,))
        return keras.Model(inp, L.Dense(2)(Double()(L.Dense(16, name="a")(inp))))

    assert "'double' (keras.ops Double)" in _group(build(), "a").blocked_by
    with pytest.raises(TypeError, match="not a layer"):
        surgery.register_operation(L.Dense, surgery.OpFamily())
    surgery.register_operation(Double, surgery.OpFamily)
    try:
        _same_as_zeroed(build(), {"a": [2, 9]})
    finally:
        from tfprune._graph import families
        families._REGISTRY.pop(Double)


class Block(L.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.up, self.down = L.Dense(units), L.Dense(units)

    def call(self, x):
        return self.down(ops.relu(self.up(x))) + x


class Wrapped(L.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        inp = keras.Input((16,))
        self.inner = keras.Model(inp, L.Dense(16)(inp))

    def call(self, x):
        return self.inner(x)


def _nested_model():
    inp = keras.Input((16,))
    return keras.Model(inp, L.Dense(16)(inp), name="inner_model")


@pytest.mark.parametrize("make, why", [
    (lambda: Block(16, name="block"), "'block' (Block): a layer that owns layers"),
    (lambda: Wrapped(name="wrapped"), "'wrapped' (Wrapped): a layer that owns layers"),
    (_nested_model, "'inner_model' (Functional): a nested model"),
])
def test_layers_that_own_layers_are_left_alone(make, why):
    inp = keras.Input((16,))
    h = L.Dense(16, name="a")(inp)
    side = L.Dense(8, name="side")(inp)
    out = L.Concatenate()([make()(h), side])
    model = keras.Model(inp, L.Dense(2)(out))
    assert why in _group(model, "a").blocked_by
    smaller = structured.prune(model, ratio=0.5, verbose=0)
    assert smaller.get_layer("side").units == 4
    x = _x(model)
    assert smaller.predict(x, verbose=0).shape == (4, 2)


def test_a_keras_hub_transformer_encoder_is_opaque():
    keras_hub = pytest.importorskip("keras_hub")
    inp = keras.Input((5, 16))
    h = keras_hub.layers.TransformerEncoder(32, 2, name="encoder")(L.Dense(16, name="a")(inp))
    model = keras.Model(inp, L.Dense(2)(ops.mean(h, axis=1)))
    assert "'encoder' (TransformerEncoder): a layer that owns layers" in _group(model, "a").blocked_by
    with pytest.warns(UserWarning, match="cut nothing"):
        same = structured.prune(model, ratio=0.5, verbose=0)
    x = _x(model)
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_a_lambda_layer_is_copied_and_left_alone():
    inp = keras.Input((8,))
    h = L.Lambda(lambda t: t * 2.0, name="twice")(L.Dense(16, name="a")(inp))
    model = keras.Model(inp, L.Dense(2)(L.Concatenate()([h, L.Dense(8, name="side")(inp)])))
    smaller, report = structured.prune(model, ratio=0.5, verbose=0, return_report=True)
    assert report.cut == {"side": (8, 4)} and "'twice' (Lambda)" in report.left_alone["a"]
    x = _x(model)
    assert smaller.predict(x, verbose=0).shape == (4, 2)
