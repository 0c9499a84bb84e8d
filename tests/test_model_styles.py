"""Unstructured pruning on the ways Keras 3 models are written: op nodes, layers that own layers, subclassed models."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import tfprune
from tfprune._pruning import pruning_wrappers

SCHEDULE = tfprune.ConstantSparsity(0.75, 0, frequency=1)
RNG = np.random.default_rng(0)


def _fit(model, x, y, loss="mse", epochs=1):
    model.compile("adam", loss)
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return model


def _kernel_sparsity(report):
    params = sum(r["params"] for r in report.rows)
    return 1.0 - sum(r["nonzero"] for r in report.rows) / params


def _same_outputs(a, b, x):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a(x)), keras.ops.convert_to_numpy(b(x)), atol=1e-5)


@keras.saving.register_keras_serializable("tfprune_tests")
class Block(layers.Layer):
    """The keras.io TransformerBlock pattern: sublayers made in __init__; built by build() or on first call."""

    def __init__(self, dim=8, eager_build=False, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.eager_build = dim, eager_build
        self.att = layers.MultiHeadAttention(num_heads=2, key_dim=4)
        self.ffn = keras.Sequential([layers.Dense(16, activation="relu"), layers.Dense(dim)])
        self.norm = layers.LayerNormalization()
        self.drop = layers.Dropout(0.1)

    def build(self, input_shape):
        if self.eager_build:
            self.att.build(input_shape, input_shape)
            self.ffn.build(input_shape)
            self.norm.build(input_shape)
        super().build(input_shape)

    def call(self, x, training=None):
        x = self.norm(x + self.drop(self.att(x, x), training=training))
        return x + self.ffn(x)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "eager_build": self.eager_build}


def _block_model(eager_build):
    inp = keras.Input((5, 8))
    h = Block(eager_build=eager_build, name="block")(inp)
    return keras.Model(inp, layers.Dense(2, name="head")(ops.mean(h, axis=1)))


def test_functional_model_with_op_nodes_prunes_strips_reloads_and_exports(tmp_path):
    inp = keras.Input((8,))
    h = layers.Dense(16, name="d1")(inp) + 1.0
    h = ops.relu(h) * 2.0
    model = keras.Model(inp, layers.Dense(2, name="d2")(h))
    x, y = RNG.normal(size=(16, 8)).astype("float32"), RNG.normal(size=(16, 2)).astype("float32")
    pruned = _fit(tfprune.prune_low_magnitude(model, SCHEDULE), x, y)
    assert [w.layer.name for w in pruning_wrappers(pruned)] == ["d1", "d2"]
    assert _kernel_sparsity(tfprune.sparsity_report(pruned)) == pytest.approx(0.75, abs=0.01)
    stripped = tfprune.strip_pruning(pruned)
    _same_outputs(stripped, pruned, x)
    stripped.save(tmp_path / "m.keras")
    _same_outputs(keras.saving.load_model(tmp_path / "m.keras"), pruned, x)
    report = tfprune.export.to_tflite(pruned, tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").stat().st_size == report.size_bytes


def test_keyword_called_attention_is_pruned():
    inp = keras.Input((5, 8))
    att = layers.MultiHeadAttention(num_heads=2, key_dim=4, name="att")(query=inp, value=inp, key=inp)
    model = keras.Model(inp, layers.Dense(2)(ops.mean(inp + att, axis=1)))
    x = RNG.normal(size=(16, 5, 8)).astype("float32")
    pruned = _fit(tfprune.prune_low_magnitude(model, SCHEDULE), x, np.zeros((16, 2), "float32"))
    rows = [r for r in tfprune.sparsity_report(pruned).rows if r["layer"] == "att"]
    assert len(rows) == 4 and all(r["sparsity"] == pytest.approx(0.75, abs=0.02) for r in rows)


@pytest.mark.parametrize("eager_build", [True, False], ids=["built-in-build", "built-on-call"])
def test_layers_inside_a_custom_layer_are_pruned_reported_saved_and_stripped(eager_build, tmp_path):
    model = _block_model(eager_build)
    x = RNG.normal(size=(16, 5, 8)).astype("float32")
    pruned = _fit(tfprune.prune_low_magnitude(model, SCHEDULE), x, np.zeros((16, 2), "float32"))
    report = tfprune.sparsity_report(pruned)
    block_rows = [r for r in report.rows if r["layer"] == "block"]
    # 4 attention projections and the 2 Dense layers of the block's inner Sequential.
    assert len(block_rows) == 6
    assert all(r["sparsity"] == pytest.approx(0.75, abs=0.02) for r in block_rows)
    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras.saving.load_model(tmp_path / "pruned.keras")
    _same_outputs(reloaded, pruned, x)
    stripped = tfprune.strip_pruning(pruned)
    assert not pruning_wrappers(stripped)
    assert [r["nonzero"] for r in tfprune.sparsity_report(stripped).rows] == [r["nonzero"] for r in report.rows]
    _same_outputs(stripped, pruned, x)


def test_a_kernel_tfprune_cannot_reach_is_named_in_a_warning():
    @keras.saving.register_keras_serializable("tfprune_tests")
    class OwnKernel(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 4), name="w")

        def call(self, x):
            return x @ self.w

    inp = keras.Input((8,))
    model = keras.Model(inp, layers.Dense(2)(OwnKernel(name="own")(inp)))
    with pytest.warns(UserWarning, match=r"'own' \(OwnKernel\): w 8x4"):
        tfprune.prune_low_magnitude(model)


@keras.saving.register_keras_serializable("tfprune_tests")
class Net(keras.Model):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.stem = layers.Dense(units, activation="relu")
        self.blocks = [layers.Dense(units, activation="relu") for _ in range(2)]
        self.head = layers.Dense(3)

    def call(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_subclassed_model_prunes_strips_saves_and_exports(tmp_path):
    net = Net()
    x, y = RNG.normal(size=(16, 5)).astype("float32"), RNG.normal(size=(16, 3)).astype("float32")
    net(x[:1])
    pruned = _fit(tfprune.prune_low_magnitude(net, SCHEDULE), x, y)
    assert type(pruned) is Net and len(pruning_wrappers(pruned)) == 4
    assert not pruning_wrappers(net), "the user's model is never modified"
    report = tfprune.sparsity_report(pruned)
    assert len(report.rows) == 4 and _kernel_sparsity(report) == pytest.approx(0.75, abs=0.01)
    stripped = tfprune.strip_pruning(pruned)
    assert type(stripped) is Net and not pruning_wrappers(stripped)
    _same_outputs(stripped, pruned, x)
    stripped.save(tmp_path / "net.keras")
    _same_outputs(keras.saving.load_model(tmp_path / "net.keras"), pruned, x)
    # The pruned model saves its weights and a freshly pruned twin reads them back.
    pruned.save_weights(tmp_path / "pruned.weights.h5")
    twin = tfprune.prune_low_magnitude(net, SCHEDULE)
    twin.load_weights(tmp_path / "pruned.weights.h5")
    _same_outputs(twin, pruned, x)
    tfprune.export.to_tflite(pruned, tmp_path / "net.tflite")
    assert (tmp_path / "net.tflite").stat().st_size > 0


def test_subclassed_model_that_makes_its_layers_in_call_gets_a_clear_error():
    class Late(keras.Model):
        def call(self, x):
            return ops.relu(x)

    late = Late()
    late(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="tracks no layer tfprune can prune.*__init__"):
        tfprune.prune_low_magnitude(late)


def test_strip_pruning_compiles_with_a_fresh_optimizer(tmp_path):
    model = keras.Sequential([keras.Input((64,)), layers.Dense(256), layers.Dense(2)])
    x = RNG.normal(size=(16, 64)).astype("float32")
    pruned = _fit(tfprune.prune_low_magnitude(model, SCHEDULE), x, np.zeros((16, 2), "float32"))
    stripped = tfprune.strip_pruning(pruned)
    assert stripped.compiled and stripped.optimizer is not pruned.optimizer
    assert not stripped.optimizer.built and int(stripped.optimizer.iterations.numpy()) == 0
    assert stripped.get_compile_config()["loss"] == pruned.get_compile_config()["loss"]
    stripped.save(tmp_path / "stripped.keras")
    # Adam's two moments would triple the file: 17k float32 weights are about 68 kB.
    assert (tmp_path / "stripped.keras").stat().st_size < 120_000


def test_polynomial_decay_that_could_never_reach_its_target_warns():
    with pytest.warns(UserWarning, match="frequency=100 is larger than the 15 steps"):
        tfprune.PolynomialDecay(0.0, 0.8, 0, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tfprune.PolynomialDecay(0.0, 0.8, 0, 15, frequency=5)


def test_dynamic_surgery_reaches_layers_inside_a_block():
    model = _block_model(eager_build=False)
    x = RNG.normal(size=(16, 5, 8)).astype("float32")
    surgery = _fit(tfprune.dynamic_surgery(model, c=0.5, gamma=0.0, iter_stop=100), x, np.zeros((16, 2), "float32"))
    (block,) = [w for w in pruning_wrappers(surgery) if w.layer.name == "block"]
    assert len(block.pruned_weights) == 6
    assert all(keras.ops.convert_to_numpy(m).mean() < 1.0 for m in block.masks)
    stripped = tfprune.strip_pruning(surgery)
    _same_outputs(stripped, surgery, x)
