"""Pruning under real training: exact sparsity, no revival, resume, strategies, summaries."""

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
from tfprune._pruning.api import pruning_wrappers


def _data(n=256, features=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (x[:, :5].sum(axis=1) > 0).astype("int32")


def _mlp(name="mlp"):
    return keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(32, activation="relu", name="d1"),
         keras.layers.Dense(16, activation="relu", name="d2"), keras.layers.Dense(2, name="out")],
        name=name,
    )


def _compile(model, optimizer=None, **kwargs):
    model.compile(optimizer or keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)
    return model


def _masks(model):
    return [keras.ops.convert_to_numpy(m) for w in pruning_wrappers(model) for m in w.masks]


def _pruned_values(model):
    return [keras.ops.convert_to_numpy(v) for w in pruning_wrappers(model) for v in w.pruned_weights]


class _SparsityProbe(keras.callbacks.Callback):
    """Records, before each batch, each pruned weight's sparsity and the schedule's target."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_begin(self, batch, logs=None):
        for w in pruning_wrappers(self.model):
            step = int(w.pruning_step.numpy())
            should, target = w.pruning_schedule(step)
            for v, m in zip(w.pruned_weights, w.masks):
                value = keras.ops.convert_to_numpy(v)
                self.rows.append((step, should, target, value.size,
                                  float(np.mean(keras.ops.convert_to_numpy(m) == 0)), float(np.mean(value == 0))))


def test_sparsity_equals_the_target_after_every_update_and_momentum_cannot_revive():
    x, y = _data()
    schedule = tfprune.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=30, frequency=3)
    pruned = _compile(tfprune.prune_low_magnitude(_mlp(), pruning_schedule=schedule),
                      keras.optimizers.SGD(0.1, momentum=0.9))
    probe = _SparsityProbe()
    # UpdatePruningStep first: the probe sees the masks this batch trains with.
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep(), probe])
    checked = 0
    for step, should, target, size, mask_sparsity, zero_fraction in probe.rows:
        if should:
            assert abs(mask_sparsity - target) <= 1.0 / size + 1e-9, (step, target, mask_sparsity)
            checked += 1
        # Every pruned weight is exactly zero at rest, after heavy momentum.
        assert zero_fraction >= mask_sparsity - 1e-9
    assert checked >= 30
    for value, mask in zip(_pruned_values(pruned), _masks(pruned)):
        assert (value[mask == 0] == 0).all()
        assert abs(np.mean(mask == 0) - 0.9) <= 1 / mask.size


def test_predict_and_evaluate_use_the_masked_weights():
    x, y = _data()
    pruned = _compile(tfprune.prune_low_magnitude(_mlp(), tfprune.ConstantSparsity(0.8, 0, frequency=4)))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    dense = _mlp("dense")
    dense.set_weights(tfprune.strip_pruning(pruned).get_weights())
    np.testing.assert_allclose(pruned.predict(x, verbose=0), dense.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    _compile(dense)
    assert pruned.evaluate(x, y, verbose=0) == pytest.approx(dense.evaluate(x, y, verbose=0), rel=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_training_without_the_callback_fails_clearly(jit_compile, tmp_path):
    x, y = _data(64)
    pruned = _compile(tfprune.prune_low_magnitude(_mlp()), jit_compile=jit_compile)
    with pytest.raises(RuntimeError, match=r"callbacks=\[tfprune.UpdatePruningStep\(\)\]"):
        pruned.fit(x, y, verbose=0)
    # A reloaded model needs the callback as well.
    pruned.fit(x, y, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    pruned.save(tmp_path / "m.keras")
    reloaded = _compile(keras.saving.load_model(tmp_path / "m.keras"), jit_compile=jit_compile)
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        reloaded.fit(x, y, verbose=0)


@pytest.mark.parametrize("mode", ["jit_compile", "mixed_float16"])
def test_jit_compile_and_mixed_precision(mode):
    if mode == "mixed_float16":
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    x, y = _data()
    pruned = tfprune.prune_low_magnitude(_mlp(), tfprune.PolynomialDecay(0.0, 0.75, 0, 16, frequency=4))
    _compile(pruned, jit_compile=(mode == "jit_compile"))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    for value, mask in zip(_pruned_values(pruned), _masks(pruned)):
        assert abs(np.mean(mask == 0) - 0.75) <= 1 / mask.size
        assert (value[mask == 0] == 0).all()
    assert np.isfinite(pruned.evaluate(x, y, verbose=0))


_MIRRORED = textwrap.dedent(
    """
    import json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, tfprune
    from tfprune._pruning.api import pruning_wrappers
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 20)).astype("float32"); y = (x[:, :5].sum(1) > 0).astype("int32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])
        pruned = tfprune.prune_low_magnitude(model, tfprune.PolynomialDecay(0.0, 0.8, 0, 12, frequency=4))
        pruned.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    out = {"replicas": strategy.num_replicas_in_sync, "layers": []}
    for w in pruning_wrappers(pruned):
        mask = w.masks[0].numpy()
        per_replica = [v.numpy() for v in strategy.experimental_local_results(w.pruned_weights[0].value)]
        out["layers"].append({
            "sparsity": float(np.mean(mask == 0)), "size": int(mask.size),
            "zero_on_every_replica": all(bool((r[mask == 0] == 0).all()) for r in per_replica),
            "replicas_agree": all(bool(np.array_equal(r, per_replica[0])) for r in per_replica),
        })
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_strategy_on_two_logical_cpus():
    # Logical devices must be configured before TensorFlow starts: own process.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    for layer in result["layers"]:
        assert abs(layer["sparsity"] - 0.8) <= 1 / layer["size"]
        assert layer["zero_on_every_replica"] and layer["replicas_agree"]


def _resumable_model():
    keras.utils.set_random_seed(7)
    schedule = tfprune.PolynomialDecay(0.0, 0.85, begin_step=2, end_step=22, frequency=4)
    return _compile(tfprune.prune_low_magnitude(_mlp(), pruning_schedule=schedule))


def test_save_mid_schedule_then_resume_gives_the_same_masks(tmp_path):
    x, y = _data(192)
    kwargs = dict(batch_size=16, shuffle=False, verbose=0)  # 12 steps an epoch
    straight = _resumable_model()
    straight.fit(x, y, epochs=2, callbacks=[tfprune.UpdatePruningStep()], **kwargs)

    first = _resumable_model()
    first.fit(x, y, epochs=1, callbacks=[tfprune.UpdatePruningStep()], **kwargs)
    first.save(tmp_path / "half.keras")
    resumed = keras.saving.load_model(tmp_path / "half.keras")
    assert [int(w.pruning_step.numpy()) for w in pruning_wrappers(resumed)] == [12, 12, 12]
    resumed.fit(x, y, epochs=1, callbacks=[tfprune.UpdatePruningStep()], **kwargs)

    for a, b in zip(_masks(straight), _masks(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_model_checkpoint_and_backup_and_restore(tmp_path):
    x, y = _data(192)
    kwargs = dict(batch_size=16, shuffle=False, verbose=0)
    straight = _resumable_model()
    straight.fit(x, y, epochs=3, callbacks=[tfprune.UpdatePruningStep()], **kwargs)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("simulated crash")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras"))
    model = _resumable_model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(x, y, epochs=3, callbacks=[tfprune.UpdatePruningStep(), backup, checkpoint, Interrupt()], **kwargs)
    # A fresh process would rebuild the model and call fit again with the same callbacks.
    model = _resumable_model()
    model.fit(x, y, epochs=3, callbacks=[tfprune.UpdatePruningStep(), backup, checkpoint], **kwargs)
    assert [int(w.pruning_step.numpy()) for w in pruning_wrappers(model)] == [36] * 3
    for a, b in zip(_masks(straight), _masks(model)):
        np.testing.assert_array_equal(a, b)
    from_checkpoint = keras.saving.load_model(tmp_path / "ckpt.keras")
    for a, b in zip(_masks(straight), _masks(from_checkpoint)):
        np.testing.assert_array_equal(a, b)


def test_block_sparsity_in_training_prunes_whole_blocks():
    x, y = _data()
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(24, activation="relu", name="d1"),
                              keras.layers.Dense(2, name="out")])
    pruned = _compile(tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.75, 0, frequency=4),
                                                  block_size=(4, 1)))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    mask = _masks(pruned)[0]
    blocks = mask.reshape(5, 4, 24)
    assert ((blocks.min(axis=1) == blocks.max(axis=1))).all()  # every 4x1 block all-or-nothing
    assert blocks[:, 0, :].mean() == pytest.approx(0.25, abs=1 / 120)
    # The 2-wide output layer is padded to 4x1 blocks at the edge, not rejected.
    assert _masks(pruned)[1].shape == (24, 2)


