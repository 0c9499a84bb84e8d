"""The one walk over the layers of a model, and the one way to copy a layer with its weights."""

import inspect
import warnings

import keras

from tfprune._common import keras_internals


def walk_layers(root, include_root=False, descend=None):
    """Every layer inside ``root``, depth first in tracking order, each once.

    Descends into nested models, wrappers (``Bidirectional``, ``TimeDistributed``, the pruning
    wrappers) and layers that own layers, as Keras tracks them.

    Args:
        root: a ``keras.Model`` or ``keras.layers.Layer``.
        include_root: list ``root`` itself first.
        descend: ``descend(layer) -> bool``: whether to look inside ``layer`` (it is listed
            either way). Default: look inside every layer.

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

    def visit(layer):
        for child in keras_internals.tracked_sublayers(layer, recursive=False):
            if id(child) in seen:
                continue
            seen.add(id(child))
            found.append(child)
            if descend is None or descend(child):
                visit(child)

    visit(root)
    return found


def graph_layers(model):
    """The layers of ``model``'s own graph and of the models nested in it (those listed too), not deeper.

    These are the layers a model-wide call wraps or copies one by one; layers inside a block
    belong to the block.

    Example:

    ```python
    names = [layer.name for layer in graph_layers(model)]
    ```
    """
    return walk_layers(model, descend=lambda layer: isinstance(layer, keras.Model))


def copy_layer(layer, weights=None):
    """A new layer of the same class and config, built as ``layer`` is, holding ``weights``.

    A layer whose sublayers are only built on its first call (no ``build()`` of its own, as in
    the keras.io ``TransformerBlock``) is built by calling the copy on symbolic inputs shaped
    like the original's. ``keras.ops`` operations in a Functional graph, and layers without
    weights whose config does not reload (a ``Lambda``), hold no state and are returned as
    they are.

    Each weight of the copy is created once, holding its value: the copy is built in a
    ``keras.StatelessScope`` that defers its variables, which are then initialised from the
    values (no initializer runs, nothing is written twice). By default the values are the
    original's variables themselves: the copy shares their buffers until either side is
    written, when TensorFlow copies (copy on write), so copying a layer costs no memory and
    the original is never modified. A layer whose build cannot run in that scope is copied the
    plain way (``fresh_copy`` then ``set_weights``), with the same result.

    Args:
        layer: a ``keras.layers.Layer`` (or a ``keras.Operation``).
        weights: values for the copy's ``weights`` (arrays, tensors or variables), in order;
            default: ``layer``'s own variables.

    Returns:
        The copy.

    Raises:
        ValueError: the layer has no usable ``get_config``, or its copy cannot be built to
            hold the same weights.

    Example:

    ```python
    twin = copy_layer(model.get_layer("encoder"))
    ```
    """
    if not isinstance(layer, keras.layers.Layer):
        return layer
    if layer.built:
        clone = _copy_holding(layer, list(layer.weights) if weights is None else list(weights))
        if clone is not None:
            return clone
    try:
        clone = fresh_copy(layer)
    except ValueError:
        if layer.weights:
            raise
        # No state to copy (a Lambda, whose code safe mode will not reload): the copy may share it.
        return layer
    if not layer.built:
        return clone
    set_copied_weights(clone, layer.get_weights() if weights is None else weights, layer)
    return clone


def _copy_holding(layer, values):
    """``fresh_copy(layer)`` whose weights are created holding ``values``; None if it must be copied the plain way."""
    if keras_internals.in_stateless_scope():
        return None  # the caller's scope initialises its variables when it ends, not ours
    scope = keras.StatelessScope(initialize_variables=False)
    try:
        with scope:
            clone = fresh_copy(layer)
    except Exception:  # noqa: BLE001 - the plain path below retries, and raises its own clear error
        keras_internals.initialize_pending()
        return None
    if scope.state_mapping:
        # The build assigned values, which the scope only recorded: let a plain build apply them.
        keras_internals.initialize_pending()
        return None
    _check_places(clone, values, layer)
    keras_internals.initialize_with_values(zip(clone.weights, values))
    return clone


def _check_places(clone, values, original):
    """Raises ``ValueError`` unless ``clone`` has one weight of the right shape for each of ``values``."""
    if len(clone.weights) != len(values):
        keras_internals.initialize_pending()
        raise ValueError(
            f"Layer '{original.name}' ({type(original).__name__}) should get {len(values)} weights, but a copy "
            f"built from its config has {len(clone.weights)}. Give the class a build() that creates every "
            "sublayer's weights, and create its layers in __init__ from its get_config() arguments."
        )
    for variable, value in zip(clone.weights, values):
        if tuple(variable.shape) != tuple(value.shape):
            keras_internals.initialize_pending()
            raise ValueError(
                f"Layer '{original.name}' ({type(original).__name__}): weight '{variable.path}' of its copy has shape "
                f"{tuple(variable.shape)}, but the value given for it has shape {tuple(value.shape)}."
            )


def set_copied_weights(clone, values, original):
    """``clone.set_weights(values)``, after checking that the copy of ``original`` has a place for each.

    Example:

    ```python
    set_copied_weights(fresh_copy(layer), layer.get_weights(), layer)
    ```
    """
    values = list(values)
    if len(clone.weights) != len(values):
        raise ValueError(
            f"Layer '{original.name}' ({type(original).__name__}) should get {len(values)} weights, but a copy "
            f"built from its config has {len(clone.weights)}. Give the class a build() that creates every "
            "sublayer's weights, and create its layers in __init__ from its get_config() arguments."
        )
    clone.set_weights(values)


def fresh_copy(layer):
    """A new layer of the same class and config as ``layer``, built as it is, with new weights.

    See ``copy_layer``, which also copies the weights.

    Example:

    ```python
    untrained_twin = fresh_copy(model.get_layer("encoder"))
    ```
    """
    try:
        clone = _from_config(layer)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied: its get_config() / "
            f"from_config() do not recreate it ({type(err).__name__}: {err}). Give the class a get_config() "
            "returning its __init__ arguments (and register it with keras.saving.register_keras_serializable)."
        ) from err
    if not layer.built:
        return clone
    build_config = layer.get_build_config()
    if build_config and not clone.built:  # some layers build in from_config (KerasHub's decoders)
        with warnings.catch_warnings():
            # Keras warns that a layer without build() may have unbuilt state; handled below.
            warnings.filterwarnings("ignore", message=".*does not have a `build\\(\\)` method implemented.*")
            clone.build_from_config(build_config)
    if _built_count(clone) < _built_count(layer):
        _build_by_calling(clone, layer, build_config)
    return clone


def _from_config(layer):
    config = layer.get_config()
    try:
        return layer.__class__.from_config(config)
    except TypeError:
        # Keras adds `name`, `trainable` and `dtype` to a subclassed model's automatic config,
        # which an `__init__(self)` without **kwargs does not take: pass it only what it takes.
        parameters = inspect.signature(layer.__class__.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            raise
        return layer.__class__(**{k: v for k, v in config.items() if k in parameters})


def build_sublayers(layer):
    """Builds the sublayers of a layer that is marked built but whose sublayers are not.

    Keras marks a layer without a ``build()`` of its own as built by ``build_from_config`` (as
    when a ``.keras`` file is loaded), although its sublayers only get weights on the first
    call; this makes that call, symbolically, on inputs of the shape the layer was built with.

    Example:

    ```python
    build_sublayers(block)  # block.att.kernel etc. exist afterwards
    ```
    """
    if layer.built and not all(sub.built for sub in walk_layers(layer)):
        _build_by_calling(layer, layer, layer.get_build_config())


def _built_count(layer):
    return sum(sub.built for sub in walk_layers(layer, include_root=True))


def _build_by_calling(clone, original, build_config):
    """Builds ``clone`` by running it once on symbolic inputs like those ``original`` was called on."""
    arguments = keras_internals.call_arguments(original)
    if arguments is not None:
        args, kwargs = keras.tree.map_structure(_fresh_symbolic, arguments)
    elif build_config and "input_shape" in build_config:
        args, kwargs = (keras.KerasTensor(tuple(build_config["input_shape"]), dtype=original.input_dtype),), {}
    else:
        return
    try:
        clone(*args, **kwargs)
    except Exception as err:
        raise ValueError(
            f"Layer '{original.name}' ({type(original).__name__}) builds its sublayers only when called, and "
            f"calling a copy of it on inputs like the original's failed ({type(err).__name__}: {err}). Give the "
            "class a build() that builds its sublayers."
        ) from err


def _fresh_symbolic(value):
    if isinstance(value, keras.KerasTensor):
        return keras.KerasTensor(value.shape, dtype=value.dtype, sparse=value.sparse)
    return value
