"""The user API: wrap a layer or model for pruning, and strip the wrappers again.

Both functions work on copies: the user's model keeps its weights, its layers
and its constraints, whatever happens to the returned model.
"""

import uuid
import warnings

import keras
import numpy as np

from tfprune._common import keras_internals
from tfprune._common.compiling import compile_like
from tfprune._common.layers import copy_layer, fresh_copy, graph_layers, set_copied_weights, walk_layers
from tfprune._pruning import allocation as allocation_lib
from tfprune._pruning import dynamic_surgery as surgery_lib
from tfprune._pruning import registry
from tfprune._pruning.base import _PACKAGE, PruningWrapper
from tfprune._pruning.schedules import ConstantSparsity, PolynomialDecay
from tfprune._pruning.wrapper import PruneLowMagnitude, validate_arguments


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
    row_importance=None,
    **kwargs,
):
    """Prepares a layer or model for magnitude pruning during ``fit``.

    Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to
    prune"): while the model trains, the weights of smallest magnitude are
    set to zero, following ``pruning_schedule``, and stay zero. Train with the
    ``tfprune.UpdatePruningStep`` callback, then call ``tfprune.strip_pruning``
    to get a plain Keras model.

    Accepts a layer, a list of layers, or a model: Sequential (built, or
    not yet: its layers are then pruned once it builds), Functional (with
    ``keras.ops`` calls and nested models) or a built subclassed model.
    Layers already wrapped for pruning are kept as they are (copied), the
    others wrapped, as in tfmot. A Keras layer with nothing to prune
    (Dropout, BatchNormalization, pooling, ...) passed on its own or in a
    list is returned as a copy, unwrapped.
    Returns the same kind of object: the layers are copied and the
    prunable ones wrapped in ``PruneLowMagnitude``; the argument itself is
    not modified. A layer that owns layers (a custom Transformer block, a
    model inside a layer) is wrapped as one, and its sublayers' kernels are
    pruned. Layers without prunable weights (pooling, normalisation, ...)
    are copied as they are. DepthwiseConv2D is pruned only when passed as a
    layer. Weights tfprune cannot reach (a custom layer's own
    ``add_weight`` kernels) are named in a warning.

    A subclassed model is copied through its ``get_config`` and its tracked
    sublayers are replaced by wrapped copies; its layers may also be
    wrapped where the model creates them
    (``self.fc = tfprune.prune_low_magnitude(keras.layers.Dense(10))``).
    Save a pruned subclassed model with ``save_weights`` (its ``.keras``
    file would rebuild it without the wrappers); the stripped model saves
    as any model does.

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
        granularity: where the sparsity goes. ``"layer"`` ranks each
            weight on its own, to the schedule's sparsity. The others make
            the schedule's sparsity the overall target across all weights
            the call prunes, and split it among them at every mask update:
            ``"global"``, one magnitude threshold (Han et al. 2015);
            ``"lamp"``, one threshold on LAMP scores (Lee et al. 2021);
            ``"erk"``, Erdős–Rényi-Kernel densities (Evci et al. 2020); or a
            ``tfprune.SparsityAllocation`` instance, e.g.
            ``tfprune.LAMP(min_density=0.05)`` or
            ``tfprune.ERK(keep_first_last=True)`` to keep a floor per layer or
            the first and last layers whole (see
            ``docs/howto/allocation.md``). On the MNIST tutorial's CNN at 95%,
            ``"lamp"`` holds accuracy best of the four.
        row_importance: only when ``to_prune`` is one layer whose pruned
            weight is rank 2 (Embedding, Dense): one number >= 0 per row,
            and each weight is ranked by ``|w| * row_importance[row]``.
            The input-weighted magnitude of Wanda (Sun et al. 2024, "A
            Simple and Effective Pruning Approach for Large Language
            Models"), which scales ``|W|`` by the norm of each input. For an
            Embedding pass each token's count in the training data (the L1
            norm of its one-hot input): a row then scores the magnitude it
            adds to the layer's outputs over the data, and rare words go
            before frequent ones. Plain magnitude does the opposite on the
            IMDB tutorial's table: pruned to 4,000 of 20,000 rows, it keeps
            129 of the 1,000 most frequent words, and the model loses 1.52
            points of accuracy where count-weighted rows gain 1.00
            (``python benchmarks/bench_imdb.py``).
        **kwargs: for a single layer (or a list), passed to each
            ``PruneLowMagnitude`` wrapper as Keras layer arguments (``name``,
            ``input_shape`` of a Sequential's first layer...), as tfmot does.

    Returns:
        The pruned layer, list of layers, or model.

    Raises:
        ValueError: for arguments out of range, a layer that cannot be
            pruned when passed explicitly, an already pruned or unbuilt
            model, or a subclassed model that cannot be copied.

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

    An Embedding pruned in whole rows (one per token), most-used words kept:

    ```python
    counts = np.bincount(token_ids.ravel(), minlength=20000)
    embedding = tfprune.prune_low_magnitude(
        keras.layers.Embedding(20000, 128), pruning_schedule=schedule,
        block_size=(1, 128), row_importance=counts,
    )
    ```
    """
    name = getattr(to_prune, "name", type(to_prune).__name__)
    block_size, sparsity_m_by_n = validate_arguments(name, pruning_schedule, block_size, block_pooling_type,
                                                     sparsity_m_by_n, granularity)
    if pruning_policy is not None and not all(
            callable(getattr(pruning_policy, m, None)) for m in ("allow_pruning", "ensure_model_supports_pruning")):
        raise ValueError(
            f"prune_low_magnitude: `pruning_policy` must be a tfprune.PruningPolicy (subclass it and override "
            f"allow_pruning). Received: {pruning_policy!r}."
        )
    if row_importance is not None and not _is_single_layer(to_prune):
        raise ValueError(
            f"prune_low_magnitude: `row_importance` has one number per row of one layer's weight, so it is "
            f"accepted only with a single layer, and '{name}' is a {type(to_prune).__name__}. Wrap that layer "
            "on its own, e.g. in the clone_function of keras.models.clone_model."
        )
    policy = pruning_policy or PruningPolicy()
    if kwargs and isinstance(to_prune, keras.Model):
        raise ValueError(
            f"prune_low_magnitude: keyword arguments {sorted(kwargs)} are Keras layer arguments for the wrapper "
            f"of a single layer; model '{name}' keeps its layers' own. Pass them when wrapping one layer."
        )
    options = {
        "pruning_schedule": pruning_schedule,
        "block_size": block_size,
        "block_pooling_type": block_pooling_type,
        "sparsity_m_by_n": sparsity_m_by_n,
        "granularity": granularity,
        # The wrappers of one call are allocated together, under one group name saved with each.
        "global_group": None if _is_layer(granularity) else f"global_{uuid.uuid4().hex[:8]}",
        "row_importance": row_importance,
    }
    if isinstance(to_prune, (list, tuple)):
        wrapped = [copy_layer(layer) if isinstance(layer, PruningWrapper) else _wrap_explicit(layer, options, kwargs)
                   for layer in to_prune]
        _check_allocation(wrapped, options)
        return wrapped
    if isinstance(to_prune, keras.Model):
        if not (isinstance(to_prune, keras.Sequential) and not to_prune.built):
            check_model(to_prune, "prune_low_magnitude")
        policy.ensure_model_supports_pruning(to_prune)
        pruned = _prune_model(to_prune, options, policy)
        _check_allocation(pruning_wrappers(pruned), options)
        _warn_unreached(pruned, "prune_low_magnitude")
        return pruned
    if isinstance(to_prune, keras.layers.Layer):
        wrapped = _wrap_explicit(to_prune, options, kwargs)
        _check_allocation([wrapped], options)
        return wrapped
    raise ValueError(
        "prune_low_magnitude: `to_prune` must be a keras Layer, a list of layers, or a "
        f"Sequential or Functional keras Model. Received: {type(to_prune).__name__}."
    )


