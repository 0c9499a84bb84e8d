"""Reads a built Sequential or Functional Keras 3 model as nodes in topological order."""

import dataclasses

import keras

from tfprune._common import keras_internals


@dataclasses.dataclass
class GraphNode:
    """One call of an operation: which tensors it reads and which it writes."""

    operation: object
    node: object
    inputs: list  # keys of the KerasTensors it reads, in call order
    outputs: list  # keys of the KerasTensors it writes
    shared: bool  # the operation is called by more than one node of this model

    @property
    def name(self):
        return self.operation.name


def tensor_key(tensor):
    # Keras itself maps symbolic tensors by id() when it runs a graph (Function._run_through_graph).
    return id(tensor)


class Graph:
    """The nodes of ``model`` in topological order, with each tensor's shape, producer and consumers."""

    def __init__(self, model):
        if not isinstance(model, keras.Model):
            raise TypeError(f"Expected a keras.Model, got {type(model).__name__}.")
        self.model = model
        self.is_sequential = isinstance(model, keras.Sequential)
        functional = keras_internals.sequential_functional(model) if self.is_sequential else model
        if self.is_sequential and functional is None:
            raise ValueError(
                f"Sequential model '{model.name}' is not built, so its graph is unknown. Start it with "
                "keras.Input(shape) or call model.build(input_shape) first."
            )
        if not keras_internals.is_functional(functional):
            raise ValueError(
                f"Model '{model.name}' is a subclassed keras.Model ({type(model).__name__}): its call() is "
                "Python code whose graph cannot be read. tfprune.surgery supports Sequential and Functional "
                "models; rebuild the model with the Functional API."
            )
        self.functional = functional
        self.tensors = {}
        self.nodes = []
        self.producer = {}
        self.consumers = {}
        for tensor in functional.inputs:
            self.tensors[tensor_key(tensor)] = tensor
        calls = {}
        ordered = []
        by_depth = keras_internals.nodes_by_depth(functional)
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if node.is_input:
                    continue
                ordered.append(node)
                calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for node in ordered:
            graph_node = GraphNode(
                operation=node.operation,
                node=node,
                inputs=[tensor_key(t) for t in node.input_tensors],
                outputs=[tensor_key(t) for t in node.outputs],
                shared=calls[id(node.operation)] > 1,
            )
            self.nodes.append(graph_node)
            for tensor in list(node.input_tensors) + list(node.outputs):
                self.tensors[tensor_key(tensor)] = tensor
            for key in graph_node.outputs:
                self.producer[key] = graph_node
            for key in graph_node.inputs:
                self.consumers.setdefault(key, []).append(graph_node)
        self.input_keys = [tensor_key(t) for t in functional.inputs]
        self.output_keys = [tensor_key(t) for t in functional.outputs]
        self.nodes_by_name = {}
        for graph_node in self.nodes:
            self.nodes_by_name.setdefault(graph_node.name, graph_node)

    def shape(self, key):
        return tuple(self.tensors[key].shape)

    def input_layer_name(self, key):
        operation = keras_internals.tensor_producer(self.tensors[key])
        return operation.name if operation is not None else None
