"""Figures of what pruning did: sparsity per layer, channels kept, schedules, weights, sweeps, surgery.

matplotlib is an optional extra (``pip install "tfprune[plot]"``) and is
imported only when a function is called. Every function returns a
``matplotlib.figure.Figure`` built without pyplot (nothing is shown, no
global state is touched) and, given ``path``, also writes it as a PNG,
atomically: a temporary file in the same folder, renamed when complete.

Example:

```python
import tfprune.plots

tfprune.plots.plot_sparsity(tfprune.strip_pruning(pruned), path="sparsity.png")
```
"""

import pathlib

import keras
import numpy as np

from tfprune._common.files import atomic_path
from tfprune._common.layers import graph_layers

__all__ = [
    "plot_accuracy_vs_sparsity",
    "plot_channels",
    "plot_cluster_distance",
    "plot_schedule",
    "plot_sparsity",
    "plot_surgery_history",
    "plot_weight_histograms",
]


def plot_sparsity(model_or_report, path=None):
    """Horizontal bars: the sparsity of every prunable weight, labelled ``layer/weight``.

    Args:
        model_or_report: a Keras model (pruned or stripped) or a ``tfprune.SparsityReport``.
        path: also save a PNG here.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    fig = tfprune.plots.plot_sparsity(final, path="outputs/sparsity.png")
    ```
    """
    from tfprune._pruning.report import SparsityReport, sparsity_report

    report = model_or_report if isinstance(model_or_report, SparsityReport) else sparsity_report(model_or_report)
    rows = report.rows
    figure, axes = _figure(height=1.2 + 0.35 * max(len(rows), 1))
    labels = [f"{r['layer']}/{r['weight']}" for r in rows]
    values = [100.0 * r["sparsity"] for r in rows]
    bars = axes.barh(range(len(rows)), values, color="tab:blue")
    axes.set_yticks(range(len(rows)), labels)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("sparsity: weights that are zero (%)")
    axes.set_title(f"Sparsity of '{report.model_name}': {report.total_sparsity:.1%} of all parameters are zero")
    for bar, row in zip(bars, rows):
        axes.text(min(bar.get_width() + 1, 70), bar.get_y() + bar.get_height() / 2,
                  f"{row['nonzero']:,} of {row['params']:,} left", va="center", fontsize=8)
    return _finish(figure, path)


def plot_channels(before, after, path=None):
    """Grouped bars: output channels (or units) of each layer before and after structured pruning.

    Layers are matched by name (``tfprune.surgery.remove_channels`` keeps names).

    Args:
        before: the model before channel removal.
        after: the smaller model.
        path: also save a PNG here.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    slim = tfprune.structured.prune(model, "apoz", ratio=0.5, data=x_calibration)
    tfprune.plots.plot_channels(model, slim, path="channels.png")
    ```
    """
    widths_before, widths_after = _channel_widths(before), _channel_widths(after)
    names = [name for name in widths_before if name in widths_after]
    figure, axes = _figure(width=max(6.0, 0.7 * len(names) + 2))
    positions = np.arange(len(names))
    axes.bar(positions - 0.2, [widths_before[n] for n in names], 0.4, label="before", color="tab:gray")
    axes.bar(positions + 0.2, [widths_after[n] for n in names], 0.4, label="after", color="tab:green")
    axes.set_xticks(positions, names, rotation=45, ha="right")
    axes.set_ylabel("output channels / units")
    axes.set_title(f"Channels kept: {sum(widths_after[n] for n in names):,} of "
                   f"{sum(widths_before[n] for n in names):,}")
    axes.legend()
    return _finish(figure, path)