def dynamic_surgery(
    to_prune,
    c=surgery_lib.DEFAULT_C,
    gamma=surgery_lib.DEFAULT_GAMMA,
    power=surgery_lib.DEFAULT_POWER,
    iter_stop=surgery_lib.DEFAULT_ITER_STOP,
    seed=0,
    prune_bias=True,
    pruning_policy=None,
):
    """Prepares a layer or model for dynamic network surgery: pruning with surgery_lib.

    Guo, Yao & Chen 2016, "Dynamic Network Surgery for Efficient DNNs". Each
    wrapped layer keeps its weights ``W`` dense and computes with ``W * T``,
    ``T`` a 0/1 mask; every weight, masked or not, is updated with the
    gradient with respect to ``W * T``, so a connection cut too early grows
    back and is spliced in again. Per layer, with ``mu`` and ``sigma`` the
    mean and standard deviation of ``|W|`` when training starts, ``T`` goes
    1 -> 0 where ``|w| <= 0.9 * max(mu + c * sigma, 0)`` and 0 -> 1 where
    ``|w| > 1.1 * max(mu + c * sigma, 0)``. The masks are updated at training
    step ``iter`` with probability ``(1 + gamma * iter) ** -power`` while
    ``iter < iter_stop``, inside the compiled train step.

    Start from a trained model, as the paper does. Train with
    ``tfprune.UpdatePruningStep``; ``tfprune.strip_pruning``,
    ``tfprune.sparsity_report`` and ``tfprune.export.to_tflite`` work on the
    result as on any tfprune model. The defaults are those of the authors'
    Caffe code (their README's LeNet-5 example): ``c=4``, ``gamma=1e-4``,
    ``power=1``, ``iter_stop=14000``, biases masked too. ``c`` sets the
    compression, layer by layer: the authors tune it per layer.

    Args:
        to_prune: a ``keras.layers.Layer``, a list of layers, or a built
            Sequential / Functional ``keras.Model`` (copied, never modified).
        c: a number for every prunable layer, or ``{layer_name: c}`` to wrap
            only the named layers, each with its own ``c``.
        gamma: >= 0, how fast mask updates become rare.
        power: >= 0, the exponent of the update probability.
        iter_stop: the training step from which the masks stay fixed.
        seed: seeds the random draws (layer ``i`` of the model uses
            ``seed + i``); runs are deterministic given it.
        prune_bias: mask biases as well as weights (the authors' code does).
        pruning_policy: a ``tfprune.PruningPolicy`` selecting layers, when
            ``c`` is a number.

    Returns:
        The wrapped layer, list of layers, or model.

    Raises:
        ValueError: an argument out of range, a layer name in ``c`` that the
            model lacks or that cannot be pruned, or an unsupported model.

    Example:

    ```python
    surgery = tfprune.dynamic_surgery(trained, c={"fc1": 2.0, "fc2": 1.5, "fc3": 0.5})
    surgery.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    surgery.fit(x, y, epochs=20, callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.strip_pruning(surgery)
    ```
    """
    name = getattr(to_prune, "name", type(to_prune).__name__)
    per_layer = dict(c) if isinstance(c, dict) else None
    for layer_c in (per_layer.values() if per_layer is not None else [c]):
        surgery_lib.validate_surgery_arguments(name, layer_c, gamma, power, iter_stop, seed)
    options = {"gamma": gamma, "power": power, "iter_stop": iter_stop, "prune_bias": prune_bias}
    counter = iter(range(1 << 30))

    def wrap(layer, explicit):
        layer_c = c if per_layer is None else per_layer[layer.name]
        if explicit and not registry.can_prune(layer, explicit=True):
            raise ValueError(
                f"dynamic_surgery: layer '{layer.name}' ({type(layer).__name__}) cannot be pruned. "
                f"Supported: {registry.SUPPORTED_LAYERS}."
            )
        return surgery_lib.DynamicSurgery(copy_layer(layer), c=layer_c, seed=seed + next(counter), **options)

    if isinstance(to_prune, (list, tuple)):
        return [wrap(_check_explicit(layer, "dynamic_surgery"), True) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        check_model(to_prune, "dynamic_surgery")
        policy = pruning_policy or PruningPolicy()
        policy.ensure_model_supports_pruning(to_prune)
        if per_layer is not None:
            _check_named_layers(to_prune, per_layer)

        def choose(layer):
            if per_layer is not None:
                return layer.name in per_layer
            return registry.can_prune(layer) and policy.allow_pruning(layer)

        return _wrap_model(to_prune, lambda layer: wrap(layer, per_layer is not None), choose, "dynamic_surgery")
    if isinstance(to_prune, keras.layers.Layer):
        return wrap(_check_explicit(to_prune, "dynamic_surgery"), True)
    raise ValueError(
        "dynamic_surgery: `to_prune` must be a keras Layer, a list of layers, or a Sequential or "
        f"Functional keras Model. Received: {type(to_prune).__name__}."
    )


def dynamic_surgery_c_for_sparsity(model, sparsity, prune_bias=True):
    """Per-layer ``c`` for ``dynamic_surgery`` from the sparsity each layer should start at.

    Inverts the mask rule on the model's current weights: with layer
    ``name``'s ``c = result[name]``, the first mask update prunes
    ``sparsity[name]`` of it. The authors tune ``c`` by hand; this gives a
    starting point with the same meaning. Training then moves the weights,
    so the final sparsity differs somewhat.

    Args:
        model: the trained (unwrapped) model.
        sparsity: ``{layer_name: fraction in [0, 1)}``.
        prune_bias: as in ``dynamic_surgery``.

    Returns:
        ``{layer_name: c}``, ready for ``dynamic_surgery(model, c=...)``.

    Example:

    ```python
    c = tfprune.dynamic_surgery_c_for_sparsity(trained, {"fc1": 0.98, "fc2": 0.98, "fc3": 0.94})
    surgery = tfprune.dynamic_surgery(trained, c=c)
    ```
    """
    _check_named_layers(model, sparsity, "dynamic_surgery_c_for_sparsity", "sparsity")
    layers = _wrappable_layers(model)
    result = {}
    for name, fraction in sparsity.items():
        values = [keras.ops.convert_to_numpy(w) for w in surgery_lib.surgery_weights(layers[name], prune_bias)]
        result[name] = surgery_lib.c_for_sparsity(values, fraction)
    return result


def dynamic_surgery_c(model, sparsity, prune_bias=True):
    """Deprecated name of ``dynamic_surgery_c_for_sparsity`` (it read as "variant c"): the per-layer ``c`` for a starting sparsity.

    Example:

    ```python
    c = tfprune.dynamic_surgery_c_for_sparsity(trained, {"fc1": 0.98})  # instead of dynamic_surgery_c
    ```
    """
    warnings.warn(
        "tfprune.dynamic_surgery_c is deprecated: call tfprune.dynamic_surgery_c_for_sparsity, which "
        "returns the same per-layer c.", DeprecationWarning, stacklevel=2,
    )
    return dynamic_surgery_c_for_sparsity(model, sparsity, prune_bias)


def strip_pruning(model):
    """Removes the pruning wrappers, leaving a plain Keras model.

    Each wrapped layer is replaced by a copy of its original layer class,
    with its weights multiplied by the final masks: zeros exactly where the
    masks are zero. The result has no tfprune classes, so
    ``keras.saving.load_model`` reads it without tfprune installed. A
    compiled model's copy is compiled the same way with a fresh optimizer:
    the optimizer state of pruning does not travel into the saved file.
    The argument is not modified.

    Args:
        model: a model (or a single ``PruneLowMagnitude`` layer) returned by
            ``prune_low_magnitude`` and trained; for a subclassed model,
            also one whose layers were wrapped in its ``__init__``.

    Returns:
        A new Keras model (or layer) without pruning wrappers.

    Example:

    ```python
    final = tfprune.strip_pruning(pruned)
    final.save("pruned.keras")
    print(tfprune.sparsity_report(final))
    ```
    """
    if isinstance(model, PruningWrapper):
        return _strip_layer(model)
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"strip_pruning: expected a keras Model or a PruneLowMagnitude layer. Received: {type(model).__name__}."
        )
    check_model(model, "strip_pruning")
    stripped = _clone_model(model, _strip_clone_function) if _is_graph(model) else _strip_subclassed(model)
    compile_like(model, stripped, "strip_pruning")
    return stripped


