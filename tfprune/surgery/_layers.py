"""What each Keras layer does to the channel (last) axis, and how to rebuild it with fewer channels.

Every layer falls in one kind:

* ``producer``: makes new output channels from all its input channels (Conv1D/2D/3D with
  ``groups=1``, Conv*Transpose, SeparableConv1D/2D, Dense). Its output channels can be
  removed, and it accepts losing input channels.
* ``depthwise``: DepthwiseConv1D/2D. Output channel ``c*m + j`` reads input channel ``c``,
  so a cut on its input carries through to its ``m`` outputs per channel.
* ``channelwise``: one parameter per channel (BatchNormalization on the last axis, PReLU):
  the parameters are sliced.
* ``passthrough``: the channel axis goes through untouched (activations, dropout, pooling,
  global pooling, padding, cropping, up-sampling, scalar Rescaling).
* ``flatten``, ``reshape``: channels-last flattening maps channel ``c`` at spatial position
  ``p`` to index ``p*C + c``.
* ``merge``: Add, Subtract, Multiply, Average, Maximum, Minimum: inputs are coupled channel
  by channel, so they must lose the same channels.
* ``concat``: Concatenate on the last axis: channel offsets shift.
* ``opaque``: anything else. It is copied as it is; channels that flow into it cannot be
  removed, and trying to names it.
"""

import numpy as np

import keras

L = keras.layers

PRODUCER_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
PRODUCER_TRANSPOSE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
PRODUCER_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
ACTIVATIONS = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU)
PASSTHROUGH = ACTIVATIONS + (
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
    L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity,
)
SPATIAL = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
    L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)
MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

SUPPORTED = (
    "Conv1D/2D/3D (groups=1), Conv1D/2D/3DTranspose, SeparableConv1D/2D, Dense, DepthwiseConv1D/2D, "
    "BatchNormalization (last axis), PReLU, Activation/ReLU/LeakyReLU/ELU, Softmax (not on the "
    "channel axis), Dropout and noise layers, pooling and global pooling, ZeroPadding, Cropping, "
    "UpSampling, Flatten, Reshape (keeping the last axis, or flattening), Rescaling (scalar), "
    "Add/Subtract/Multiply/Average/Maximum/Minimum, Concatenate; all channels_last"
)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def _last_axis(axis, rank):
    return axis == -1 or axis == rank - 1


