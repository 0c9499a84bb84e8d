"""Parameters and FLOPs per layer, and a before/after comparison.

FLOPs here are multiply-adds (MACs) of one sample (batch size 1), counted for every node of the
model's graph:

* Conv1D/2D/3D: ``out positions * kernel size * in/groups * out``; Conv*Transpose:
  ``in positions * kernel size * in * out``; DepthwiseConv: ``out positions * kernel size * in *
  multiplier``; SeparableConv: its depthwise part plus ``out positions * in * multiplier * out``;
  Dense: ``leading positions * in * out``; EinsumDense: ``output size * the kernel dims summed over``;
* MultiHeadAttention: its four projections (EinsumDense) plus the two attention products,
  ``heads * query positions * key positions * key_dim`` for the scores and the same with
  ``value_dim`` for the weighted values (whether Keras runs them fused or not);
* ``keras.ops.matmul`` nodes: ``output size * inner dim``;
* element-wise work, **one operation per output element**: merge layers (Add, Multiply, ...),
  element-wise ``keras.ops`` nodes (``x + y``, ``ops.relu``, ...), activation layers, and
  normalization layers (BatchNormalization, LayerNormalization, ...: the scale and
  shift, statistics not counted);
* Embedding lookups are gathers: 0 MACs (the layer is listed for its parameters);
* softmax (layer or op), reductions, biases, activations fused into a layer
  (``Dense(..., activation="relu")``), pooling, reshapes and other shape operations: 0.

A nested Sequential or Functional model with fixed input shapes is counted node by node like
the outer one; its row holds the sum. Other layers that own layers (a custom block, KerasHub's
``TransformerEncoder``, MultiHeadAttention itself, a nested model with unknown input sizes) are
run once on zeros of their input shape, and every call of every layer inside them is counted
by the rules above; their row holds the sum. ``keras.ops`` calls written inside such a layer's
``call`` are not seen (they are not layers). Recurrent layers (LSTM, GRU, ...) count 0. A node
whose input or output shape has an unknown dimension (other than the batch) counts 0.
"""

import warnings

import keras
import numpy as np

from tfprune._common import keras_internals
from tfprune._common.text import format_table
from tfprune._graph import Graph, family_of

L = keras.layers


class FlopsReport:
    """Parameters and multiply-adds per layer (see ``flops_report``).

    Attributes:
        rows: list of dicts ``{"layer", "type", "output_shape", "params", "flops"}`` for layers
            with parameters or FLOPs.
        total_params: ``model.count_params()``.
        total_flops: sum of the rows' FLOPs.

    Example:

    ```python
    report = tfprune.structured.flops_report(model)
    print(report)               # a table
    report.to_dict()["total_flops"]
    ```
    """

    def __init__(self, name, rows, total_params):
        self.name = name
        self.rows = rows
        self.total_params = total_params
        self.total_flops = sum(r["flops"] for r in rows)

    def to_dict(self):
        return {"model": self.name, "rows": [dict(r) for r in self.rows],
                "total_params": self.total_params, "total_flops": self.total_flops}

    def __getitem__(self, layer_name):
        for row in self.rows:
            if row["layer"] == layer_name:
                return row
        raise KeyError(layer_name)

    def __str__(self):
        rows = [(r["layer"], r["type"], str(r["output_shape"]), f"{r['params']:,}", f"{r['flops']:,}") for r in self.rows]
        rows.append(("total", "", "", f"{self.total_params:,}", f"{self.total_flops:,}"))
        return "\n".join(format_table(("layer", "type", "output shape", "params", "FLOPs (MACs)"), rows, right={3, 4}))

    __repr__ = __str__


