"""How each family of Keras layers is cut: one class per family, in a registry keyed by layer class.

A family object answers, for the layers it covers: how channel ids flow through them
(``propagate``), whether a given call cannot be cut (``opaque_reason``), how to rebuild them
with fewer input or output channels (``rebuild``), how to zero channels (``zero``), which
weights make each output channel (``filters``) and their multiply-adds (``macs``). The base
``LayerFamily`` is a *producer*: a layer with one ``kernel`` (output channels on
``output_axis``, input channels on ``input_axis``) and an optional ``bias``, whose output
width is the config entry ``width_key``.

``channel_weights``, ``merge_reason`` and ``merge_inputs`` say which weights hold each channel
and how a consumer folds identical input channels into one (the cut of centripetal SGD).
"""

import numpy as np

import keras

from tfprune._common import keras_internals

L = keras.layers

ACTIVATIONS = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU)

SUPPORTED = (
    "Conv1D/2D/3D (groups=1), Conv1D/2D/3DTranspose, SeparableConv1D/2D, Dense, DepthwiseConv1D/2D, "
    "BatchNormalization (last axis), PReLU, Activation/ReLU/LeakyReLU/ELU, Softmax (not on the "
    "channel axis), Dropout and noise layers, pooling and global pooling, ZeroPadding, Cropping, "
    "UpSampling, Flatten, Reshape (keeping the last axis, or flattening), Rescaling (scalar), "
    "Add/Subtract/Multiply/Average/Maximum/Minimum, Concatenate; keras.ops nodes: element-wise ops "
    "(with a scalar or between tensors), reductions and cumulative ops not over the channel axis, slicing, "
    "transpose, expand_dims, squeeze and reshape keeping the channel axis last, concatenate; all channels_last"
)


def _prod(values):
    return int(np.prod(list(values), dtype=np.int64)) if len(values) else 1


def _last_axis(axis, rank):
    return axis == -1 or axis == rank - 1


def _in_rank(gnode, graph):
    return len(graph.shape(gnode.inputs[0])) if gnode.inputs else 0


def _numpy(layer):
    return {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}


def clone(layer, **changes):
    """A fresh, unbuilt copy of ``layer`` from its config, with ``changes`` applied."""
    config = layer.get_config()
    config.update(changes)
    return layer.__class__.from_config(config)


def zero_along(variable, drop, axis=-1):
    """Sets ``variable[..., drop]`` along ``axis`` to zero, in place."""
    value = np.moveaxis(keras.ops.convert_to_numpy(variable).copy(), axis, -1)
    value[..., drop] = 0
    variable.assign(np.moveaxis(value, -1, axis))


def _take(array, keep, axis):
    return np.compress(keep, array, axis=axis) if keep is not None else array


