"""Clusters of output channels for centripetal SGD: chosen (k-means or even split) and checked.

A clustering is a dict ``{layer_name: [[channel indices], ...]}``: a partition of each named
producer's output channels. Channels are identified by their channel union (see
``tfprune._graph``), so naming one member of a coupled group (a residual stream) clusters the
whole group, and two members named together must agree.
"""

import numbers
import warnings

import numpy as np

from tfprune._common.text import list_names
from tfprune._graph import SUPPORTED, ChannelAnalysis, output_filters

METHODS = ("kmeans", "even")


def cluster_filters(model, clusters, *, method="kmeans", seed=0, min_clusters=1):
    """Groups the output filters of each layer into clusters, for ``CentripetalSGD`` and ``csgd_cut``.

    Centripetal SGD (Ding, Ding, Guo and Han, "Centripetal SGD for Pruning Very Deep
    Convolutional Networks with Complicated Structure", CVPR 2019) starts by clustering the
    filters of each layer: the paper's k-means on the flattened filters (kernel slices) groups
    filters that are already alike, so pulling them together costs little; the even split
    (consecutive channels, as the paper's alternative) needs no weights. Coupled layers (the
    convolutions feeding one residual Add) are clustered alike: a channel of the stream is one
    point, described by the filters of every member that makes it.

    Args:
        model: a built Sequential or Functional Keras 3 model (it is only read).
        clusters: ``{layer_name: number of clusters}``, or a float in (0, 1]: the clusters of
            every layer as a fraction of its channels (``round(fraction * channels)``, at least
            ``min_clusters``). With a float, layers whose channels cannot be removed (the model's
            output layer, ...) are left alone; a layer only some of whose channels are blocked is
            left alone with a warning.
        method: ``"kmeans"`` or ``"even"``.
        seed: seed of the k-means initialisation (k-means++).
        min_clusters: with a float ``clusters``, every layer keeps at least this many.

    Returns:
        ``{layer_name: [[channel indices], ...]}`` for every clustered layer and every member of
        its coupled group; each list is a partition of the layer's channels, clusters ordered by
        their first channel.

    Raises:
        ValueError: an unknown layer, a layer that makes no channels of its own, a number of
            clusters below 1 or above the layer's channels, a layer whose channels cannot all be
            removed (named with the reason), or an unknown ``method``.

    Example:

    ```python
    clusters = tfprune.structured.cluster_filters(model, {"conv1": 8, "conv2": 16})
    clusters = tfprune.structured.cluster_filters(model, 0.5)   # half the channels of every layer
    ```
    """
    if method not in METHODS:
        raise ValueError(f"cluster_filters: `method` must be one of {', '.join(METHODS)}; got {method!r}.")
    analysis = ChannelAnalysis(model)
    groups = analysis.coupled_groups()
    counts = _counts(analysis, groups, clusters, min_clusters)
    result = {}
    for index, count in counts.items():
        group = groups[index]
        features = _features(analysis, group)
        labels = _even(len(group.unions), count) if method == "even" else kmeans(features, count, seed)
        by_root = dict(zip(group.unions.tolist(), labels.tolist()))
        for name in group.layers:
            result[name] = _channel_clusters(analysis.roots_of(name), by_root)
    return result