def flops_report(model):
    """Parameters and FLOPs (multiply-adds for one sample) of each layer and op node of ``model``.

    What counts and how is in this module's docstring: Conv, Dense, EinsumDense,
    MultiHeadAttention (projections and attention products), ``ops.matmul``, one operation per
    output element for merges, element-wise ops, activations and normalizations; Embedding
    lookups are 0. Layers that own layers (nested models, custom blocks) are counted through
    their sublayers. A layer called several times counts every call.

    Args:
        model: a built Sequential or Functional Keras 3 model.

    Returns:
        A ``FlopsReport``: print it for a table; ``to_dict()`` for numbers.

    Example:

    ```python
    print(tfprune.structured.flops_report(model))
    ```
    """
    graph = Graph(model)
    rows, seen = [], set()
    for gnode in graph.nodes:
        layer = gnode.operation
        in_shape = graph.shape(gnode.inputs[0]) if gnode.inputs else ()
        out_shape = graph.shape(gnode.outputs[0]) if gnode.outputs else ()
        is_layer = isinstance(layer, L.Layer)
        params = layer.count_params() if is_layer and id(layer) not in seen and layer.built else 0
        seen.add(id(layer))
        flops = _node_macs(graph, gnode, in_shape, out_shape) if _static(graph, gnode) else 0
        if params or flops:
            rows.append({"layer": layer.name, "type": type(layer).__name__, "output_shape": tuple(out_shape[1:]),
                         "params": int(params), "flops": int(flops)})
    return FlopsReport(model.name, rows, int(model.count_params()))


def _static(graph, gnode):
    shapes = [graph.shape(key) for key in gnode.inputs + gnode.outputs]
    return bool(gnode.inputs) and all(None not in shape[1:] for shape in shapes)


def _node_macs(graph, gnode, in_shape, out_shape):
    layer = gnode.operation
    own = family_of(layer).macs(layer, in_shape, out_shape)
    if not isinstance(layer, L.Layer) or not keras_internals.tracked_sublayers(layer, recursive=False):
        return own
    if isinstance(layer, keras.Model) and _has_static_inputs(layer):
        return own + flops_report(layer).total_flops
    calls = _inner_calls(graph, gnode)
    if calls is None:
        return own
    inner = sum(_call_macs(call, calls) for call in calls)
    return own + inner + _attention_macs(layer, calls)


def _has_static_inputs(model):
    try:
        graph = Graph(model)
    except ValueError:  # a subclassed model: no graph to read
        return False
    return all(None not in graph.shape(key)[1:] for key in graph.input_keys)


class _Call:
    """One call of a sublayer seen while its owner ran: shapes of its first input and output."""

    def __init__(self, layer, in_shape, out_shape, first, last):
        self.layer, self.in_shape, self.out_shape = layer, in_shape, out_shape
        self.inner = slice(first, last)  # the calls made inside this one


def _shape_of(value):
    tensors = [t for t in keras.tree.flatten(value) if hasattr(t, "shape")]
    return tuple(tensors[0].shape) if tensors else ()


def _inner_calls(graph, gnode):
    """Every sublayer call made by one run of ``gnode``'s layer on zeros (None if it cannot run)."""
    layer = gnode.operation
    calls, patched = [], []

    def recording(sub, call):
        def record(*args, **kwargs):
            first = len(calls)
            outputs = call(*args, **kwargs)
            in_shape = _shape_of(args) or _shape_of(kwargs)  # MultiHeadAttention is often called by keyword
            calls.append(_Call(sub, in_shape, _shape_of(outputs), first, len(calls)))
            return outputs
        return record

    zeros = {key: np.zeros((1,) + graph.shape(key)[1:], dtype=graph.tensors[key].dtype) for key in gnode.inputs}
    try:
        for sub in {id(s): s for s in keras_internals.tracked_sublayers(layer)}.values():
            # an instance attribute is found before the class's call(), which Layer.__call__ runs
            object.__setattr__(sub, "call", recording(sub, sub.call))
            patched.append(sub)
        args, kwargs = gnode.node.arguments.fill_in(zeros)
        layer(*args, **kwargs)
    except Exception as err:  # a layer that cannot run on zeros: count what its own family says
        warnings.warn(f"flops_report: could not run '{layer.name}' ({type(layer).__name__}) on zeros to count "
                      f"the layers inside it ({err}); its FLOPs count only the layer itself.")
        return None
    finally:
        for sub in patched:
            object.__delattr__(sub, "call")
    return calls


