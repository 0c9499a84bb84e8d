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