def _counts(analysis, groups, clusters, min_clusters):
    """``{group index: number of clusters}``."""
    group_of = {name: i for i, group in enumerate(groups) for name in group.layers}
    if isinstance(clusters, bool) or not isinstance(clusters, (numbers.Real, dict)):
        raise TypeError(
            "cluster_filters: `clusters` must be a dict {layer_name: number of clusters} or a float in (0, 1] "
            f"(clusters as a fraction of each layer's channels); got {type(clusters).__name__}."
        )
    if isinstance(clusters, dict):
        counts, named = {}, {}
        for name, count in clusters.items():
            i = _group_index(analysis, group_of, name, "clusters")
            group = groups[i]
            _check_free(analysis, group, name)
            width = len(group.unions)
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 1 <= count <= width:
                raise ValueError(
                    f"cluster_filters: `clusters['{name}']` must be an integer in [1, {width}] ('{name}' has "
                    f"{width} output channels{_coupled(group, name)}); got {count!r}."
                )
            if i in counts and counts[i] != count:
                raise ValueError(
                    f"cluster_filters: `clusters` gives {counts[i]} clusters to '{named[i]}' and {count} to "
                    f"'{name}', but they are coupled (clustered alike): give them the same number, or name one."
                )
            counts[i], named[i] = int(count), name
        return counts
    fraction = float(clusters)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"cluster_filters: a float `clusters` must be in (0, 1] (clusters per channel); got {clusters!r}.")
    if isinstance(min_clusters, bool) or not isinstance(min_clusters, numbers.Integral) or min_clusters < 1:
        raise ValueError(f"cluster_filters: `min_clusters` must be an integer >= 1; got {min_clusters!r}.")
    counts, partly = {}, {}
    for i, group in enumerate(groups):
        if group.blocked.all():
            continue  # no method can remove these channels (the model's outputs, ...): nothing to cluster
        if group.blocked.any():
            partly[group.layers[0]] = analysis.block_reason[group.unions[group.blocked][0]]
            continue
        width = len(group.unions)
        counts[i] = min(width, max(int(min_clusters), int(round(fraction * width))))
    if partly:
        warnings.warn(
            "cluster_filters: left alone, as some of their channels cannot be removed: "
            + "; ".join(f"'{name}' ({why})" for name, why in partly.items()),
            stacklevel=3,
        )
    return counts


def _coupled(group, name):
    others = [n for n in group.layers if n != name]
    return f", coupled with {list_names(others)}" if others else ""


def _group_index(analysis, group_of, name, argument):
    if name in group_of:
        return group_of[name]
    graph = analysis.graph
    if name in graph.nodes_by_name:
        kind = type(graph.nodes_by_name[name].operation).__name__
        raise ValueError(
            f"`{argument}` names '{name}' ({kind}), which does not make output channels of its own; name the "
            f"Conv or Dense layer before it. Layers that can be clustered: {list_names(analysis.producers)}."
        )
    raise ValueError(
        f"`{argument}` names '{name}', which is not a layer of model '{analysis.model.name}'. Layers that can be "
        f"clustered: {list_names(analysis.producers)}."
    )


def _check_free(analysis, group, name):
    """Every channel of the group must be removable: the cut merges all but one of each cluster."""
    if not group.blocked.any():
        return
    why = analysis.block_reason[group.unions[group.blocked][0]]
    supported = f" Layers a cut can pass through: {SUPPORTED}." if ("into" in why or "out of" in why) else ""
    raise ValueError(
        f"'{name}' cannot be clustered{_coupled(group, name)}: {int(group.blocked.sum())} of its "
        f"{len(group.unions)} channels cannot be removed, because {why}.{supported}"
    )


def _features(analysis, group):
    """One row per channel union of the group: the filters of every member that makes it, side by side."""
    position = {r: k for k, r in enumerate(group.unions.tolist())}
    blocks = []
    for name in group.layers:
        filters = output_filters(analysis.model.get_layer(name))
        if filters is None:
            continue
        block = np.zeros((len(position), filters.shape[1]))
        for channel, root in enumerate(analysis.roots_of(name).tolist()):
            block[position[root]] = filters[channel]
        blocks.append(block)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(position), 1))


