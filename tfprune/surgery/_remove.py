"""Rebuilds a model without some channels, copying the weights that remain."""

import collections.abc

import numpy as np

from tfprune._common.text import list_names
from tfprune._graph import SUPPORTED, ChannelAnalysis, cut_report, rebuild_model, zero_cut


def unions_for(analysis, channels, argument="channels"):
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
        indices = _channel_indices(indices, f"`{argument}['{name}']`")
        bad = indices[(indices < 0) | (indices >= width)]
        if bad.size:
            raise ValueError(
                f"`{argument}['{name}']` has channel index {int(bad[0])}, but '{name}' has {width} output "
                f"channels: indices must be in [0, {width - 1}]."
            )
        blocked = analysis.block_reason_for(name, indices.tolist())
        if blocked is not None:
            channel, why = blocked
            supported = f" Layers a cut can pass through: {SUPPORTED}." if ("into" in why or "out of" in why) else ""
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
        hint = f" Its channels come from {list_names(feeding)}: name that layer." if feeding else ""
        return (
            f"`{argument}` names '{name}' ({type(gnode.operation).__name__}), which does not make output "
            f"channels of its own. Name a Conv, Dense, SeparableConv or ConvTranspose layer.{hint}"
        )
    return (
        f"`{argument}` names '{name}', which is not a layer of model '{analysis.model.name}'. Layers whose "
        f"output channels can be removed: {list_names(analysis.producers)}."
    )


def check_not_empty(analysis, removed):
    removed_mask = np.zeros(len(analysis.root), dtype=bool)
    removed_mask[list(removed)] = True
    for unit_name, ids in analysis.producers.items():
        roots = analysis.root[ids]
        if removed_mask[roots].all():
            others = [p for p in analysis.producers if p != unit_name and np.isin(analysis.roots_of(p), roots).any()]
            coupled = f" (coupled with {list_names(others)}, which lose the same channels)" if others else ""
            raise ValueError(
                f"This cut would remove all {len(ids)} output channels of '{unit_name}'{coupled}. A layer must "
                "keep at least one channel: remove fewer."
            )


def _channel_indices(indices, where):
    """``indices`` as an int64 array; booleans are refused, since a mask could mean 'keep' as well as 'remove'."""
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__len__"):
        raise TypeError(f"{where} must be a list of integer channel indices, got {indices!r}.")
    items = list(indices)
    values = np.asarray(items)
    if values.dtype == bool or any(isinstance(v, (bool, np.bool_)) for v in items):
        raise TypeError(
            f"{where} is a boolean mask; give the indices of the channels to remove instead, e.g. "
            "np.flatnonzero(remove_mask) (or np.flatnonzero(~keep_mask))."
        )
    if values.size == 0:
        return np.zeros(0, np.int64)
    try:
        return values.astype(np.int64, casting="safe")
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be a list of integer channel indices, got {indices!r}.") from None


def remove_channels(model, channels, *, return_report=False):
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
        return_report: also return a ``StructuredReport``: channels cut per layer (coupled
            members included) and the layers left alone, with the reason.

    Returns:
        A new ``keras.Model`` (a ``keras.Sequential`` for a Sequential input); with
        ``return_report=True``, ``(model, report)``.

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
    smaller, report = tfprune.surgery.remove_channels(model, {"conv2_block1_0_conv": [1]}, return_report=True)
    print(report.cut)   # the whole residual stream it feeds: {layer: (before, after)}
    ```
    """
    analysis = ChannelAnalysis(model)
    removed = unions_for(analysis, channels)
    smaller = rebuild_model(analysis, removed)
    if return_report:
        return smaller, cut_report(analysis, removed, default="not named in `channels`")
    return smaller


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
    removed = unions_for(analysis, channels)
    copy = rebuild_model(analysis, set())
    if removed:
        zero_cut(analysis, copy, removed)
    return copy
