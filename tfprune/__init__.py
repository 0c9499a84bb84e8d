"""tfprune: pruning for Keras 3 on TensorFlow, with export to sparse, quantized TFLite.

The public API is what this module exports, plus its subpackages:
``tfprune.structured`` (channel scores, network slimming, ``prune``),
``tfprune.surgery`` (``remove_channels``), ``tfprune.export``
(``to_tflite``), ``tfprune.plots`` and ``tfprune.datasets``. Modules with a
leading underscore are private.

Example:

```python
import tfprune

pruned = tfprune.prune_low_magnitude(
    model,
    pruning_schedule=tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000),
)
pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
pruned.fit(x, y, epochs=2, callbacks=[tfprune.UpdatePruningStep()])
final = tfprune.strip_pruning(pruned)
print(tfprune.sparsity_report(final))
```
"""

__version__ = "0.2.0"

import keras as _keras

if _keras.backend.backend() != "tensorflow":  # pragma: no cover
    raise ImportError(
        "tfprune needs Keras's TensorFlow backend, but KERAS_BACKEND is "
        f"'{_keras.backend.backend()}'. Set KERAS_BACKEND=tensorflow before importing keras."
    )

from tfprune._pruning import (  # the user-facing names of the pruning package's face
    ConstantSparsity,
    DynamicSurgery,
    KeepMasks,
    PolynomialDecay,
    PrunableLayer,
    PruneForLatencyOnXNNPack,
    PruneLowMagnitude,
    PruningPolicy,
    PruningSchedule,
    PruningSummaries,
    PruningWrapper,
    SparsityHistory,
    SparsityReport,
    UpdatePruningStep,
    dynamic_surgery,
    dynamic_surgery_c,
    dynamic_surgery_c_for_sparsity,
    masks_of,
    prunable_weights,
    prune_low_magnitude,
    prune_scope,
    prune_with_masks,
    sparsity_report,
    strip_pruning,
    LotteryHistory,
    LotteryTicket,
    grasp_masks,
    snip_masks,
    synflow_masks,
    DynamicSparseTraining,
    RigL,
    SET,
    random_masks,
    ERK,
    GlobalMagnitude,
    LAMP,
    LayerUniform,
    SparsityAllocation,
    GlobalSparseMomentum,
    gsm_compression,
    gsm_cut,
)

# Subpackages, reachable as tfprune.export.to_tflite, tfprune.structured.prune, ...
from tfprune import datasets, export, plots, structured, surgery  # noqa: E402  (after the names they import)

__all__ = [
    "ConstantSparsity",
    "DynamicSurgery",
    "KeepMasks",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningWrapper",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "SparsityHistory",
    "SparsityReport",
    "UpdatePruningStep",
    "dynamic_surgery",
    "dynamic_surgery_c",
    "dynamic_surgery_c_for_sparsity",
    "masks_of",
    "prunable_weights",
    "prune_low_magnitude",
    "prune_scope",
    "prune_with_masks",
    "sparsity_report",
    "strip_pruning",
    "LotteryHistory",
    "LotteryTicket",
    "grasp_masks",
    "snip_masks",
    "synflow_masks",
    "DynamicSparseTraining",
    "RigL",
    "SET",
    "random_masks",
    "ERK",
    "GlobalMagnitude",
    "LAMP",
    "LayerUniform",
    "SparsityAllocation",
    "GlobalSparseMomentum",
    "gsm_compression",
    "gsm_cut",
]
