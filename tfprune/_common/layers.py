"""The one walk over the layers of a model."""

import keras

from tfprune._common import keras_internals


def walk_layers(root, include_root=False):
    """Every layer inside ``root``, depth first in tracking order, each once.

    Descends into nested models, wrappers (``Bidirectional``, ``TimeDistributed``, the pruning
    wrappers) and layers that own layers, as Keras tracks them.

    Args:
        root: a ``keras.Model`` or ``keras.layers.Layer``.
        include_root: list ``root`` itself first.

    Returns:
        A list of layers.

    Example:

    ```python
    dense = [layer for layer in walk_layers(model) if isinstance(layer, keras.layers.Dense)]
    ```
    """
    if not isinstance(root, keras.layers.Layer):
        raise TypeError(f"Expected a Keras model or layer, got {type(root).__name__}.")
    found, seen = ([root] if include_root else []), {id(root)}
    for layer in keras_internals.tracked_sublayers(root, recursive=True):
        if id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found
