"""AOFP: each layer's width found by a halving search judged on the next layer's output (Ding et al. 2019)."""

import math
import numbers
import warnings

import numpy as np

import keras

from tfprune._common.text import format_table
from tfprune._graph import ChannelAnalysis, output_filters, rebuild_model
from tfprune.structured import _samples
from tfprune.structured._flops import flops_report


class AOFPReport:
    """What ``aofp_prune`` found: each layer's width, the damage it left, the tolerance used.

    Attributes:
        model: name of the model searched.
        widths: ``{layer: (channels before, channels after)}`` for every layer searched.
        damage: ``{layer: relative change of the next layers' output}`` left by that layer's cut.
        left_alone: ``{layer: reason}`` for layers that could not be searched.
        tolerance: the tolerance of the search that produced the model.
        evaluations: how many masked next-layer outputs that search computed.
        flops_before, flops_after: multiply-adds of the model before and after.
        tried: ``[(tolerance, flops)]`` of every search run (several when a FLOP budget is met
            by raising the tolerance).

    Example:

    ```python
    smaller, report = tfprune.structured.aofp_prune(model, x_train[:256], tolerance=0.05)
    print(report)
    report.widths["conv1"]     # (32, 19)
    ```
    """

    def __init__(self, model, widths, damage, left_alone, tolerance, evaluations, flops_before, flops_after, tried):
        self.model, self.widths, self.damage, self.left_alone = model, widths, damage, left_alone
        self.tolerance, self.evaluations = tolerance, evaluations
        self.flops_before, self.flops_after, self.tried = flops_before, flops_after, tried

    def to_dict(self):
        return {"model": self.model, "widths": {k: list(v) for k, v in self.widths.items()},
                "damage": dict(self.damage), "left_alone": dict(self.left_alone), "tolerance": self.tolerance,
                "evaluations": self.evaluations, "flops_before": self.flops_before,
                "flops_after": self.flops_after, "tried": [list(t) for t in self.tried]}

    def __str__(self):
        rows = [(name, f"{a} -> {b}", f"{self.damage.get(name, 0.0):.4f}", "")
                for name, (a, b) in self.widths.items()]
        rows += [(name, "kept", "", reason) for name, reason in self.left_alone.items()]
        head = (f"AOFP on model '{self.model}': tolerance {self.tolerance:.4g}, {self.evaluations} evaluations, "
                f"FLOPs {self.flops_before:,} -> {self.flops_after:,}")
        return "\n".join([head] + format_table(("layer", "channels", "damage", "left alone because"), rows,
                                               right={2}))

    __repr__ = __str__


