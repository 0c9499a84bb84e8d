"""Centripetal SGD inside ``model.fit``: a callback that makes the filters of each cluster identical.

The weights a channel owns (its filter and bias, and every BatchNormalization, DepthwiseConv
and PReLU entry it passes through, as each layer family's ``channel_weights`` says) are tied
per cluster: ``_Plan`` lists them, with the positions that must become equal.
"""

import numbers
import os

import keras
import numpy as np
import tensorflow as tf

from tfprune._graph import ChannelAnalysis
from tfprune.structured._clusters import resolve


def occurrence_groups(roots, clusters):
    """Position arrays (the kept one first) of the channels of ``roots`` that each cluster ties.

    A union can appear several times along a tensor's channel axis (after Flatten, at every
    spatial position; after a DepthwiseConv, once per multiplier): the ``k``-th occurrence of each
    member is tied to the ``k``-th of the others. ``None`` when a cluster's members occur a different
    number of times (their channels do not line up).
    """
    order = np.argsort(roots, kind="stable")
    sorted_roots = roots[order]
    groups = []
    for cluster in clusters:
        occurrences = []
        for r in cluster:
            lo, hi = np.searchsorted(sorted_roots, [r, r + 1])
            occurrences.append(order[lo:hi])
        counts = {len(o) for o in occurrences}
        if counts == {0}:
            continue
        if len(counts) != 1:
            return None
        groups.extend(np.array(column) for column in zip(*occurrences))
    return groups


class _Tied:
    """One weight whose entries along ``axis`` are tied in groups; the centre is the group mean."""

    def __init__(self, layer, variable, axis, groups, is_filter):
        self.layer, self.variable, self.axis, self.is_filter = layer, variable, axis, is_filter
        n = variable.shape[axis]
        average = np.eye(n)
        self.clustered = np.zeros(n, dtype=bool)
        for positions in groups:
            block = np.ix_(positions, positions)
            average[block] = 1.0 / len(positions)
            self.clustered[positions] = True
        self.average = average  # symmetric: value @ average is each entry's group mean

    def value(self):
        return np.moveaxis(keras.ops.convert_to_numpy(self.variable).astype(np.float64), self.axis, -1)

    def centre(self, value):
        return value @ self.average

    def assign(self, value):
        self.variable.assign(np.moveaxis(value, -1, self.axis).astype(self.variable.dtype))


class _Plan:
    """Every weight tied by a ``ClusterSpec``, found through the layer families."""

    def __init__(self, spec, caller):
        analysis = spec.analysis
        self.tied = []
        for index, gnode in enumerate(analysis.graph.nodes):
            layer = gnode.operation
            if not analysis.cuts_through(index) or not isinstance(layer, keras.layers.Layer) or not layer.weights:
                continue
            family = analysis.families[index]
            variables = {w.name: w for w in layer.weights}
            for name, axis, side in family.channel_weights(layer):
                key = (gnode.outputs if side == "out" else gnode.inputs)[0]
                roots = analysis.root[analysis.ids[key]]
                variable = variables[name]
                length = variable.shape[axis]
                if length == 1:
                    continue  # one value shared by every channel
                if length != len(roots):
                    raise ValueError(
                        f"{caller}: '{layer.name}/{name}' has {length} entries on axis {axis}, but the layer's "
                        f"{'output' if side == 'out' else 'input'} has {len(roots)} channels; its family's "
                        "channel_weights does not describe it."
                    )
                groups = occurrence_groups(roots, spec.clusters)
                if groups is None:
                    raise ValueError(f"{caller}: the clustered channels of '{layer.name}' do not line up "
                                     "(members of a cluster occur a different number of times).")
                if groups:
                    self.tied.append(_Tied(layer, variable, axis, groups, family.produces and side == "out"))
        if not self.tied:
            raise ValueError(f"{caller}: `clusters` ties no weights: every cluster has a single channel.")

    def deviations(self):
        """Each tied weight's distance from its centres (channel axis last)."""
        return [value - t.centre(value) for t, value in ((t, t.value()) for t in self.tied)]

    def distances(self, deviations=None):
        """``(mean L2 distance of a clustered filter to its centre, largest relative deviation of any weight)``."""
        deviations = self.deviations() if deviations is None else deviations
        norms, worst = [], 0.0
        for t, d in zip(self.tied, deviations):
            flat = d.reshape(-1, d.shape[-1])[:, t.clustered]
            if t.is_filter:
                norms.append(np.sqrt((flat ** 2).sum(axis=0)))
            scale = np.abs(keras.ops.convert_to_numpy(t.variable)).max()
            worst = max(worst, float(np.abs(flat).max() / scale) if scale > 0 else 0.0)
        mean = float(np.concatenate(norms).mean()) if norms else 0.0
        return mean, worst

    def snap(self):
        """Sets every tied weight to its centres."""
        for t in self.tied:
            t.assign(t.centre(t.value()))