def _call_macs(call, calls):
    known = call.in_shape and call.out_shape and None not in call.in_shape[1:] + call.out_shape[1:]
    own = family_of(call.layer).macs(call.layer, call.in_shape, call.out_shape) if known else 0
    return own + _attention_macs(call.layer, calls[call.inner])


def _attention_macs(layer, inner):
    """The two attention products of a MultiHeadAttention call, from the shapes its projections produced."""
    if not isinstance(layer, L.MultiHeadAttention):
        return 0
    query, key, value, _ = keras_internals.attention_projections(layer)
    shapes = {}
    for call in inner:
        for role, projection in (("q", query), ("k", key), ("v", value)):
            if call.layer is projection:
                shapes.setdefault(role, call.out_shape)  # (1, positions..., heads, dim)
    if len(shapes) < 3:
        return 0
    q, k, v = shapes["q"], shapes["k"], shapes["v"]
    pairs = int(np.prod(q[1:-2])) * int(np.prod(k[1:-2])) * q[-2]
    return pairs * q[-1] + pairs * v[-1]


class Comparison:
    """Per-layer parameters, FLOPs and output channels of two models (see ``compare``).

    Attributes:
        rows: dicts ``{"layer", "channels_before", "channels_after", "params_before",
            "params_after", "flops_before", "flops_after"}``, matched by layer name.
        before, after: the two ``FlopsReport``.

    Example:

    ```python
    c = tfprune.structured.compare(model, smaller)
    print(c)
    print(c.flops_ratio)   # before / after
    ```
    """

    def __init__(self, before, after):
        self.before, self.after = before, after
        after_rows = {r["layer"]: r for r in after.rows}
        self.rows = []
        for r in before.rows:
            a = after_rows.get(r["layer"], {"output_shape": (0,), "params": 0, "flops": 0})
            self.rows.append({
                "layer": r["layer"], "channels_before": r["output_shape"][-1] if r["output_shape"] else None,
                "channels_after": a["output_shape"][-1] if a["output_shape"] else None,
                "params_before": r["params"], "params_after": a["params"],
                "flops_before": r["flops"], "flops_after": a["flops"],
            })

    @property
    def params_ratio(self):
        return self.before.total_params / max(self.after.total_params, 1)

    @property
    def flops_ratio(self):
        return self.before.total_flops / max(self.after.total_flops, 1)

    def to_dict(self):
        return {"rows": [dict(r) for r in self.rows], "total_params_before": self.before.total_params,
                "total_params_after": self.after.total_params, "total_flops_before": self.before.total_flops,
                "total_flops_after": self.after.total_flops, "params_ratio": self.params_ratio,
                "flops_ratio": self.flops_ratio}

    def __str__(self):
        def change(before, after, number=True):
            return f"{before:,} -> {after:,}" if number else f"{before} -> {after}"

        rows = [(r["layer"], change(r["channels_before"], r["channels_after"], False),
                 change(r["params_before"], r["params_after"]), change(r["flops_before"], r["flops_after"]))
                for r in self.rows]
        rows.append(("total", "", change(self.before.total_params, self.after.total_params),
                     change(self.before.total_flops, self.after.total_flops)))
        table = format_table(("layer", "channels", "params", "FLOPs (MACs)"), rows, right={1, 2, 3})
        return "\n".join(table + [f"params / {self.params_ratio:.2f}, FLOPs / {self.flops_ratio:.2f}"])

    __repr__ = __str__


def compare(model_before, model_after):
    """Parameters, FLOPs and channels per layer before and after pruning.

    Layers are matched by name (``remove_channels`` keeps names). FLOPs as in ``flops_report``.

    Args:
        model_before: the original model.
        model_after: the pruned model.

    Returns:
        A ``Comparison``: print it for a table; ``to_dict()``, ``params_ratio`` and
        ``flops_ratio`` (before / after) for numbers.

    Example:

    ```python
    smaller = tfprune.structured.prune(model, "l1_norm", ratio=0.5)
    print(tfprune.structured.compare(model, smaller))
    ```
    """
    return Comparison(flops_report(model_before), flops_report(model_after))
