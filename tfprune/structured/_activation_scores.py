"""Channel scores from activations over calibration data: APoZ, entropy, Taylor.

All statistics are gathered in one batched pass, keeping running sums (zero counts,
fixed-range histograms, sums of |activation x gradient|) rather than the activations.
"""

import numpy as np
import tensorflow as tf

import keras

from tfprune.structured import _data
from tfprune.structured._weight_scores import _prunable
from tfprune.surgery import _layers

_LINEAR = keras.activations.get("linear")


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
        if isinstance(layer, keras.layers.BatchNormalization) and not seen_bn:
            seen_bn, key = True, consumers[0].outputs[0]
        elif isinstance(layer, _layers.ACTIVATIONS + (keras.layers.PReLU,)):
            return consumers[0].outputs[0]
        else:
            return key


class _Stats:
    """Running per-channel statistics for one observed tensor."""

    def __init__(self, channels, bins):
        self.zeros = np.zeros(channels)
        self.positions = 0
        self.images = 0
        self.bins = bins
        self.hist = np.zeros((channels, bins))
        self.range = None
        self.taylor = np.zeros(channels)

    def update(self, a, want):
        a = np.asarray(a, dtype=np.float32)
        spatial = tuple(range(1, a.ndim - 1))
        if "apoz" in want:
            self.zeros += (a == 0).sum(axis=(0,) + spatial)
            self.positions += a.size // a.shape[-1]
        if "entropy" in want:
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
        self.images += a.shape[0]

    def apoz(self):
        return self.zeros / max(self.positions, 1)

    def entropy(self):
        p = self.hist / np.maximum(self.hist.sum(axis=1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(np.where(p > 0, p * np.log(p), 0.0).sum(axis=1))


def activation_scores(analysis, methods, data, batch_size=64, bins=100, loss=None, verbose=1):
    """Returns ``{method: {layer: importance}}`` for methods among apoz, entropy, taylor."""
    model = analysis.model
    names = _prunable(analysis)
    keys = [observed_tensor(analysis, n) for n in names]
    graph = analysis.graph
    need_grad = "taylor" in methods
    loss_fn = _loss(model, loss) if need_grad else None
    outputs = [graph.tensors[k] for k in keys]
    if need_grad:
        outputs = [graph.tensors[k] for k in graph.output_keys] + outputs
    inputs = graph.functional.inputs
    probe = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs)
    n_out = len(graph.output_keys) if need_grad else 0
    stats = [_Stats(graph.shape(k)[-1], bins) for k in keys]
    iterator, n_batches = _data.batches(model, data, batch_size, need_labels=need_grad)
    bar = keras.utils.Progbar(n_batches, verbose=verbose, unit_name="batch")
    for step, (x, y) in enumerate(iterator):
        if need_grad:
            acts, grads = _forward_backward(probe, loss_fn, n_out, x, y)
            for s, a, g in zip(stats, acts, grads):
                spatial = tuple(range(1, a.ndim - 1))
                # Molchanov et al. 2017, eq. 8: |mean over positions of a * dL/da| per image.
                s.taylor += np.abs((a * g).mean(axis=spatial) if spatial else a * g).sum(axis=0)
        else:
            acts = probe(x, training=False)
            acts = acts if isinstance(acts, (list, tuple)) else [acts]
            acts = [keras.ops.convert_to_numpy(a) for a in acts]
        for s, a in zip(stats, acts):
            s.update(a, methods)
        bar.update(step + 1)
    result = {}
    if "apoz" in methods:
        result["apoz"] = {n: (1.0 - s.apoz()).astype(np.float32) for n, s in zip(names, stats)}
    if "entropy" in methods:
        result["entropy"] = {n: s.entropy().astype(np.float32) for n, s in zip(names, stats)}
    if "taylor" in methods:
        result["taylor"] = {n: (s.taylor / max(s.images, 1)).astype(np.float32) for n, s in zip(names, stats)}
    return result


def _loss(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "method='taylor' needs a loss to take gradients of: pass loss=... (e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True)) or compile the model first."
        )
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError("method='taylor' supports a single loss; pass loss= for the model's only output.")
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = "sum"  # per-image gradients, whatever the batch size
        return loss.__class__.from_config(config)
    return lambda y, p: keras.ops.sum(loss(y, p))


def _forward_backward(probe, loss_fn, n_out, x, y):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        values = probe(x, training=False)
        preds, acts = values[:n_out], values[n_out:]
        value = loss_fn(y, preds[0] if n_out == 1 else preds)
    grads = tape.gradient(value, acts)
    return [a.numpy() for a in acts], [g.numpy() if g is not None else np.zeros(a.shape, np.float32) for a, g in zip(acts, grads)]
