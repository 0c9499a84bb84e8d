"""The model's layer graph and its channels, shared by ``tfprune.structured`` and ``tfprune.surgery`` (private).

Vocabulary:

* a *producer* makes output channels of its own (Conv, Dense, ...); every channel it makes
  gets a *channel id*;
* ids that must be removed together (tied by Add, Multiply, ...) form a *channel union*,
  named by its root id (``ChannelAnalysis.root[id]``, ``roots_of(layer)``);
* producers sharing channel unions form a *coupled group* (``ChannelGroup`` here, shown to
  users as ``tfprune.surgery.CoupledGroup``);
* a *layer family* (``LayerFamily``) says how one kind of layer is cut; ``register_layer``
  adds one for a layer class; an *op family* (``OpFamily``) does the same for a ``keras.ops``
  operation class (``x + y``, ``ops.mean``), added by ``register_operation``.

Modules: ``nodes`` (the graph), ``families`` (the layer families and the registry),
``operations`` (the op families), ``channels`` (the union-find over channel ids), ``rebuild``
(a model rebuilt with sliced weights), ``report`` (what a cut did: ``StructuredReport``).
"""

from tfprune._graph.channels import ChannelAnalysis, ChannelGroup
from tfprune._graph.families import (
    ACTIVATIONS,
    OPAQUE,
    SUPPORTED,
    LayerFamily,
    family_of,
    output_filters,
    register_layer,
    register_operation,
)
from tfprune._graph.operations import OpFamily
from tfprune._graph.nodes import Graph, GraphNode
from tfprune._graph.rebuild import rebuild_model, zero_cut
from tfprune._graph.report import StructuredReport, cut_report

__all__ = [
    "ACTIVATIONS",
    "OPAQUE",
    "SUPPORTED",
    "StructuredReport",
    "ChannelAnalysis",
    "ChannelGroup",
    "Graph",
    "GraphNode",
    "LayerFamily",
    "OpFamily",
    "cut_report",
    "family_of",
    "output_filters",
    "rebuild_model",
    "register_layer",
    "register_operation",
    "zero_cut",
]