def prune_scope():
    """A ``keras.saving.custom_object_scope`` with tfprune's saved classes, for code written for tfmot.

    tfprune registers its classes with Keras when it is imported, so ``keras.saving.load_model``
    needs no scope; ``with tfprune.prune_scope(): load_model(...)`` (tfmot's idiom) keeps working.

    Example:

    ```python
    with tfprune.prune_scope():
        pruned = keras.saving.load_model("pruned.keras")
    ```
    """
    # Every class tfprune registers under its package (wrappers, schedules, KeepMasks, allocations,
    # and any added later), read from Keras's registry so the scope cannot fall behind it.
    prefix = _PACKAGE + ">"
    registered = keras.saving.get_custom_objects()
    return keras.saving.custom_object_scope(
        {key[len(prefix):]: cls for key, cls in registered.items() if key.startswith(prefix)}
    )


def pruning_wrappers(model):
    """All ``PruneLowMagnitude`` layers in ``model``, nested models included, in order."""
    if isinstance(model, PruningWrapper):
        return [model]
    return [layer for layer in walk_layers(model) if isinstance(layer, PruningWrapper)]


# -- helpers -------------------------------------------------------------


def _is_layer(granularity):
    return isinstance(granularity, str) and granularity == "layer"


def _check_allocation(wrappers, options):
    """Checks the allocation's layer names, and its floors against the schedule's highest target, at prune time."""
    group = options["global_group"]
    members = [w for w in wrappers if isinstance(w, PruneLowMagnitude) and w.global_group == group]
    if group is None or not members:
        return
    allocation = members[0].allocation
    labels, sizes = [], {}
    for wrapper in members:
        if not wrapper.built:  # a Sequential that builds later: names only
            labels.append(f"{wrapper.layer.name}/?")
            continue
        for weight in wrapper.pruned_weights:
            label = f"{wrapper.layer.name}/{registry.weight_label(weight, wrapper.layer)}"
            labels.append(label)
            sizes[label] = int(np.prod(weight.shape))
    built = all(wrapper.built for wrapper in members)
    target = _highest_target(options["pruning_schedule"])
    allocation.check(labels, sizes if built else None, target if built else None, caller="prune_low_magnitude")


