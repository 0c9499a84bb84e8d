"""Channel scores computed from the weights alone: filter norms, FPGM, BatchNorm scale."""

import numpy as np

import keras

from tfprune.surgery import _layers


def _prunable(analysis):
    """Producers with at least one output channel that can be removed, in graph order."""
    return [name for name in analysis.producers if not analysis.blocked[analysis.roots_of(name)].all()]


def _layer(analysis, name):
    return analysis.graph.nodes_by_name[name].operation


def l1_scores(analysis):
    return {n: np.abs(_layers.filters(_layer(analysis, n))).sum(axis=1) for n in _prunable(analysis)}


def l2_scores(analysis):
    return {n: np.sqrt((_layers.filters(_layer(analysis, n)) ** 2).sum(axis=1)) for n in _prunable(analysis)}


def fpgm_scores(analysis):
    scores = {}
    for name in _prunable(analysis):
        f = _layers.filters(_layer(analysis, name)).astype(np.float64)
        sq = (f ** 2).sum(axis=1)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
        # Sum of distances to all other filters: smallest near the geometric median, i.e. the
        # filter best replaced by the others (He et al. 2019, eq. 6 relaxed to the sum).
        scores[name] = np.sqrt(dist2).sum(axis=1).astype(np.float32)
    return scores


def bn_scale_scores(analysis):
    """Mean |gamma| over every BatchNormalization a channel passes through (see ``bn_scale``)."""
    total = np.zeros(len(analysis.root))
    count = np.zeros(len(analysis.root))
    for index, gnode in enumerate(analysis.graph.nodes):
        layer = gnode.operation
        if analysis.kind[index] != "channelwise" or not isinstance(layer, keras.layers.BatchNormalization):
            continue
        if not layer.scale:
            continue
        gamma = np.abs(keras.ops.convert_to_numpy(layer.gamma))
        roots = analysis.root[analysis.ids[gnode.inputs[0]]]
        np.add.at(total, roots, gamma)
        np.add.at(count, roots, 1)
    scores = {}
    for name in _prunable(analysis):
        roots = analysis.roots_of(name)
        if count[roots].any():
            with np.errstate(invalid="ignore"):
                scores[name] = (total[roots] / count[roots]).astype(np.float32)  # NaN: no BN on that channel
    return scores
