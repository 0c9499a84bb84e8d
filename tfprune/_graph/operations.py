"""How channels flow through ``keras.ops`` calls in a Functional graph: one family per kind of operation.

In Keras 3, ``x + y``, ``x * 2.0``, ``x[:, 0]`` or ``keras.ops.mean(x, axis=1)`` on symbolic
tensors become graph nodes whose operation is a ``keras.Operation`` that is not a layer. They hold
no weights, so a rebuilt model calls the same operation again; what matters is how channel ids
flow through them:

* element-wise operations (``ElementwiseOp``): two tensors of the same width are tied channel by
  channel (a coupled group, like ``keras.layers.Add``); a Python scalar, or a tensor or constant
  whose last axis is 1, broadcasts and passes the channels through; a constant with a full
  channel axis would misalign after a cut, so it blocks;
* operations along chosen axes (reductions, cumulative sums, softmax, sort, ...): the channels
  pass through unless the axis is the channel axis (or all axes);
* shape operations whose channel mapping is known (slicing, transpose, expand_dims, squeeze,
  reshape, concatenate): pass through, offset or block, as their arguments say;
* anything else is opaque: the channels flowing into it are kept, with a reason naming the node.

``register_operation(op_class, family)`` adds a family for another operation class, as
``register_layer`` does for layers. The classes come from ``keras.src.ops`` (Keras has no public
name for them); ``keras_internals.keras_op_classes`` is the one place that reads them.
"""

import keras
import numpy as np

from tfprune._common.keras_internals import keras_op_classes
from tfprune._graph.families import Follower, _in_rank, _last_axis, _prod, register_operation, tie


def _where(op, gnode):
    return f"'{gnode.name}' (keras.ops {type(op).__name__})"


def _constants(gnode):
    """Arguments of the call that are arrays but not graph tensors (``x * np.ones(16)``)."""
    values = keras.tree.flatten((gnode.node.arguments.args, gnode.node.arguments.kwargs))
    return [v for v in values if not isinstance(v, keras.KerasTensor) and np.ndim(v) > 0]


def _axes(axis, rank):
    """Axes normalized to ``[0, rank)``; None means all."""
    if axis is None:
        return list(range(rank))
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return [int(a) % rank if rank else int(a) for a in axes]


class OpFamily(Follower):
    """Base of the families of ``keras.ops`` operations: no weights, rebuilt as the same call.

    ``rebuild`` returns the operation itself (it is stateless); a family whose operation holds
    a channel count (``ops.reshape``'s target shape) returns a new one.

    Example:

    ```python
    class MyOpFamily(tfprune.surgery.OpFamily):      # channels pass through unchanged
        pass

    tfprune.surgery.register_operation(MyOp, MyOpFamily())
    ```
    """

    def rebuild(self, layer, in_keep, out_keep, out_shape):
        if isinstance(layer, keras.layers.Layer):  # registered for a layer: a copy, never the original's weights
            return super().rebuild(layer, in_keep, out_keep, out_shape)
        return layer, None


class ElementwiseOp(OpFamily):
    """Unary and binary element-wise operations; tensors of one width are tied like ``Add``'s inputs."""

    def opaque_reason(self, op, gnode, graph):
        for value in _constants(gnode):
            if np.shape(value)[-1] != 1:
                return (f"{_where(op, gnode)}: it combines the channels with a constant of shape "
                        f"{tuple(np.shape(value))}, which a cut would misalign")
        return None

    def propagate(self, flow, op, gnode, ins):
        return [ins[0]] if len(ins) == 1 else tie(flow, gnode.name, gnode, ins)

    def macs(self, op, in_shape, out_shape):
        return _prod(out_shape[1:])  # one operation per output element


class AlongAxisOp(OpFamily):
    """Reductions, cumulative and normalizing operations over ``op.axis``: fine unless it is the channel axis."""

    def opaque_reason(self, op, gnode, graph):
        rank = _in_rank(gnode, graph)
        if rank - 1 in _axes(getattr(op, "axis", None), rank):
            return f"{_where(op, gnode)}: it works across the channel axis"
        return None


class GetItemOp(OpFamily):
    """``x[...]`` with ints and slices: fine while the channel axis is kept whole and last."""

    def opaque_reason(self, op, gnode, graph):
        key = gnode.node.arguments.args[1] if len(gnode.node.arguments.args) > 1 else None
        if not self._keeps_channels(key if isinstance(key, tuple) else (key,), _in_rank(gnode, graph)):
            return f"{_where(op, gnode)}: it indexes the channel axis"
        return None

    @staticmethod
    def _keeps_channels(key, rank):
        if not all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in key):
            return False  # tensor or array indices: the mapping is data-dependent
        if Ellipsis in key:
            tail = key[key.index(Ellipsis) + 1:]
        elif sum(k is not None for k in key) == rank:
            tail = key
        else:
            return True  # trailing axes, channels included, are untouched
        real = [i for i, k in enumerate(tail) if k is not None]
        if not real:
            return not tail  # `x[..., None]` puts a new axis after the channels
        last = real[-1]
        return tail[last] == slice(None) and all(k is not None for k in tail[last:])


