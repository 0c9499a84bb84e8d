"""Parameters and FLOPs per layer, and a before/after comparison.

FLOPs here are multiply-adds (MACs) of one image (batch size 1), counted for the layers that
dominate inference time: Conv1D/2D/3D (``out positions * kernel size * in/groups * out``),
Conv*Transpose (``in positions * kernel size * in * out``), DepthwiseConv
(``out positions * kernel size * in * multiplier``), SeparableConv (its depthwise part plus
``out positions * in * multiplier * out``) and Dense (``leading positions * in * out``).
Biases, BatchNormalization, activations, pooling and merges are not counted.
"""

import keras

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
        width = max([len(r["layer"]) for r in self.rows] + [5])
        lines = [f"{'layer':<{width}}  {'type':<22}{'output shape':<22}{'params':>12}{'FLOPs (MACs)':>16}"]
        for r in self.rows:
            lines.append(f"{r['layer']:<{width}}  {r['type']:<22}{str(r['output_shape']):<22}"
                         f"{r['params']:>12,}{r['flops']:>16,}")
        lines.append(f"{'total':<{width}}  {'':<22}{'':<22}{self.total_params:>12,}{self.total_flops:>16,}")
        return "\n".join(lines)

    __repr__ = __str__


def flops_report(model):
    """Parameters and FLOPs (multiply-adds for one image) of each layer of ``model``.

    FLOPs are multiply-accumulates counted for Conv, ConvTranspose, DepthwiseConv,
    SeparableConv and Dense layers only; a layer called several times counts every call.

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
        params = layer.count_params() if isinstance(layer, L.Layer) and id(layer) not in seen and layer.built else 0
        seen.add(id(layer))
        flops = family_of(layer).macs(layer, in_shape, out_shape) if in_shape and None not in in_shape[1:] else 0
        if params or flops:
            rows.append({"layer": layer.name, "type": type(layer).__name__, "output_shape": tuple(out_shape[1:]),
                         "params": int(params), "flops": int(flops)})
    return FlopsReport(model.name, rows, int(model.count_params()))


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
        width = max([len(r["layer"]) for r in self.rows] + [5])
        head = f"{'layer':<{width}}  {'channels':>11}  {'params':>21}  {'FLOPs (MACs)':>25}"
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r['layer']:<{width}}  {str(r['channels_before']):>5}->{str(r['channels_after']):<5}  "
                f"{r['params_before']:>10,}->{r['params_after']:<10,}  {r['flops_before']:>12,}->{r['flops_after']:<12,}"
            )
        lines.append(
            f"{'total':<{width}}  {'':>11}  {self.before.total_params:>10,}->{self.after.total_params:<10,}  "
            f"{self.before.total_flops:>12,}->{self.after.total_flops:<12,}"
        )
        lines.append(f"params / {self.params_ratio:.2f}, FLOPs / {self.flops_ratio:.2f}")
        return "\n".join(lines)

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
