"""Rebuilds a model without some channels, copying the weights that remain."""

import collections.abc
import warnings

import keras
import numpy as np

from tfprune.surgery import _layers
from tfprune.surgery._channels import ChannelAnalysis


def _list_names(names, limit=12):
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def roots_for(analysis, channels, argument="channels"):
    """Validates ``{layer_name: [channel indices]}`` and returns the channel unions it removes."""
    if not isinstance(channels, collections.abc.Mapping):
        raise TypeError(
            f"`{argument}` must be a dict {{layer_name: [channel indices]}}, got {type(channels).__name__}."
        )
    producers = analysis.producers
    removed = set()
    for name, indices in channels.items():
        if name not in producers:
            raise ValueError(_not_a_producer(analysis, name, argument))
        width = len(producers[name])
        try:
            indices = np.asarray(list(indices)).astype(np.int64, casting="safe") if len(indices) else np.zeros(0, np.int64)
        except (TypeError, ValueError):
            raise TypeError(
                f"`{argument}['{name}']` must be a list of integer channel indices, got {indices!r}."
            ) from None
        bad = indices[(indices < 0) | (indices >= width)]
        if bad.size:
            raise ValueError(
                f"`{argument}['{name}']` has channel index {int(bad[0])}, but '{name}' has {width} output "
                f"channels: indices must be in [0, {width - 1}]."
            )
        blocked = analysis.block_reason_for(name, indices.tolist())
        if blocked is not None:
            channel, why = blocked
            supported = f" Layers a cut can pass through: {_layers.SUPPORTED}." if ("into" in why or "out of" in why) else ""
            raise ValueError(f"Channel {channel} of '{name}' cannot be removed: {why}.{supported}")
        removed.update(analysis.roots_of(name)[indices].tolist())
    check_not_empty(analysis, removed)
    return removed


def _not_a_producer(analysis, name, argument):
    graph = analysis.graph
    if name in graph.nodes_by_name:
        gnode = graph.nodes_by_name[name]
        feeding = []
        if gnode.outputs and gnode.outputs[0] in analysis.ids:
            roots = set(analysis.root[analysis.ids[gnode.outputs[0]]].tolist())
            feeding = [p for p in analysis.producers if roots & set(analysis.roots_of(p).tolist())]
        hint = f" Its channels come from {_list_names(feeding)}: name that layer." if feeding else ""
        return (
            f"`{argument}` names '{name}' ({type(gnode.operation).__name__}), which does not make output "
            f"channels of its own. Name a Conv, Dense, SeparableConv or ConvTranspose layer.{hint}"
        )
    return (
        f"`{argument}` names '{name}', which is not a layer of model '{analysis.model.name}'. Layers whose "
        f"output channels can be removed: {_list_names(analysis.producers)}."
    )


def check_not_empty(analysis, removed):
    removed_mask = np.zeros(len(analysis.root), dtype=bool)
    removed_mask[list(removed)] = True
    for unit_name, ids in analysis.producers.items():
        roots = analysis.root[ids]
        if removed_mask[roots].all():
            others = [p for p in analysis.producers if p != unit_name and np.isin(analysis.roots_of(p), roots).any()]
            coupled = f" (coupled with {_list_names(others)}, which lose the same channels)" if others else ""
            raise ValueError(
                f"This cut would remove all {len(ids)} output channels of '{unit_name}'{coupled}. A layer must "
                "keep at least one channel: remove fewer."
            )


def rebuild_model(analysis, removed):
    """A new model without the channel unions in ``removed``; the original is left as it was."""
    graph = analysis.graph
    keeps = analysis.keep_masks(removed) if removed else {k: np.ones(len(v), bool) for k, v in analysis.ids.items()}
    new = {}
    for key in graph.input_keys:
        tensor = graph.tensors[key]
        new[key] = keras.Input(
            batch_shape=tensor.shape, dtype=tensor.dtype, sparse=tensor.sparse, name=graph.input_layer_name(key)
        )
    built = {}
    for index, gnode in enumerate(graph.nodes):
        op = gnode.operation
        if id(op) in built:
            layer, weights = built[id(op)], None
        else:
            in_keeps = [keeps[k] for k in gnode.inputs]
            out_keep = keeps[gnode.outputs[0]] if gnode.outputs else None
            layer, weights = _layers.rebuild(analysis.kind[index], op, in_keeps, out_keep, gnode, graph)
            built[id(op)] = layer
        args, kwargs = gnode.node.arguments.fill_in(new)
        outputs = layer(*args, **kwargs)
        for key, tensor in zip(gnode.outputs, keras.tree.flatten(outputs)):
            new[key] = tensor
        if weights:
            layer.set_weights(weights)
    functional = graph.functional
    if graph.is_sequential:
        inputs = new[graph.input_keys[0]]
        layers = [built[id(layer)] for layer in analysis.model.layers]
        result = keras.Sequential([inputs] + layers, name=analysis.model.name)
    else:
        inputs = keras.tree.pack_sequence_as(functional._inputs_struct, [new[k] for k in graph.input_keys])
        outputs = keras.tree.pack_sequence_as(functional._outputs_struct, [new[k] for k in graph.output_keys])
        result = keras.Model(inputs, outputs, name=analysis.model.name)
    _copy_compile(analysis.model, result)
    return result