class TransposeOp(OpFamily):
    def opaque_reason(self, op, gnode, graph):
        rank = _in_rank(gnode, graph)
        if op.axes is not None and _axes(op.axes[-1:], rank) == [rank - 1]:
            return None
        return f"{_where(op, gnode)}: it moves the channel axis (axes={op.axes})"


class ExpandDimsOp(OpFamily):
    def opaque_reason(self, op, gnode, graph):
        out_rank = len(graph.shape(gnode.outputs[0]))
        if out_rank - 1 in _axes(op.axis, out_rank):
            return f"{_where(op, gnode)}: it adds an axis after the channels"
        return None


class SqueezeOp(OpFamily):
    def opaque_reason(self, op, gnode, graph):
        rank = _in_rank(gnode, graph)
        if op.axis is None or rank - 1 in _axes(op.axis, rank):
            return f"{_where(op, gnode)}: it may squeeze the channel axis (axis={op.axis})"
        return None


class ReshapeOp(OpFamily):
    """``ops.reshape`` keeping the channel axis last: rebuilt with the new width in its target shape."""

    def opaque_reason(self, op, gnode, graph):
        width = graph.shape(gnode.inputs[0])[-1]
        if width is not None and tuple(op.newshape)[-1:] == (width,):
            return None
        return f"{_where(op, gnode)}: it moves channels off the last axis (to {tuple(op.newshape)})"

    def rebuild(self, op, in_keep, out_keep, out_shape):
        if in_keep is None or in_keep.all():
            return op, None
        return type(op)(tuple(op.newshape)[:-1] + (int(in_keep.sum()),)), None


class ConcatenateOp(OpFamily):
    """``ops.concatenate`` of graph tensors: channel offsets on the last axis, tied on another."""

    def opaque_reason(self, op, gnode, graph):
        if _constants(gnode):
            return f"{_where(op, gnode)}: it concatenates a constant"
        return None

    def propagate(self, flow, op, gnode, ins):
        if _last_axis(op.axis, _in_rank(gnode, flow.graph)):
            return [np.concatenate(ins)]
        return tie(flow, gnode.name, gnode, ins)


class MatmulOp(OpFamily):
    """``ops.matmul``: it contracts the channel axis (opaque to cuts) but its multiply-adds count."""

    def opaque_reason(self, op, gnode, graph):
        return f"{_where(op, gnode)}: it contracts the channel axis"

    def macs(self, op, in_shape, out_shape):
        return _prod(out_shape[1:]) * int(in_shape[-1])


_UNARY = (
    "Abs", "Absolute", "Negative", "Exp", "Exp2", "Expm1", "Log", "Log1p", "Log2", "Log10", "Sqrt", "Square",
    "Rsqrt", "Reciprocal", "Sign", "Floor", "Ceil", "Round", "Trunc", "Sin", "Cos", "Tan", "Sinh", "Cosh",
    "Tanh", "Arctan", "Erf", "Clip", "Cast", "Copy", "NanToNum", "LogicalNot", "Isnan", "Isinf", "Isfinite",
    "Relu", "Relu6", "Sigmoid", "Softplus", "Softsign", "Silu", "Gelu", "Elu", "Selu", "Celu", "LeakyRelu",
    "HardSigmoid", "HardSilu", "HardTanh", "LogSigmoid", "Squareplus", "SparsePlus", "TanhShrink",
)
_BINARY = (
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "FloorDivide", "DivideNoNan", "Mod", "Power",
    "Maximum", "Minimum", "Fmax", "Fmin", "Equal", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual",
    "LogicalAnd", "LogicalOr", "LogicalXor", "Where", "Arctan2", "Hypot", "Logaddexp",
)
_ALONG_AXIS = (
    "Mean", "Sum", "Max", "Min", "Amax", "Amin", "Prod", "Std", "Var", "Any", "All", "Argmax", "Argmin",
    "Median", "Logsumexp", "Cumsum", "Cumprod", "Softmax", "LogSoftmax", "Sort", "Argsort", "Flip", "Roll",
)


def _register_builtins():
    families = {
        ElementwiseOp(): keras_op_classes(*_UNARY, *_BINARY),
        AlongAxisOp(): keras_op_classes(*_ALONG_AXIS),
        GetItemOp(): keras_op_classes("GetItem"),
        TransposeOp(): keras_op_classes("Transpose"),
        ExpandDimsOp(): keras_op_classes("ExpandDims"),
        SqueezeOp(): keras_op_classes("Squeeze"),
        ReshapeOp(): keras_op_classes("Reshape"),
        ConcatenateOp(): keras_op_classes("Concatenate"),
        MatmulOp(): keras_op_classes("Matmul"),
    }
    for family, classes in families.items():
        for cls in classes:
            register_operation(cls, family)


_register_builtins()
