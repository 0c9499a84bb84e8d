"""The user API: wrap a layer or model for pruning, and strip the wrappers again.

Both functions work on copies: the user's model keeps its weights, its layers
and its constraints, whatever happens to the returned model.
"""

import uuid

import keras

from tfprune._pruning import registry
from tfprune._pruning.schedules import ConstantSparsity
from tfprune._pruning.wrapper import PruneLowMagnitude, validate_arguments

# Keras does not export the Functional class; this path is stable across 3.x.
from keras.src.models.functional import Functional as _Functional


class PruningPolicy:
    """Decides which layers of a model are pruned, and which models are accepted.

    Pass an instance as ``prune_low_magnitude(..., pruning_policy=...)``.
    ``allow_pruning(layer)`` is asked for every layer tfprune could prune;
    ``ensure_model_supports_pruning(model)`` may raise ``ValueError`` to
    reject a model before anything is cloned.

    Example:

    ```python
    class DenseOnly(tfprune.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

    pruned = tfprune.prune_low_magnitude(model, pruning_policy=DenseOnly())
    ```
    """

    def allow_pruning(self, layer):
        return True

    def ensure_model_supports_pruning(self, model):
        return None


def prune_low_magnitude(
    to_prune,
    pruning_schedule=ConstantSparsity(0.5, 0),
    block_size=(1, 1),
    block_pooling_type="AVG",
    sparsity_m_by_n=None,
    pruning_policy=None,
    granularity="layer",
):
    """Prepares a layer or model for magnitude pruning during ``fit``.

    Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to
    prune"): while the model trains, the weights of smallest magnitude are
    set to zero, following ``pruning_schedule``, and stay zero. Train with the
    ``tfprune.UpdatePruningStep`` callback, then call ``tfprune.strip_pruning``
    to get a plain Keras model.

    Accepts a layer, a list of layers, or a built Sequential or Functional
    model (nested models included). Returns the same kind of object: the
    layers are copied and the prunable ones wrapped in
    ``PruneLowMagnitude``; the argument itself is not modified. Layers
    without prunable weights (pooling, normalisation, ...) are copied as
    they are. DepthwiseConv2D is pruned only when passed as a layer.

    For a subclassed model, wrap its layers where the model creates them:
    ``self.fc = tfprune.prune_low_magnitude(keras.layers.Dense(10))``.

    Args:
        to_prune: a ``keras.layers.Layer``, a list of layers, or a built
            ``keras.Sequential`` / Functional ``keras.Model``.
        pruning_schedule: a ``tfprune.PruningSchedule``: when masks are
            updated and to what sparsity.
        block_size: ``(rows, cols)``: prune rank-2 weights in blocks, rows
            along the input dimension. ``(16, 1)`` or ``(4, 1)`` give int8
            TFLite files that XNNPACK runs sparse. Edge blocks are padded.
        block_pooling_type: ``"AVG"`` or ``"MAX"``: how a block's magnitudes
            are pooled into its score.
        sparsity_m_by_n: ``(m, n)``: ``m`` zeros in every ``n`` consecutive
            weights along the input dimension (``(2, 4)`` is 2:4 sparsity).
            The schedule then only decides when masks are updated.
        pruning_policy: a ``tfprune.PruningPolicy`` selecting layers.
        granularity: ``"layer"`` ranks each weight on its own, to the
            schedule's sparsity; ``"global"`` ranks all pruned weights of the
            call together with one threshold (Han et al. 2015), so layers
            end up with different sparsities.

    Returns:
        The pruned layer, list of layers, or model.

    Raises:
        ValueError: for arguments out of range, a layer that cannot be
            pruned when passed explicitly, an already pruned or unbuilt
            model, or a subclassed model.

    Example:

    ```python
    schedule = tfprune.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=1000
    )
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=2, callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.strip_pruning(pruned)
    ```
    """
    name = getattr(to_prune, "name", type(to_prune).__name__)
    validate_arguments(name, pruning_schedule, tuple(block_size), block_pooling_type, sparsity_m_by_n, granularity)
    policy = pruning_policy or PruningPolicy()
    options = {
        "pruning_schedule": pruning_schedule,
        "block_size": tuple(block_size),
        "block_pooling_type": block_pooling_type,
        "sparsity_m_by_n": sparsity_m_by_n,
        "granularity": granularity,
        "global_group": f"global_{uuid.uuid4().hex[:8]}" if granularity == "global" else None,
    }
    if isinstance(to_prune, (list, tuple)):
        return [_wrap_explicit(layer, options) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        _check_model(to_prune, "prune_low_magnitude")
        _reject_pruned(to_prune)
        policy.ensure_model_supports_pruning(to_prune)
        return _prune_model(to_prune, options, policy)
    if isinstance(to_prune, keras.layers.Layer):
        return _wrap_explicit(to_prune, options)
    raise ValueError(
        "prune_low_magnitude: `to_prune` must be a keras Layer, a list of layers, or a "
        f"Sequential or Functional keras Model. Received: {type(to_prune).__name__}."
    )


def strip_pruning(model):
    """Removes the pruning wrappers, leaving a plain Keras model.

    Each wrapped layer is replaced by a copy of its original layer class,
    with its weights multiplied by the final masks: zeros exactly where the
    masks are zero. The result has no tfprune classes, so
    ``keras.saving.load_model`` reads it without tfprune installed. The
    argument is not modified.

    Args:
        model: a model (or a single ``PruneLowMagnitude`` layer) returned by
            ``prune_low_magnitude`` and trained.

    Returns:
        A new Keras model (or layer) without pruning wrappers.

    Example:

    ```python
    final = tfprune.strip_pruning(pruned)
    final.save("pruned.keras")
    print(tfprune.sparsity_report(final))
    ```
    """
    if isinstance(model, PruneLowMagnitude):
        return _strip_layer(model)
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"strip_pruning: expected a keras Model or a PruneLowMagnitude layer. Received: {type(model).__name__}."
        )
    _check_model(model, "strip_pruning")
    return _clone_model(model, _strip_clone_function)