def _highest_target(schedule):
    """The largest sparsity a built-in schedule reaches (None for another schedule: checked at each update)."""
    values = [getattr(schedule, name, None) for name in ("target_sparsity", "final_sparsity", "initial_sparsity")]
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def _is_single_layer(to_prune):
    return isinstance(to_prune, keras.layers.Layer) and not isinstance(to_prune, keras.Model)


def _is_graph(model):
    return isinstance(model, keras.Sequential) or keras_internals.is_functional(model)


def check_model(model, caller):
    if not model.built:
        raise ValueError(
            f"{caller}: model '{model.name}' is not built, so its weights do not exist yet. Start it "
            "with keras.Input(shape), call model.build(input_shape), or call it on a batch first."
        )


def _check_explicit(layer, caller):
    if isinstance(layer, keras.Model):
        raise ValueError(f"{caller}: pass the model '{layer.name}' on its own, not inside a list of layers.")
    if isinstance(layer, PruningWrapper):
        raise ValueError(
            f"{caller}: layer '{layer.layer.name}' is already wrapped for pruning. "
            "Call tfprune.strip_pruning first to start again."
        )
    return layer


def _wrappable_layers(model):
    """``{name: layer}`` of the layers a model-wide call can wrap: the model's own, nested models' too.

    A layer inside a block is pruned as part of the block, so it cannot be named on its own.
    """
    return {layer.name: layer for layer in graph_layers(model)}


