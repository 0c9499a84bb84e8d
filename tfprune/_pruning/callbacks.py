"""Callbacks that drive pruning inside ``model.fit``.

``UpdatePruningStep`` asks each layer's schedule, in plain Python, whether
this step updates masks; only then does it touch the weights. The step count
itself lives in each wrapper (incremented inside the train step), so it is
saved with the model and a resumed ``fit`` continues the schedule.
"""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprune._common.layers import walk_layers
from tfprune._pruning import registry
from tfprune._pruning.wrapper import update_due_masks
from tfprune._pruning.api import pruning_wrappers


class UpdatePruningStep(keras.callbacks.Callback):
    """Updates pruning masks while ``model.fit`` trains a pruned model.

    Required whenever a model from ``tfprune.prune_low_magnitude`` trains:
    before each batch it asks every pruned layer's schedule whether masks are
    due, and recomputes them if so. Training without it raises an error
    that says so. Wrappers ranked together (``granularity="global"``) are
    updated with one shared threshold.

    Steps count as in tfmot: the pruning step is the number of batches
    trained, and batch ``k`` (from 1) is pruned to ``schedule(k)``. A model
    saved by tfprune 0.1 holds the same count and resumes with this
    alignment, one step later in its schedule than that version would have.

    In a custom training loop, call ``set_model(model)`` and
    ``on_train_begin()`` once, then ``on_train_batch_begin(step)`` before
    every step (``on_train_batch_end`` and tfmot's
    ``on_epoch_end(batch=-1)`` are optional).

    Example:

    ```python
    pruned.fit(x, y, epochs=2, callbacks=[tfprune.UpdatePruningStep()])
    ```
    """

    def __init__(self):
        super().__init__()
        self._wrappers = []
        self._steps = []
        self._in_batch = False
        self._first_step = None
        self._updated = False
        self._started = set()

    def on_train_begin(self, logs=None):
        self._wrappers = pruning_wrappers(self.model)
        if not self._wrappers:
            warnings.warn(
                f"UpdatePruningStep: model '{self.model.name}' has no pruned layers; nothing to do. "
                "Did you train the model returned by tfprune.prune_low_magnitude?",
                stacklevel=2,
            )
        if not all(w.driven_by_callback for w in self._wrappers):
            # A train step traced before (by a fit that failed for want of
            # this callback) is cached half-built; trace a fresh one.
            if getattr(self.model, "train_function", None) is not None:
                self.model.make_train_function(force=True)
        self._started = set()
        for wrapper in self._wrappers:
            wrapper.driven_by_callback = True
        self._start_built()
        self._sync_steps()
        self._first_step, self._updated = (self._steps[0] if self._steps else None), False

    def on_epoch_begin(self, epoch, logs=None):
        # Read the steps here, not in on_train_begin: callbacks such as
        # BackupAndRestore restore the model's variables in their own
        # on_train_begin, which may run after this one.
        self._sync_steps()

    def _start_built(self):
        # A model that was not built (a Sequential without Input) builds its wrappers in the
        # first train step; they start from there, counting that step (see PruningWrapper).
        for wrapper in self._wrappers:
            if wrapper.pruning_step is None or id(wrapper) in self._started:
                continue
            if int(wrapper.pruning_step.numpy()) < 0:
                wrapper.pruning_step.assign(0)
            wrapper.start_training()
            self._started.add(id(wrapper))

    def _sync_steps(self):
        self._steps = [None if w.pruning_step is None else int(w.pruning_step.numpy()) for w in self._wrappers]

    def _steps_per_call(self):
        return int(getattr(self.model, "steps_per_execution", 1) or 1)

    def on_train_batch_begin(self, batch=None, logs=None):
        span = self._steps_per_call()
        if len(self._started) < len(self._wrappers):
            self._start_built()
            self._sync_steps()
        if span > 1 or self._in_batch:
            # One call runs several steps (and the last one of an epoch may
            # run fewer), or a custom loop skipped on_train_batch_end: read
            # the true count back.
            self._sync_steps()
        self._in_batch = True
        updates = []
        for wrapper, step in zip(self._wrappers, self._steps):
            if step is None:
                continue  # not built yet
            sparsity = None
            # The wrapper counts batches trained; the batch about to run is step + 1, as in tfmot.
            for s in range(step + 1, step + span + 1):
                due = wrapper.due_sparsity(s)
                sparsity = due if due is not None else sparsity
            if sparsity is not None:
                updates.append((wrapper, sparsity))
        if updates:
            update_due_masks(updates)
            self._updated = True

    def on_train_batch_end(self, batch=None, logs=None):
        self._in_batch = False
        if self._steps_per_call() == 1:
            self._steps = [None if s is None else s + 1 for s in self._steps]

    def on_train_end(self, logs=None):
        # The next fit must prove again that this callback drives it: forget the flag, and drop the
        # traced train step so that the check, made while tracing, runs again.
        for wrapper in self._wrappers:
            wrapper.driven_by_callback = False
        if self._wrappers and getattr(self.model, "train_function", None) is not None:
            self.model.train_function = None
        self._warn_if_nothing_was_due()

    def _warn_if_nothing_was_due(self):
        # A schedule whose first update lies beyond this fit (tfmot's default frequency=100 on a
        # short run) would otherwise leave the model unpruned without a word.
        if self._updated or not self._wrappers or self._first_step is None:
            return
        self._sync_steps()
        wrapper, last = self._wrappers[0], self._steps[0]
        upcoming = next((s for s in range(last + 1, last + 100_001) if wrapper.due_sparsity(s) is not None), None)
        if upcoming is None:
            return  # dynamic surgery, or a schedule that is over: nothing was due, by design
        warnings.warn(
            f"UpdatePruningStep: no pruning mask was updated in this fit (steps {self._first_step + 1} to {last}); "
            f"the schedule's next update is at step {upcoming}. Train longer, or give the schedule a smaller "
            "`frequency` or `begin_step`.", UserWarning, stacklevel=2,
        )

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        # tfmot's custom-loop recipe calls on_epoch_end(batch=-1); masks are kept by the
        # variable constraints, so there is nothing to re-apply here.
        return None

    def get_config(self):
        return {}


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer sparsity and thresholds to TensorBoard.

    For every pruned weight it logs ``pruning/<layer>/<weight>/sparsity``
    (the fraction of zeros in the mask) and ``.../threshold`` (the magnitude
    below which weights were pruned at the last update), and the schedule's
    target as ``pruning/<layer>/target_sparsity``, against the layer's
    pruning step. View with ``tensorboard --logdir <log_dir>``.

    For dynamic network surgery it logs ``pruning/<layer>/pruned_total`` and
    ``.../spliced_total`` instead of the target. With ``bn_scales=True`` it
    also logs, for network slimming, the distribution of ``|gamma|`` of
    every BatchNormalization layer as a histogram ``bn_scale/<layer>``.

    Args:
        log_dir: directory for the event files.
        update_freq: ``"epoch"`` to write at the end of each epoch, or an
            integer number of batches.
        bn_scales: also log the BatchNormalization scale histograms.

    Example:

    ```python
    pruned.fit(
        x, y, epochs=4,
        callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries("logs/pruning")],
    )
    ```
    """

    def __init__(self, log_dir, update_freq="epoch", bn_scales=False):
        super().__init__()
        if update_freq != "epoch" and (not isinstance(update_freq, int) or update_freq <= 0):
            raise ValueError(
                f"PruningSummaries: `update_freq` must be 'epoch' or a positive number of batches. "
                f"Received: update_freq={update_freq!r}."
            )
        if log_dir is None or not os.fspath(log_dir):
            raise ValueError(
                f"PruningSummaries: `log_dir` must name a directory for the event files. Received: log_dir={log_dir!r}."
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self.bn_scales = bool(bn_scales)
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self):
        with self._writer.as_default():
            for wrapper in pruning_wrappers(self.model):
                step = int(wrapper.pruning_step.numpy())
                name = wrapper.layer.name
                for scalar, value in wrapper.step_scalars(step).items():
                    _scalar(f"pruning/{name}/{scalar}", value, step)
                for weight, mask, threshold in zip(wrapper.pruned_weights, wrapper.masks, wrapper.thresholds):
                    mask = keras.ops.convert_to_numpy(mask)
                    tag = f"pruning/{name}/{registry.weight_label(weight, wrapper.layer)}"
                    _scalar(f"{tag}/sparsity", 1.0 - np.mean(mask), step)
                    _scalar(f"{tag}/threshold", threshold.numpy(), step)
            if self.bn_scales:
                step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer else 0
                for layer in walk_layers(self.model):
                    if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
                        _histogram(f"bn_scale/{layer.name}", np.abs(keras.ops.convert_to_numpy(layer.gamma)), step)
        self._writer.flush()

    def get_config(self):
        return {"log_dir": self.log_dir, "update_freq": self.update_freq, "bn_scales": self.bn_scales}


# What tf.summary.scalar writes, without needing the tensorboard package
# (TensorFlow 2.21 no longer installs it): a float tensor tagged for the
# TensorBoard "scalars" plugin.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _scalar(tag, value, step):
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR_METADATA)


_HISTOGRAM_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="histograms")
).SerializeToString()


def _histogram(tag, values, step, bins=30):
    """A TensorBoard histogram: rows of (left edge, right edge, count), as tf.summary.histogram writes."""
    counts, edges = np.histogram(values, bins=bins)
    table = np.stack([edges[:-1], edges[1:], counts], axis=1).astype(np.float64)
    tf.summary.write(tag, tf.constant(table), step=step, metadata=_HISTOGRAM_METADATA)