class CentripetalSGD(keras.callbacks.Callback):
    """Centripetal SGD (C-SGD) in ``model.fit``: the filters of each cluster become identical.

    Ding, Ding, Guo and Han, "Centripetal SGD for Pruning Very Deep Convolutional Networks with
    Complicated Structure", CVPR 2019. The output filters of a layer are clustered
    (``cluster_filters``); each filter is then updated with the gradient averaged over its cluster,
    plus ordinary weight decay, plus a centripetal term, epsilon times (the cluster's mean filter
    minus the filter), which pulls every filter to its cluster's centre. A filter is its cluster's
    mean plus its deviation; the averaged gradient moves only the mean, so the deviation gets no
    gradient and shrinks by the factor ``1 - epsilon`` at every step, until the filters of a cluster
    are identical. ``csgd_cut`` then keeps one filter per cluster and adds the next layer's input
    weights of the others onto it, which changes no output.

    How it runs with any optimizer: after each optimizer step (``on_train_batch_end``), every
    clustered weight is set to the mean of the cluster's new values (for SGD, with or without
    momentum, that is exactly the step of the averaged gradient, the step being linear in the
    gradient; for adaptive optimizers such as Adam it is the mean of the filters' steps), plus its
    previous deviation times ``1 - epsilon``. Weight decay (the optimizer's ``weight_decay`` or
    the layers' regularizers) acts on the mean as on any weight; on the deviation its pull adds to
    epsilon's, which this callback sets alone (the paper's ``tau * (eta + epsilon)`` per step).
    The weights tied per cluster are the filter and bias of each producer, and the
    BatchNormalization (gamma, beta, moving mean and variance), DepthwiseConv and PReLU entries of
    the channels, so that the channels, not only the filters, become identical. Coupled layers
    (a residual stream) are clustered alike.

    The callback changes the weights of the model given to ``fit``, as training does; everything
    else (the cut) works on copies. Logs ``csgd_cluster_distance`` (the mean Euclidean distance of
    a clustered filter to its cluster's centre) and ``csgd_max_deviation`` (the largest deviation
    of any tied weight, relative to that weight's largest magnitude) at each epoch end, so they
    land in ``fit``'s history; ``history`` holds them every ``every_n_steps`` steps, and with
    ``log_dir`` they are also written as TensorBoard scalars ``csgd/cluster_distance`` and
    ``csgd/max_deviation``.
    With ``compile(steps_per_execution=n)`` the pull runs once per ``n`` steps (Keras calls
    ``on_train_batch_end`` once per execution).

    Args:
        clusters: ``{layer_name: [[channel indices], ...]}``, as ``cluster_filters`` returns.
        epsilon: the centripetal strength per step, in (0, 1]: each deviation is multiplied by
            ``1 - epsilon`` at every step (1 makes the clusters identical at once).
        every_n_steps: how often ``history`` (and TensorBoard) records the distances.
        log_dir: a folder for TensorBoard event files, or None.

    Raises:
        ValueError: (when ``fit`` starts) ``clusters`` does not fit the model: an unknown layer, a
            bad partition, a layer whose channels cannot be removed, coupled layers clustered
            differently, or channels that flow into a layer that cannot fold them
            (SeparableConv).

    Example:

    ```python
    clusters = tfprune.structured.cluster_filters(model, 0.5)
    csgd = tfprune.structured.CentripetalSGD(clusters, epsilon=0.02)
    model.fit(x, y, epochs=3, callbacks=[csgd])
    print(model.history.history["csgd_cluster_distance"])
    smaller = tfprune.structured.csgd_cut(model, clusters)   # same outputs, half the channels
    ```
    """

    def __init__(self, clusters, epsilon=0.01, every_n_steps=10, log_dir=None):
        super().__init__()
        if not isinstance(clusters, dict) or not clusters:
            raise TypeError(
                "CentripetalSGD: `clusters` must be a non-empty dict {layer_name: [[channel indices], ...]} (as "
                f"tfprune.structured.cluster_filters returns); got {type(clusters).__name__}."
            )
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 < float(epsilon) <= 1.0:
            raise ValueError(f"CentripetalSGD: `epsilon` must be a number in (0, 1] (the deviation left after a "
                             f"step is 1 - epsilon times the one before); got {epsilon!r}.")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"CentripetalSGD: `every_n_steps` must be a positive integer; got {every_n_steps!r}.")
        # numpy integers become ints (get_config is JSON); anything else is checked when fit starts
        self.clusters = {name: [[int(c) if isinstance(c, numbers.Integral) and not isinstance(c, bool) else c
                                 for c in cluster] for cluster in partition]
                         for name, partition in clusters.items()}
        self.epsilon = float(epsilon)
        self.every_n_steps = every_n_steps
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self.history = {"step": [], "cluster_distance": [], "max_deviation": []}
        self._plan = self._deviations = self._writer = None
        self._step = 0

    def on_train_begin(self, logs=None):
        spec = resolve(ChannelAnalysis(self.model), self.clusters, "CentripetalSGD")
        self._plan = _Plan(spec, "CentripetalSGD")
        self._deviations = self._plan.deviations()
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        if not self.history["step"] or self.history["step"][-1] != self._step:
            self._record()

    def on_train_batch_end(self, batch, logs=None):
        keep = 1.0 - self.epsilon
        for i, t in enumerate(self._plan.tied):
            self._deviations[i] = self._deviations[i] * keep
            t.assign(t.centre(t.value()) + self._deviations[i])
        self._step += 1
        if self._step % self.every_n_steps == 0:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        distance, worst = self._plan.distances(self._deviations)
        if logs is not None:
            logs["csgd_cluster_distance"] = distance
            logs["csgd_max_deviation"] = worst

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _record(self):
        distance, worst = self._plan.distances(self._deviations)
        self.history["step"].append(self._step)
        self.history["cluster_distance"].append(distance)
        self.history["max_deviation"].append(worst)
        if self._writer is not None:
            with self._writer.as_default():
                _scalar("csgd/cluster_distance", distance, self._step)
                _scalar("csgd/max_deviation", worst, self._step)
            self._writer.flush()

    def get_config(self):
        return {"clusters": self.clusters, "epsilon": self.epsilon, "every_n_steps": self.every_n_steps,
                "log_dir": self.log_dir}


# A TensorBoard scalar without the tensorboard package (TensorFlow 2.21 no longer installs it):
# a float tensor tagged for the "scalars" plugin, as tf.summary.scalar writes.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _scalar(tag, value, step):
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR_METADATA)
