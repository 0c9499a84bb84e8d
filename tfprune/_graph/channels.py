"""Which channels of which layers must be removed together: a union-find over channel ids.

Every channel a producer makes gets an id; ids flow along the graph with the tensors as each
layer's family says (see ``families``). Ids tied together form a *channel union*, named by
its root id; a tensor's channel ``i`` can be removed exactly when the union of its id is.
Ids are *blocked* where removing them would change something outside the graph or something
tfprune cannot cut: model inputs and outputs, and inputs of opaque layers.
"""

import dataclasses

import numpy as np

from tfprune._graph.families import OPAQUE, family_of
from tfprune._graph.nodes import Graph

import keras


@dataclasses.dataclass
class ChannelGroup:
    """A coupled group: producers whose output channels are tied, and the channel unions they share."""

    layers: list
    unions: np.ndarray  # root ids, sorted
    blocked: np.ndarray  # bool, aligned with unions


def _generic_reason(layer, gnode):
    name = type(layer).__name__
    if not isinstance(layer, keras.layers.Layer):
        return None  # a keras.ops call: its operation family decides
    if isinstance(layer, keras.Model):
        return f"'{layer.name}' ({name}): a nested model, which channels are not traced into"
    if gnode.shared:
        return f"'{layer.name}' ({name}): a layer shared by several calls"
    if getattr(layer, "data_format", "channels_last") not in ("channels_last", None):
        return f"'{layer.name}' ({name}): data_format='{layer.data_format}', only channels_last is supported"
    return None


class ChannelAnalysis:
    """Propagates channel ids through a model (see the module docstring)."""

    def __init__(self, model):
        self.model = model
        self.graph = Graph(model)
        self._parent = []
        self._blocked = {}  # id -> reason
        self.ids = {}  # tensor key -> id array along its last axis
        self.families = {}  # node index -> family (OPAQUE where the call cannot be cut)
        self.producers = {}  # layer name -> output id array
        self.opaque = {}  # node name -> why that call cannot be cut
        for key in self.graph.input_keys:
            self.ids[key] = self.fresh(self.width(key), f"it is an input of model '{model.name}'")
        for index, gnode in enumerate(self.graph.nodes):
            self._propagate(index, gnode)
        for key in self.graph.output_keys:
            self.block(self.ids[key], f"it is an output of model '{model.name}'")
        self.root = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        self.blocked = np.zeros(len(self._parent), dtype=bool)
        self.block_reason = {}
        for i, why in self._blocked.items():
            r = self.root[i]
            self.blocked[r] = True
            self.block_reason.setdefault(r, why)

    # union-find (the ``flow`` a family propagates with) -----------------------------------
    def fresh(self, n, blocked_reason=None):
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        ids = np.arange(start, start + n, dtype=np.int64)
        if blocked_reason:
            self.block(ids, blocked_reason)
        return ids

    def _find(self, i):
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a, b):
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def block(self, ids, reason):
        for i in np.asarray(ids).ravel().tolist():
            self._blocked.setdefault(i, reason)

    def width(self, key):
        shape = self.graph.shape(key)
        return shape[-1] if len(shape) > 1 and shape[-1] is not None else 1

    # propagation --------------------------------------------------------------------------
    def _propagate(self, index, gnode):
        layer = gnode.operation
        family = family_of(layer)
        reason = _generic_reason(layer, gnode) or family.opaque_reason(layer, gnode, self.graph)
        if reason:
            self.families[index] = OPAQUE
            self.opaque.setdefault(gnode.name, reason)
            for ids in (self.ids[key] for key in gnode.inputs):
                self.block(ids, f"it flows into {reason}")
            for key in gnode.outputs:
                self.ids[key] = self.fresh(self.width(key), f"it comes out of {reason}")
            return
        self.families[index] = family
        outs = family.propagate(self, layer, gnode, [self.ids[key] for key in gnode.inputs])
        for key, ids in zip(gnode.outputs, outs):
            self.ids[key] = ids
        if family.produces:
            self.producers[layer.name] = outs[0]

    # queries ------------------------------------------------------------------------------
    def cuts_through(self, index):
        """Whether node ``index`` of ``graph.nodes`` can be cut (it is not opaque)."""
        return self.families[index] is not OPAQUE

    def roots_of(self, layer_name):
        """Channel unions (root ids) of a producer's output channels, in channel order."""
        return self.root[self.producers[layer_name]]

    def coupled_groups(self):
        """Producers tied by shared channel unions (a residual stage is one group), in graph order."""
        owner, parent = {}, {name: name for name in self.producers}

        def find(name):
            while parent[name] != name:
                name = parent[name]
            return name

        for name in self.producers:
            for r in np.unique(self.roots_of(name)).tolist():
                if r not in owner:
                    owner[r] = name
                elif find(owner[r]) != find(name):
                    parent[find(name)] = find(owner[r])
        members = {}
        for name in self.producers:  # producers are in topological order
            members.setdefault(find(name), []).append(name)
        groups = []
        for names in members.values():
            unions = np.unique(np.concatenate([self.roots_of(n) for n in names]))
            groups.append(ChannelGroup(layers=names, unions=unions, blocked=self.blocked[unions]))
        return groups

    def keep_masks(self, removed):
        """Per tensor key, the boolean mask of channels kept when the unions ``removed`` go."""
        gone = np.zeros(len(self.root), dtype=bool)
        gone[np.asarray(list(removed), dtype=np.int64)] = True
        return {key: ~gone[self.root[ids]] for key, ids in self.ids.items()}

    def block_reason_for(self, layer_name, channels):
        """``(channel, reason)`` for the first of ``channels`` of ``layer_name`` that cannot go, or None."""
        roots = self.roots_of(layer_name)[np.asarray(channels, dtype=np.int64)]
        for channel, r in zip(channels, roots.tolist()):
            if self.blocked[r]:
                return channel, self.block_reason[r]
        return None
