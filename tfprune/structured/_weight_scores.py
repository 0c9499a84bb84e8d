"""Channel criteria computed from the weights alone: filter norms, FPGM, BatchNorm scale."""

import numpy as np

import keras

from tfprune.structured._criteria import WeightCriterion, prunable


class L1Norm(WeightCriterion):
    """L1 norm of each filter (Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for
    Efficient ConvNets", ICLR 2017). Higher = more important."""

    name = "l1_norm"

    def score(self, analysis):
        return {n: np.abs(self.filters(layer)).sum(axis=1) for n, layer in self.prunable_layers(analysis)}


class L2Norm(WeightCriterion):
    """L2 norm of each filter (the L2 variant in Li et al. 2017, "Pruning Filters for
    Efficient ConvNets"). Higher = more important."""

    name = "l2_norm"

    def score(self, analysis):
        return {n: np.sqrt((self.filters(layer) ** 2).sum(axis=1)) for n, layer in self.prunable_layers(analysis)}


class FPGM(WeightCriterion):
    """Filter Pruning via Geometric Median (He, Liu, Wang, Hu and Yang, "Filter Pruning via
    Geometric Median for Deep Convolutional Neural Networks Acceleration", CVPR 2019): each
    filter's summed distance to the layer's others. Higher = more important."""

    name = "fpgm"

    def score(self, analysis):
        scores = {}
        for name, layer in self.prunable_layers(analysis):
            f = self.filters(layer).astype(np.float64)
            sq = (f ** 2).sum(axis=1)
            dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
            # Sum of distances to all other filters: smallest near the geometric median, i.e. the
            # filter best replaced by the others (He et al. 2019, eq. 6 relaxed to the sum).
            scores[name] = np.sqrt(dist2).sum(axis=1).astype(np.float32)
        return scores


class BNScale(WeightCriterion):
    """Mean |gamma| over every BatchNormalization a channel passes through (Liu, Li, Shen,
    Huang, Yan and Zhang, "Learning Efficient Convolutional Networks through Network
    Slimming", ICCV 2017). Higher = more important."""

    name = "bn_scale"

    def score(self, analysis):
        total = np.zeros(len(analysis.root))
        count = np.zeros(len(analysis.root))
        for index, gnode in enumerate(analysis.graph.nodes):
            layer = gnode.operation
            if not (isinstance(layer, keras.layers.BatchNormalization) and analysis.cuts_through(index)):
                continue
            if not layer.scale:
                continue
            gamma = np.abs(keras.ops.convert_to_numpy(layer.gamma))
            roots = analysis.root[analysis.ids[gnode.inputs[0]]]
            np.add.at(total, roots, gamma)
            np.add.at(count, roots, 1)
        scores = {}
        for name in prunable(analysis):
            roots = analysis.roots_of(name)
            if count[roots].any():
                with np.errstate(invalid="ignore"):
                    scores[name] = (total[roots] / count[roots]).astype(np.float32)  # NaN: no BN on that channel
        return scores