def _copy_compile(source, target):
    config = source.get_compile_config() if getattr(source, "compiled", False) else None
    if not config:
        return
    try:
        target.compile_from_config(config)
    except Exception as err:  # custom losses or metrics that do not deserialize
        warnings.warn(f"The smaller model could not be compiled like the original ({err}); compile it yourself.")


def remove_channels(model, channels):
    """Returns a smaller copy of ``model`` without the given output channels.

    The cut follows the graph. A producer (Conv1D/2D/3D, Conv*Transpose, SeparableConv,
    Dense) loses output channels; the BatchNormalization, activations, pooling, padding,
    dropout and DepthwiseConv layers after it lose the same channels (a depthwise layer
    carries the cut to its own outputs); every consumer loses the matching inputs, including
    a Dense after Flatten, where channel ``c`` at spatial position ``(h, w)`` sits at
    ``(h*W + w)*C + c``. Producers tied by Add, Subtract, Multiply, Average, Maximum or
    Minimum form a coupled group that loses the same channels: naming one member cuts the
    whole group. Concatenate offsets are mapped.

    The new model has the same architecture, layer names and model name; weights are copied,
    and it is compiled like the original when the original was compiled (fresh optimizer
    state). The original model is not modified.

    Removal is exact: if the removed channels are exactly zero in the original (see
    ``zero_channels``), both models compute the same outputs up to float rounding.

    Args:
        model: a built Sequential or Functional Keras 3 model (channels_last).
        channels: dict ``{layer_name: [channel indices]}``, indices into the named layer's
            output channels.

    Returns:
        A new ``keras.Model`` (a ``keras.Sequential`` for a Sequential input).

    Raises:
        ValueError: an unknown layer name, a layer that makes no channels of its own, an
            index out of range, a channel that cannot be removed (it is a model input or
            output, or flows into a layer that cannot be cut, named in the message), or a
            cut that would leave a layer without channels.
        TypeError: ``channels`` is not a dict of integer lists.

    Example:

    ```python
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    smaller = tfprune.surgery.remove_channels(model, {"conv2_block1_1_conv": [0, 5, 7]})
    smaller.summary()
    ```
    """
    analysis = ChannelAnalysis(model)
    return rebuild_model(analysis, roots_for(analysis, channels))


def zero_channels(model, channels):
    """Returns a copy of ``model`` in which the given channels output exact zeros.

    The producer's filters and bias for those channels are zeroed, and so are gamma and beta
    of every BatchNormalization and the kernel and bias of every DepthwiseConv the channels
    pass through. After an activation with ``f(0) = 0`` (ReLU and friends) the channels
    then carry zeros everywhere, so ``remove_channels(model, channels)`` computes the same
    outputs as this copy: use it to check a cut, or to try one before removing it.

    Args:
        model: as for ``remove_channels``.
        channels: as for ``remove_channels`` (coupled groups are zeroed together).

    Returns:
        A new model of the same size as ``model``.

    Example:

    ```python
    masked = tfprune.surgery.zero_channels(model, {"conv1": [0, 3]})
    smaller = tfprune.surgery.remove_channels(model, {"conv1": [0, 3]})
    np.testing.assert_allclose(masked(x), smaller(x), atol=1e-5)
    ```
    """
    analysis = ChannelAnalysis(model)
    removed = roots_for(analysis, channels)
    copy = rebuild_model(analysis, set())
    keeps = analysis.keep_masks(removed) if removed else None
    if keeps is None:
        return copy
    by_name = {layer.name: layer for layer in copy.layers}
    for index, gnode in enumerate(analysis.graph.nodes):
        kind = analysis.kind[index]
        layer = by_name.get(gnode.name)
        if layer is None or kind not in ("producer", "depthwise", "channelwise"):
            continue
        weights = {w.name: w for w in layer.weights}
        if kind == "producer":
            drop = ~keeps[gnode.outputs[0]]
            if "pointwise_kernel" in weights:
                _zero_last(weights["pointwise_kernel"], drop)
            elif isinstance(layer, _layers.PRODUCER_TRANSPOSE):
                _zero_axis(weights["kernel"], drop, -2)
            else:
                _zero_last(weights["kernel"], drop)
        elif kind == "depthwise":
            drop = ~keeps[gnode.outputs[0]]
            kernel = weights["kernel"]
            _zero_last(kernel, drop, reshape=True)
        else:
            drop = ~keeps[gnode.inputs[0]]
            for name in ("gamma", "beta"):
                if name in weights:
                    _zero_last(weights[name], drop)
            continue
        if "bias" in weights:
            _zero_last(weights["bias"], drop)
    return copy


def _zero_last(variable, drop, reshape=False):
    value = keras.ops.convert_to_numpy(variable).copy()
    if reshape:  # depthwise kernel (..., in, multiplier): output channel c*m + j
        flat = value.reshape(value.shape[:-2] + (-1,))
        flat[..., drop] = 0
        value = flat.reshape(value.shape)
    else:
        value[..., drop] = 0
    variable.assign(value)


def _zero_axis(variable, drop, axis):
    value = np.moveaxis(keras.ops.convert_to_numpy(variable).copy(), axis, -1)
    value[..., drop] = 0
    variable.assign(np.moveaxis(value, -1, axis))
