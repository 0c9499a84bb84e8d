"""``sparsity_report``: how many weights each layer has, and how many are zero."""

import json

import keras
import numpy as np

from tfprune._common.layers import walk_layers
from tfprune._common.text import format_table
from tfprune._pruning import registry
from tfprune._pruning.allocation import nearly_empty
from tfprune._pruning.base import PruningWrapper, masked_value


class SparsityReport:
    """Per-layer counts of weights and nonzeros; print it or call ``to_dict()``.

    Rows cover the prunable weights (kernels, embeddings, recurrent kernels)
    of every layer, wrapped or plain, so the report of a pruned model and of
    its stripped copy line up. ``total_*`` counts every parameter of the
    model, biases and normalisation included.

    Example:

    ```python
    report = tfprune.sparsity_report(model)
    print(report)
    report.to_dict()["layers"][0]["sparsity"]
    ```
    """

    def __init__(self, model_name, rows, total_params, total_nonzero):
        self.model_name = model_name
        self.rows = rows
        self.total_params = total_params
        self.total_nonzero = total_nonzero

    @property
    def nearly_empty(self):
        """The rows of weights pruned to almost nothing (under 1% kept, or under 8 weights and 10%)."""
        return [r for r in self.rows if nearly_empty(r["nonzero"], r["params"])]

    @property
    def total_sparsity(self):
        return 1.0 - self.total_nonzero / self.total_params if self.total_params else 0.0

    def to_dict(self):
        return {
            "model": self.model_name,
            "layers": [dict(row) for row in self.rows],
            "total_params": self.total_params,
            "total_nonzero": self.total_nonzero,
            "total_sparsity": self.total_sparsity,
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self):
        header = ("layer", "class", "weight", "shape", "params", "nonzero", "sparsity")
        lines = [
            (r["layer"], r["class"], r["weight"], "x".join(map(str, r["shape"])),
             f"{r['params']:,}", f"{r['nonzero']:,}", f"{r['sparsity']:.2%}")
            for r in self.rows
        ]
        lines.append(("all parameters", "", "", "", f"{self.total_params:,}", f"{self.total_nonzero:,}",
                      f"{self.total_sparsity:.2%}"))
        table = format_table(header, lines, right={4, 5, 6})
        # The totals line sits under a second rule.
        notes = [f"note: {r['layer']} {r['weight']} keeps {r['nonzero']:,} of {r['params']:,} weights: pruned to almost "
                 "nothing. Keep it denser with granularity=tfprune.LAMP(min_density=0.05), dense_layers=[...] or "
                 "keep_first_last=True (docs/howto/allocation.md)." for r in self.nearly_empty]
        return "\n".join([f"Sparsity of '{self.model_name}'"] + table[:-1] + [table[1], table[-1]] + notes)

    def __repr__(self):
        return f"<SparsityReport '{self.model_name}': {len(self.rows)} weights, {self.total_sparsity:.2%} sparse>"


def sparsity_report(model):
    """Counts weights and nonzeros per layer of a pruned, stripped or plain model.

    Args:
        model: a Keras model (wrapped by ``prune_low_magnitude`` or not).

    Returns:
        A ``tfprune.SparsityReport``: ``print`` it for a table, or use
        ``to_dict()`` / ``to_json()``.

    Example:

    ```python
    print(tfprune.sparsity_report(tfprune.strip_pruning(pruned)))
    ```
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"sparsity_report: `model` must be a Keras model or layer. Received: {type(model).__name__}.")
    rows = []
    for layer in _units(model):
        inner = layer.layer if isinstance(layer, PruningWrapper) else layer
        weights = (layer.pruned_weights if isinstance(layer, PruningWrapper)
                   else registry.prunable_weights(inner, explicit=True)) or []
        masks = dict(zip(map(id, layer.pruned_weights), layer.masks)) if isinstance(layer, PruningWrapper) else {}
        for weight in weights:
            value = _effective(weight, masks)
            nonzero = int(np.count_nonzero(value))
            rows.append({
                "layer": inner.name,
                "class": type(inner).__name__,
                "weight": registry.weight_label(weight, inner),
                "shape": list(value.shape),
                "params": int(value.size),
                "nonzero": nonzero,
                "sparsity": 1.0 - nonzero / value.size if value.size else 0.0,
            })
    masks = {id(w): m for wrapper in _units(model) if isinstance(wrapper, PruningWrapper)
             for w, m in zip(wrapper.pruned_weights, wrapper.masks)}
    all_values = [_effective(w, masks) for w in _model_params(model)]
    total = int(sum(v.size for v in all_values))
    nonzero = int(sum(np.count_nonzero(v) for v in all_values))
    return SparsityReport(model.name, rows, total, nonzero)


def _units(model):
    """The layers whose prunable weights make the rows, each weight once.

    A wrapper, or a layer tfprune prunes as one (an attention layer, a block that owns
    layers), is a row owner: nothing inside it is listed again. Models are looked into.
    """
    if not isinstance(model, keras.Model):
        return [model]

    def descend(layer):
        return isinstance(layer, keras.Model) or not (
            isinstance(layer, PruningWrapper) or registry.can_prune(layer, explicit=True))

    return [layer for layer in walk_layers(model, descend=descend) if not isinstance(layer, keras.Model)]


def _model_params(model):
    # Masks, thresholds and steps are bookkeeping, not parameters of the network.
    bookkeeping = {id(v) for w in walk_layers(model) if isinstance(w, PruningWrapper)
                   for v in w.bookkeeping_variables()}
    return [v for v in model.weights if id(v) not in bookkeeping]


def _effective(weight, masks):
    """The weight as the forward pass uses it: times its mask (dynamic surgery keeps pruned values)."""
    mask = masks.get(id(weight))
    return keras.ops.convert_to_numpy(weight) if mask is None else masked_value(weight, mask)
