"""Schedules: values, update steps, validation, serialization, and tfmot parity."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfprune

CASES = [
    ("PolynomialDecay", dict(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=1000)),
    ("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.8, begin_step=100, end_step=700, power=2, frequency=50)),
    ("PolynomialDecay", dict(initial_sparsity=0.5, final_sparsity=0.95, begin_step=7, end_step=300, power=1, frequency=13)),
    ("ConstantSparsity", dict(target_sparsity=0.6, begin_step=50, frequency=25)),
    ("ConstantSparsity", dict(target_sparsity=0.3, begin_step=0, end_step=200, frequency=40)),
]
STEPS = list(range(0, 1200, 7)) + [99, 100, 101, 700, 701, 1000, 1001]


def test_polynomial_decay_follows_zhu_gupta_formula():
    schedule = tfprune.PolynomialDecay(0.1, 0.9, begin_step=100, end_step=500, power=3, frequency=10)
    for step in (100, 200, 300, 450, 500, 800):
        t = min(max((step - 100) / 400, 0.0), 1.0)
        expected = 0.9 + (0.1 - 0.9) * (1 - t) ** 3
        should, value = schedule(step)
        assert value == pytest.approx(expected, abs=1e-6)
        assert should == (step <= 500 and (step - 100) % 10 == 0)
    assert schedule(50) == (False, pytest.approx(0.1))


def test_constant_sparsity_updates_forever_by_default():
    schedule = tfprune.ConstantSparsity(0.7, begin_step=10, frequency=5)
    assert [schedule(s)[0] for s in (5, 10, 12, 15, 10**6)] == [False, True, False, True, True]
    assert schedule(3)[1] == 0.7


@pytest.mark.parametrize("name,kwargs", CASES)
def test_schedules_round_trip_through_keras_serialization(name, kwargs):
    schedule = getattr(tfprune, name)(**kwargs)
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
    assert [restored(s) for s in STEPS] == [schedule(s) for s in STEPS]


@pytest.mark.parametrize(
    "factory,message",
    [
        (lambda: tfprune.ConstantSparsity(1.0, 0), "target_sparsity"),
        (lambda: tfprune.ConstantSparsity(-0.1, 0), "target_sparsity"),
        (lambda: tfprune.PolynomialDecay(0.0, 1.2, 0, 10), "final_sparsity"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 100, 10), "end_step"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, -1), "end_step"),
        (lambda: tfprune.ConstantSparsity(0.5, 0, frequency=0), "frequency"),
        (lambda: tfprune.ConstantSparsity(0.5, -3), "begin_step"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power"),
    ],
)
def test_bad_schedule_arguments_name_the_argument(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_custom_schedule_subclass_drives_pruning():
    class Steps(tfprune.PruningSchedule):
        """25% from step 1, 75% from step 5: a schedule tfprune has no class for."""

        def __call__(self, step):
            return step in (1, 5), (0.25 if step < 5 else 0.75)

        def get_config(self):
            return {}

    assert Steps()(5) == (True, 0.75) and Steps()(4) == (False, 0.25)
    assert "Steps" in repr(Steps())
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="fc"), keras.layers.Dense(1)])
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=Steps())
    pruned.compile("sgd", "mse")
    x, y = np.random.default_rng(0).normal(size=(32, 8)), np.zeros((32, 1))
    kernel = lambda: pruned.get_layer("prune_low_magnitude_fc").layer.kernel.numpy()  # noqa: E731
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])  # steps 1-4
    assert (kernel() == 0).mean() == 0.25
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])  # steps 5-8
    assert (kernel() == 0).mean() == 0.75


_TFMOT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow_model_optimization as tfmot
    cases, steps = json.loads(sys.stdin.read())
    out = []
    for name, kwargs in cases:
        schedule = getattr(tfmot.sparsity.keras, name)(**kwargs)
        rows = []
        for step in steps:
            should, value = schedule(step)
            rows.append([bool(should.numpy()), float(value.numpy() if hasattr(value, "numpy") else value)])
        out.append(rows)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None or importlib.util.find_spec("tf_keras") is None,
    reason="tensorflow-model-optimization and tf-keras are not installed (pip install -e '.[dev]' installs them)",
)
def test_values_and_update_steps_equal_tfmot():
    # tfmot switches TF to Keras 2 at import time, so it runs in its own process.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _TFMOT_SCRIPT], input=json.dumps([CASES, STEPS]),
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = json.loads(proc.stdout.split("RESULT", 1)[1])
    for (name, kwargs), expected in zip(CASES, reference):
        schedule = getattr(tfprune, name)(**kwargs)
        for step, (should, value) in zip(STEPS, expected):
            ours = schedule(step)
            assert ours[0] == should, (name, kwargs, step)
            assert ours[1] == pytest.approx(value, abs=1e-6), (name, kwargs, step)