def test_m_by_n_in_training():
    x, y = _data()
    pruned = _compile(tfprune.prune_low_magnitude(_mlp(), tfprune.ConstantSparsity(0.5, 0, frequency=4),
                                                  sparsity_m_by_n=(2, 4)))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    kernel = _pruned_values(pruned)[0]  # (20, 32): groups of 4 along the 20 inputs
    assert ((kernel.reshape(5, 4, 32) != 0).sum(axis=1) <= 2).all()
    assert (_masks(pruned)[0].reshape(5, 4, 32).sum(axis=1) == 2).all()


def test_global_granularity_uses_one_threshold_across_layers():
    x, y = _data()
    model = _mlp()
    weights = model.get_weights()
    weights[0] *= 2.0  # d1's weights rank higher in the global ranking
    model.set_weights(weights)
    pruned = _compile(tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.6, 0, frequency=1),
                                                  granularity="global"), keras.optimizers.SGD(0.0))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    masks, values = _masks(pruned), _pruned_values(pruned)
    total = sum(m.size for m in masks)
    assert abs(sum((m == 0).sum() for m in masks) / total - 0.6) <= 1 / total
    kept_min = min(np.abs(v[m == 1]).min() for v, m in zip(values, masks))
    pruned_weights = [w.copy() for w in model.get_weights()]
    pruned_max = max(np.abs(orig[m == 0]).max(initial=0) for orig, m in zip(pruned_weights[0::2], masks))
    assert kept_min >= pruned_max
    assert np.mean(masks[0] == 0) < 0.6 < np.mean(masks[1] == 0)
    thresholds = {float(t.numpy()) for w in pruning_wrappers(pruned) for t in w.thresholds}
    assert len(thresholds) == 1