def _check_named_layers(model, names, caller="dynamic_surgery", argument="c"):
    layers = _wrappable_layers(model)
    for name in names:
        if name not in layers:
            raise ValueError(
                f"{caller}: `{argument}` names layer '{name}', but model '{model.name}' has no such layer. "
                f"Its prunable layers: {[n for n, l in layers.items() if registry.can_prune(l)]}."
            )
        if not registry.can_prune(layers[name], explicit=True):
            raise ValueError(
                f"{caller}: `{argument}` names layer '{name}' ({type(layers[name]).__name__}), which cannot be "
                f"pruned. Supported: {registry.SUPPORTED_LAYERS}."
            )


def _wrap_explicit(layer, options, kwargs):
    _check_explicit(layer, "prune_low_magnitude")
    if isinstance(layer, keras.layers.Layer) and registry.nothing_to_prune(layer):
        if kwargs:
            raise ValueError(
                f"prune_low_magnitude: layer '{layer.name}' ({type(layer).__name__}) has nothing to prune, so it "
                f"is returned unwrapped and cannot take the wrapper's arguments {sorted(kwargs)}; give them to "
                "the layer itself."
            )
        return copy_layer(layer)
    if not isinstance(layer, keras.layers.Layer) or not registry.can_prune(layer, explicit=True):
        raise ValueError(
            f"prune_low_magnitude: layer '{getattr(layer, 'name', layer)}' ({type(layer).__name__}) "
            f"cannot be pruned. Supported: {registry.SUPPORTED_LAYERS}. To prune a whole model and "
            "skip such layers, pass the model instead."
        )
    return PruneLowMagnitude(copy_layer(layer), **options, **kwargs)


def _prune_model(model, options, policy):
    return _wrap_model(
        model,
        lambda layer: PruneLowMagnitude(copy_layer(layer), **options),
        lambda layer: registry.can_prune(layer) and policy.allow_pruning(layer),
    )


def _wrap_model(model, wrap, chosen, caller="prune_low_magnitude"):
    """A copy of ``model`` (nested models too) with ``wrap(layer)`` for every ``chosen`` layer."""
    if not _is_graph(model):
        return _wrap_subclassed(model, wrap, chosen, caller)

    def clone_function(layer):
        if isinstance(layer, keras.Model):
            check_model(layer, caller)
            return _wrap_model(layer, wrap, chosen, caller)
        if not isinstance(layer, keras.layers.Layer):
            return layer  # a keras.ops call: no state to copy
        if isinstance(layer, PruningWrapper):
            return copy_layer(layer)  # already wrapped: kept, as tfmot does
        return wrap(layer) if chosen(layer) else copy_layer(layer)

    return _clone_model(model, clone_function)