def plot_schedule(schedule, steps, history=None, path=None):
    """The target sparsity of a schedule over training steps, with measured sparsity overlaid.

    Args:
        schedule: a ``tfprune.PruningSchedule``.
        steps: draw steps ``0 .. steps``.
        history: a ``tfprune.SparsityHistory`` (or its ``history`` dict) from the same training.
        path: also save a PNG here.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    tfprune.plots.plot_schedule(schedule, 2000, history=history, path="schedule.png")
    ```
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"plot_schedule: `steps` must be a positive integer. Received: {steps!r}.")
    xs = np.arange(steps + 1)
    decisions = [schedule(int(s)) for s in xs]
    targets = np.array([100.0 * float(value) for _, value in decisions])
    figure, axes = _figure()
    axes.plot(xs, targets, color="tab:blue", label="target sparsity (schedule)")
    updates = [s for s, (due, _) in zip(xs, decisions) if due]
    if updates:
        axes.plot(updates, targets[updates], "|", color="tab:blue", markersize=10, label="mask updates")
    history = getattr(history, "history", history)
    if history:
        axes.plot(history["step"], [100.0 * s for s in history["sparsity"]], "o", color="tab:red",
                  label="measured sparsity")
    axes.set_xlabel("training step")
    axes.set_ylabel("sparsity (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"{type(schedule).__name__}: sparsity over training")
    axes.legend(loc="lower right")
    return _finish(figure, path)


def plot_weight_histograms(before, after, path=None, layers=None, bins=100):
    """Histograms of kernel values before and after pruning, one panel per layer.

    The zeros of the pruned model are not drawn (they would dwarf the rest):
    each panel says how many there are.

    Args:
        before: the dense model.
        after: the pruned (stripped or wrapped) model; layers matched by name.
        path: also save a PNG here.
        layers: names of the layers to draw (default: the first 6 with a kernel).
        bins: histogram bins.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    tfprune.plots.plot_weight_histograms(baseline, final, path="weights.png")
    ```
    """
    dense, pruned = _kernels(before), _kernels(after)
    names = list(layers) if layers is not None else [n for n in dense if n in pruned][:6]
    missing = [n for n in names if n not in dense or n not in pruned]
    if missing:
        raise ValueError(f"plot_weight_histograms: no kernel named {missing} in both models. "
                         f"Layers with kernels in both: {[n for n in dense if n in pruned]}.")
    figure = _new_figure(width=4.0 * len(names), height=3.2)
    for i, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), i + 1)
        values_after = pruned[name].ravel()
        nonzero = values_after[values_after != 0]
        edges = np.histogram_bin_edges(np.concatenate([dense[name].ravel(), nonzero]), bins=bins)
        axes.hist(dense[name].ravel(), bins=edges, alpha=0.5, color="tab:gray", label="before")
        axes.hist(nonzero, bins=edges, alpha=0.7, color="tab:blue", label="after (nonzero)")
        zeros = int(values_after.size - nonzero.size)
        axes.set_title(name)
        axes.text(0.02, 0.95, f"{zeros:,} zeros after", transform=axes.transAxes, va="top", fontsize=8)
        axes.set_xlabel("weight value")
        if i == 0:
            axes.set_ylabel("weights")
            axes.legend(fontsize=8, loc="upper right")
    return _finish(figure, path)


def plot_accuracy_vs_sparsity(results, path=None, baseline=None):
    """Accuracy against sparsity, one curve per method.

    Args:
        results: ``{label: [(sparsity, accuracy), ...]}``, or one list of pairs;
            sparsity in [0, 1].
        path: also save a PNG here.
        baseline: the dense model's accuracy, drawn as a dashed line.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    tfprune.plots.plot_accuracy_vs_sparsity(
        {"global": [(0.8, 0.983), (0.95, 0.980)], "layer": [(0.8, 0.982), (0.95, 0.975)]},
        baseline=0.981, path="sweep.png")
    ```
    """
    curves = results if isinstance(results, dict) else {"accuracy": results}
    figure, axes = _figure()
    for label, points in curves.items():
        points = sorted((float(s), float(a)) for s, a in points)
        axes.plot([100.0 * s for s, _ in points], [100.0 * a for _, a in points], "o-", label=label)
    if baseline is not None:
        axes.axhline(100.0 * baseline, color="black", linestyle="--", linewidth=1, label="dense baseline")
    axes.set_xlabel("sparsity (%)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy vs sparsity")
    axes.legend()
    return _finish(figure, path)


def plot_surgery_history(history, path=None):
    """Dynamic network surgery over time: sparsity, and connections pruned and spliced back.

    Args:
        history: a ``tfprune.SparsityHistory`` used in the surgery's ``fit``,
            or a dict of equal-length lists ``{"step", "sparsity", "pruned", "spliced"}``.
        path: also save a PNG here.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    history = tfprune.SparsityHistory(every_n_steps=100)
    surgery.fit(x, y, callbacks=[tfprune.UpdatePruningStep(), history])
    tfprune.plots.plot_surgery_history(history, path="surgery.png")
    ```
    """
    history = getattr(history, "history", history)
    lengths = {key: len(history.get(key, [])) for key in ("step", "sparsity", "pruned", "spliced")}
    if len(set(lengths.values())) != 1 or not lengths["step"]:
        raise ValueError(f"plot_surgery_history: `history` needs equal, non-empty lists; got lengths {lengths}.")
    figure = _new_figure(width=9.0, height=3.4)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.plot(history["step"], [100.0 * s for s in history["sparsity"]], color="tab:blue")
    left.set_xlabel("training step")
    left.set_ylabel("sparsity (%)")
    left.set_title("Sparsity during surgery")
    right.plot(history["step"], history["pruned"], color="tab:red", label="pruned")
    right.plot(history["step"], history["spliced"], color="tab:green", label="spliced back")
    right.set_xlabel("training step")
    right.set_ylabel("connections (cumulative)")
    right.set_title("Pruning and splicing")
    right.legend()
    return _finish(figure, path)


def plot_cluster_distance(history, path=None):
    """Centripetal SGD over time: how far the clustered filters still are from their cluster centres.

    C-SGD (Ding et al. 2019) shrinks each filter's deviation from its cluster's mean by
    ``1 - epsilon`` per step; the cut is exact once the distance has vanished. Log scale.

    Args:
        history: a ``tfprune.structured.CentripetalSGD`` used in ``fit``, or a dict of
            equal-length lists ``{"step", "cluster_distance"}`` (``"max_deviation"`` is
            drawn too when present).
        path: also save a PNG here.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:

    ```python
    csgd = tfprune.structured.CentripetalSGD(clusters, epsilon=0.02)
    model.fit(x, y, epochs=2, callbacks=[csgd])
    tfprune.plots.plot_cluster_distance(csgd, path="csgd.png")
    ```
    """
    history = getattr(history, "history", history)
    steps, distance = history.get("step", []), history.get("cluster_distance", [])
    if not steps or len(steps) != len(distance):
        raise ValueError(
            "plot_cluster_distance: `history` needs equal, non-empty lists 'step' and 'cluster_distance'; "
            f"got lengths {len(steps)} and {len(distance)}."
        )
    figure, axes = _figure(height=3.6)
    floor = np.finfo(np.float32).tiny  # a log axis cannot draw an exact 0
    axes.semilogy(steps, np.maximum(distance, floor), color="tab:blue", label="mean filter distance to its centre")
    worst = history.get("max_deviation")
    if worst is not None and len(worst) == len(steps):
        axes.semilogy(steps, np.maximum(worst, floor), color="tab:red", linestyle="--",
                      label="largest deviation of a tied weight (relative)")
    axes.set_xlabel("training step")
    axes.set_ylabel("distance (log scale)")
    axes.set_title("Centripetal SGD: the filters of each cluster converge")
    axes.legend()
    return _finish(figure, path)


# -- helpers -------------------------------------------------------------


def _new_figure(width=7.0, height=4.0):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "tfprune.plots needs matplotlib: pip install 'tfprune[plot]' (or pip install matplotlib)."
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def _figure(width=7.0, height=4.0):
    figure = _new_figure(width, height)
    return figure, figure.add_subplot(1, 1, 1)


def _finish(figure, path):
    if path is None:
        return figure
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"tfprune.plots: the folder '{path.parent}' does not exist; create it first.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        figure.savefig(f, format="png", dpi=120)
    return figure


def _layers(model):
    # The graph's own layers (nested models looked into): those have an output shape to plot.
    return [layer for layer in graph_layers(model) if not isinstance(layer, keras.Model)]


def _channel_widths(model):
    widths = {}
    for layer in _layers(model):
        inner = getattr(layer, "layer", layer)
        if any(hasattr(inner, attr) for attr in ("kernel", "depthwise_kernel", "pointwise_kernel")):
            widths[inner.name] = int(layer.output.shape[-1])
    return widths


def _kernels(model):
    from tfprune._pruning import PruningWrapper, masked_value

    kernels = {}
    for layer in _layers(model):
        inner = layer.layer if isinstance(layer, PruningWrapper) else layer
        kernel = getattr(inner, "kernel", None)
        if kernel is None or not hasattr(kernel, "shape"):
            continue
        mask = dict(zip(map(id, layer.pruned_weights), layer.masks)).get(id(kernel)) \
            if isinstance(layer, PruningWrapper) else None
        kernels[inner.name] = keras.ops.convert_to_numpy(kernel) if mask is None else masked_value(kernel, mask)
    return kernels
