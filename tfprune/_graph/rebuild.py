"""Rebuilding a model with sliced weights, and copying its compile settings."""

import keras
import numpy as np

from tfprune._common import keras_internals
from tfprune._common.compiling import compile_like
from tfprune._common.layers import copy_layer


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
        weights = None
        if id(op) not in built:
            built[id(op)], weights = _rebuild_layer(analysis, index, gnode, keeps)
        args, kwargs = gnode.node.arguments.fill_in(new)
        outputs = built[id(op)](*args, **kwargs)
        for key, tensor in zip(gnode.outputs, keras.tree.flatten(outputs)):
            new[key] = tensor
        if weights:
            built[id(op)].set_weights(weights)
    if graph.is_sequential:
        layers = [built[id(layer)] for layer in analysis.model.layers]
        result = keras.Sequential([new[graph.input_keys[0]]] + layers, name=analysis.model.name)
    else:
        functional = graph.functional
        inputs = keras.tree.pack_sequence_as(keras_internals.inputs_struct(functional), [new[k] for k in graph.input_keys])
        outputs = keras.tree.pack_sequence_as(keras_internals.outputs_struct(functional), [new[k] for k in graph.output_keys])
        result = keras.Model(inputs, outputs, name=analysis.model.name)
    compile_like(analysis.model, result, "the smaller model")
    return result


def _rebuild_layer(analysis, index, gnode, keeps):
    """``(new_layer, weights)`` for one node; weights may be None."""
    layer = gnode.operation
    in_keeps = [keeps[k] for k in gnode.inputs]
    out_keep = keeps[gnode.outputs[0]] if gnode.outputs else None
    cut = any(keep is not None and not keep.all() for keep in in_keeps + [out_keep])
    if not isinstance(layer, keras.layers.Layer) and not (analysis.cuts_through(index) and cut):
        return layer, None  # a keras.ops operation holds no state: the new graph calls it again
    if not analysis.cuts_through(index) or not cut:
        return copy_layer(layer), None
    out_shape = analysis.graph.shape(gnode.outputs[0])[1:]
    return analysis.families[index].rebuild(layer, in_keeps[0] if in_keeps else None, out_keep, out_shape)


def zero_cut(analysis, model, removed):
    """Zeroes, in ``model`` (a copy of ``analysis.model``), the channels of the unions ``removed``."""
    keeps = analysis.keep_masks(removed)
    by_name = {layer.name: layer for layer in model.layers}
    for index, gnode in enumerate(analysis.graph.nodes):
        layer = by_name.get(gnode.name)
        if layer is None or not analysis.cuts_through(index):
            continue
        in_keep = keeps[gnode.inputs[0]] if gnode.inputs else None
        analysis.families[index].zero(layer, in_keep, keeps[gnode.outputs[0]])
