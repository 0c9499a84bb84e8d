"""``PruneForLatencyOnXNNPack``: prune only the layers XNNPACK's sparse inference runs sparse.

The checks carry over the meaning of tfmot's policy of the same name
(``tensorflow_model_optimization.sparsity.keras.PruneForLatencyOnXNNPack``);
the graph is read through ``tfprune._graph.Graph``, with nested models
flattened into one list of calls, instead of Keras 2's inbound / outbound
nodes.
"""

import dataclasses

import keras

from tfprune._common import keras_internals
from tfprune._graph import Graph
from tfprune._pruning.api import PruningPolicy
from tfprune._pruning.base import PruningWrapper

_POLICY = "PruneForLatencyOnXNNPack"

# The element-wise activations XNNPACK's sparse (NCHW) subgraph keeps, as tfmot lists them; "linear"
# is added because it emits no operator at all.
_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "linear")

_SUPPORTED = (
    "1x1 Conv2D (strides 1, no dilation, groups 1), DepthwiseConv2D 3x3 or 5x5 (depth_multiplier 1, no "
    "dilation; strides 1 with padding 'same', or strides 1 or 2 with padding 'valid' after "
    "ZeroPadding2D(kernel // 2)), BatchNormalization on the channel axis, "
    "GlobalAveragePooling2D(keepdims=True), UpSampling2D(interpolation='bilinear'), Add, Multiply, "
    "x + y, x - y, x * y, ZeroPadding2D, ReLU, LeakyReLU, ELU, Dropout, Identity, and Activation "
    f"({', '.join(_ACTIVATIONS)})"
)

_STEM = (
    "XNNPACK's sparse inference starts at the Fast Sparse ConvNets stem: "
    "keras.layers.ZeroPadding2D(padding=1) followed by keras.layers.Conv2D(filters, 3, strides=2, "
    "padding='valid') on the 3 channels of an RGB image"
)


@dataclasses.dataclass
class _Call:
    """One call of a layer or ``keras.ops`` operation, with nested models flattened away."""

    operation: object
    inputs: list
    outputs: list

    @property
    def layer(self):
        # A model handed to ensure_model_supports_pruning may already be wrapped: judge the wrapped layer.
        op = self.operation
        return op.layer if isinstance(op, PruningWrapper) else op

    def describe(self):
        return f"'{self.layer.name}' ({type(self.layer).__name__})"


class _FlatGraph:
    """Every call of ``model`` in topological order, nested Sequential / Functional models inlined."""

    def __init__(self, model):
        self.calls = []
        outer = Graph(model)
        self.shapes = {}
        self.input_keys = list(outer.input_keys)
        self.input_names = [outer.input_layer_name(k) or f"input {i}" for i, k in enumerate(self.input_keys)]
        self.output_keys = self._inline(outer, {})
        self.producer = {}
        self.consumers = {}
        for index, call in enumerate(self.calls):
            for key in call.outputs:
                self.producer[key] = index
            for key in call.inputs:
                self.consumers.setdefault(key, []).append(index)

    def _inline(self, graph, rename):
        """Appends the calls of ``graph`` (its inputs renamed by ``rename``); returns its output keys."""
        for key, tensor in graph.tensors.items():
            self.shapes[key] = tuple(tensor.shape)
        for node in graph.nodes:
            inputs = [rename.get(k, k) for k in node.inputs]
            op = node.operation
            if isinstance(op, keras.Model) and _reads_as_graph(op):
                inner = Graph(op)
                inner_rename = dict(zip(inner.input_keys, inputs))
                for outer_key, inner_key in zip(node.outputs, self._inline(inner, inner_rename)):
                    rename[outer_key] = inner_key
            else:
                self.calls.append(_Call(op, inputs, list(node.outputs)))
        return [rename.get(k, k) for k in graph.output_keys]

    def producer_of(self, key):
        index = self.producer.get(key)
        return None if index is None else self.calls[index]

    def next_calls(self, index):
        return sorted({c for key in self.calls[index].outputs for c in self.consumers.get(key, [])})

    def previous_calls(self, index):
        return sorted({self.producer[key] for key in self.calls[index].inputs if key in self.producer})


