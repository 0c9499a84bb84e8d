"""Masks decided elsewhere, held fixed while the model trains.

Pruning at initialisation (SNIP, GraSP, SynFlow) and lottery tickets decide
which connections survive before training starts; dynamic sparse training
(SET, RigL) starts from such masks and moves them itself. Each produces 0/1
masks keyed by weight; training then only has to keep the pruned weights at
exactly zero, which is what ``PruneLowMagnitude`` already does through the
weight's constraint. ``prune_with_masks`` therefore wraps the model as
magnitude pruning does, with the ``KeepMasks`` schedule (never due), and
stores the given masks: training, saving, resuming, ``strip_pruning`` and
export work as for any pruned model.

Masks are keyed ``"<layer name>/<weight>"``, e.g. ``"dense_1/kernel"`` or
``"lstm/lstm_cell/recurrent_kernel"``, the labels ``prunable_weights`` gives.
"""

import keras
import numpy as np

from tfprune._common.layers import graph_layers, walk_layers
from tfprune._pruning import registry
from tfprune._pruning.api import PruningPolicy, prune_low_magnitude
from tfprune._pruning.base import _PACKAGE, PruningWrapper
from tfprune._pruning.schedules import PruningSchedule, _check_sparsity


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KeepMasks(PruningSchedule):
    """A schedule that never recomputes masks: they stay as ``prune_with_masks`` set them.

    Args:
        sparsity: the sparsity the masks were made for, reported as the
            target (by ``PruningSummaries`` and the history); the masks
            themselves are never changed by it.

    Example:

    ```python
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.KeepMasks(0.9))
    ```
    """

    def __init__(self, sparsity=0.0):
        _check_sparsity("sparsity", sparsity, "KeepMasks")
        self.sparsity = float(sparsity)

    def __call__(self, step):
        return False, self.sparsity

    def get_config(self):
        return {"sparsity": self.sparsity}