class LayerFamily:
    """How one family of layers is cut; subclass it to let ``remove_channels`` cut your own layer.

    The defaults describe a *producer*: a layer that makes its own output channels from all
    its input channels with one weight ``kernel`` (output channels on axis ``output_axis``,
    input channels on ``input_axis``) and an optional ``bias`` of one entry per output
    channel, and whose output width is the config entry ``width_key`` (``get_config`` and
    ``from_config`` must round-trip it). A Dense-like layer only sets the attributes; other
    layers override the methods.

    Attributes:
        produces: the layer makes new output channels (it can be named in ``remove_channels``).
        kernel: name of the weight holding the filters.
        output_axis: axis of ``kernel`` holding the output channels.
        input_axis: axis of ``kernel`` holding the input channels.
        width_key: config entry holding the number of output channels.

    Example:

    ```python
    class MyDenseFamily(tfprune.surgery.LayerFamily):
        width_key = "units"          # kernel (inputs, units), bias (units,)

    tfprune.surgery.register_layer(MyDense, MyDenseFamily())
    ```
    """

    produces = True
    kernel = "kernel"
    output_axis = -1
    input_axis = -2
    width_key = "filters"

    def opaque_reason(self, layer, gnode, graph):
        """Why this call of ``layer`` cannot be cut (a sentence naming it), or None."""
        return None

    def channels(self, layer):
        """Number of output channels of a producer."""
        return int(getattr(layer, self.width_key))

    def propagate(self, flow, layer, gnode, ins):
        """Channel ids of each output, from ``ins`` (one id array per input, along the last axis).

        ``flow`` offers ``fresh(n)`` (new ids), ``union(a, b)`` (tie ids position by
        position), ``block(ids, reason)`` and ``width(key)``.
        """
        return [flow.fresh(self.channels(layer))]

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        """``(new_layer, weights)`` keeping the input channels ``in_keep`` and output channels ``out_keep``.

        Keep masks are boolean arrays (None: nothing cut there); ``out_shape`` is the original
        output shape without the batch axis. ``weights`` may be None (no weights to set).
        """
        old = _numpy(layer)
        kernel = _take(_take(old[self.kernel], in_keep, self.input_axis), out_keep, self.output_axis)
        weights = [kernel] + ([_take(old["bias"], out_keep, 0)] if "bias" in old else [])
        return clone(layer, **{self.width_key: int(out_keep.sum())}), weights

    def zero(self, layer, in_keep, out_keep):
        """Makes the channels not in ``out_keep`` output exact zeros (``layer``'s weights, in place)."""
        weights = {w.name: w for w in layer.weights}
        zero_along(weights[self.kernel], ~out_keep, self.output_axis)
        if "bias" in weights:
            zero_along(weights["bias"], ~out_keep)

    def filters(self, layer):
        """The weights making each output channel, as an array ``(channels, -1)``; None if none."""
        kernel = _numpy(layer)[self.kernel]
        return np.moveaxis(kernel, self.output_axis, 0).reshape(kernel.shape[self.output_axis], -1)

    def macs(self, layer, in_shape, out_shape):
        """Multiply-adds of one call for one sample (shapes include the batch axis)."""
        kernel = _numpy(layer).get(self.kernel)
        return _prod(out_shape[1:-1]) * int(kernel.size) if kernel is not None else 0

    # channel merging (centripetal SGD: identical channels are folded into one) -------------
    def channel_weights(self, layer):
        """``[(weight name, axis, side)]``: weights holding one entry per channel along ``axis``.

        ``side`` is ``"out"`` when the entries follow the layer's output channels, ``"in"`` when
        they follow its input channels. Two channels are identical when every one of these
        entries is; a weight whose axis has length 1 is shared by all channels and skipped.
        A producer's are its filters (``kernel`` on ``output_axis``) and its bias.
        """
        names = {w.name for w in layer.weights}
        entries = [(self.kernel, self.output_axis, "out")] if self.kernel in names else []
        return entries + ([("bias", 0, "out")] if "bias" in names else [])

    def merge_reason(self, layer):
        """Why identical input channels of ``layer`` cannot be folded into one (a sentence), or None."""
        return None

    def merge_inputs(self, layer, groups):
        """Folds identical input channels: each array of ``groups`` lists input positions, the first kept.

        The kernel rows of the other positions are added onto the kept one (along
        ``input_axis``), in place; removing the other positions afterwards then leaves the
        layer's output unchanged, since it reads the same values there.
        """
        weight = {w.name: w for w in layer.weights}[self.kernel]
        value = np.moveaxis(keras.ops.convert_to_numpy(weight).copy(), self.input_axis, 0)
        for positions in groups:
            value[positions[0]] += value[positions[1:]].sum(axis=0)
        weight.assign(np.moveaxis(value, 0, self.input_axis))


