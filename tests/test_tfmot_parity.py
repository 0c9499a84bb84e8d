"""Code written for tfmot runs on tfprune unchanged: batch-by-batch sparsity in fit and in custom loops."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._pruning import pruning_wrappers

# (schedule, batches): each fit runs one batch per epoch, and sparsity is read after every batch.
CASES = [
    ({"class": "PolynomialDecay", "args": [0.2, 0.6], "kwargs": {"begin_step": 1, "end_step": 4, "power": 3,
                                                                  "frequency": 1}}, 5),
    ({"class": "ConstantSparsity", "args": [0.5, 0], "kwargs": {}}, 3),
    ({"class": "ConstantSparsity", "args": [0.5, 2], "kwargs": {"frequency": 2}}, 6),
    ({"class": "PolynomialDecay", "args": [0.0, 0.8], "kwargs": {"begin_step": 0, "end_step": 6,
                                                                  "frequency": 3}}, 8),
]

_TFMOT_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    sparsity = tfmot.sparsity.keras
    out = []
    for schedule, batches in json.loads(sys.stdin.read()):
        tf.random.set_seed(0)
        model = keras.Sequential([keras.layers.Dense(20, input_shape=(10,))])
        pruned = sparsity.prune_low_magnitude(
            model, pruning_schedule=getattr(sparsity, schedule["class"])(*schedule["args"], **schedule["kwargs"]))
        pruned.compile("sgd", "mse")
        seen = []
        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                mask = pruned.layers[0].pruning_vars[0][1].numpy()
                seen.append(float(1.0 - mask.mean()))
        x, y = np.ones((4, 10), "float32"), np.zeros((4, 20), "float32")
        pruned.fit(x, y, batch_size=4, epochs=batches, verbose=0,
                   callbacks=[sparsity.UpdatePruningStep(), Record()])
        out.append(seen)
    print(json.dumps(out))
""")


def _schedule(spec):
    return getattr(tfprune, spec["class"])(*spec["args"], **spec["kwargs"])


def _model():
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(20)])


def _mask_sparsity(model):
    (wrapper,) = pruning_wrappers(model)
    return float(1.0 - keras.ops.convert_to_numpy(wrapper.masks[0]).mean())


def _tfprune_fit(schedule, batches):
    pruned = tfprune.prune_low_magnitude(_model(), pruning_schedule=_schedule(schedule))
    pruned.compile("sgd", "mse")
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(_mask_sparsity(pruned)))
    x, y = np.ones((4, 10), "float32"), np.zeros((4, 20), "float32")
    pruned.fit(x, y, batch_size=4, epochs=batches, verbose=0, callbacks=[tfprune.UpdatePruningStep(), record])
    return seen


@pytest.fixture(scope="module")
def tfmot_sparsities():
    # tfmot switches TF to Keras 2 at import time, so it runs in its own process.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _TFMOT_SCRIPT], input=json.dumps(CASES), capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fit_prunes_on_the_same_batches_as_tfmot(case, tfmot_sparsities):
    schedule, batches = CASES[case]
    ours = _tfprune_fit(schedule, batches)
    # Both count zeros of a 10x20 mask: equal to the weight.
    np.testing.assert_allclose(ours, tfmot_sparsities[case], atol=1e-6)


def test_the_issue_figures_batch_by_batch():
    schedule, batches = CASES[0]
    np.testing.assert_allclose(_tfprune_fit(schedule, batches), [0.2, 0.488, 0.588, 0.6, 0.6], atol=0.01)


def _custom_loop(model, callback, steps, tfmot_style):
    optimizer = keras.optimizers.SGD(0.01)
    x, y = np.random.default_rng(0).normal(size=(8, 10)).astype("float32"), np.zeros((8, 20), "float32")
    callback.set_model(model)
    callback.on_train_begin()
    for step in range(steps):
        if tfmot_style:
            callback.on_train_batch_begin(batch=-1)
        else:
            callback.on_train_batch_begin(step)
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        if tfmot_style:
            callback.on_epoch_end(batch=-1)
        else:
            callback.on_train_batch_end(step)
    callback.on_train_end()


@pytest.mark.parametrize("tfmot_style", [True, False], ids=["tfmot-recipe", "tfprune-recipe"])
def test_custom_training_loops_reach_the_target(tfmot_style):
    pruned = tfprune.prune_low_magnitude(_model(), tfprune.PolynomialDecay(0.0, 0.75, 0, 6, frequency=2))
    _custom_loop(pruned, tfprune.UpdatePruningStep(), steps=8, tfmot_style=tfmot_style)
    assert _mask_sparsity(pruned) == pytest.approx(0.75)
    (wrapper,) = pruning_wrappers(pruned)
    assert np.count_nonzero(keras.ops.convert_to_numpy(wrapper.layer.kernel)) == 50


def test_a_custom_loop_without_the_callback_gets_the_fit_error():
    pruned = tfprune.prune_low_magnitude(_model())
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        pruned(np.ones((2, 10), "float32"), training=True)