def prunable_weights(model):
    """``{label: variable}`` of the weights ``prune_low_magnitude(model)`` would prune, in model order.

    The labels are the keys ``prune_with_masks`` reads. For a model already
    wrapped for pruning, the wrappers' pruned weights.

    Example:

    ```python
    weights = tfprune.prunable_weights(model)
    masks = {label: np.abs(w.numpy()) > 0.01 for label, w in weights.items()}
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"prunable_weights: `model` must be a keras Model. Received: {type(model).__name__}.")
    found = {}
    for layer in graph_layers(model):  # the layers a model-wide prune_low_magnitude wraps
        if isinstance(layer, PruningWrapper):
            owner, weights = layer.layer, layer.pruned_weights
        elif registry.can_prune(layer) and not isinstance(layer, keras.Model):
            owner, weights = layer, registry.prunable_weights(layer)
        else:
            continue
        for weight in weights:
            found[f"{owner.name}/{registry.weight_label(weight, owner)}"] = weight
    return found


def masks_of(model):
    """``{label: 0/1 float32 array}``: the current masks of a model wrapped for pruning.

    Example:

    ```python
    masks = tfprune.masks_of(pruned)          # e.g. after training a lottery-ticket round
    ticket = tfprune.prune_with_masks(rewound_model, masks)
    ```
    """
    masks = {}
    for wrapper in _wrappers(model):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            label = f"{wrapper.layer.name}/{registry.weight_label(weight, wrapper.layer)}"
            masks[label] = keras.ops.convert_to_numpy(mask).astype(np.float32)
    if not masks:
        raise ValueError(f"masks_of: model '{model.name}' has no pruning wrappers; prune it first.")
    return masks


def prune_with_masks(model, masks, **kwargs):
    """A copy of ``model`` wrapped for pruning, with the given masks held fixed while it trains.

    Only the layers named in ``masks`` are wrapped. Each masked weight is
    multiplied by its mask at once and stays exactly zero where the mask is 0
    (the optimizer's update is masked too), until ``strip_pruning``. Train it
    with ``tfprune.UpdatePruningStep`` like any pruned model.

    Args:
        model: a built Sequential, Functional or subclassed Keras model.
            It is not modified.
        masks: ``{label: array}``, one 0/1 (or boolean) array per weight, of
            that weight's shape; labels as ``tfprune.prunable_weights(model)``
            gives them. Every pruned weight of a named layer needs a mask.
        **kwargs: passed on to ``tfprune.prune_low_magnitude`` (for example
            ``pruning_policy`` is not accepted: ``masks`` chooses the layers).

    Returns:
        The wrapped copy.

    Raises:
        ValueError: a label that names no prunable weight, a layer with a
            weight left out, a mask of the wrong shape or with values other
            than 0 and 1.

    Example:

    ```python
    weights = tfprune.prunable_weights(model)
    masks = {label: np.random.rand(*w.shape) > 0.9 for label, w in weights.items()}
    sparse = tfprune.prune_with_masks(model, masks)
    sparse.compile("adam", "sparse_categorical_crossentropy")
    sparse.fit(x, y, callbacks=[tfprune.UpdatePruningStep()])
    ```
    """
    checked = _checked_masks(model, masks)
    layers = {label.split("/", 1)[0] for label in checked}

    class _Named(PruningPolicy):
        def allow_pruning(self, layer):
            return layer.name in layers

    if "pruning_policy" in kwargs or "pruning_schedule" in kwargs:
        raise ValueError("prune_with_masks: `masks` choose the layers and stay fixed, so `pruning_policy` and "
                         "`pruning_schedule` cannot be given. Use prune_low_magnitude for a schedule.")
    kept = sum(float(m.sum()) for m in checked.values())
    total = sum(m.size for m in checked.values())
    pruned = prune_low_magnitude(model, pruning_schedule=KeepMasks(min(1.0 - kept / total, 0.999999)),
                                 pruning_policy=_Named(), **kwargs)
    set_masks(pruned, checked)
    return pruned


def set_masks(pruned, masks):
    """Stores ``masks`` (``{label: array}``) in the wrappers of ``pruned`` and zeroes the weights they cut.

    Labels not given keep their masks. The caller checked the masks (``prune_with_masks``)
    or made them from the model's own weights.
    """
    for wrapper in _wrappers(pruned):
        labels = [f"{wrapper.layer.name}/{registry.weight_label(w, wrapper.layer)}" for w in wrapper.pruned_weights]
        if not any(label in masks for label in labels):
            continue
        current = [keras.ops.convert_to_numpy(m) for m in wrapper.masks]
        new = [np.asarray(masks[label], np.float32) if label in masks else old for label, old in zip(labels, current)]
        wrapper.assign_masks(new, [0.0] * len(new))


def _wrappers(model):
    if isinstance(model, PruningWrapper):
        return [model]
    return [layer for layer in walk_layers(model) if isinstance(layer, PruningWrapper)]


def _checked_masks(model, masks):
    """``masks`` as float32 0/1 arrays, checked against the model's prunable weights."""
    if not isinstance(masks, dict) or not masks:
        raise ValueError(
            "prune_with_masks: `masks` must be a non-empty dict {label: 0/1 array}, labels as "
            f"tfprune.prunable_weights(model) gives them. Received: {type(masks).__name__}."
        )
    weights = prunable_weights(model)
    unknown = [label for label in masks if label not in weights]
    if unknown:
        raise ValueError(
            f"prune_with_masks: no prunable weight of model '{model.name}' is labelled {unknown[:5]}. "
            f"Its labels: {list(weights)[:20]}."
        )
    named = {label.split("/", 1)[0] for label in masks}
    missing = [label for label in weights if label.split("/", 1)[0] in named and label not in masks]
    if missing:
        raise ValueError(
            f"prune_with_masks: `masks` names the layers of {missing[:5]} but gives no mask for them. Give one "
            "for every pruned weight of a named layer (np.ones(shape) keeps a weight whole)."
        )
    checked = {}
    for label, mask in masks.items():
        value = np.asarray(mask)
        shape = tuple(weights[label].shape)
        if value.shape != shape:
            raise ValueError(f"prune_with_masks: the mask of '{label}' has shape {value.shape}; the weight "
                             f"has shape {shape}.")
        value = value.astype(np.float32)
        if not np.all((value == 0) | (value == 1)):
            raise ValueError(f"prune_with_masks: the mask of '{label}' must hold only 0 and 1 (or booleans).")
        checked[label] = value
    return checked
