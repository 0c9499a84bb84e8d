"""Which weights of which Keras layers are pruned.

Pruning applies to the large multiplicative weights (kernels, embeddings,
recurrent kernels). Biases, normalisation parameters and depthwise kernels
are tiny and sensitive, so they are left alone; a DepthwiseConv2D is pruned
only when the user passes that layer explicitly.
"""

import keras

from tfprune._common import keras_internals
from tfprune._graph import family_of


class PrunableLayer:
    """Mixin for a custom layer that tells tfprune which weights to prune.

    Implement ``get_prunable_weights()`` returning the layer's variables to
    mask. tfprune wraps such a layer like a built-in one.

    Example:

    ```python
    class MyDense(keras.layers.Dense, tfprune.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]

    model = keras.Sequential([keras.Input((8,)), MyDense(4)])
    pruned = tfprune.prune_low_magnitude(model)
    ```
    """

    def get_prunable_weights(self):
        raise NotImplementedError(
            f"{type(self).__name__} inherits tfprune.PrunableLayer and must implement "
            "get_prunable_weights(), returning the variables to prune."
        )


# Layer class -> attribute names of the variables to prune. Order matters:
# masks are saved in this order.
_WEIGHT_ATTRS = {
    keras.layers.Dense: ("kernel",),
    keras.layers.EinsumDense: ("kernel",),
    keras.layers.Conv1D: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.Conv3D: ("kernel",),
    keras.layers.Conv1DTranspose: ("kernel",),
    keras.layers.Conv2DTranspose: ("kernel",),
    keras.layers.Conv3DTranspose: ("kernel",),
    keras.layers.SeparableConv1D: ("pointwise_kernel",),
    keras.layers.SeparableConv2D: ("pointwise_kernel",),
    keras.layers.Embedding: ("embeddings",),
}
_OPT_IN_ATTRS = {
    keras.layers.DepthwiseConv1D: ("kernel",),
    keras.layers.DepthwiseConv2D: ("kernel",),
}
SUPPORTED_LAYERS = (
    "Dense, EinsumDense, Conv1D/2D/3D and their Transpose, SeparableConv1D/2D (pointwise), "
    "DepthwiseConv1D/2D (when passed explicitly), Embedding, LSTM/GRU/SimpleRNN/RNN of such "
    "cells, MultiHeadAttention, Bidirectional and TimeDistributed of these, or a layer "
    "implementing tfprune.PrunableLayer.get_prunable_weights()"
)


def declares_prunable_weights(layer):
    """Whether ``layer`` says itself which weights to prune: a ``PrunableLayer``, or any object with a
    ``get_prunable_weights()`` method (tfmot accepts both)."""
    return isinstance(layer, PrunableLayer) or callable(getattr(layer, "get_prunable_weights", None))


def _lookup(table, layer):
    # Exact class first: SeparableConv and the Transpose convs subclass the
    # plain convs in some Keras versions, and need their own entry.
    if type(layer) in table:
        return table[type(layer)]
    for cls, attrs in table.items():
        if isinstance(layer, cls):
            return attrs
    return None


def prunable_weights(layer, explicit=False):
    """The variables of ``layer`` to prune, or ``None`` if it has none.

    ``explicit`` is True when the user named this very layer (opt-in kinds
    such as DepthwiseConv2D are pruned then only). A layer that owns layers
    (a custom block, a model inside a layer) gives its sublayers' weights.
    """
    if declares_prunable_weights(layer):
        return list(layer.get_prunable_weights())
    if isinstance(layer, keras.layers.Bidirectional):
        return _join(prunable_weights(layer.forward_layer), prunable_weights(layer.backward_layer))
    if isinstance(layer, keras.layers.TimeDistributed):
        return prunable_weights(layer.layer, explicit)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        parts = keras_internals.attention_projections(layer)
        return _join(*(prunable_weights(p) for p in parts))
    if isinstance(layer, keras.layers.RNN):
        return _cell_weights(layer.cell)
    attrs = _lookup(_WEIGHT_ATTRS, layer)
    if attrs is None and explicit:
        attrs = _lookup(_OPT_IN_ATTRS, layer)
    if attrs is not None:
        return [getattr(layer, a) for a in attrs]
    return _owned_weights(layer)


def _owned_weights(layer):
    """The prunable weights of the sublayers of a layer that owns layers, each once, or None."""
    weights = []
    for sub in sublayers(layer):
        if not can_prune(sub):
            continue
        if not sub.built:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) holds the sublayer '{sub.name}' "
                f"({type(sub).__name__}), which is not built, so its weights do not exist yet. Call the "
                "model on a batch (or build it) before pruning, or give the layer a build() that builds it."
            )
        weights.extend(prunable_weights(sub) or [])
    unique = list({id(w): w for w in weights}.values())
    return unique or None


