"""EagleEye: sampled per-layer ratios under a FLOP budget, scored after adaptive BatchNorm (Li et al. 2020)."""

import numbers
import warnings

import numpy as np

import keras

from tfprune._common.layers import walk_layers
from tfprune._common.text import format_table
from tfprune._graph import ChannelAnalysis, family_of, rebuild_model
from tfprune.structured import _samples, _scores, _select
from tfprune.structured._flops import flops_report

L = keras.layers


def _batchnorms(model):
    return [layer for layer in walk_layers(model) if isinstance(layer, L.BatchNormalization)]


def adapt_in_place(model, batches):
    """Re-estimates every BatchNormalization's moving statistics of ``model`` on ``batches``.

    Each batch runs forward in training mode (so each BN normalizes with the batch's own
    statistics, as in training); the moving mean and variance become the plain average of the
    batch statistics, through the momentum ``(k - 1) / k`` at batch ``k``, whatever the layer's
    own momentum. Returns the number of BatchNormalization layers.
    """
    layers = _batchnorms(model)
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    try:
        for k, x in enumerate(batches, start=1):
            for layer in layers:
                # Keras runs BN in inference mode when it is frozen: it must be trainable here.
                layer.momentum, layer.trainable = (k - 1) / k, True
            model(x, training=True)
    finally:
        for layer, (momentum, trainable) in zip(layers, saved):
            layer.momentum, layer.trainable = momentum, trainable
    return len(layers)


def _split(inputs, batch_size):
    count = len(inputs[0])
    for i in range(0, count, batch_size):
        part = [a[i:i + batch_size] for a in inputs]
        yield part[0] if len(part) == 1 else part


def adapt_batchnorm(model, data, *, batches=20, batch_size=64):
    """A copy of ``model`` with its BatchNorm moving statistics re-estimated on ``data`` (adaptive BN).

    Li, Wu, Su, Wang and Lin, "EagleEye: Fast Sub-net Evaluation for Efficient
    Neural Network Pruning", ECCV 2020: after channels are removed, the moving mean and
    variance inherited from the full network no longer match the statistics of the smaller
    network's features, which makes a pruned network's accuracy before fine-tuning a poor guide.
    Adaptive BN runs a few training batches forward in training mode and recomputes them.
    Here every BatchNormalization's moving mean and variance become the average of the
    ``batches`` batch statistics (no weight changes: no gradient is taken).

    Args:
        model: a built Keras 3 model (not modified).
        data: training inputs in any form ``channel_scores`` takes; the first
            ``batches * batch_size`` samples are used.
        batches: number of forward passes.
        batch_size: samples per pass.

    Returns:
        A new model, compiled like ``model`` if it was.

    Warns:
        UserWarning: the model has no BatchNormalization layer (the copy equals the model).

    Example:

    ```python
    smaller = tfprune.structured.prune(model, "l1_norm", ratio=0.5)
    adapted = tfprune.structured.adapt_batchnorm(smaller, x_train, batches=20)
    ```
    """
    batches = _samples.check_count(batches, "batches")
    batch_size = _samples.check_count(batch_size, "batch_size")
    copy = rebuild_model(ChannelAnalysis(model), set())
    inputs, _ = _samples.take(model, data, batches * batch_size)
    if not adapt_in_place(copy, _split(inputs, batch_size)):
        warnings.warn(f"adapt_batchnorm: model '{model.name}' has no BatchNormalization layer, so nothing changed.",
                      UserWarning, stacklevel=2)
    return copy


