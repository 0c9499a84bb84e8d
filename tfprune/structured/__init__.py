"""Structured (channel) pruning: score channels, remove them, get a faster dense model.

Unstructured zeros shrink the file, but phones run dense kernels: to make a model faster,
whole channels must go. This package scores the output channels of every Conv/Dense layer,
selects the weakest, and removes them with ``tfprune.surgery.remove_channels``.

Score convention: **higher = more important**, for every method (APoZ is returned as
``1 - APoZ``). Coupled layers (residual Add, Multiply, ...) are ranked by the mean of their
members' scores.

Methods: ``l1_norm``, ``l2_norm`` (Li et al. 2017), ``fpgm`` (He et al. 2019), ``bn_scale``
(network slimming, Liu et al. 2017), ``apoz`` (Hu et al. 2016), ``entropy`` (Luo & Wu 2017),
``taylor`` (Molchanov et al. 2017). More criteria plug in: subclass ``WeightCriterion``
(``score(analysis)``) or ``DataCriterion`` (``update(activation, gradient)``, ``result()``)
and pass it to ``register_criterion``; ``criteria()`` lists every name.
Soft filter pruning (He et al. 2018) runs inside ``fit``: the ``SoftFilterPruning`` callback
zeroes the lowest-norm filters each epoch, lets them recover, and ``remove()`` cuts them.

Beyond one score per channel: ``nisp`` (Yu et al. 2018) propagates the outputs' importance back
through the graph (also the criterion ``"nisp"``); ``aofp_prune`` (Ding et al. 2019) finds each
layer's width by a halving search judged on the next layer's output; ``eagleeye`` (Li et al. 2020)
samples per-layer ratios under a FLOP budget and scores them after ``adapt_batchnorm``.

Example, network slimming then fine-tuning:

```python
import tfprune

sparse = tfprune.structured.set_slimming_penalty(model, l1=1e-4)
sparse.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
sparse.fit(x_train, y_train, epochs=5)
slim = tfprune.structured.prune(sparse, "bn_scale", ratio=0.6, scope="global", min_channels=4)
slim = tfprune.structured.set_slimming_penalty(slim, l1=0)
slim.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
slim.fit(x_train, y_train, epochs=2)
print(tfprune.structured.compare(model, slim))
```

The iterative recipe (score, remove a fraction, fine-tune, repeat) is ``iterative_prune``.
``prune(..., return_report=True)`` also returns a ``StructuredReport``: the channels cut per
layer and the layers left alone, with the reason; a ``prune`` that cuts nothing warns why.

Centripetal SGD (Ding et al. 2019) trains clusters of filters to be identical and then folds
them, with no loss: ``cluster_filters``, the ``CentripetalSGD`` callback, ``csgd_cut``.
"""

from tfprune.structured._flops import Comparison, FlopsReport, compare, flops_report
from tfprune.structured._criteria import Criterion, DataCriterion, WeightCriterion, criteria, register_criterion
from tfprune.structured._prune import iterative_prune, prune, select_channels
from tfprune.structured._scores import (
    METHODS,
    apoz,
    bn_scale,
    channel_scores,
    entropy,
    fpgm,
    l1_norm,
    l2_norm,
    taylor,
)
from tfprune.structured._slimming import set_slimming_penalty
from tfprune.structured._clusters import cluster_filters
from tfprune.structured._centripetal import CentripetalSGD
from tfprune.structured._csgd_cut import csgd_cut
from tfprune.structured._soft_filter import SoftFilterPruning
from tfprune.structured._nisp import nisp
from tfprune.structured._aofp import AOFPReport, aofp_prune
from tfprune.structured._eagleeye import EagleEyeReport, adapt_batchnorm, eagleeye
from tfprune._graph import StructuredReport

__all__ = [
    "AOFPReport",
    "aofp_prune",
    "EagleEyeReport",
    "adapt_batchnorm",
    "eagleeye",
    "CentripetalSGD",
    "cluster_filters",
    "csgd_cut",
    "METHODS",
    "Comparison",
    "Criterion",
    "DataCriterion",
    "FlopsReport",
    "StructuredReport",
    "apoz",
    "bn_scale",
    "channel_scores",
    "compare",
    "criteria",
    "entropy",
    "flops_report",
    "fpgm",
    "iterative_prune",
    "l1_norm",
    "l2_norm",
    "nisp",
    "prune",
    "register_criterion",
    "select_channels",
    "set_slimming_penalty",
    "taylor",
    "WeightCriterion",
    "SoftFilterPruning",
]
