"""The cut after centripetal SGD: one channel per cluster, the others folded into the next layers."""

import warnings

import numpy as np

from tfprune._graph import ChannelAnalysis, cut_report, rebuild_model
from tfprune.structured._centripetal import _Plan, occurrence_groups
from tfprune.structured._clusters import resolve


def csgd_cut(model, clusters, *, tolerance=1e-4, return_report=False):
    """Keeps one channel per cluster and adds the next layers' input weights of the others onto it.

    The cut of centripetal SGD (Ding, Ding, Guo and Han, "Centripetal SGD for Pruning Very Deep
    Convolutional Networks with Complicated Structure", CVPR 2019). After ``CentripetalSGD`` the
    channels of a cluster are identical (same filter, bias, BatchNorm parameters and statistics),
    so every layer reading them sees the same values on each: a Dense or Conv layer computes
    ``sum_j w_j x_j`` over the cluster's channels ``j``, which equals ``(sum_j w_j) x_kept``. So the
    kept channel's input weights become the sum over the cluster, the others are removed, and the
    outputs do not change: no fine-tuning is needed. This holds through BatchNormalization,
    activations, pooling and DepthwiseConv between producer and consumer (their per-channel entries
    are identical too), Flatten (each spatial position folds separately) and residual Adds (the
    stream's channels are clustered alike, and every layer reading the stream folds them).

    Each tied weight is first set to its cluster's mean (the channels' centre); if the clusters
    have not converged the cut changes the outputs, so it warns when a weight deviates from its
    centre by more than ``tolerance`` of its largest magnitude.

    Args:
        model: a built Sequential or Functional Keras 3 model; it is not modified.
        clusters: ``{layer_name: [[channel indices], ...]}``, as given to ``CentripetalSGD``; the
            first channel of each cluster is kept.
        tolerance: the largest relative deviation from the cluster centres accepted silently.
        return_report: also return a ``StructuredReport`` (channels cut per layer).

    Returns:
        A new, smaller model (compiled like ``model`` if it was), or ``(model, report)``.

    Raises:
        ValueError: as ``CentripetalSGD`` (an unknown layer, a bad partition, a layer whose channels
            cannot be removed or whose consumer cannot fold them).

    Example:

    ```python
    model.fit(x, y, epochs=3, callbacks=[tfprune.structured.CentripetalSGD(clusters, epsilon=0.02)])
    smaller = tfprune.structured.csgd_cut(model, clusters)
    np.testing.assert_allclose(model.predict(x), smaller.predict(x), atol=1e-4)
    ```
    """
    analysis = ChannelAnalysis(model)
    resolve(analysis, clusters, "csgd_cut")  # errors name the user's model before anything is copied
    copy = rebuild_model(analysis, set())
    copy_analysis = ChannelAnalysis(copy)
    spec = resolve(copy_analysis, clusters, "csgd_cut")
    plan = _Plan(spec, "csgd_cut")
    _, worst = plan.distances()
    if worst > tolerance:
        warnings.warn(
            f"csgd_cut: the clusters of '{model.name}' have not converged: a tied weight is {worst:.2g} of its "
            f"largest magnitude away from its cluster centre (tolerance {tolerance:g}), so the cut changes the "
            "outputs. Train longer with CentripetalSGD, or with a larger epsilon.",
            stacklevel=2,
        )
    plan.snap()
    _fold_consumers(copy_analysis, spec)
    smaller = rebuild_model(copy_analysis, spec.removed)
    if return_report:
        return smaller, cut_report(copy_analysis, spec.removed, default="not clustered")
    return smaller


def _fold_consumers(analysis, spec):
    """Adds, in every layer reading clustered channels, the input weights of each cluster onto its kept one."""
    for index, gnode in enumerate(analysis.graph.nodes):
        family = analysis.families[index]
        if not gnode.inputs or not family.produces or not analysis.cuts_through(index):
            continue
        roots = analysis.root[analysis.ids[gnode.inputs[0]]]
        groups = occurrence_groups(roots, spec.clusters)
        if groups:
            family.merge_inputs(gnode.operation, [np.asarray(g) for g in groups])