def classify(layer, gnode, graph):
    """Returns ``(kind, reason)``; ``reason`` says why an ``opaque`` layer is opaque."""
    name = type(layer).__name__
    if not isinstance(layer, L.Layer):
        return "opaque", f"'{layer.name}' ({name}): a raw operation, not a layer"
    if isinstance(layer, keras.Model):
        return "opaque", f"'{layer.name}' ({name}): a nested model, which channels are not traced into"
    if gnode.shared:
        return "opaque", f"'{layer.name}' ({name}): a layer shared by several calls"
    if not _channels_last(layer):
        return "opaque", f"'{layer.name}' ({name}): data_format='{layer.data_format}', only channels_last is supported"
    in_rank = len(graph.shape(gnode.inputs[0])) if gnode.inputs else 0
    if isinstance(layer, PRODUCER_CONV) and not isinstance(layer, PRODUCER_TRANSPOSE + PRODUCER_SEPARABLE):
        if getattr(layer, "groups", 1) != 1:
            return "opaque", f"'{layer.name}' ({name}): a grouped convolution (groups={layer.groups})"
        return "producer", None
    if isinstance(layer, PRODUCER_TRANSPOSE + PRODUCER_SEPARABLE) or type(layer) is L.Dense:
        return "producer", None
    if isinstance(layer, DEPTHWISE):
        return "depthwise", None
    if isinstance(layer, L.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        if isinstance(axis, int) and _last_axis(axis, in_rank):
            return "channelwise", None
        return "opaque", f"'{layer.name}' (BatchNormalization): it normalizes axis {axis}, not the last"
    if isinstance(layer, L.PReLU):
        return "channelwise", None
    if isinstance(layer, L.Softmax):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if any(_last_axis(a, in_rank) for a in axes):
            return "opaque", f"'{layer.name}' (Softmax): it normalizes across the channels"
        return "passthrough", None
    if isinstance(layer, PASSTHROUGH + SPATIAL):
        return "passthrough", None
    if isinstance(layer, L.Rescaling):
        if np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0:
            return "passthrough", None
        return "opaque", f"'{layer.name}' (Rescaling): per-channel scale or offset"
    if isinstance(layer, L.Flatten):
        return "flatten", None
    if isinstance(layer, L.Reshape):
        return "reshape", None
    if isinstance(layer, MERGE):
        return "merge", None
    if isinstance(layer, L.Concatenate):
        return ("concat", None) if _last_axis(layer.axis, in_rank) else ("merge", None)
    return "opaque", f"'{layer.name}' ({name}): a layer type tfprune.surgery cannot cut through"


def _clone(layer, **changes):
    config = layer.get_config()
    config.update(changes)
    return layer.__class__.from_config(config)


def rebuild(kind, layer, in_keeps, out_keep, gnode, graph):
    """Returns ``(new_layer, weights)`` for the cut given by the keep masks (``weights`` may be None)."""
    old = {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}
    if kind == "opaque" or not any(
        keep is not None and not keep.all() for keep in list(in_keeps) + [out_keep]
    ):
        new = _clone(layer) if isinstance(layer, L.Layer) else layer
        return new, (layer.get_weights() if isinstance(layer, L.Layer) else None)
    in_keep = in_keeps[0] if in_keeps else None
    if kind == "producer":
        return _rebuild_producer(layer, old, in_keep, out_keep)
    if kind == "depthwise":
        multiplier = layer.depth_multiplier
        kernel = old["kernel"][..., in_keep, :]
        weights = [kernel] + ([old["bias"][np.repeat(in_keep, multiplier)]] if "bias" in old else [])
        return _clone(layer), weights
    if kind == "channelwise":
        channels = len(in_keep)
        weights = [w[..., in_keep] if w.shape and w.shape[-1] == channels else w for w in layer.get_weights()]
        return _clone(layer), weights
    if kind == "reshape":
        out_shape = list(graph.shape(gnode.outputs[0])[1:])
        out_shape[-1] = int(out_keep.sum())
        return _clone(layer, target_shape=tuple(out_shape)), None
    return _clone(layer), (layer.get_weights() or None)


def _rebuild_producer(layer, old, in_keep, out_keep):
    n_out = int(out_keep.sum())
    if isinstance(layer, PRODUCER_SEPARABLE):
        multiplier = layer.depth_multiplier
        depthwise = old["depthwise_kernel"][..., in_keep, :]
        pointwise = old["pointwise_kernel"][..., np.repeat(in_keep, multiplier), :][..., out_keep]
        weights = [depthwise, pointwise]
        key = "filters"
    elif isinstance(layer, PRODUCER_TRANSPOSE):
        weights = [old["kernel"][..., out_keep, :][..., in_keep]]
        key = "filters"
    elif isinstance(layer, L.Dense):
        weights = [old["kernel"][in_keep][:, out_keep]]
        key = "units"
    else:
        weights = [old["kernel"][..., in_keep, :][..., out_keep]]
        key = "filters"
    if "bias" in old:
        weights.append(old["bias"][out_keep])
    return _clone(layer, **{key: n_out}), weights


def output_channels(layer):
    """Output channel count of a producer."""
    return layer.units if isinstance(layer, L.Dense) else layer.filters


def filters(layer):
    """The weights that make each output channel of a producer, as an array ``(channels, -1)``."""
    old = {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}
    if isinstance(layer, PRODUCER_SEPARABLE):
        kernel = old["pointwise_kernel"]
        return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
    kernel = old["kernel"]
    axis = -2 if isinstance(layer, PRODUCER_TRANSPOSE) else -1
    return np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