class _Layer:
    """One coupled group of the current model: its removable channels and the layers that read them."""

    def __init__(self, analysis, group, min_channels):
        self.analysis, self.group = analysis, group
        candidates = group.unions[~group.blocked]
        # Weakest filters (mean L1 over the group's layers) first, so a tested half holds like filters.
        l1 = np.zeros(len(analysis.root))
        count = np.zeros(len(analysis.root))
        for name in group.layers:
            filters = output_filters(analysis.graph.nodes_by_name[name].operation)
            np.add.at(l1, analysis.roots_of(name), np.abs(filters).sum(axis=1))
            np.add.at(count, analysis.roots_of(name), 1)
        order = candidates[np.argsort(l1[candidates] / np.maximum(count[candidates], 1), kind="stable")]
        self.candidates = order[:max(0, min(len(order), len(group.unions) - min_channels))]
        self.readers = []  # (next producer node, key of its input)
        for index, gnode in enumerate(analysis.graph.nodes):
            if not (analysis.cuts_through(index) and analysis.families[index].produces and gnode.inputs):
                continue
            key = gnode.inputs[0]
            if np.isin(analysis.root[analysis.ids[key]], group.unions).any():
                self.readers.append((gnode, key))

    def measure(self, model, inputs):
        """Caches each reader's input and output on ``inputs`` (the current model, nothing masked)."""
        graph = self.analysis.graph
        model_inputs = graph.functional.inputs
        probe = keras.Model(model_inputs[0] if len(model_inputs) == 1 else list(model_inputs),
                            [graph.tensors[key] for _, key in self.readers])
        # An eager call: the probe runs once, tracing a predict function for it would cost more
        values = probe(inputs[0] if len(inputs) == 1 else inputs, training=False)
        self.x = [np.asarray(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        self.y = [np.asarray(gnode.operation(x)) for (gnode, _), x in zip(self.readers, self.x)]
        self.scale = max(sum(float((y.astype(np.float64) ** 2).sum()) for y in self.y), 1e-30)
        self.roots = [self.analysis.root[self.analysis.ids[key]] for _, key in self.readers]

    def damage(self, masked):
        """Relative squared change of the readers' outputs when the unions ``masked`` feed them zeros."""
        total = 0.0
        for (gnode, _), x, y, roots in zip(self.readers, self.x, self.y, self.roots):
            keep = ~np.isin(roots, masked)
            changed = np.asarray(gnode.operation(x * keep.astype(x.dtype)))
            total += float(((changed.astype(np.float64) - y) ** 2).sum())
        return total / self.scale


def _search(layer, tolerance):
    """The unions to prune: a set is pruned whole if masking it (with those already pruned) stays
    within ``tolerance``; otherwise its two halves are searched, the weaker half first."""
    pruned, evaluations = [], 0

    def visit(subset):
        nonlocal evaluations
        if not len(subset):
            return
        evaluations += 1
        if layer.damage(np.concatenate([pruned, subset]).astype(np.int64)) <= tolerance:
            pruned.extend(subset.tolist())
        elif len(subset) > 1:
            half = len(subset) // 2
            visit(subset[:half])
            visit(subset[half:])

    visit(layer.candidates)
    final = layer.damage(np.asarray(pruned, dtype=np.int64)) if pruned else 0.0
    return pruned, evaluations, final


def _run(model, inputs, tolerance, min_channels):
    """One AOFP pass over every layer at ``tolerance``: ``(smaller model, widths, damage, left_alone, evaluations)``."""
    start = ChannelAnalysis(model)
    current = model  # only read until the first cut rebuilds it
    plan = [g.layers for g in start.coupled_groups() if not g.blocked.all()]
    widths, damage, left_alone, evaluations = {}, {}, {}, 0
    for members in plan:
        analysis = ChannelAnalysis(current)
        group = next(g for g in analysis.coupled_groups() if members[0] in g.layers)
        layer = _Layer(analysis, group, min_channels)
        if not layer.readers:
            for name in members:
                left_alone[name] = "no layer downstream reads its channels, so there is no next output to judge by"
            continue
        if not len(layer.candidates):
            for name in members:
                left_alone[name] = f"min_channels={min_channels} leaves nothing to search"
            continue
        layer.measure(current, inputs)
        pruned, count, final = _search(layer, tolerance)
        evaluations += count
        for name in members:
            width = len(analysis.roots_of(name))
            widths[name] = (width, width - int(np.isin(analysis.roots_of(name), pruned).sum()))
            damage[name] = final
        if pruned:
            current = rebuild_model(analysis, set(pruned))
    if current is model:
        current = rebuild_model(start, set())  # nothing cut: still a copy, never the user's model
    return current, widths, damage, left_alone, evaluations


def _positive(value, argument, allow_inf=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0
    if not ok or (math.isinf(value) and not allow_inf) or math.isnan(value):
        raise ValueError(f"`{argument}` must be a positive number; got {value!r}.")
    return float(value)


def aofp_prune(model, data, *, tolerance=0.05, budget_flops=None, min_channels=1, samples=256,
               search_steps=6, batch_size=256):
    """Approximated Oracle Filter Pruning: each layer's width found by a halving search.

    Ding, Ding, Guo, Han and Yan, "Approximated Oracle Filter Pruning for Destructive CNN Width
    Optimization", ICML 2019. The oracle would try removing every filter and measure the
    damage; AOFP approximates it layer by layer with a binary search over halves of the
    filters, judging a candidate set by how much the **next** layer's output changes when the
    set is masked. Here: ``damage(S) = sum ||Y_S - Y||^2 / sum ||Y||^2`` over ``samples``
    calibration inputs, where ``Y`` is the output of every layer that reads the channels
    (its own output, activation included) and ``Y_S`` the same with
    the channels of ``S`` (and those already pruned in this layer) fed as zeros, which is what
    removing them does to the next layer. The search starts with every removable filter but
    the ``min_channels`` strongest (by L1 norm) and sorts them weakest first: a set within
    ``tolerance`` is pruned whole; otherwise its two halves are searched in turn. Layers go in
    graph order, each judged on the model already cut before it; coupled layers (a residual
    stream) are searched as one. Unlike the paper, nothing is trained during the search: fine-tune
    the result.

    With ``budget_flops``, the tolerance is raised until the cut has at most that many FLOPs
    (multiplied by 4 until it does, then ``search_steps`` geometric bisection steps); the smallest
    tolerance found that meets the budget is used.

    Args:
        model: a built Sequential or Functional Keras 3 model (not modified).
        data: calibration inputs in any form ``channel_scores`` takes (``x``, ``(x, y)``, a
            dataset, ...); labels are not needed.
        tolerance: the largest relative damage a layer's cut may leave (> 0).
        budget_flops: optional target: at most this many multiply-adds (``flops_report``).
        min_channels: channels every layer keeps at least.
        samples: calibration inputs used for the damage.
        search_steps: bisection steps on the tolerance when ``budget_flops`` is given.
        batch_size: batch size for reading array data.

    Returns:
        ``(smaller model, AOFPReport)``; the model is compiled like ``model`` if it was.

    Raises:
        ValueError: bad arguments, no data, or a ``budget_flops`` that cannot be met even with
            every layer cut down to ``min_channels`` (the message gives both FLOP counts).

    Warns:
        UserWarning: a layer could not be searched because no layer that can be cut reads its
            channels (``report.left_alone`` says so too).

    Example:

    ```python
    smaller, report = tfprune.structured.aofp_prune(model, x_train[:512], tolerance=0.05)
    print(report)                                     # widths found per layer
    smaller, report = tfprune.structured.aofp_prune(model, x_train[:512], budget_flops=3_000_000)
    smaller.fit(x_train, y_train, epochs=1)           # fine-tune
    ```
    """
    ChannelAnalysis(model)  # an unbuilt or subclassed model fails here, before reading any data
    tolerance = _positive(tolerance, "tolerance")
    min_channels = _samples.check_count(min_channels, "min_channels")
    samples = _samples.check_count(samples, "samples")
    search_steps = _samples.check_count(search_steps, "search_steps", 0)
    if budget_flops is not None:
        budget_flops = _positive(budget_flops, "budget_flops")
    inputs, _ = _samples.take(model, data, samples, batch_size=batch_size)
    before = flops_report(model).total_flops
    tried = []

    def attempt(tol):
        result = _run(model, inputs, tol, min_channels)
        flops = flops_report(result[0]).total_flops
        tried.append((tol, flops))
        return result, flops

    result, flops = attempt(tolerance)
    used = tolerance
    if budget_flops is not None and flops > budget_flops:
        floor, floor_flops = attempt(math.inf)
        if floor_flops > budget_flops:
            raise ValueError(
                f"budget_flops={budget_flops:,.0f} cannot be met: model '{model.name}' has {before:,} FLOPs, and "
                f"cutting every layer down to min_channels={min_channels} still leaves {floor_flops:,}. Give a "
                "larger budget or a smaller min_channels."
            )
        low, high, best = tolerance, tolerance, None
        for _ in range(40):
            high *= 4
            candidate, candidate_flops = attempt(high)
            if candidate_flops <= budget_flops:
                best = (candidate, high)
                break
            low = high
        if best is None:
            best = (floor, math.inf)
        else:
            for _ in range(search_steps):
                middle = math.sqrt(low * high)
                candidate, candidate_flops = attempt(middle)
                if candidate_flops <= budget_flops:
                    best, high = (candidate, middle), middle
                else:
                    low = middle
        result, used = best
    smaller, widths, damage, left_alone, evaluations = result
    unread = [name for name, reason in left_alone.items() if reason.startswith("no layer downstream")]
    if unread:
        warnings.warn(
            f"aofp_prune: {', '.join(repr(n) for n in unread)} of model '{model.name}' kept every channel: no layer "
            "downstream that tfprune can cut reads their channels, so there is no next output to judge a cut by.",
            UserWarning, stacklevel=2,
        )
    report = AOFPReport(model.name, widths, damage, left_alone, used, evaluations, before,
                        flops_report(smaller).total_flops, tried)
    return smaller, report