def _even(n, k):
    """Consecutive channels in ``k`` clusters of nearly equal size."""
    return np.minimum((np.arange(n) * k) // n, k - 1)


def kmeans(points, k, seed=0, iterations=100):
    """Labels of ``points`` (rows) in ``k`` clusters: Lloyd's algorithm from a k-means++ start (Arthur &
    Vassilvitskii 2007: each next centre drawn with probability proportional to its squared distance
    to the nearest centre so far). An emptied cluster takes the point farthest from its centre.

    Example:

    ```python
    labels = kmeans(np.random.default_rng(0).normal(size=(32, 9)), 8)
    ```
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        # identical points leave no distance: then any point not yet a centre will do
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(points[rng.choice(n, p=p)])
    centres = np.array(centres)
    labels = None
    for _ in range(iterations):
        d2 = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
        new = d2.argmin(axis=1)
        for c in range(k):
            if not (new == c).any():
                far = d2[np.arange(n), new].argmax()
                new[far] = c
                d2[far] = 0.0
        if labels is not None and (new == labels).all():
            break
        labels = new
        centres = np.array([points[labels == c].mean(axis=0) for c in range(k)])
    return labels


def _channel_clusters(roots, by_root):
    """A layer's channels grouped by their union's label, clusters ordered by their first channel."""
    members = {}
    for channel, root in enumerate(roots.tolist()):
        members.setdefault(by_root[root], []).append(channel)
    return sorted(members.values(), key=lambda c: c[0])


class ClusterSpec:
    """A checked clustering, in channel unions: ``clusters`` (lists of root ids, the kept one first)."""

    def __init__(self, analysis, clusters):
        self.analysis = analysis
        self.clusters = clusters  # list of root-id lists with at least two members

    @property
    def removed(self):
        """The unions the cut removes: all but the first of each cluster."""
        return {r for cluster in self.clusters for r in cluster[1:]}


def resolve(analysis, clusters, caller):
    """Checks ``{layer_name: [[channels], ...]}`` against the model and returns a ``ClusterSpec``."""
    if not isinstance(clusters, dict) or not clusters:
        raise TypeError(
            f"{caller}: `clusters` must be a non-empty dict {{layer_name: [[channel indices], ...]}} (as "
            f"tfprune.structured.cluster_filters returns); got {type(clusters).__name__}."
        )
    groups = analysis.coupled_groups()
    group_of = {name: i for i, group in enumerate(groups) for name in group.layers}
    cluster_of = {}  # root -> (layer that named it, frozenset of roots)
    for name, partition in clusters.items():
        group = groups[_group_index(analysis, group_of, name, "clusters")]
        roots = analysis.roots_of(name)
        sets = _partition(name, partition, len(roots), caller)
        if any(len(s) > 1 for s in sets):
            _check_free(analysis, group, name)
        for channels in sets:
            members = frozenset(roots[sorted(channels)].tolist())
            for r in members:
                earlier = cluster_of.get(r)
                if earlier is not None and earlier[1] != members:
                    raise ValueError(
                        f"{caller}: `clusters` groups the channels of '{earlier[0]}' and '{name}' differently, but "
                        "they are coupled (their channels are tied, e.g. by a residual Add): give the same "
                        "clusters to both, or name one."
                    )
                cluster_of[r] = (name, members)
    unique = {members for _, members in cluster_of.values() if len(members) > 1}
    result = [sorted(members) for members in unique]
    result.sort(key=lambda c: c[0])
    spec = ClusterSpec(analysis, result)
    _check_consumers(analysis, spec, caller)
    return spec


def _partition(name, partition, width, caller):
    where = f"{caller}: `clusters['{name}']`"
    if isinstance(partition, (str, bytes)) or not hasattr(partition, "__iter__"):
        raise TypeError(f"{where} must be a list of clusters, each a list of channel indices; got {partition!r}.")
    sets, seen = [], set()
    for cluster in partition:
        if isinstance(cluster, (str, bytes)) or not hasattr(cluster, "__iter__"):
            raise TypeError(f"{where} must be a list of clusters, each a list of channel indices; got {cluster!r}.")
        channels = []
        for c in cluster:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, numbers.Integral):
                raise TypeError(f"{where} holds {c!r}; channel indices must be integers.")
            if not 0 <= int(c) < width:
                raise ValueError(f"{where} holds channel {int(c)}, but '{name}' has {width} output channels: "
                                 f"indices must be in [0, {width - 1}].")
            if int(c) in seen:
                raise ValueError(f"{where} puts channel {int(c)} in two clusters; each channel belongs to one.")
            seen.add(int(c))
            channels.append(int(c))
        if not channels:
            raise ValueError(f"{where} has an empty cluster; every cluster needs at least one channel.")
        sets.append(channels)
    if len(seen) != width:
        missing = sorted(set(range(width)) - seen)
        raise ValueError(f"{where} leaves out channel(s) {missing[:8]}; the clusters must cover all {width} "
                         f"channels of '{name}' (a channel alone is a cluster of one).")
    return sets


def _check_consumers(analysis, spec, caller):
    """Every layer reading a clustered channel must be able to fold it (a SeparableConv cannot)."""
    clustered = np.zeros(len(analysis.root), dtype=bool)
    for cluster in spec.clusters:
        clustered[cluster] = True
    for index, gnode in enumerate(analysis.graph.nodes):
        family = analysis.families[index]
        if not gnode.inputs or not family.produces:
            continue
        roots = analysis.root[analysis.ids[gnode.inputs[0]]]
        if not clustered[roots].any():
            continue
        reason = family.merge_reason(gnode.operation)
        if reason:
            raise ValueError(f"{caller}: these clusters cannot be merged, because {reason}. Leave out the layer "
                             "that feeds it.")