def test_pruning_summaries_in_a_custom_loop(tmp_path):
    pruned = tfprune.prune_low_magnitude(_model(), tfprune.ConstantSparsity(0.5, 0, frequency=1))
    step_cb, summaries = tfprune.UpdatePruningStep(), tfprune.PruningSummaries(log_dir=str(tmp_path), update_freq=1)

    class Both(keras.callbacks.Callback):
        def set_model(self, model):
            step_cb.set_model(model)
            summaries.set_model(model)

        def on_train_begin(self, logs=None):
            step_cb.on_train_begin()
            summaries.on_train_begin()

        def on_train_batch_begin(self, batch, logs=None):
            step_cb.on_train_batch_begin(batch)

        def on_train_batch_end(self, batch, logs=None):
            step_cb.on_train_batch_end(batch)
            summaries.on_train_batch_end(batch)

        def on_train_end(self, logs=None):
            summaries.on_train_end()

    _custom_loop(pruned, Both(), steps=3, tfmot_style=False)
    assert list(tmp_path.rglob("events.out.tfevents.*")), "no TensorBoard event file written"


@pytest.mark.parametrize("log_dir", ["", None])
def test_pruning_summaries_refuses_an_empty_log_dir(log_dir):
    with pytest.raises(ValueError, match="log_dir"):
        tfprune.PruningSummaries(log_dir=log_dir)


def test_a_fit_in_which_no_update_was_due_says_so():
    pruned = tfprune.prune_low_magnitude(_model())  # ConstantSparsity(0.5, 0): frequency 100, as in tfmot
    pruned.compile("sgd", "mse")
    with pytest.warns(UserWarning, match="no pruning mask was updated in this fit .steps 1 to 3.; the schedule's next "
                                         "update is at step 100"):
        pruned.fit(np.ones((12, 10), "float32"), np.zeros((12, 20), "float32"), batch_size=4, verbose=0,
                   callbacks=[tfprune.UpdatePruningStep()])
    assert _mask_sparsity(pruned) == 0.0


L = keras.layers


def test_an_rnn_of_stacked_cells_is_pruned_in_a_model_and_alone():
    model = keras.Sequential([keras.Input((5, 4)), L.RNN([L.LSTMCell(4), L.GRUCell(4), L.SimpleRNNCell(4)]), L.Dense(2)])
    pruned = tfprune.prune_low_magnitude(model)
    # tfmot wraps it with 6 prunable weights: each cell's kernel and recurrent kernel.
    assert [len(w.pruned_weights) for w in pruning_wrappers(pruned)] == [6, 1]
    alone = tfprune.prune_low_magnitude(L.RNN([L.LSTMCell(4), L.GRUCell(4)]))
    assert isinstance(alone, tfprune.PruneLowMagnitude)