def test_pruning_summaries_are_readable_from_the_event_files(tmp_path):
    x, y = _data(128)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, 0, 8, frequency=2)
    pruned = _compile(tfprune.prune_low_magnitude(_mlp(), schedule))
    pruned.fit(x, y, batch_size=32, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries(tmp_path, update_freq=2)])
    values = {}
    for path in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                values.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    sparsity = values["pruning/d1/kernel/sparsity"]
    assert [s for s, _ in sparsity] == [2, 4, 6, 8]
    # 8 batches run steps 1..8, as in tfmot: the last mask update was at step 8.
    assert sparsity[-1][1] == pytest.approx(schedule(8)[1], abs=1 / 640)
    assert values["pruning/d1/kernel/threshold"][-1][1] > 0
    assert "pruning/out/target_sparsity" in values
    with pytest.raises(ValueError, match="update_freq"):
        tfprune.PruningSummaries(tmp_path, update_freq=0)


def test_summaries_log_batchnorm_scales_for_slimming(tmp_path):
    x, y = _data(64)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(8, name="d"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(3, name="o")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.PruningSummaries(tmp_path, bn_scales=True)])
    tables = {}
    for path in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                tables[(v.tag, event.step)] = tf.make_ndarray(v.tensor)
    [(tag, step)] = tables
    assert tag == "bn_scale/bn" and step == 2
    table = tables[(tag, step)]
    gamma = np.abs(model.get_layer("bn").gamma.numpy())
    assert table[:, 2].sum() == gamma.size
    assert table[0, 0] == pytest.approx(gamma.min()) and table[-1, 1] == pytest.approx(gamma.max())