class Conv(LayerFamily):
    def opaque_reason(self, layer, gnode, graph):
        if getattr(layer, "groups", 1) != 1:
            return f"'{layer.name}' ({type(layer).__name__}): a grouped convolution (groups={layer.groups})"
        return None

    def macs(self, layer, in_shape, out_shape):
        groups = getattr(layer, "groups", 1)
        return _prod(out_shape[1:-1]) * _prod(layer.kernel_size) * (in_shape[-1] // groups) * out_shape[-1]


class ConvTranspose(LayerFamily):
    output_axis, input_axis = -2, -1

    def macs(self, layer, in_shape, out_shape):
        return _prod(in_shape[1:-1]) * _prod(layer.kernel_size) * in_shape[-1] * out_shape[-1]


class SeparableConv(LayerFamily):
    kernel = "pointwise_kernel"

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        old = _numpy(layer)
        m = layer.depth_multiplier
        depthwise = _take(old["depthwise_kernel"], in_keep, -2)
        pointwise = _take(old["pointwise_kernel"], None if in_keep is None else np.repeat(in_keep, m), -2)
        weights = [depthwise, _take(pointwise, out_keep, -1)]
        weights += [_take(old["bias"], out_keep, 0)] if "bias" in old else []
        return clone(layer, filters=int(out_keep.sum())), weights

    def macs(self, layer, in_shape, out_shape):
        c_in, m = in_shape[-1], layer.depth_multiplier
        positions = _prod(out_shape[1:-1])
        return positions * _prod(layer.kernel_size) * c_in * m + positions * c_in * m * out_shape[-1]

    def merge_reason(self, layer):
        return (f"'{layer.name}' ({type(layer).__name__}) filters each input channel with its own depthwise "
                "kernel, so two identical input channels cannot be folded into one")


class Dense(LayerFamily):
    width_key = "units"

    def opaque_reason(self, layer, gnode, graph):
        if type(layer) is not L.Dense:  # a subclass may compute something else
            return f"'{layer.name}' ({type(layer).__name__}): a layer type tfprune.surgery cannot cut through"
        return None

    def macs(self, layer, in_shape, out_shape):
        return _prod(in_shape[1:-1]) * in_shape[-1] * out_shape[-1]


class Follower(LayerFamily):
    """A layer that makes no channels of its own: the base of every non-producer family."""

    produces = False
    kernel = output_axis = input_axis = width_key = None

    def propagate(self, flow, layer, gnode, ins):
        return [ins[0]]

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        return clone(layer), (layer.get_weights() or None)

    def zero(self, layer, in_keep, out_keep):
        pass

    def filters(self, layer):
        return None

    def macs(self, layer, in_shape, out_shape):
        return 0

    def channel_weights(self, layer):
        return []

    def merge_inputs(self, layer, groups):
        pass  # a follower does not mix channels: identical channels stay identical through it


class Depthwise(Follower):
    """Output channel ``c*m + j`` reads input channel ``c``: a cut on the input carries through."""

    kernel, output_axis, input_axis = "kernel", -1, -2

    def propagate(self, flow, layer, gnode, ins):
        return [np.repeat(ins[0], layer.depth_multiplier)]

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        old = _numpy(layer)
        weights = [old["kernel"][..., in_keep, :]]
        weights += [old["bias"][np.repeat(in_keep, layer.depth_multiplier)]] if "bias" in old else []
        return clone(layer), weights

    def zero(self, layer, in_keep, out_keep):
        weights = {w.name: w for w in layer.weights}
        kernel = weights["kernel"]
        value = keras.ops.convert_to_numpy(kernel).copy()
        flat = value.reshape(value.shape[:-2] + (-1,))  # (..., in, multiplier): output c*m + j
        flat[..., ~out_keep] = 0
        kernel.assign(flat.reshape(value.shape))
        if "bias" in weights:
            zero_along(weights["bias"], ~out_keep)

    def macs(self, layer, in_shape, out_shape):
        return _prod(out_shape[1:-1]) * _prod(layer.kernel_size) * out_shape[-1]

    def channel_weights(self, layer):
        names = {w.name for w in layer.weights}
        return [("kernel", -2, "in")] + ([("bias", 0, "out")] if "bias" in names else [])


class Channelwise(Follower):
    """One parameter per channel (BatchNormalization on the last axis, PReLU): sliced."""

    def opaque_reason(self, layer, gnode, graph):
        if not isinstance(layer, L.BatchNormalization):
            return None
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        if isinstance(axis, int) and _last_axis(axis, _in_rank(gnode, graph)):
            return None
        return f"'{layer.name}' (BatchNormalization): it normalizes axis {axis}, not the last"

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        n = len(in_keep)
        weights = [w[..., in_keep] if w.shape and w.shape[-1] == n else w for w in layer.get_weights()]
        return clone(layer), weights

    def zero(self, layer, in_keep, out_keep):
        for w in layer.weights:
            if w.name in ("gamma", "beta"):
                zero_along(w, ~in_keep)

    def macs(self, layer, in_shape, out_shape):
        return _prod(out_shape[1:])  # at inference, a scale and a shift per element

    def channel_weights(self, layer):
        # gamma, beta and the moving statistics (BatchNormalization), alpha (PReLU)
        return [(w.name, -1, "in") for w in layer.weights if len(w.shape)]


class PassThrough(Follower):
    """The channel axis goes through untouched (activations, dropout, pooling, padding, ...)."""


class Elementwise(PassThrough):
    """Activations and normalizations applied element by element: one operation per output element."""

    def macs(self, layer, in_shape, out_shape):
        return _prod(out_shape[1:])


class Softmax(PassThrough):
    def opaque_reason(self, layer, gnode, graph):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if any(_last_axis(a, _in_rank(gnode, graph)) for a in axes):
            return f"'{layer.name}' (Softmax): it normalizes across the channels"
        return None


class Rescaling(PassThrough):
    def opaque_reason(self, layer, gnode, graph):
        if np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0:
            return None
        return f"'{layer.name}' (Rescaling): per-channel scale or offset"


class Flatten(Follower):
    """Channels-last flattening: channel ``c`` at spatial position ``p`` lands at ``p*C + c``."""

    def opaque_reason(self, layer, gnode, graph):
        spatial = graph.shape(gnode.inputs[0])[1:-1]
        if any(d is None for d in spatial):
            return f"'{gnode.name}' (Flatten): unknown input size {spatial}"
        return None

    def propagate(self, flow, layer, gnode, ins):
        return [np.tile(ins[0], _prod(flow.graph.shape(gnode.inputs[0])[1:-1]))]


class Reshape(Follower):
    """A reshape keeping the last axis, or flattening it (as ``Flatten``)."""

    def opaque_reason(self, layer, gnode, graph):
        in_shape, out_shape = graph.shape(gnode.inputs[0])[1:], graph.shape(gnode.outputs[0])[1:]
        if in_shape and out_shape and in_shape[-1] == out_shape[-1]:
            return None
        if len(out_shape) == 1 and None not in in_shape:
            return None
        return f"'{gnode.name}' (Reshape {in_shape} -> {out_shape}): it moves channels off the last axis"

    def propagate(self, flow, layer, gnode, ins):
        in_shape, out_shape = flow.graph.shape(gnode.inputs[0])[1:], flow.graph.shape(gnode.outputs[0])[1:]
        if in_shape[-1] == out_shape[-1]:
            return [ins[0]]
        return [np.tile(ins[0], _prod(in_shape[:-1]))]

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        out_shape = list(out_shape)
        out_shape[-1] = int(out_keep.sum())
        return clone(layer, target_shape=tuple(out_shape)), None


def tie(flow, name, gnode, ins):
    """Ties inputs of the output's width channel by channel; single channels broadcast; others block."""
    width = flow.width(gnode.outputs[0])
    full = [ids for ids in ins if len(ids) == width]
    if not full:  # every input broadcasts: the output's channels are new, and nothing here can go
        for ids in ins:
            flow.block(ids, f"it broadcasts into '{name}'")
        return [flow.fresh(width, f"it comes out of '{name}', where every input broadcasts")]
    for ids in ins:
        if len(ids) == width:
            flow.union(full[0], ids)
        elif len(ids) != 1:  # broadcasting a single channel over all is fine
            flow.block(ids, f"it broadcasts into '{name}'")
    return [full[0]]


class Merge(Follower):
    """Add, Subtract, Multiply, ...: inputs are tied channel by channel, so they lose the same channels."""

    def propagate(self, flow, layer, gnode, ins):
        return tie(flow, layer.name, gnode, ins)

    def macs(self, layer, in_shape, out_shape):
        return _prod(out_shape[1:])  # one operation per output element


class Concatenate(Merge):
    """Concatenate on the last axis shifts channel offsets; on another axis it ties like a merge."""

    def propagate(self, flow, layer, gnode, ins):
        if _last_axis(layer.axis, _in_rank(gnode, flow.graph)):
            return [np.concatenate(ins)]
        return super().propagate(flow, layer, gnode, ins)


class Opaque(Follower):
    """Anything tfprune cannot cut through: copied unchanged; channels flowing into it are kept."""

    def opaque_reason(self, layer, gnode, graph):
        name = type(layer).__name__
        if not isinstance(layer, L.Layer):
            return (f"'{layer.name}' (keras.ops {name}): an operation whose channel mapping tfprune does not "
                    "know (tfprune.surgery.register_operation can add it)")
        owned = keras_internals.tracked_sublayers(layer, recursive=False)
        if owned:
            names = ", ".join(f"'{sub.name}'" for sub in owned[:3]) + (", ..." if len(owned) > 3 else "")
            return (f"'{layer.name}' ({name}): a layer that owns layers ({names}), which channels are not "
                    "traced into")
        return f"'{layer.name}' ({name}): a layer type tfprune.surgery cannot cut through"


class OpaqueNormalization(Opaque):
    """LayerNormalization and friends: not cut (they mix the channels), one operation per output element."""

    def macs(self, layer, in_shape, out_shape):
        return _prod(out_shape[1:])


class OpaqueEinsumDense(Opaque):
    """EinsumDense: not cut; multiply-adds are the output size times the kernel dims summed over."""

    def macs(self, layer, in_shape, out_shape):
        kernel_letters, output = layer.equation.split(",")[1].split("->")
        summed = [d for letter, d in zip(kernel_letters, layer.kernel.shape) if letter not in output]
        return _prod(out_shape[1:]) * _prod(summed)


OPAQUE = Opaque()
_REGISTRY = {}


def register_layer(layer_class, family):
    """Tells ``remove_channels`` how to cut ``layer_class`` (and its subclasses without their own entry).

    Args:
        layer_class: a subclass of ``keras.layers.Layer``.
        family: a ``LayerFamily`` instance (or a ``LayerFamily`` subclass, instantiated here).

    Returns:
        The family registered.

    Raises:
        TypeError: ``layer_class`` is not a Keras layer class, or ``family`` is not a ``LayerFamily``.

    Example:

    ```python
    class MyDenseFamily(tfprune.surgery.LayerFamily):
        width_key = "units"

    tfprune.surgery.register_layer(MyDense, MyDenseFamily())
    smaller = tfprune.surgery.remove_channels(model, {"my_dense": [0, 2]})
    ```
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, L.Layer)):
        raise TypeError(f"register_layer: `layer_class` must be a keras.layers.Layer subclass, got {layer_class!r}.")
    return _register(layer_class, family)


def register_operation(op_class, family):
    """Tells ``remove_channels`` how channels flow through a ``keras.ops`` operation class.

    A ``keras.ops`` call on symbolic tensors (``x + y``, ``keras.ops.mean(x, axis=1)``) is a graph
    node whose operation is a ``keras.Operation`` that is not a layer. The built-in families
    cover element-wise, reduction and common shape operations; an operation class without one
    is opaque (the channels flowing into it are kept).

    Args:
        op_class: a subclass of ``keras.Operation`` that is not a ``keras.layers.Layer``.
        family: a ``LayerFamily`` instance or subclass, usually ``tfprune.surgery.OpFamily``.

    Returns:
        The family registered.

    Raises:
        TypeError: ``op_class`` is not an operation class (layers go to ``register_layer``), or
            ``family`` is not a ``LayerFamily``.

    Example:

    ```python
    class MyOpFamily(tfprune.surgery.OpFamily):   # element-wise: channels pass through
        pass

    tfprune.surgery.register_operation(MyOp, MyOpFamily())
    ```
    """
    if not (isinstance(op_class, type) and issubclass(op_class, keras.Operation)) or issubclass(op_class, L.Layer):
        raise TypeError(
            f"register_operation: `op_class` must be a keras.Operation subclass that is not a layer (layers go "
            f"to register_layer), got {op_class!r}."
        )
    return _register(op_class, family)


def _register(cls, family):
    if isinstance(family, type) and issubclass(family, LayerFamily):
        family = family()
    if not isinstance(family, LayerFamily):
        raise TypeError(
            f"`family` must be a tfprune.surgery.LayerFamily (instance or subclass), got "
            f"{type(family).__name__}. Subclass LayerFamily to describe how '{cls.__name__}' is cut."
        )
    _REGISTRY[cls] = family
    return family


def family_of(layer):
    """The family of ``layer``: the registered entry of its class or nearest base class, else ``OPAQUE``."""
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return OPAQUE


def output_filters(layer):
    """The weights that make each output channel of a producer, as an array ``(channels, -1)``."""
    return family_of(layer).filters(layer)


def _register_builtins():
    families = {
        Conv(): (L.Conv1D, L.Conv2D, L.Conv3D),
        ConvTranspose(): (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
        SeparableConv(): (L.SeparableConv1D, L.SeparableConv2D),
        Dense(): (L.Dense,),
        Depthwise(): (L.DepthwiseConv1D, L.DepthwiseConv2D),
        Channelwise(): (L.BatchNormalization, L.PReLU),
        Softmax(): (L.Softmax,),
        Elementwise(): ACTIVATIONS,
        Rescaling(): (L.Rescaling,),
        PassThrough(): (
            L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
            L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity,
            L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
            L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
            L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
            L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
            L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
        ),
        Flatten(): (L.Flatten,),
        Reshape(): (L.Reshape,),
        Merge(): (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum),
        Concatenate(): (L.Concatenate,),
        OpaqueNormalization(): tuple(getattr(L, n) for n in ("LayerNormalization", "GroupNormalization",
                                                             "UnitNormalization", "RMSNormalization") if hasattr(L, n)),
        OpaqueEinsumDense(): (L.EinsumDense,),
    }
    for family, classes in families.items():
        for cls in classes:
            _REGISTRY[cls] = family


_register_builtins()