@keras.saving.register_keras_serializable("tfprune_tests")
class DuckCell(L.Layer):
    """A custom cell that names its prunable weights without inheriting PrunableLayer (tfmot accepts it)."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units, self.state_size = units, units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.recurrent = self.add_weight(shape=(self.units, self.units), name="recurrent")

    def call(self, x, states):
        h = keras.ops.tanh(x @ self.kernel + states[0] @ self.recurrent)
        return h, [h]

    def get_prunable_weights(self):
        return [self.kernel, self.recurrent]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_custom_cell_with_get_prunable_weights_is_pruned_like_tfmot():
    model = keras.Sequential([keras.Input((5, 4)), L.RNN(DuckCell(3)), L.Dense(2)])
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, 0, frequency=1))
    (rnn, _) = pruning_wrappers(pruned)
    assert [w.name for w in rnn.pruned_weights] == ["kernel", "recurrent"]
    pruned.compile("sgd", "mse")
    pruned.fit(np.ones((4, 5, 4), "float32"), np.zeros((4, 2), "float32"), verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    masks = [keras.ops.convert_to_numpy(m) for m in rnn.masks]
    assert all(abs((1 - m.mean()) - 0.5) <= 1 / m.size for m in masks)


def test_keyword_arguments_reach_the_wrapper_as_in_tfmot():
    layer = tfprune.prune_low_magnitude(L.Dense(4), name="pruned_dense", input_shape=(6,))
    assert layer.name == "pruned_dense"
    model = keras.Sequential([layer, L.Dense(2)])
    assert model.built and model.output_shape == (None, 2)
    with pytest.raises(ValueError, match="single layer"):
        tfprune.prune_low_magnitude(_model(), name="x")


def test_layers_with_nothing_to_prune_pass_through_alone_and_in_lists():
    dropout = tfprune.prune_low_magnitude(L.Dropout(0.5))
    assert isinstance(dropout, L.Dropout) and dropout.rate == 0.5
    layers = tfprune.prune_low_magnitude([L.Dense(3), L.BatchNormalization(), L.Flatten()])
    assert [type(layer).__name__ for layer in layers] == ["PruneLowMagnitude", "BatchNormalization", "Flatten"]


def test_an_unbuilt_sequential_is_pruned_once_it_builds():
    model = keras.Sequential([L.Dense(8), L.Dense(2)])
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, 0, frequency=1))
    assert not pruned.built
    pruned.compile("sgd", "mse")
    # Built in its first train step, it is pruned from the second (tfmot prunes inside the first).
    pruned.fit(np.ones((8, 6), "float32"), np.zeros((8, 2), "float32"), batch_size=4, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    assert [keras.ops.convert_to_numpy(w.masks[0]).mean() for w in pruning_wrappers(pruned)] == [0.5, 0.5]
    assert [int(w.pruning_step.numpy()) for w in pruning_wrappers(pruned)] == [2, 2]


def test_a_model_with_some_wrapped_layers_keeps_them_and_wraps_the_rest():
    inner = tfprune.prune_low_magnitude(L.Dense(8, name="first"), tfprune.ConstantSparsity(0.25, 0, frequency=1))
    model = keras.Sequential([keras.Input((6,)), inner, L.Dense(2, name="second")])
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, 0, frequency=1))
    wrappers = pruning_wrappers(pruned)
    assert [w.layer.name for w in wrappers] == ["first", "second"]
    assert [w.pruning_schedule.target_sparsity for w in wrappers] == [0.25, 0.5]
    assert wrappers[0] is not inner, "copied, not shared"


def test_prune_scope_loads_a_pruned_model(tmp_path):
    pruned = tfprune.prune_low_magnitude(_model())
    pruned.save(tmp_path / "p.keras")
    with tfprune.prune_scope():
        reloaded = keras.saving.load_model(tmp_path / "p.keras")
    assert isinstance(reloaded.layers[0], tfprune.PruneLowMagnitude)


def test_a_custom_layer_without_get_config_gets_a_value_error_naming_it():
    class NoConfig(L.Layer):
        def __init__(self, units, activation_fn):  # a function: Keras cannot write it in a config
            super().__init__()
            self.dense = L.Dense(units, activation=activation_fn)

        def call(self, x):
            return self.dense(x)

    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(NoConfig(3, lambda t: t * 2.0)(inp)))
    with pytest.raises(ValueError, match=r"'no_config' \(NoConfig\) cannot be copied.*get_config"):
        tfprune.prune_low_magnitude(model)


@pytest.mark.parametrize("bad", [1.5, float("nan"), -0.1])
def test_a_schedule_value_out_of_range_is_refused_naming_schedule_and_step(bad):
    class Wild(tfprune.PruningSchedule):
        def __call__(self, step):
            return True, bad

        def get_config(self):
            return {}

    pruned = tfprune.prune_low_magnitude(_model(), Wild())
    pruned.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"schedule Wild of layer 'dense.*' returned sparsity .* at step 1"):
        pruned.fit(np.ones((4, 10), "float32"), np.zeros((4, 20), "float32"), verbose=0,
                   callbacks=[tfprune.UpdatePruningStep()])
    (wrapper,) = pruning_wrappers(pruned)
    assert keras.ops.convert_to_numpy(wrapper.masks[0]).all(), "nothing was pruned"


def test_a_second_fit_without_the_callback_is_refused():
    pruned = tfprune.prune_low_magnitude(_model(), tfprune.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("sgd", "mse")
    x, y = np.ones((4, 10), "float32"), np.zeros((4, 20), "float32")
    pruned.fit(x, y, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        pruned.fit(x, y, verbose=0)
    pruned.fit(x, y, verbose=0, callbacks=[tfprune.UpdatePruningStep()])  # and with it, training goes on
    (wrapper,) = pruning_wrappers(pruned)
    assert int(wrapper.pruning_step.numpy()) == 2


def test_prune_scope_resolves_every_saved_tfprune_class_by_its_plain_name(tmp_path):
    # tfmot-era configs name classes without a package; in the scope each must resolve
    # (KeepMasks, the allocations and the wrappers included), and a model pruned with
    # fixed masks must round-trip.
    plain = {"class_name": "KeepMasks", "config": {"sparsity": 0.5}}
    with pytest.raises(TypeError):
        keras.saving.deserialize_keras_object(plain)
    with tfprune.prune_scope():
        schedule = keras.saving.deserialize_keras_object(plain)
        for name in ("PruneLowMagnitude", "DynamicSurgery", "KeepMasks", "LAMP", "ERK", "PolynomialDecay"):
            assert keras.saving.get_registered_object(name) is not None, name
    assert isinstance(schedule, tfprune.KeepMasks) and schedule.sparsity == 0.5

    model = _model()
    masks = {label: np.arange(np.prod(w.shape)).reshape(w.shape) % 2 for label, w in tfprune.prunable_weights(model).items()}
    fixed = tfprune.prune_with_masks(model, masks)
    fixed.save(tmp_path / "fixed.keras")
    with tfprune.prune_scope():
        reloaded = keras.saving.load_model(tmp_path / "fixed.keras")
    (wrapper,) = pruning_wrappers(reloaded)
    assert isinstance(wrapper.pruning_schedule, tfprune.KeepMasks)