def pruning_wrappers(model):
    """All ``PruneLowMagnitude`` layers in ``model``, nested models included, in order."""
    if isinstance(model, PruneLowMagnitude):
        return [model]
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, PruneLowMagnitude)]


# -- helpers -------------------------------------------------------------


def _check_model(model, caller):
    if not isinstance(model, (keras.Sequential, _Functional)):
        raise ValueError(
            f"{caller}: cannot copy the subclassed model '{model.name}' ({type(model).__name__}). "
            "Wrap its layers where the model creates them instead, e.g. "
            "`self.fc = tfprune.prune_low_magnitude(keras.layers.Dense(10))` in __init__, or "
            "rebuild it as a Functional or Sequential model."
        )
    if not model.built:
        raise ValueError(
            f"{caller}: model '{model.name}' is not built, so its weights do not exist yet. Start it "
            "with keras.Input(shape), call model.build(input_shape), or call it on a batch first."
        )


def _reject_pruned(model):
    wrapped = [w.layer.name for w in pruning_wrappers(model)]
    if wrapped:
        raise ValueError(
            f"prune_low_magnitude: model '{model.name}' is already pruned (wrapped layers: "
            f"{', '.join(wrapped)}). Continue training it as it is, or call tfprune.strip_pruning "
            "first and prune the result."
        )


def _wrap_explicit(layer, options):
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"prune_low_magnitude: pass the model '{layer.name}' on its own, not inside a list of layers."
        )
    if isinstance(layer, PruneLowMagnitude):
        raise ValueError(
            f"prune_low_magnitude: layer '{layer.layer.name}' is already wrapped for pruning. "
            "Call tfprune.strip_pruning first to start again."
        )
    if not isinstance(layer, keras.layers.Layer) or not registry.can_prune(layer, explicit=True):
        raise ValueError(
            f"prune_low_magnitude: layer '{getattr(layer, 'name', layer)}' ({type(layer).__name__}) "
            f"cannot be pruned. Supported: {registry.SUPPORTED_LAYERS}. To prune a whole model and "
            "skip such layers, pass the model instead."
        )
    return PruneLowMagnitude(_clone_layer(layer), **options)


def _prune_model(model, options, policy):
    def clone_function(layer):
        if isinstance(layer, keras.Model):
            _check_model(layer, "prune_low_magnitude")
            return _prune_model(layer, options, policy)
        if registry.can_prune(layer) and policy.allow_pruning(layer):
            return PruneLowMagnitude(_clone_layer(layer), **options)
        return _clone_layer(layer)

    return _clone_model(model, clone_function)


def _strip_clone_function(layer):
    if isinstance(layer, PruneLowMagnitude):
        return _strip_layer(layer)
    if isinstance(layer, keras.Model):
        return strip_pruning(layer)
    return _clone_layer(layer)


def _strip_layer(wrapper):
    masked = {id(w): keras.ops.convert_to_numpy(m) for w, m in zip(wrapper.pruned_weights, wrapper.masks)}
    values = [
        keras.ops.convert_to_numpy(w) * masked[id(w)] if id(w) in masked else keras.ops.convert_to_numpy(w)
        for w in wrapper.layer.weights
    ]
    return _clone_layer(wrapper.layer, values)


def _clone_model(model, clone_function):
    clone = keras.models.clone_model(model, clone_function=clone_function)
    clone.trainable = model.trainable
    return clone


def _clone_layer(layer, weights=None):
    """A new layer of the same class and config, built, with ``weights`` (default: the layer's)."""
    clone = layer.__class__.from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
        clone.set_weights(weights if weights is not None else layer.get_weights())
    return clone
