"""PruneForLatencyOnXNNPack: the models it accepts, why it refuses the others, and what it prunes."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune._common.layers import walk_layers
from tfprune._pruning.xnnpack_policy import PruneForLatencyOnXNNPack

L = keras.layers


def _stem(x, filters=8):
    x = L.ZeroPadding2D(1, name="stem_pad")(x)
    x = L.Conv2D(filters, 3, strides=2, padding="valid", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    return L.ReLU(6.0, name="stem_relu")(x)


def _inverted_residual(x, expand, out, stride, name):
    y = L.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
    y = L.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = L.ReLU(6.0, name=f"{name}_expand_relu")(y)
    if stride == 2:
        y = L.ZeroPadding2D(1, name=f"{name}_pad")(y)
        y = L.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, name=f"{name}_dw")(y)
    else:
        y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = L.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = L.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = L.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(y)
    y = L.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and x.shape[-1] == out:
        y = L.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_style(shape=(16, 16, 3), classes=5):
    inputs = keras.Input(shape, name="image")
    x = _stem(inputs)
    x = _inverted_residual(x, 16, 8, 1, "b1")
    x = _inverted_residual(x, 24, 12, 2, "b2")
    x = _inverted_residual(x, 24, 12, 1, "b3")
    x = L.Conv2D(32, 1, use_bias=False, name="head")(x)
    x = L.ReLU(6.0, name="head_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(classes, name="classifier")(x), name="mnv2_style")


POINTWISE = {"b1_expand", "b1_project", "b2_expand", "b2_project", "b3_expand", "b3_project", "head"}


def _wrapped(model):
    return {layer.layer.name for layer in walk_layers(model) if isinstance(layer, tfprune.PruneLowMagnitude)}


def _refuse(model, *fragments):
    with pytest.raises(ValueError) as err:
        tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    message = str(err.value)
    assert message.startswith("PruneForLatencyOnXNNPack: model ")
    for fragment in fragments:
        assert fragment in message, message
    return message


def _chain(*layers, shape=(16, 16, 3), head=None):
    """A Functional model: input -> layers -> (head or GlobalAveragePooling2D -> Dense)."""
    inputs = keras.Input(shape, name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    for layer in head if head is not None else [L.GlobalAveragePooling2D(name="pool"), L.Dense(3, name="fc")]:
        x = layer(x)
    return keras.Model(inputs, x, name="chain")


def _good_stem():
    return [L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2, padding="valid", name="stem")]


# -- accepted models -------------------------------------------------------------------


def test_mobilenet_v2_style_model_is_accepted_and_only_its_pointwise_convs_are_wrapped():
    model = mobilenet_v2_style()
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    assert _wrapped(pruned) == POINTWISE
    assert not _wrapped(model)  # the user's model is left alone


def test_allow_pruning_is_true_for_1x1_conv2d_only():
    policy = PruneForLatencyOnXNNPack()
    assert policy.allow_pruning(L.Conv2D(4, 1))
    assert policy.allow_pruning(L.Conv2D(4, (1, 1), use_bias=False))
    assert not policy.allow_pruning(L.Conv2D(4, 3))
    assert not policy.allow_pruning(L.Conv2D(4, (1, 3)))
    assert not policy.allow_pruning(L.DepthwiseConv2D(1))
    assert not policy.allow_pruning(L.SeparableConv2D(4, 1))
    assert not policy.allow_pruning(L.Dense(4))
    assert isinstance(policy, tfprune.PruningPolicy)


def test_two_inputs_squeeze_excitation_upsampling_and_1x1_classifiers_are_accepted():
    # tfmot's own multi-branch case: every 1x1 Conv2D is pruned, the two classifiers after the pooling too.
    i1 = keras.Input((16, 16, 3))
    x1 = L.Conv2D(16, 3, strides=2, padding="valid")(L.ZeroPadding2D(1)(i1))
    x1 = L.Add()([L.DepthwiseConv2D(3, padding="same")(x1), L.Conv2D(16, 1, name="p1")(x1)])
    i2 = keras.Input((16, 16, 3))
    x2 = L.Conv2D(8, 3, strides=2, padding="valid")(L.ZeroPadding2D(1)(i2))
    x2 = L.DepthwiseConv2D(3, strides=2, padding="valid")(L.ZeroPadding2D(1)(x2))
    squeeze = L.Activation("sigmoid")(L.Conv2D(32, 1, name="p2")(L.GlobalAveragePooling2D(keepdims=True)(x2)))
    wide = L.UpSampling2D(interpolation="bilinear")(L.Conv2D(32, 1, name="p3")(x2))
    x2 = L.Conv2D(16, 1, name="p4")(L.Multiply()([squeeze, wide]))
    x = L.GlobalAveragePooling2D(keepdims=True)(L.Add()([x1, x2]))
    model = keras.Model([i1, i2], [L.Conv2D(7, 1, name="o1")(x), L.Conv2D(3, 1, name="o2")(x)])
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    assert _wrapped(pruned) == {"p1", "p2", "p3", "p4", "o1", "o2"}


def test_keras_ops_and_a_shared_conv_are_accepted_and_the_shared_conv_is_wrapped_once():
    inputs = keras.Input((8, 8, 3))
    x = _stem(inputs, 16)
    shared = L.Conv2D(16, 1, name="shared")
    residual = shared(shared(x))
    x = (x + residual - residual) * residual
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    assert _wrapped(pruned) == {"shared"}


def test_nested_sequential_is_read_through():
    inner = keras.Sequential([L.Conv2D(8, 1, name="in1"), L.Conv2D(16, 1, name="in2")], name="inner")
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), L.ZeroPadding2D(1), L.Conv2D(4, 3, strides=2, padding="valid"), inner,
         L.GlobalAveragePooling2D()],
    )
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    assert _wrapped(pruned) == {"in1", "in2"}


def test_a_nested_model_with_an_unsupported_layer_is_refused_by_its_inner_layer_name():
    inner = keras.Sequential([L.Conv2D(8, 1), L.MaxPooling2D(name="inner_pool")], name="inner")
    model = _chain(*_good_stem(), inner)
    _refuse(model, "'inner_pool' (MaxPooling2D)", "has no MaxPooling2D")


# -- refusals: the stem --------------------------------------------------------------


def test_refuses_a_model_that_starts_with_a_depthwise_convolution():
    model = _chain(L.ZeroPadding2D(1), L.DepthwiseConv2D(3, strides=2, padding="valid", name="dw_first"),
                   L.Conv2D(8, 1))
    _refuse(model, "from input 'image'", "'dw_first' (DepthwiseConv2D) is depthwise",
            "ZeroPadding2D(padding=1) followed by keras.layers.Conv2D(filters, 3, strides=2, padding='valid')")


def test_refuses_a_one_channel_input():
    model = _chain(*_good_stem(), L.Conv2D(8, 1), shape=(16, 16, 1))
    _refuse(model, "'stem' (Conv2D) reads 1 input channel(s); the stem reads 3")


def test_refuses_a_stem_with_same_padding_as_keras_applications_mobilenet_v2_has():
    model = _chain(L.Conv2D(8, 3, strides=2, padding="same", name="stem"), L.Conv2D(8, 1))
    _refuse(model, "'stem' (Conv2D) has padding 'same'")


def test_refuses_a_stem_without_zero_padding_in_front():
    model = _chain(L.Rescaling(1 / 255), L.Conv2D(8, 3, strides=2, padding="valid", name="stem"), L.Conv2D(8, 1))
    _refuse(model, "'stem' (Conv2D) is not fed directly by ZeroPadding2D(padding=1) (found nothing)")


def test_refuses_a_stem_with_stride_1_or_a_5x5_kernel():
    _refuse(_chain(L.ZeroPadding2D(1), L.Conv2D(8, 3, padding="valid", name="stem")),
            "'stem' (Conv2D) has strides (1, 1)")
    _refuse(_chain(L.ZeroPadding2D(2), L.Conv2D(8, 5, strides=2, padding="valid", name="stem")),
            "'stem' (Conv2D) has a (5, 5) kernel")


def test_keras_applications_mobilenet_v2_is_refused_at_its_stem():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=4)
    _refuse(model, "'Conv1' (Conv2D) has padding 'same'")


# -- refusals: the end -----------------------------------------------------------------


def test_refuses_a_model_without_global_average_pooling():
    model = _chain(*_good_stem(), L.Conv2D(8, 1), head=[L.Flatten(name="flat"), L.Dense(3, name="fc")])
    message = _refuse(model, "its output 'fc' is computed without a GlobalAveragePooling2D",
                      "end the convolutions with keras.layers.GlobalAveragePooling2D()")
    assert "'fc' <- 'flat' <- " in message  # the path it followed back from the output


def test_refuses_when_one_output_skips_the_global_pooling():
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 1)(_stem(inputs))
    model = keras.Model(inputs, [L.Dense(2, name="ok")(L.GlobalAveragePooling2D()(x)),
                                 L.Dense(2, name="bad")(L.GlobalMaxPooling2D()(x))])
    _refuse(model, "its output 'bad' is computed without a GlobalAveragePooling2D")


# -- refusals: between the stem and the pooling ---------------------------------------


def test_refuses_an_unsupported_layer_in_the_middle_and_names_it():
    model = _chain(*_good_stem(), L.Conv2D(8, 1), L.MaxPooling2D(name="maxpool"))
    _refuse(model, "layer 'maxpool' (MaxPooling2D), between the stem convolution 'stem' and the global pooling "
                   "'pool', is not supported", "has no MaxPooling2D", "Supported there: 1x1 Conv2D")


def test_refuses_a_full_3x3_convolution_and_a_strided_1x1_one_in_the_middle():
    _refuse(_chain(*_good_stem(), L.Conv2D(8, 3, padding="same", name="full")),
            "'full' (Conv2D)", "only 1x1 full convolutions run sparse")
    _refuse(_chain(*_good_stem(), L.Conv2D(8, 1, strides=2, name="strided")),
            "'strided' (Conv2D)", "a 1x1 convolution must have strides 1")


def test_refuses_a_strided_depthwise_conv_padded_unevenly_as_keras_applications_pads_it():
    model = _chain(*_good_stem(), L.ZeroPadding2D(((0, 1), (0, 1))),
                   L.DepthwiseConv2D(3, strides=2, padding="valid", name="dw"))
    _refuse(model, "'dw' (DepthwiseConv2D)", "needs ZeroPadding2D(padding=1) directly before it",
            "found ZeroPadding2D(padding=((0, 1), (0, 1)))")


def test_refuses_depthwise_same_padding_with_stride_2_and_a_depth_multiplier():
    _refuse(_chain(*_good_stem(), L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")),
            "'dw' (DepthwiseConv2D)", "strides (2, 2) with padding 'same'")
    _refuse(_chain(*_good_stem(), L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")),
            "depth_multiplier=2")


def test_refuses_a_flattening_pool_inside_and_an_activation_xnnpack_does_not_run_sparse():
    inputs = keras.Input((16, 16, 3))
    x = _stem(inputs)
    x = x * L.Dense(8, activation="sigmoid")(L.GlobalAveragePooling2D(name="se_pool")(x))  # squeeze-excitation
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D(name="pool")(x)))
    _refuse(model, "'se_pool' (GlobalAveragePooling2D)", "keepdims=False",
            "GlobalAveragePooling2D(keepdims=True)")
    _refuse(_chain(*_good_stem(), L.Activation("swish", name="act")), "'act' (Activation)", "activation 'silu'")
    _refuse(_chain(*_good_stem(), L.Conv2D(8, 1, activation="tanh", name="pw")), "'pw' (Conv2D)",
            "its activation 'tanh'")


# -- refusals: what the model is ------------------------------------------------------


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.pad, self.conv = L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2)
        self.pool, self.fc = L.GlobalAveragePooling2D(), L.Dense(2)

    def call(self, x):
        return self.fc(self.pool(self.conv(self.pad(x))))


def test_refuses_a_subclassed_model():
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 3), "float32"))
    _refuse(model, "is a subclassed keras.Model (_Subclassed)", "Functional API")


def test_refuses_an_unbuilt_sequential_model():
    model = keras.Sequential([L.ZeroPadding2D(1), L.Conv2D(4, 3, strides=2), L.GlobalAveragePooling2D()],
                             name="unbuilt")
    with pytest.raises(ValueError, match=r"model 'unbuilt' is a Sequential model that is not built.*keras.Input"):
        PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
    with pytest.raises(ValueError, match="not built"):
        tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())


def test_an_already_wrapped_model_is_judged_by_the_layers_inside_the_wrappers():
    pruned = tfprune.prune_low_magnitude(mobilenet_v2_style(), pruning_policy=PruneForLatencyOnXNNPack())
    PruneForLatencyOnXNNPack().ensure_model_supports_pruning(pruned)  # no error


# -- training ----------------------------------------------------------------------------


def test_pruned_with_the_policy_trains_and_strips_with_only_pointwise_kernels_sparse():
    model = mobilenet_v2_style()
    pruned = tfprune.prune_low_magnitude(
        model, pruning_schedule=tfprune.ConstantSparsity(0.75, 0, frequency=1),
        pruning_policy=PruneForLatencyOnXNNPack(),
    )
    pruned.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 16, 16, 3), dtype=np.float32), rng.integers(0, 5, 32)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(pruned)
    assert not _wrapped(stripped)
    for layer in stripped.layers:
        if not hasattr(layer, "kernel"):
            continue
        zeros = float(np.mean(keras.ops.convert_to_numpy(layer.kernel) == 0))
        if layer.name in POINTWISE:
            assert zeros == pytest.approx(0.75, abs=0.02), layer.name
        else:
            assert zeros == 0.0, layer.name  # the stem, depthwise convs and the classifier stay dense
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
