"""Channel criteria from activations over calibration data: APoZ, entropy, Taylor.

One batched pass feeds every requested data criterion, each keeping running sums (zero
counts, fixed-range histograms, sums of |activation x gradient|) rather than the activations.
"""

import copy
import warnings

import numpy as np
import tensorflow as tf

import keras

from tfprune.structured import _data
from tfprune.structured._criteria import DataCriterion, prunable

_LINEAR = keras.activations.get("linear")
L = keras.layers
ACTIVATIONS = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.PReLU)


def observed_tensor(analysis, name):
    """Key of the post-activation tensor of producer ``name``.

    The producer's own output if it has an activation; otherwise follow single consumers
    through one BatchNormalization and then one activation layer (Activation, ReLU,
    LeakyReLU, ELU, PReLU), stopping at anything else.
    """
    graph = analysis.graph
    gnode = graph.nodes_by_name[name]
    key = gnode.outputs[0]
    if getattr(gnode.operation, "activation", _LINEAR) is not _LINEAR:
        return key
    seen_bn = False
    while True:
        consumers = graph.consumers.get(key, [])
        if len(consumers) != 1 or key in graph.output_keys:
            return key
        layer = consumers[0].operation
        if isinstance(layer, L.BatchNormalization) and not seen_bn:
            seen_bn, key = True, consumers[0].outputs[0]
        elif isinstance(layer, ACTIVATIONS):
            return consumers[0].outputs[0]
        else:
            return key


def _spatial(a):
    return tuple(range(1, a.ndim - 1))


class APoZ(DataCriterion):
    """One minus the Average Percentage of Zeros of each channel's post-activation output
    (Hu, Peng, Tai and Tang, "Network Trimming: A Data-Driven Neuron Pruning Approach
    towards Efficient Deep Architectures", arXiv:1607.03250, 2016). Higher = more important."""

    name = "apoz"

    def start(self, channels, **options):
        self.zeros, self.positions = np.zeros(channels), 0

    def update(self, activation, gradient):
        a = np.asarray(activation, dtype=np.float32)
        self.zeros += (a == 0).sum(axis=(0,) + _spatial(a))
        self.positions += a.size // a.shape[-1]

    def result(self):
        return 1.0 - self.zeros / max(self.positions, 1)


