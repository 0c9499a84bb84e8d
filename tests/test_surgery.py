"""tfprune.surgery: channel removal follows the graph, is exact, and leaves the original alone."""

import keras
import numpy as np
import pytest

import tfprune.surgery as surgery

L = keras.layers


def _randomize(model, seed=0):
    """Random weights everywhere, positive variances, so no channel is trivially zero."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(0.0, 0.4, w.shape)
        if "variance" in w.name:
            value = np.abs(value) + 0.5
        w.assign(value.astype(w.dtype))
    return model


def _snapshot(model):
    return [np.array(w) for w in model.weights]


def _assert_untouched(model, snapshot):
    assert len(model.weights) == len(snapshot)
    for w, before in zip(model.weights, snapshot):
        np.testing.assert_array_equal(np.array(w), before)


def _assert_exact(model, channels, x, atol=1e-4):
    """Removing channels equals zeroing them in the original, and zeroing changes the output."""
    snapshot = _snapshot(model)
    zeroed = surgery.zero_channels(model, channels)
    smaller = surgery.remove_channels(model, channels)
    _assert_untouched(model, snapshot)
    out_original = np.asarray(model(x, training=False))
    out_zeroed = np.asarray(zeroed(x, training=False))
    out_smaller = np.asarray(smaller(x, training=False))
    assert not np.allclose(out_original, out_zeroed, atol=atol), "the cut should change the outputs"
    scale = max(1.0, float(np.abs(out_zeroed).max()))
    np.testing.assert_allclose(out_smaller, out_zeroed, atol=atol * scale, rtol=1e-4)
    assert smaller.count_params() < model.count_params()
    return smaller


def residual_concat_model():
    inp = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="b1")(x)
    x = L.ReLU(name="r1")(x)
    y = L.Conv2D(8, 3, padding="same", name="c2")(x)
    y = L.BatchNormalization(name="b2")(y)
    x = L.ReLU(name="r2")(L.Add(name="add")([x, y]))
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    d = L.ReLU(name="r3")(L.BatchNormalization(name="b3")(d))
    z = L.Conv2D(4, 1, activation="relu", name="c3")(d)
    x = L.Concatenate(name="cat")([x, z])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(6, activation="relu", name="fc")(x)
    return _randomize(keras.Model(inp, L.Dense(3, name="logits")(x), name="rescat"))


@pytest.fixture
def images():
    return np.random.default_rng(1).random((4, 12, 12, 3)).astype("float32")


def test_residual_concat_depthwise_flatten_dense_is_exact(images):
    model = residual_concat_model()
    smaller = _assert_exact(model, {"c1": [1, 4], "c3": [0], "fc": [2]}, images)
    layers = {layer.name: layer for layer in smaller.layers}
    assert layers["c1"].filters == 6 and layers["c2"].filters == 6  # the Add couples c1 and c2
    assert layers["b1"].gamma.shape == (6,) and layers["b2"].gamma.shape == (6,)
    assert layers["dw"].kernel.shape == (3, 3, 6, 2)  # depthwise carries the cut to its outputs
    assert layers["c3"].kernel.shape == (1, 1, 12, 3)
    assert layers["fc"].kernel.shape == (6 * 6 * (6 + 3), 5)  # Flatten: (h*W + w)*C + c
    assert layers["logits"].kernel.shape == (5, 3)
    assert smaller.name == model.name
    assert [layer.name for layer in smaller.layers] == [layer.name for layer in model.layers]


def test_naming_one_member_or_all_of_a_coupled_group_is_the_same(images):
    model = residual_concat_model()
    one = surgery.remove_channels(model, {"c2": [0, 3]})
    both = surgery.remove_channels(model, {"c1": [0, 3], "c2": [3, 0]})
    np.testing.assert_allclose(np.asarray(one(images)), np.asarray(both(images)), atol=1e-6)
    assert {layer.name: layer.count_params() for layer in one.layers} == {
        layer.name: layer.count_params() for layer in both.layers
    }


def test_sequential_stays_sequential_and_is_exact():
    model = _randomize(keras.Sequential([
        keras.Input((10, 10, 2)),
        L.Conv2D(6, 3, name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.Activation("relu", name="act1"),
        L.ZeroPadding2D(1, name="pad"),
        L.SeparableConv2D(5, 3, depth_multiplier=2, name="sep"),
        L.BatchNormalization(name="bn2"),
        L.ReLU(name="act2"),
        L.Dropout(0.5, name="drop"),
        L.Conv2DTranspose(4, 3, name="up", activation="relu"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(7, activation="relu", name="fc"),
        L.Dense(2, name="out"),
    ], name="seq"))
    x = np.random.default_rng(2).random((3, 10, 10, 2)).astype("float32")
    smaller = _assert_exact(model, {"conv1": [0, 5], "sep": [1], "up": [2], "fc": [0, 1, 2]}, x)
    assert isinstance(smaller, keras.Sequential)
    shapes = {layer.name: layer.output.shape[-1] for layer in smaller.layers}
    assert shapes["conv1"] == 4 and shapes["sep"] == 4 and shapes["up"] == 3 and shapes["fc"] == 4


def test_squeeze_excite_multiply_and_other_merges_are_exact():
    inp = keras.Input((8, 8, 4))
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(6, 3, padding="same", activation="relu", name="b")(inp)
    c = L.Conv2D(6, 1, activation="relu", name="c")(inp)
    x = L.Maximum(name="max")([L.Subtract(name="sub")([a, b]), L.Average(name="avg")([a, c])])
    se = L.GlobalAveragePooling2D(name="se_pool")(x)
    se = L.Reshape((1, 1, 6), name="se_reshape")(se)
    se = L.Conv2D(3, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(6, 1, activation="sigmoid", name="se_expand")(se)
    x = L.Multiply(name="excite")([x, se])
    x = L.Conv1D(5, 3, name="c1d")(L.Reshape((64, 6), name="to_seq")(x))
    out = L.Dense(2, name="out")(L.GlobalMaxPooling1D(name="gmp")(x))
    model = _randomize(keras.Model(inp, out))
    x = np.random.default_rng(3).random((2, 8, 8, 4)).astype("float32")
    groups = [set(g.layers) for g in surgery.coupled_groups(model)]
    assert {"a", "b", "c", "se_expand"} in groups  # every merge couples, SE included
    # se_expand channels go to zero pre-sigmoid (0.5), but x is zero there: still exact.
    _assert_exact(model, {"b": [1, 2], "se_reduce": [0], "c1d": [4]}, x)


def test_dense_on_sequences_and_conv3d():
    inp = keras.Input((4, 6, 6, 2))
    x = L.Conv3D(5, 3, padding="same", activation="relu", name="c3d")(inp)
    x = L.AveragePooling3D(2, name="pool")(x)
    x = L.Reshape((18, 5), name="seq")(x)
    x = L.Dense(7, activation="relu", name="d1")(x)
    x = L.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    out = L.Dense(3, name="out")(L.Flatten(name="flat")(x))
    model = _randomize(keras.Model(inp, out))
    x = np.random.default_rng(4).random((2, 4, 6, 6, 2)).astype("float32")
    _assert_exact(model, {"c3d": [0, 3], "d1": [6]}, x)


def test_compiled_model_gives_compiled_result():
    model = residual_concat_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    smaller = surgery.remove_channels(model, {"c1": [0]})
    assert smaller.compiled
    smaller.fit(np.zeros((4, 12, 12, 3)), np.zeros(4), epochs=1, verbose=0)
    assert smaller.optimizer is not model.optimizer


def test_coupled_groups_reports_what_can_be_removed():
    groups = {g.layers: g for g in surgery.coupled_groups(residual_concat_model())}
    assert groups[("c1", "c2")].channels == 8 and groups[("c1", "c2")].removable == 8
    assert groups[("logits",)].removable == 0 and "output" in groups[("logits",)].blocked_by


@pytest.mark.parametrize(
    "channels, match",
    [
        ({"nope": [0]}, r"'nope'.*not a layer.*'c1'"),
        ({"b1": [0]}, r"'b1' \(BatchNormalization\).*come from 'c1', 'c2'"),
        ({"c1": [8]}, r"index 8.*'c1' has 8 output channels.*\[0, 7\]"),
        ({"c1": [-1]}, r"index -1"),
        ({"c1": list(range(8))}, r"all 8 output channels of 'c1' \(coupled with 'c2'"),
        ({"logits": [0]}, r"'logits' cannot be removed: it is an output"),
        ({"c1": [0.5]}, r"integer channel indices"),
        ([("c1", [0])], r"must be a dict"),
    ],
)
def test_bad_cuts_name_the_problem_and_leave_the_model_alone(channels, match):
    model = residual_concat_model()
    snapshot = _snapshot(model)
    with pytest.raises((ValueError, TypeError), match=match):
        surgery.remove_channels(model, channels)
    _assert_untouched(model, snapshot)


def test_unsupported_layer_in_the_cut_is_named():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="conv")(inp)
    x = L.LayerNormalization(name="ln")(x)
    y = L.Conv2D(4, 3, name="other")(inp)
    out = L.Dense(2, name="out")(L.Flatten()(L.Concatenate()([x, y])))
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match=r"'conv' cannot be removed: it flows into 'ln' \(LayerNormalization\).*Layers a cut can pass through"):
        surgery.remove_channels(model, {"conv": [0]})
    smaller = surgery.remove_channels(model, {"other": [0]})  # the rest of the graph is still cut
    assert smaller.get_layer("other").filters == 3 and smaller.get_layer("ln").count_params() == 8


def test_nested_model_is_copied_but_not_cut_through():
    inner = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(3, 3, name="inner_conv")], name="inner")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="outer_conv")(inp)
    model = keras.Model(inp, L.Flatten()(inner(x)))
    with pytest.raises(ValueError, match=r"'outer_conv' cannot be removed: it flows into 'inner' \(Sequential\): a nested model"):
        surgery.remove_channels(model, {"outer_conv": [0]})


def test_models_without_a_graph_are_rejected_clearly():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        surgery.remove_channels(Sub(), {"x": [0]})
    with pytest.raises(ValueError, match="not built"):
        surgery.remove_channels(keras.Sequential([L.Dense(3)]), {"dense": [0]})


# keras.applications with weights=None, small inputs -----------------------------------------

def _app_exactness(model, picks, atol=1e-3):
    x = np.random.default_rng(5).random((1,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    return _assert_exact(model, picks, x, atol=atol)


def test_resnet50_residual_stages():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    groups = [g.layers for g in surgery.coupled_groups(model) if len(g.layers) > 1]
    assert len(groups) == 4 and "conv2_block1_0_conv" in groups[0] and "conv2_block3_3_conv" in groups[0]
    _app_exactness(model, {"conv2_block1_0_conv": [0, 7], "conv3_block2_1_conv": [3], "conv4_block1_2_conv": [1, 2]})


def test_mobilenetv2_depthwise_and_residuals():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    _randomize(model)
    _app_exactness(model, {"block_1_expand": [0, 5], "block_3_project": [2], "Conv1": [1]})


@pytest.mark.slow
def test_densenet121_concatenations():
    model = keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    _randomize(model)
    _app_exactness(model, {"conv2_block1_2_conv": [0, 9], "conv3_block4_1_conv": [3], "pool2_conv": [5]})


@pytest.mark.slow
def test_efficientnetb0_squeeze_excite():
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    _randomize(model)
    groups = {g.layers: g for g in surgery.coupled_groups(model)}
    assert any("block2a_expand_conv" in layers and "block2a_se_expand" in layers for layers in groups)
    _app_exactness(model, {"block2a_expand_conv": [0, 3], "block3b_se_reduce": [1], "stem_conv": [2]})