def _wrap_subclassed(model, wrap, chosen, caller):
    """A copy of a subclassed model whose chosen sublayers are replaced by wrapped copies."""
    copy = copy_layer(model)
    replaced = []
    for child in registry.sublayers(copy):
        if isinstance(child, PruningWrapper):
            continue  # wrapped where the model creates it
        if isinstance(child, keras.Model):
            new = _wrap_model(child, wrap, chosen, caller)
        elif chosen(child):
            new = wrap(child)
        else:
            continue
        keras_internals.replace_sublayer(copy, child, new)
        replaced.append(child.name)
    if not any(isinstance(layer, PruningWrapper) for layer in walk_layers(copy)):
        raise ValueError(
            f"{caller}: the subclassed model '{model.name}' ({type(model).__name__}) tracks no layer tfprune can "
            f"prune (it holds: {[layer.name for layer in registry.sublayers(model)] or 'no layers'}). Create the "
            "layers in __init__ and keep them as attributes (or in lists or dicts of attributes), not inside call()."
        )
    return copy


def _strip_subclassed(model):
    """A copy of a subclassed model without wrappers, its weights times their masks."""
    wrappers = pruning_wrappers(model)
    bookkeeping = {id(v) for w in wrappers for v in w.bookkeeping_variables()}
    values = _forward_values([w for w in model.weights if id(w) not in bookkeeping], wrappers)
    copy = fresh_copy(model)
    for parent, wrapper in _wrappers_with_parents(copy):
        keras_internals.replace_sublayer(parent, wrapper, copy_layer(wrapper.layer))
    set_copied_weights(copy, values, model)
    return copy


def _wrappers_with_parents(root):
    found = []
    for child in registry.sublayers(root):
        if isinstance(child, PruningWrapper):
            found.append((root, child))
        else:
            found.extend(_wrappers_with_parents(child))
    return found


def _warn_unreached(model, caller):
    """Warns about kernels tfprune cannot reach: a custom layer's own rank >= 2 weights."""
    pruned = {id(w) for wrapper in pruning_wrappers(model) for w in wrapper.pruned_weights}
    unreached = []
    for layer in walk_layers(model, include_root=True):
        # Keras's own layers are known: what tfprune leaves of them is left on purpose.
        if isinstance(layer, PruningWrapper) or registry.declares_prunable_weights(layer) \
                or type(layer).__module__.startswith("keras."):
            continue
        inner = {id(w) for sub in registry.sublayers(layer) for w in sub.weights}
        for weight in layer.weights:
            if id(weight) not in inner and id(weight) not in pruned and len(weight.shape) >= 2 and weight.trainable:
                unreached.append(f"'{layer.name}' ({type(layer).__name__}): {registry.weight_label(weight, layer)} "
                                 f"{'x'.join(map(str, weight.shape))}")
    if unreached:
        warnings.warn(
            f"{caller}: these weights are not pruned, because tfprune does not know the layer that holds them: "
            f"{'; '.join(unreached)}. To prune them, make the layer a tfprune.PrunableLayer returning them from "
            "get_prunable_weights().", UserWarning, stacklevel=3,
        )


def _strip_clone_function(layer):
    if isinstance(layer, PruningWrapper):
        return _strip_layer(layer)
    if isinstance(layer, keras.Model):
        return strip_pruning(layer)
    return copy_layer(layer)


def _strip_layer(wrapper):
    # Tensors, not host copies: each weight times its mask is computed once, and the copy's variable
    # takes that buffer; the other weights are shared with the wrapper's until written (copy on write).
    masked = wrapper.masked_tensors()
    return copy_layer(wrapper.layer, [masked.get(id(w), w) for w in wrapper.layer.weights])


def _forward_values(weights, wrappers):
    """Host copies of ``weights`` as the forward pass uses them: pruned ones times their masks."""
    masked = {}
    for wrapper in wrappers:
        masked.update(wrapper.masked_values())
    return [masked[id(w)] if id(w) in masked else keras.ops.convert_to_numpy(w) for w in weights]


def _clone_model(model, clone_function):
    clone = keras.models.clone_model(model, clone_function=clone_function)
    clone.trainable = model.trainable
    return clone