def _reads_as_graph(model):
    if isinstance(model, keras.Sequential):
        return keras_internals.sequential_functional(model) is not None
    return keras_internals.is_functional(model)


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _activation_name(activation):
    return getattr(activation, "__name__", type(activation).__name__)


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 convolutions, in models XNNPACK can run sparse.

    The meaning of tfmot's ``PruneForLatencyOnXNNPack``
    (``tfmot.sparsity.keras.PruneForLatencyOnXNNPack``): pruned this way and
    exported float32 with its weights stored sparse
    (``tfprune.export.to_tflite(model, path, sparse=True)``), a MobileNet-style
    CNN can be run by XNNPACK's sparse inference (Elsen et al. 2019, "Fast
    Sparse ConvNets", https://arxiv.org/abs/1911.09723), whose speed comes
    from sparse 1x1 convolutions.

    ``allow_pruning(layer)`` is True for ``keras.layers.Conv2D`` layers with a
    1x1 kernel only (a 1x1 convolution after the global pooling, used as
    classifier, is pruned too, as in tfmot). ``ensure_model_supports_pruning``
    raises ``ValueError``, naming the layer and the fix, unless the model has
    what XNNPACK's sparse subgraph needs
    (https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/delegates/xnnpack/README.md#sparse-inference):

    * it is a built Sequential or Functional model (nested ones are read
      through);
    * every input reaches a *stem*: ``ZeroPadding2D(padding=1)`` then a
      ``Conv2D`` with a 3x3 kernel, ``strides=2`` and ``padding="valid"`` on
      3 input channels (a 3x3 stride-2 convolution with padding 1 on 3
      channels, the only dense convolution XNNPACK's sparse path starts
      with);
    * every output is computed through a ``GlobalAveragePooling2D`` (a mean
      over the spatial axes, where the sparse subgraph ends);
    * between them there are only 1x1 ``Conv2D`` with strides 1, no dilation
      and one group; ``DepthwiseConv2D`` 3x3 or 5x5 with
      ``depth_multiplier=1``, no dilation, and either strides 1 with
      ``padding="same"`` or strides 1 or 2 with ``padding="valid"`` right
      after ``ZeroPadding2D(kernel // 2)``; ``BatchNormalization`` on the
      channel axis; ``GlobalAveragePooling2D(keepdims=True)``;
      ``UpSampling2D(interpolation="bilinear")``; ``Add``, ``Multiply`` and
      ``x + y``, ``x - y``, ``x * y``; ``ZeroPadding2D``, ``ReLU``,
      ``LeakyReLU``, ``ELU``, ``Dropout``, ``Identity``; ``Activation`` (and
      convolutions' own ``activation``) among relu, relu6, leaky_relu, elu,
      sigmoid and linear.

    What the runtime adds: XNNPACK runs a 1x1 convolution sparse only when
    at least 2/3 of the 1x1 weights of the subgraph are zero (prune to 70% or
    more), only on ARM and WebAssembly and on x86 CPUs without AVX (on AVX
    machines it keeps the dense kernels, which it expects to be faster), and
    only when the file stores the weights sparse (float32, ``sparse=True``):
    the delegate asks for sparse inference when it sees the ``DENSIFY``
    operators of sparse weights. ``benchmarks/bench_xnnpack_sparse.py``
    measures what it gives here.

    Example:

    ```python
    pruned = tfprune.prune_low_magnitude(
        model, pruning_schedule=tfprune.ConstantSparsity(0.8, 0),
        pruning_policy=tfprune.PruneForLatencyOnXNNPack(),
    )
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=2, callbacks=[tfprune.UpdatePruningStep()])
    report = tfprune.export.to_tflite(tfprune.strip_pruning(pruned), "sparse.tflite", sparse=True)
    ```
    """

    def allow_pruning(self, layer):
        return isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)

    def ensure_model_supports_pruning(self, model):
        name = getattr(model, "name", type(model).__name__)
        prefix = f"{_POLICY}: model '{name}'"
        if not isinstance(model, keras.Model):
            raise ValueError(f"{prefix} is a {type(model).__name__}, not a keras.Model; pass the whole model.")
        if isinstance(model, keras.Sequential) and keras_internals.sequential_functional(model) is None:
            raise ValueError(
                f"{prefix} is a Sequential model that is not built, so its graph is unknown. Start it with "
                "keras.Input(shape=(height, width, 3)) or call model.build(input_shape) first."
            )
        if not _reads_as_graph(model):
            raise ValueError(
                f"{prefix} is a subclassed keras.Model ({type(model).__name__}): the policy must follow its "
                "graph from the input image to the global pooling, and a subclassed model's call() cannot be "
                "read. Build the model with the Functional API or as a keras.Sequential."
            )
        if not model.built:
            raise ValueError(f"{prefix} is not built. Call it on a batch or build it first.")
        graph = _FlatGraph(model)
        starts = self._find_stems(graph, prefix)
        ends = self._find_global_pooling(graph, prefix)
        self._check_between(graph, starts, ends, prefix)

    # -- the three checks ---------------------------------------------------------

    def _find_stems(self, graph, prefix):
        """Indices of the stem convolutions: every path from every input must reach one."""
        starts = set()
        for input_key, input_name in zip(graph.input_keys, graph.input_names):
            first_conv = None
            seen = set()
            todo = sorted(graph.consumers.get(input_key, []))
            if not todo:
                raise ValueError(f"{prefix}: input '{input_name}' is not used. {_STEM}.")
            while todo:
                index = todo.pop(0)
                if index in seen:
                    continue
                seen.add(index)
                call = graph.calls[index]
                problem = _stem_problem(call, graph)
                if problem is None:
                    starts.add(index)
                    continue
                if first_conv is None and _is_convolution(call.layer):
                    first_conv = f"the first convolution {call.describe()} {problem}"
                following = graph.next_calls(index)
                if not following:
                    found = first_conv or f"the path reaches the output {call.describe()} without a convolution"
                    raise ValueError(
                        f"{prefix} cannot run sparse under XNNPACK: from input '{input_name}', {found}. "
                        f"{_STEM}; make that the first convolution, for every input."
                    )
                todo.extend(following)
        return starts

    def _find_global_pooling(self, graph, prefix):
        """Indices of the GlobalAveragePooling2D calls every output is computed through."""
        ends = set()
        for output_key in graph.output_keys:
            producer = graph.producer.get(output_key)
            todo = [] if producer is None else [producer]
            path = {producer: None}
            while todo:
                index = todo.pop(0)
                call = graph.calls[index]
                if isinstance(call.layer, keras.layers.GlobalAveragePooling2D):
                    ends.add(index)
                    continue
                previous = graph.previous_calls(index)
                if not previous:
                    chain, cursor = [], index
                    while cursor is not None:
                        chain.append(f"'{graph.calls[cursor].layer.name}'")
                        cursor = path[cursor]
                    chain = chain[::-1]  # from the output back to the input, as it was searched
                    shown = " <- ".join(chain[:6]) + (" <- ..." if len(chain) > 6 else "")
                    raise ValueError(
                        f"{prefix} cannot run sparse under XNNPACK: its output "
                        f"'{graph.calls[producer].layer.name}' is computed without a GlobalAveragePooling2D "
                        f"(path back to the input: {shown}). "
                        "XNNPACK's sparse subgraph ends at a mean over the spatial axes: end the convolutions "
                        "with keras.layers.GlobalAveragePooling2D() before the classifier (instead of Flatten, "
                        "pooling with a window, or no pooling)."
                    )
                for p in previous:
                    if p not in path:
                        path[p] = index
                        todo.append(p)
        if not ends:
            raise ValueError(f"{prefix} has no output computed by a layer; nothing can run sparse.")
        return ends

    def _check_between(self, graph, starts, ends, prefix):
        """Every call reachable from a stem before a final global pooling must be one XNNPACK runs sparse."""
        reachable, todo = set(), [n for s in sorted(starts) for n in graph.next_calls(s)]
        while todo:
            index = todo.pop()
            if index in reachable or index in ends:
                continue
            reachable.add(index)
            todo.extend(graph.next_calls(index))
        stem = graph.calls[min(starts)].layer.name
        pool = graph.calls[min(ends)].layer.name
        for index in sorted(reachable):  # topological order: the first problem on the way is reported
            call = graph.calls[index]
            problem = _middle_problem(call, graph)
            if problem is not None:
                raise ValueError(
                    f"{prefix}: layer {call.describe()}, between the stem convolution '{stem}' and the global "
                    f"pooling '{pool}', is not supported by XNNPACK's sparse inference: {problem}. Supported "
                    f"there: {_SUPPORTED}. Change or remove that layer, or prune without this policy."
                )


# -- what each layer must be -------------------------------------------------------


def _is_convolution(layer):
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                              keras.layers.Conv1D, keras.layers.Conv3D, keras.layers.Dense))


def _padding_before(call, graph):
    """The ``ZeroPadding2D`` layer whose output ``call`` reads directly, or None."""
    if len(call.inputs) != 1:
        return None
    producer = graph.producer_of(call.inputs[0])
    if producer is not None and isinstance(producer.layer, keras.layers.ZeroPadding2D):
        return producer.layer
    return None


def _stem_problem(call, graph):
    """None if ``call`` is the stem convolution, else what differs from it (a phrase)."""
    layer = call.layer
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "is depthwise; the stem must be a full keras.layers.Conv2D"
    if not isinstance(layer, keras.layers.Conv2D):
        return f"is a {type(layer).__name__}, not a Conv2D"
    channels = graph.shapes.get(call.inputs[0], (None,))[-1] if call.inputs else None
    if tuple(layer.kernel_size) != (3, 3):
        return f"has a {tuple(layer.kernel_size)} kernel; the stem's is (3, 3)"
    if channels != 3:
        return f"reads {channels} input channel(s); the stem reads 3 (an RGB image)"
    if tuple(layer.strides) != (2, 2):
        return f"has strides {tuple(layer.strides)}; the stem has strides (2, 2)"
    if layer.padding.lower() != "valid":
        return (f"has padding '{layer.padding}'; the stem has padding 'valid' after ZeroPadding2D(padding=1) "
                "(TFLite pads 'same' with stride 2 unevenly, and XNNPACK needs 1 pixel on each side)")
    padding = _padding_before(call, graph)
    if padding is None or _pair_padding(padding) != ((1, 1), (1, 1)):
        found = "nothing" if padding is None else f"ZeroPadding2D(padding={_pair_padding(padding)})"
        return f"is not fed directly by ZeroPadding2D(padding=1) (found {found})"
    return None


def _pair_padding(layer):
    return tuple(tuple(int(p) for p in side) for side in layer.padding)


def _fused_activation_problem(layer):
    name = _activation_name(getattr(layer, "activation", None))
    if name not in _ACTIVATIONS:
        return f"its activation '{name}' is not one XNNPACK runs sparse ({', '.join(_ACTIVATIONS)})"
    return None


_ELEMENTWISE_LAYERS = (
    keras.layers.Add, keras.layers.Multiply, keras.layers.ZeroPadding2D, keras.layers.ReLU,
    keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Dropout, keras.layers.Identity,
)


def _middle_problem(call, graph):
    """None if XNNPACK's sparse subgraph can contain ``call``, else why not (a phrase)."""
    layer = call.layer
    if isinstance(layer, _ELEMENTWISE_LAYERS):
        return None
    if isinstance(layer, keras_internals.keras_op_classes("Add", "Subtract", "Multiply")):
        return None
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return _depthwise_problem(layer, call, graph) or _fused_activation_problem(layer)
    if isinstance(layer, keras.layers.Conv2D):
        if tuple(layer.kernel_size) != (1, 1):
            return (f"a full convolution with a {tuple(layer.kernel_size)} kernel; only 1x1 full convolutions "
                    "run sparse (spatial filtering must be depthwise)")
        if tuple(layer.strides) != (1, 1):
            return (f"strides {tuple(layer.strides)}; a 1x1 convolution must have strides 1 (downsample in a "
                    "depthwise one)")
        if tuple(layer.dilation_rate) != (1, 1):
            return f"dilation_rate {tuple(layer.dilation_rate)}; it must be 1"
        if layer.groups != 1:
            return f"groups={layer.groups}; it must be 1"
        return _fused_activation_problem(layer)
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return None if layer.keepdims else (
            "keepdims=False inside the sparse part flattens the feature map; use "
            "GlobalAveragePooling2D(keepdims=True) (e.g. in a squeeze-and-excitation block)")
    if isinstance(layer, keras.layers.BatchNormalization):
        rank = len(graph.shapes.get(call.inputs[0], ())) if call.inputs else 4
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        axes = [a % rank if rank else a for a in axes]
        return None if axes == [3] else f"axis={layer.axis}; normalise over the channel axis (axis=-1)"
    if isinstance(layer, keras.layers.UpSampling2D):
        return None if layer.interpolation == "bilinear" else (
            f"interpolation='{layer.interpolation}'; use interpolation='bilinear'")
    if isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        return None if name in _ACTIVATIONS else (
            f"activation '{name}' is not one XNNPACK runs sparse ({', '.join(_ACTIVATIONS)})")
    if isinstance(layer, keras.Model):
        return "a subclassed model inside the model; its layers cannot be read. Build it as a Functional model"
    return f"XNNPACK's sparse subgraph has no {type(layer).__name__}"


def _depthwise_problem(layer, call, graph):
    kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
    if layer.depth_multiplier != 1:
        return f"depth_multiplier={layer.depth_multiplier}; it must be 1"
    if tuple(layer.dilation_rate) != (1, 1):
        return f"dilation_rate {tuple(layer.dilation_rate)}; it must be 1"
    if kernel not in ((3, 3), (5, 5)):
        return f"a {kernel} kernel; depthwise convolutions run sparse with 3x3 or 5x5 kernels"
    pad = kernel[0] // 2
    if layer.padding.lower() == "same":
        if strides == (1, 1):
            return None
        return (f"strides {strides} with padding 'same' (TFLite pads it unevenly); use "
                f"ZeroPadding2D(padding={pad}) then padding='valid'")
    if strides not in ((1, 1), (2, 2)):
        return f"strides {strides}; it must be 1 or 2"
    padding = _padding_before(call, graph)
    if padding is None or _pair_padding(padding) != ((pad, pad), (pad, pad)):
        found = "nothing" if padding is None else f"ZeroPadding2D(padding={_pair_padding(padding)})"
        return (f"padding 'valid' needs ZeroPadding2D(padding={pad}) directly before it, {pad} pixel(s) on "
                f"each side (found {found})")
    return None