class EagleEyeReport:
    """The candidates ``eagleeye`` drew, with their FLOPs and quick scores, and which one it picked.

    Attributes:
        model: name of the model pruned.
        budget_flops: the budget; every candidate has FLOPs in ``[window * budget, budget]``.
        rows: one dict per candidate: ``ratios`` (``{first layer of each group: ratio}``),
            ``channels`` (``{layer: removed indices}``, for ``tfprune.surgery.remove_channels``),
            ``widths`` (``{layer: channels kept}``), ``flops``, ``score`` (after adaptive BN, or
            without it when ``adaptive_bn=False``) and ``score_without_adaptive_bn``.
        best: index into ``rows`` of the candidate returned.
        draws: how many random ratio vectors were drawn (rejected draws included: outside the
            window, or a cut already drawn).

    Example:

    ```python
    smaller, report = tfprune.structured.eagleeye(model, (x, y), budget_flops=3e6,
                                                  validation_data=(x_val, y_val))
    print(report)
    again = tfprune.surgery.remove_channels(model, report.rows[report.best]["channels"])
    ```
    """

    def __init__(self, model, budget_flops, rows, best, draws):
        self.model, self.budget_flops, self.rows, self.best, self.draws = model, budget_flops, rows, best, draws

    def to_dict(self):
        return {"model": self.model, "budget_flops": self.budget_flops, "rows": [dict(r) for r in self.rows],
                "best": self.best, "draws": self.draws}

    def __str__(self):
        layers = list(self.rows[0]["widths"]) if self.rows else []
        table = [(("*" if i == self.best else "") + str(i), "-".join(str(r["widths"][n]) for n in layers),
                  f"{r['flops']:,}", f"{r['score']:.4f}", f"{r['score_without_adaptive_bn']:.4f}")
                 for i, r in enumerate(self.rows)]
        head = (f"EagleEye on model '{self.model}': {len(self.rows)} candidates ({self.draws} draws) within "
                f"{self.budget_flops:,.0f} FLOPs; widths of {', '.join(layers)}; * = picked")
        return "\n".join([head] + format_table(("#", "widths", "FLOPs", "score", "no adaptive BN"), table,
                                               right={2, 3, 4}))

    __repr__ = __str__


def _accuracy(model, x, y):
    # Eager calls: each candidate is a new model, and tracing a predict function per model costs more
    predictions = np.concatenate([np.asarray(model(part, training=False)) for part in _split(
        x if isinstance(x, list) else [x], 256)])
    labels = np.asarray(y)
    if labels.ndim == predictions.ndim and labels.shape[-1] == predictions.shape[-1] and labels.shape[-1] > 1:
        labels = labels.argmax(axis=-1)  # one-hot labels
    return float((predictions.argmax(axis=-1) == labels.reshape(predictions.shape[:-1])).mean())


def _check(value, argument, low, high, low_open=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        low < value <= high if low_open else low <= value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"`{argument}` must be a number in {interval}; got {value!r}.")
    return float(value)


class _Sampler:
    """Draws per-group ratios and cuts by L1 norm; FLOPs estimated from the kept widths, checked on the rebuilt model."""

    def __init__(self, model, max_ratio, min_channels):
        self.analysis = ChannelAnalysis(model)
        self.scores = _scores.scores_for(self.analysis, "l1_norm")
        self.keys = [g.layers[0] for g in self.analysis.coupled_groups() if not g.blocked.all()]
        self.max_ratio, self.min_channels = max_ratio, min_channels
        graph = self.analysis.graph
        # Each node's multiply-adds from its family's formula on the shapes; rebuilding a model per
        # trial would cost 0.3 s, the formula on the kept widths microseconds.
        self.nodes = []
        for gnode in graph.nodes:
            if not gnode.inputs or not gnode.outputs:
                continue
            shapes = (graph.shape(gnode.inputs[0]), graph.shape(gnode.outputs[0]))
            if any(None in shape[1:] or len(shape) < 2 for shape in shapes):
                continue
            family = family_of(gnode.operation)
            full = family.macs(gnode.operation, (1,) + shapes[0][1:], (1,) + shapes[1][1:])
            self.nodes.append((family, gnode, shapes, full))
        self.offset = flops_report(model).total_flops - sum(node[3] for node in self.nodes)

    def removed(self, ratios):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # min_channels reached: expected at high ratios
            return _select.select_unions(self.analysis, self.scores, ratios, "layer", self.min_channels)

    def estimate(self, removed):
        keeps = self.analysis.keep_masks(removed) if removed else None
        total = self.offset
        for family, gnode, (in_shape, out_shape), full in self.nodes:
            if keeps is None:
                total += full
                continue
            shapes = []
            for key, shape in ((gnode.inputs[0], in_shape), (gnode.outputs[0], out_shape)):
                kept = keeps[key]
                shapes.append((1,) + shape[1:-1] + ((int(kept.sum()),) if len(kept) == shape[-1] else shape[-1:]))
            total += family.macs(gnode.operation, *shapes)
        return total

    def cut(self, ratios):
        removed = self.removed(ratios)
        model = rebuild_model(self.analysis, removed)
        return model, removed, flops_report(model).total_flops

    def scaled(self, u, budget, steps=12):
        """The cut of ratios ``min(max_ratio, c * u)`` with the smallest ``c`` (bisection) meeting ``budget``."""
        low, high = 0.0, self.max_ratio / max(float(u.min()), 1e-6)
        ratios_at = lambda c: {k: min(self.max_ratio, c * float(v)) for k, v in zip(self.keys, u)}
        for _ in range(steps):
            c = (low + high) / 2
            if self.estimate(self.removed(ratios_at(c))) <= budget:
                high = c
            else:
                low = c
        ratios = ratios_at(high)
        return self.cut(ratios) + (ratios,)


