"""Every use of a Keras private attribute goes through this module.

Keras 3 has no public way to read a Functional model's node graph or its input and output
structure, or to list every tracked sublayer recursively. Keeping these reads in one place
means a Keras release that moves them breaks one small module, with one error to fix.
Where Keras has a public API (MultiHeadAttention's ``query_dense`` and friends), it is used.
"""

import keras
from keras.src.models.functional import Functional

__all__ = [
    "Functional",
    "attention_projections",
    "call_arguments",
    "in_stateless_scope",
    "initialize_pending",
    "initialize_with_values",
    "inbound_nodes",
    "inputs_struct",
    "is_functional",
    "keras_op_classes",
    "nodes_by_depth",
    "optimizer_slots",
    "optimizer_variable_index",
    "outputs_struct",
    "replace_sublayer",
    "sequential_functional",
    "tensor_producer",
    "tracked_sublayers",
]


def is_functional(model):
    """Whether ``model`` is a Functional graph (a ``keras.Model(inputs, outputs)`` or its subclass)."""
    return isinstance(model, Functional)


def nodes_by_depth(functional):
    """``{depth: [Node]}`` of a Functional model (deepest = closest to the inputs)."""
    return functional._nodes_by_depth


def sequential_functional(model):
    """The Functional graph a built ``keras.Sequential`` runs through, or None before it is built."""
    return getattr(model, "_functional", None)


def tensor_producer(tensor):
    """The operation that made the symbolic ``tensor`` (None for a model input made by ``keras.Input``)."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def inputs_struct(model):
    """The nested structure of a Functional model's inputs (list, dict, ...), or None."""
    return getattr(model, "_inputs_struct", None)


def outputs_struct(model):
    """The nested structure of a Functional model's outputs, or None."""
    return getattr(model, "_outputs_struct", None)


def inbound_nodes(layer):
    """The nodes at which ``layer`` was called, in call order."""
    return list(getattr(layer, "_inbound_nodes", []))


def tracked_sublayers(layer, recursive=True):
    """Every layer ``layer`` tracks (attributes, lists, wrappers, nested models), itself excluded."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))


def attention_projections(layer):
    """``(query, key, value, output)`` EinsumDense sublayers of a ``keras.layers.MultiHeadAttention``."""
    if not isinstance(layer, keras.layers.MultiHeadAttention):
        raise TypeError(f"Expected a MultiHeadAttention layer, got {type(layer).__name__}.")
    return layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense


def call_arguments(layer):
    """``(args, kwargs)`` of the first call of ``layer`` in a graph, or None if it was never called there."""
    nodes = inbound_nodes(layer)
    if not nodes:
        return None
    return tuple(nodes[0].arguments.args), dict(nodes[0].arguments.kwargs)


def replace_sublayer(parent, old, new):
    """Puts layer ``new`` where ``parent`` holds ``old``: its attributes, lists and dicts, and its tracker.

    Keras tracks a layer's sublayers in a private store (``_layers``) next to the attributes that
    name them; both must change, or the old layer's weights would still be the parent's. Returns
    how many references were replaced.
    """
    store = parent._tracker
    if not store.is_in_store("layers", old):
        raise ValueError(f"Layer '{old.name}' is not tracked by '{parent.name}'.")
    store.replace_tracked_value("layers", old, new)
    replaced = 0
    for name, value in list(vars(parent).items()):
        if name in ("_layers", "_tracker"):
            continue
        if value is old:
            object.__setattr__(parent, name, new)
            replaced += 1
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    list.__setitem__(value, i, new)
                    replaced += 1
                elif getattr(item, "ref", None) is old and hasattr(item, "_replace"):
                    # TensorFlow's checkpoint dependencies: (name, ref) pairs.
                    list.__setitem__(value, i, item._replace(ref=new))
        elif isinstance(value, tuple) and any(item is old for item in value):
            items = [new if item is old else item for item in value]
            object.__setattr__(parent, name, type(value)(*items) if hasattr(value, "_fields") else type(value)(items))
            replaced += 1
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                if item is old:
                    dict.__setitem__(value, key, new)
                    replaced += 1
    return replaced


def keras_op_classes(*names):
    """The ``keras.src.ops`` classes called ``names`` (those this Keras release has), from one place."""
    from keras.src.ops import core, math, nn, numpy as knp  # private: Keras exports functions, not classes

    found = []
    for name in names:
        for module in (knp, nn, math, core):
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, keras.Operation):
                found.append(cls)
                break
    return tuple(found)


def optimizer_slots(optimizer, variable):
    """The optimizer's variables kept for ``variable`` (SGD's momentum, Adam's two moments, ...).

    Keras 3 names them ``<variable path with '/' as '_'>_<slot>`` (``add_variable_from_reference``)
    and gives them the variable's shape; no public API maps a variable to them. Empty before the
    optimizer is built.
    """
    prefix = variable.path.replace("/", "_") + "_"
    shape = tuple(variable.shape)
    return [slot for slot in optimizer.variables
            if slot.name.startswith(prefix) and tuple(slot.shape) == shape and slot is not variable]


def optimizer_variable_index(optimizer, variable):
    """The position of ``variable`` among the variables ``optimizer`` was built on, inside ``update_step``.

    On the TensorFlow backend ``update_step`` receives the backend ``tf.Variable``, not the Keras
    variable, so only the optimizer's own key (``_get_variable_index``, what Keras's SGD and Adam
    use) finds it.
    """
    return optimizer._get_variable_index(variable)


def in_stateless_scope():
    """Whether the caller runs inside a ``keras.StatelessScope`` (variables created there wait uninitialised)."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope as inside

    return inside()


def initialize_pending():
    """Initialises, with their own initializers, the variables left waiting by ``StatelessScope(initialize_variables=False)``."""
    from keras.src.backend.common.variables import initialize_all_variables

    initialize_all_variables()


class _Holding:
    """An initializer that returns a given value (no random draw, no zeros later overwritten)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        return keras.ops.convert_to_tensor(self.value, dtype=dtype)


def initialize_with_values(pairs):
    """Initialises variables created in ``keras.StatelessScope(initialize_variables=False)`` from values.

    ``pairs``: ``(variable, value)``. Keras keeps such a variable's initializer and runs it on
    leaving the scope (``_deferred_initialize``); giving it one that returns ``value`` builds each
    variable once, holding ``value``, instead of drawing random numbers and overwriting them. A
    value that is a TensorFlow tensor or variable is not copied here: the new variable shares its
    buffer until either one is written, when TensorFlow copies it (copy on write), so the source
    never changes. Every other waiting variable gets its own initializer.
    """
    saved = []
    try:
        for variable, value in pairs:
            saved.append((variable, variable._initializer))
            variable._initializer = _Holding(value)
        initialize_pending()
    finally:
        # The holding initializer refers to the source buffer; kept, it would pin a second copy alive.
        for variable, initializer in saved:
            variable._initializer = initializer