def sublayers(layer):
    """The layers ``layer`` holds directly (its attributes, lists and dicts of layers)."""
    if not isinstance(layer, keras.layers.Layer):
        return []
    return keras_internals.tracked_sublayers(layer, recursive=False)


def _cell_weights(cell):
    if declares_prunable_weights(cell):
        return list(cell.get_prunable_weights())
    if isinstance(cell, keras.layers.StackedRNNCells):
        return _join(*(_cell_weights(c) for c in cell.cells))
    if hasattr(cell, "kernel") and hasattr(cell, "recurrent_kernel"):
        return [cell.kernel, cell.recurrent_kernel]
    return None


def _join(*parts):
    weights = [w for part in parts if part for w in part]
    return weights or None


def input_axes(layer, weight):
    """Axes of ``weight`` that run along the layer's input features.

    m:n sparsity groups weights along these axes, as sparse tensor cores and
    TFLite read them. Returns ``None`` where the input dimension is not one
    axis (Embedding: a table, not a product with an input vector). The axis
    of a Conv/Dense-like kernel is its layer family's ``input_axis``, the
    one table ``tfprune.surgery`` cuts by too.
    """
    owner = _owner(layer, weight) or layer
    if isinstance(owner, keras.layers.Embedding):
        return None
    if isinstance(owner, keras.layers.MultiHeadAttention):
        if weight is owner.output_dense.kernel:
            return None  # (heads, key_dim, out): the input is two axes
        return 0
    if isinstance(owner, keras.layers.EinsumDense):
        return 0 if len(weight.shape) == 2 else None
    family = family_of(owner)
    if family.kernel is not None and getattr(owner, family.kernel, None) is weight:
        return family.input_axis % len(weight.shape)
    # Recurrent kernels (inputs, 4 * units) and PrunableLayer weights: Keras's (..., in, out) layout.
    return len(weight.shape) - 2 if len(weight.shape) >= 3 else 0


def _owner(layer, weight):
    """The innermost layer below ``layer`` whose own prunable weight ``weight`` is (``layer`` itself first)."""
    if isinstance(layer, (keras.layers.MultiHeadAttention, keras.layers.RNN)) or declares_prunable_weights(layer):
        return layer
    if isinstance(layer, (keras.layers.Bidirectional, keras.layers.TimeDistributed)) or _lookup(_WEIGHT_ATTRS, layer) is None:
        subs = [layer.forward_layer, layer.backward_layer] if isinstance(layer, keras.layers.Bidirectional) else sublayers(layer)
        for sub in subs:
            if any(w is weight for w in (prunable_weights(sub, True) or [])):
                return _owner(sub, weight)
        if _lookup(_OPT_IN_ATTRS, layer) is None:
            return None
    return layer


_KNOWN_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


def can_prune(layer, explicit=False):
    """Whether ``layer`` has weights tfprune prunes; decided from its class, before build."""
    if declares_prunable_weights(layer):
        return True
    if isinstance(layer, keras.layers.Bidirectional):
        return can_prune(layer.forward_layer)
    if isinstance(layer, keras.layers.TimeDistributed):
        return can_prune(layer.layer, explicit)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return True
    if isinstance(layer, keras.layers.RNN):
        return _can_prune_cell(layer.cell, layer.built)
    if _lookup(_WEIGHT_ATTRS, layer) is not None:
        return True
    if explicit and _lookup(_OPT_IN_ATTRS, layer) is not None:
        return True
    return any(can_prune(sub) for sub in sublayers(layer))


def _can_prune_cell(cell, built):
    if isinstance(cell, keras.layers.StackedRNNCells):
        return any(_can_prune_cell(c, built) for c in cell.cells)
    return declares_prunable_weights(cell) or isinstance(cell, _KNOWN_CELLS) or (
        built and hasattr(cell, "kernel") and hasattr(cell, "recurrent_kernel"))


def nothing_to_prune(layer):
    """A Keras layer tfprune knows and leaves whole (Dropout, BatchNormalization, pooling, Flatten, ...)."""
    return type(layer).__module__.startswith("keras.") and not can_prune(layer, explicit=True)


def weight_label(weight, layer=None):
    """A weight's name within ``layer``: 'kernel', 'lstm_cell/recurrent_kernel', 'query/kernel'.

    Without ``layer`` (or when the weight's path does not start with the layer's), the path
    without its first part.
    """
    prefix = f"{layer.path}/" if layer is not None and getattr(layer, "path", None) else None
    if prefix and weight.path.startswith(prefix):
        return weight.path[len(prefix):]
    return weight.path.split("/", 1)[-1] if "/" in weight.path else weight.name