def eagleeye(model, data, *, budget_flops, validation_data, candidates=20, window=0.9, max_ratio=0.9,
             min_channels=1, adaptive_bn=True, bn_batches=20, batch_size=64, metric=None, seed=0, verbose=0):
    """EagleEye: many random per-layer pruning ratios under a FLOP budget, each scored after adaptive BN.

    Li, Wu, Su, Wang and Lin, "EagleEye: Fast Sub-net Evaluation for Efficient
    Neural Network Pruning", ECCV 2020. Candidates are sub-networks given by one pruning ratio
    per layer, cut by L1 norm (the paper's choice); each candidate's BatchNorm moving statistics
    are re-estimated on a few training batches (``adapt_batchnorm``) before it is scored on
    held-out data, because the statistics inherited from the full network make the score a poor
    predictor of the accuracy after fine-tuning. The best-scoring candidate is returned, to be
    fine-tuned by the caller.

    Drawing: each coupled group (a layer, or the layers of one residual stream) gets
    ``u ~ U(0, 1)``; the ratios ``min(max_ratio, c * u)`` are cut with the smallest ``c`` whose
    cut has at most ``budget_flops`` FLOPs (bisection), and the draw is rejected (and drawn
    again) when the cut falls below ``window * budget_flops``. The paper draws the ratios and
    rejects those outside the window directly; scaling the random pattern keeps the draws at
    strict budgets, where almost every plain draw would be rejected. A draw giving a cut already
    drawn is rejected too, so the candidates are distinct.

    Args:
        model: a built Sequential or Functional Keras 3 model with one output (not modified).
        data: training data for adaptive BN, in any form ``channel_scores`` takes; the first
            ``bn_batches * batch_size`` samples are used (shuffle it yourself).
        budget_flops: the FLOP budget (multiply-adds, as ``flops_report`` counts).
        validation_data: ``(x, y)`` the candidates are scored on (held out from ``data``).
        candidates: how many candidates are kept and scored.
        window: candidates have FLOPs in ``[window * budget_flops, budget_flops]``, ``0 < window <= 1``.
        max_ratio: the largest fraction of a layer's channels a candidate removes, in (0, 1).
        min_channels: channels every layer keeps at least.
        adaptive_bn: False scores the candidates with the inherited statistics (the baseline the
            paper compares against); the report has both scores either way.
        bn_batches: forward passes of adaptive BN.
        batch_size: samples per adaptive-BN pass.
        metric: ``metric(model, x, y) -> float``, higher = better; default top-1 accuracy.
        seed: seed of the draws.
        verbose: 1 prints one line per candidate.

    Returns:
        ``(best candidate model, EagleEyeReport)``; the model has its re-estimated BN statistics
        and is compiled like ``model`` if it was.

    Raises:
        ValueError: bad arguments, missing data or labels, a budget at or above the model's
            FLOPs, or one that cannot be met even with every layer at ``max_ratio`` (the message
            gives the FLOPs), or no draw within the window after ``20 * candidates`` tries.

    Warns:
        UserWarning: the model has no BatchNormalization layer (adaptive BN changes nothing); or
            fewer distinct candidates than ``candidates`` were found in ``20 * candidates``
            draws (a small model has few distinct cuts near one budget); the best of those is returned.

    Example:

    ```python
    smaller, report = tfprune.structured.eagleeye(
        model, x_train[:5000], budget_flops=flops / 3, validation_data=(x_val, y_val), candidates=20)
    print(report)                      # every candidate: widths, FLOPs, score with and without adaptive BN
    smaller.fit(x_train, y_train, epochs=2)
    ```
    """
    ChannelAnalysis(model)  # an unbuilt or subclassed model fails here, before reading any data
    budget = _check(budget_flops, "budget_flops", 0, float("inf"), low_open=True)
    window = _check(window, "window", 0, 1, low_open=True)
    max_ratio = _check(max_ratio, "max_ratio", 0, 1, low_open=True)
    if max_ratio >= 1:
        raise ValueError("`max_ratio` must be below 1 (1 would empty a layer); got 1.")
    candidates = _samples.check_count(candidates, "candidates")
    bn_batches = _samples.check_count(bn_batches, "bn_batches")
    batch_size = _samples.check_count(batch_size, "batch_size")
    min_channels = _samples.check_count(min_channels, "min_channels")
    if metric is not None and not callable(metric):
        raise TypeError(f"`metric` must be None (top-1 accuracy) or a callable(model, x, y) -> float; got {metric!r}.")
    if validation_data is None:
        raise ValueError("`validation_data` is required: pass held-out (x, y) to score the candidates on.")
    if len(model.outputs) != 1 and metric is None:
        raise ValueError(f"Model '{model.name}' has {len(model.outputs)} outputs: pass a `metric` to score it.")
    x_val, y_val = _samples.take(model, validation_data, 10 ** 9, need_labels=True, argument="validation_data")
    x_val = x_val[0] if len(x_val) == 1 else x_val
    bn_inputs, _ = _samples.take(model, data, bn_batches * batch_size)
    score = metric or _accuracy
    base = flops_report(model).total_flops
    if budget >= base:
        raise ValueError(f"budget_flops={budget:,.0f} is not below model '{model.name}''s {base:,} FLOPs: "
                         "nothing needs to be pruned.")
    if adaptive_bn and not _batchnorms(model):
        warnings.warn(f"eagleeye: model '{model.name}' has no BatchNormalization layer, so adaptive BN changes "
                      "nothing: the candidates are scored as they are.", UserWarning, stacklevel=2)
    sampler = _Sampler(model, max_ratio, min_channels)
    floor = sampler.cut({k: max_ratio for k in sampler.keys})[2]
    if floor > budget:
        raise ValueError(
            f"budget_flops={budget:,.0f} cannot be met: model '{model.name}' has {base:,} FLOPs, and removing "
            f"max_ratio={max_ratio} of every layer (min_channels={min_channels}) still leaves {floor:,}. Give a "
            "larger budget or a larger max_ratio."
        )
    rng = np.random.default_rng(seed)
    rows, best_model, best, draws, seen = [], None, None, 0, set()
    while len(rows) < candidates:
        if draws >= 20 * candidates:
            message = (f"eagleeye drew {draws} ratio vectors and found {len(rows)} distinct candidates with FLOPs "
                       f"within [{window} x, 1 x] budget_flops={budget:,.0f}")
            if not rows:
                raise ValueError(message + ": lower `window` (the budget is too fine for this model's channel steps).")
            warnings.warn(message + f", not the {candidates} asked for; the model has few distinct cuts at this "
                          "budget. Returning the best of those.", UserWarning, stacklevel=2)
            break
        draws += 1
        u = rng.uniform(0.0, 1.0, len(sampler.keys))
        candidate, removed, flops, ratios = sampler.scaled(u, budget)
        if not window * budget <= flops <= budget or frozenset(removed) in seen:
            continue  # outside the window, or a cut already scored
        seen.add(frozenset(removed))
        plain = float(score(candidate, x_val, y_val))
        adapted = plain
        if adaptive_bn:
            adapt_in_place(candidate, _split(bn_inputs, batch_size))
            adapted = float(score(candidate, x_val, y_val))
        channels = _select.unions_to_channels(sampler.analysis, removed)
        widths = {name: int(len(ids) - len(channels.get(name, ()))) for name, ids in sampler.analysis.producers.items()}
        rows.append({"ratios": {k: round(v, 4) for k, v in ratios.items()}, "channels": channels, "widths": widths,
                     "flops": int(flops), "score": adapted, "score_without_adaptive_bn": plain})
        if best is None or adapted > rows[best]["score"]:
            best, best_model = len(rows) - 1, candidate
        if verbose:
            print(f"candidate {len(rows)}/{candidates}: {flops:,} FLOPs, score {adapted:.4f} "
                  f"(without adaptive BN {plain:.4f})")
    return best_model, EagleEyeReport(model.name, budget, rows, best, draws)
