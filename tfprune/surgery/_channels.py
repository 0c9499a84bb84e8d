"""Which channels of which layers must be removed together: a union-find over channels.

Every channel a producer (Conv, Dense, ...) makes gets an id. Ids flow along the graph with
the tensors (see ``_layers``): pass-through layers keep them, Flatten tiles them, Concatenate
joins them, and merge layers (Add, Multiply, ...) unite the ids at the same position of each
input, because those channels can only be removed together. A tensor's channel ``i`` can be
removed exactly when the union of its id is removed.

Ids are *blocked* where removing them would change something outside the graph or something
tfprune cannot cut: model inputs and outputs, and inputs of opaque layers.
"""

import dataclasses

import numpy as np

from tfprune.surgery import _layers
from tfprune.surgery._graph import Graph


@dataclasses.dataclass
class Unit:
    """Producers whose output channels are tied together, and the channel unions they share."""

    layers: list
    roots: np.ndarray  # union ids, sorted
    blocked: np.ndarray  # bool, aligned with roots


class ChannelAnalysis:
    """Propagates channel ids through a model (see the module docstring)."""

    def __init__(self, model):
        self.model = model
        self.graph = Graph(model)
        self._parent = []
        self._blocked = {}  # id -> reason
        self.ids = {}  # tensor key -> id array along its last axis
        self.kind = {}  # node index -> kind
        self.reason = {}  # node index -> why opaque
        self.producers = {}  # layer name -> output id array
        for key in self.graph.input_keys:
            self.ids[key] = self._fresh(self._width(key), f"it is an input of model '{model.name}'")
        for index, gnode in enumerate(self.graph.nodes):
            kind, reason = _layers.classify(gnode.operation, gnode, self.graph)
            self.kind[index], self.reason[index] = kind, reason
            self._propagate(index, gnode, kind, reason)
        for key in self.graph.output_keys:
            self._block(self.ids[key], f"it is an output of model '{model.name}'")
        self.root = np.array([self._find(i) for i in range(len(self._parent))], dtype=np.int64)
        self.blocked = np.zeros(len(self._parent), dtype=bool)
        self.block_reason = {}
        for i, why in self._blocked.items():
            r = self.root[i]
            self.blocked[r] = True
            self.block_reason.setdefault(r, why)

    # union-find ---------------------------------------------------------------------------
    def _fresh(self, n, blocked_reason=None):
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        ids = np.arange(start, start + n, dtype=np.int64)
        if blocked_reason:
            self._block(ids, blocked_reason)
        return ids

    def _find(self, i):
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def _union(self, a, b):
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def _block(self, ids, reason):
        for i in np.asarray(ids).ravel().tolist():
            self._blocked.setdefault(i, reason)

    def _width(self, key):
        shape = self.graph.shape(key)
        return shape[-1] if len(shape) > 1 and shape[-1] is not None else 1

    # propagation --------------------------------------------------------------------------
    def _propagate(self, index, gnode, kind, reason):
        layer = gnode.operation
        ins = [self.ids[key] for key in gnode.inputs]
        outs = gnode.outputs
        if kind == "producer":
            n = _layers.output_channels(layer)
            self.ids[outs[0]] = self._fresh(n)
            self.producers[layer.name] = self.ids[outs[0]]
        elif kind == "depthwise":
            self.ids[outs[0]] = np.repeat(ins[0], layer.depth_multiplier)
        elif kind in ("channelwise", "passthrough"):
            self.ids[outs[0]] = ins[0]
        elif kind == "flatten":
            self._flatten(index, gnode, ins[0])
        elif kind == "reshape":
            self._reshape(index, gnode, ins[0])
        elif kind == "concat":
            self.ids[outs[0]] = np.concatenate(ins)
        elif kind == "merge":
            width = self._width(outs[0])
            full = [ids for ids in ins if len(ids) == width]
            for ids in ins:
                if len(ids) == width:
                    self._union(full[0], ids)
                elif len(ids) != 1:  # broadcasting a single channel over all is fine
                    self._block(ids, f"it broadcasts into '{layer.name}'")
            self.ids[outs[0]] = full[0]
        else:
            self._opaque(gnode, reason)

    def _opaque(self, gnode, reason):
        for ids in (self.ids[key] for key in gnode.inputs):
            self._block(ids, f"it flows into {reason}")
        for key in gnode.outputs:
            self.ids[key] = self._fresh(self._width(key), f"it comes out of {reason}")

    def _flatten(self, index, gnode, ids):
        spatial = self.graph.shape(gnode.inputs[0])[1:-1]
        if any(d is None for d in spatial):
            self.kind[index] = "opaque"
            self.reason[index] = f"'{gnode.name}' (Flatten): unknown input size {spatial}"
            return self._opaque(gnode, self.reason[index])
        # channels-last flatten: index (h*W + w)*C + c holds channel c
        self.ids[gnode.outputs[0]] = np.tile(ids, int(np.prod(spatial, dtype=np.int64)))

    def _reshape(self, index, gnode, ids):
        in_shape = self.graph.shape(gnode.inputs[0])[1:]
        out_shape = self.graph.shape(gnode.outputs[0])[1:]
        if in_shape and out_shape and in_shape[-1] == out_shape[-1] and len(in_shape) > 0:
            self.ids[gnode.outputs[0]] = ids
        elif len(out_shape) == 1 and None not in in_shape:
            self.ids[gnode.outputs[0]] = np.tile(ids, int(np.prod(in_shape[:-1], dtype=np.int64)))
        else:
            self.kind[index] = "opaque"
            self.reason[index] = (
                f"'{gnode.name}' (Reshape {in_shape} -> {out_shape}): it moves channels off the last axis"
            )
            self._opaque(gnode, self.reason[index])

    # queries ------------------------------------------------------------------------------
    def roots_of(self, layer_name):
        """Union ids of a producer's output channels, in channel order."""
        return self.root[self.producers[layer_name]]

    def units(self):
        """Producers tied by shared channel unions (a residual stage is one unit)."""
        owner = {}
        parent = {name: name for name in self.producers}

        def find(name):
            while parent[name] != name:
                name = parent[name]
            return name

        for name in self.producers:
            for r in np.unique(self.roots_of(name)).tolist():
                if r in owner:
                    a, b = find(owner[r]), find(name)
                    if a != b:
                        parent[b] = a
                else:
                    owner[r] = name
        members = {}
        for name in self.producers:  # producers are in topological order
            members.setdefault(find(name), []).append(name)
        units = []
        for names in members.values():
            roots = np.unique(np.concatenate([self.roots_of(n) for n in names]))
            units.append(Unit(layers=names, roots=roots, blocked=self.blocked[roots]))
        return units

    def keep_masks(self, removed_roots):
        """Per tensor key, the boolean mask of channels kept when ``removed_roots`` go."""
        removed = np.zeros(len(self.root), dtype=bool)
        removed[np.asarray(list(removed_roots), dtype=np.int64)] = True
        return {key: ~removed[self.root[ids]] for key, ids in self.ids.items()}

    def block_reason_for(self, layer_name, channels):
        """Why some of ``channels`` of ``layer_name`` cannot be removed, or None."""
        roots = self.roots_of(layer_name)[np.asarray(channels, dtype=np.int64)]
        for channel, r in zip(channels, roots.tolist()):
            if self.blocked[r]:
                return channel, self.block_reason[r]
        return None