class Entropy(DataCriterion):
    """Entropy of each channel's globally average-pooled post-activation output (Luo and Wu,
    "An Entropy-based Pruning Method for CNN Compression", arXiv:1706.05791, 2017), over
    ``bins`` bins of one range per layer fixed from the first batch. Low = prune."""

    name = "entropy"

    def start(self, channels, bins=100, **options):
        self.bins, self.hist, self.range = bins, np.zeros((channels, bins)), None

    def update(self, activation, gradient):
        a = np.asarray(activation, dtype=np.float32)
        spatial = _spatial(a)
        pooled = a.mean(axis=spatial) if spatial else a  # (batch, channels)
        if self.range is None:
            # Range fixed from the first batch, one per layer, widened by half its span
            # on each side; later values outside it fall into the edge bins.
            lo, hi = float(pooled.min()), float(pooled.max())
            span = max(hi - lo, 1e-12)
            self.range = (lo - 0.5 * span, hi + 0.5 * span)
        lo, hi = self.range
        index = np.clip(((pooled - lo) / (hi - lo) * self.bins).astype(np.int64), 0, self.bins - 1)
        channel = np.broadcast_to(np.arange(pooled.shape[1]), pooled.shape)
        np.add.at(self.hist, (channel.ravel(), index.ravel()), 1)

    def result(self):
        p = self.hist / np.maximum(self.hist.sum(axis=1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(np.where(p > 0, p * np.log(p), 0.0).sum(axis=1))


class Taylor(DataCriterion):
    """First-order Taylor estimate of the loss change when a channel is removed (Molchanov,
    Tyree, Karras, Aila and Kautz, "Pruning Convolutional Neural Networks for Resource
    Efficient Inference", ICLR 2017): per image ``|mean over positions of a * dL/da|``,
    averaged over the images. Higher = more important."""

    name = "taylor"
    needs_gradients = True

    def start(self, channels, **options):
        self.total, self.images = np.zeros(channels), 0

    def update(self, activation, gradient):
        a, g = activation, gradient
        spatial = _spatial(a)
        # Molchanov et al. 2017, eq. 8: |mean over positions of a * dL/da| per image.
        self.total += np.abs((a * g).mean(axis=spatial) if spatial else a * g).sum(axis=0)
        self.images += a.shape[0]

    def result(self):
        return self.total / max(self.images, 1)


def activation_scores(analysis, criteria, data, batch_size=64, bins=100, loss=None, verbose=1):
    """Returns ``{criterion.name: {layer: importance}}`` for data criteria, from one batched pass.

    ``data`` is read by ``_data.batches`` (x, (x, y) or (x, y, sample_weight), x an array, a list
    of arrays or a dict, or a dataset / iterable of such batches). Sample weights scale each
    image's loss for gradient criteria and are ignored by the others. When no layer of the model
    can lose channels, the data's first batch is still checked, a warning says so and every
    criterion gets ``{}``.
    """
    names = prunable(analysis)
    graph = analysis.graph
    model = analysis.model
    with_grad = [c for c in criteria if c.needs_gradients]
    loss_fn = _loss(model, loss, with_grad[0].name) if with_grad else None
    iterator, n_batches = _data.batches(model, data, batch_size, need_labels=bool(with_grad))
    if not names:
        next(iterator)  # the data is still checked, so a wrong shape is not silently ignored
        warnings.warn(
            f"{', '.join(repr(c.name) for c in criteria)}: model '{model.name}' has no layer that can lose output "
            "channels, so there is nothing to score. Scored are Conv, Dense, SeparableConv and ConvTranspose "
            "layers (and layers registered with tfprune.surgery.register_layer) whose channels do not reach a "
            "model output or a layer that cannot be cut; returning empty scores.",
            stacklevel=4,
        )
        return {c.name: {} for c in criteria}
    keys = [observed_tensor(analysis, n) for n in names]
    outputs = ([graph.tensors[k] for k in graph.output_keys] if with_grad else []) + [graph.tensors[k] for k in keys]
    inputs = graph.functional.inputs
    probe = keras.Model(inputs[0] if len(inputs) == 1 else list(inputs), outputs)
    n_out = len(graph.output_keys) if with_grad else 0
    states = [[_fresh(c, graph.shape(k)[-1], bins) for k in keys] for c in criteria]
    bar = keras.utils.Progbar(n_batches, verbose=verbose, unit_name="batch")
    for step, (xs, y, w) in enumerate(iterator):
        x = xs[0] if len(xs) == 1 else [tf.convert_to_tensor(v) for v in xs]
        if with_grad:
            acts, grads = _forward_backward(probe, loss_fn, n_out, x, y, w)
        else:
            acts = probe(x, training=False)
            acts = [keras.ops.convert_to_numpy(a) for a in (acts if isinstance(acts, (list, tuple)) else [acts])]
            grads = [None] * len(acts)
        for criterion, layer_states in zip(criteria, states):
            for state, a, g in zip(layer_states, acts, grads):
                state.update(a, g if criterion.needs_gradients else None)
        bar.update(step + 1)
    return {c.name: {n: np.asarray(s.result(), dtype=np.float32) for n, s in zip(names, layer_states)}
            for c, layer_states in zip(criteria, states)}


def _fresh(criterion, channels, bins):
    state = copy.deepcopy(criterion)
    state.start(channels, bins=bins)
    return state


def _loss(model, loss, name="taylor"):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            f"method={name!r} needs a loss to take gradients of: pass loss=... (e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True)) or compile the model first."
        )
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(f"method={name!r} supports a single loss; pass loss= for the model's only output.")
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = "sum"  # per-image gradients, whatever the batch size
        return loss.__class__.from_config(config)

    def summed(y, p, sample_weight=None):
        values = loss(y, p)
        return keras.ops.sum(values if sample_weight is None else values * sample_weight)

    return summed


def _forward_backward(probe, loss_fn, n_out, x, y, sample_weight=None):
    x = [tf.convert_to_tensor(v) for v in x] if isinstance(x, list) else tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        values = probe(x, training=False)
        preds, acts = values[:n_out], values[n_out:]
        value = loss_fn(y, preds[0] if n_out == 1 else preds, sample_weight=sample_weight)
    grads = tape.gradient(value, acts)
    return [a.numpy() for a in acts], [g.numpy() if g is not None else np.zeros(a.shape, np.float32) for a, g in zip(acts, grads)]
