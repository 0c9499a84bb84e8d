"""Which sparse weights keep the sparse encoding under ``sparse="auto"``: found by probing, one group at a time.

The default XNNPACK delegate takes or refuses a sparse weight by the
operator that reads it, its dtype and its block shape (in ai-edge-litert
2.3.0, int8 convolutions run sparse while an unstructured sparse int8
FULLY_CONNECTED is refused), and no table of those rules ships with the
runtime. So the rule is measured on the file itself: the sparse weights are
grouped by (operator, dtype, block shape), and for each group a copy of the
file that keeps only that group sparse is run under the default delegate;
the groups whose copy fails are stored dense (``_rewrite.rewrite``). One
probe per group (a handful per model), plus the final file's verification.
"""

import dataclasses

from tfprune.export import _flatbuffer, _rewrite

CONVERTER_DENSE = "dense: the converter stored it dense (too few zeros for the sparse format to be smaller)"
ASKED_DENSE = "dense: sparse=False"


@dataclasses.dataclass
class SparseGroup:
    """Sparse weights read by the same kind of operator, with the same dtype and block shape."""

    op: str
    dtype: str
    block: tuple
    tensors: list  # (subgraph index, tensor index)
    names: list

    @property
    def label(self):
        return f"{self.op} ({self.dtype}, {'x'.join(map(str, self.block))} blocks)"


def sparse_groups(info):
    """The sparse constant tensors of ``info`` (a ``_flatbuffer.Model``), grouped as ``SparseGroup``s.

    A weight read through a DENSIFY operator is grouped by the operator that
    reads DENSIFY's output: that is the operator the delegate must run.
    """
    groups = {}
    for g, graph in enumerate(info.subgraphs):
        readers = {}
        for op in graph.operators:
            for i in op.inputs:
                readers.setdefault(i, []).append(op)
        for t in graph.tensors:
            if not t.sparsity:
                continue
            ops = set()
            for op in readers.get(t.index, []):
                if op.op == "DENSIFY":
                    ops |= {r.op for r in readers.get(op.outputs[0], [])}
                else:
                    ops.add(op.op)
            key = ("/".join(sorted(ops)) or "no operator", t.dtype, _flatbuffer.block_shape(t))
            group = groups.setdefault(key, SparseGroup(*key, [], []))
            group.tensors.append((g, t.index))
            group.names.append(t.name)
    return list(groups.values())


def refused_groups(groups, data, default_run, probe_default):
    """``{group label: RunResult}`` for the groups the default delegate does not run sparse.

    Args:
        groups: the file's ``SparseGroup``s.
        data: the bytes of the all-sparse file, which failed under the
            default delegate with ``default_run``.
        probe_default: ``probe_default(bytes) -> RunResult``, the file run
            and checked against Keras under the default delegate.
    """
    if len(groups) == 1:
        return {groups[0].label: default_run}  # the all-sparse file was this group's probe
    refused = {}
    for group in groups:
        others = [t for other in groups if other is not group for t in other.tensors]
        run = probe_default(_rewrite.rewrite(data, densify=others))
        if not run.works:
            refused[group.label] = run
    return refused


def refusal_reason(group, run):
    """Why ``group`` is stored dense, from the probe that kept it sparse alone."""
    if run.loads:
        return f"dense: with the sparse {group.op} weights XNNPACK {run.error.replace('loads and runs, but ', '')}"
    return f"dense: XNNPACK refused the sparse {group.op} ({run.error})"


def kept_reason(group):
    return f"sparse: the default XNNPACK delegate runs the sparse {group.op}"


def renamed(by_name, before, after):
    """``by_name`` (reasons keyed by the tensor names of file ``before``) keyed by the names of file ``after``.

    The converter names a weight differently when it encodes it dense, so
    weights are matched by the order in which operators read them (through
    DENSIFY in the sparse file); if the two files do not read the same
    number of weights, nothing is matched.
    """
    old, new = _weights_in_order(before), _weights_in_order(after)
    if len(old) != len(new):
        return {}
    return {b: by_name[a] for a, b in zip(old, new) if a in by_name}


def _weights_in_order(info):
    names = []
    for graph in info.subgraphs:
        densified = {op.outputs[0]: op.inputs[0] for op in graph.operators if op.op == "DENSIFY"}
        for op in graph.operators:
            if op.op == "DENSIFY":
                continue
            for i in op.inputs:
                t = graph.tensors[densified.get(i, i)] if i >= 0 else None
                if t is not None and t.is_constant and (t.sparsity or len(t.shape) >= 2):
                    names.append(t.name)
    return names


def partial_blocks(info):
    """``(name, dimension size, block size)`` of the sparse tensors a dimension of which is not a whole number of blocks.

    The converter (TensorFlow 2.20) stores only whole blocks: with int8
    weights in (1, 16) blocks, a FULLY_CONNECTED with 24 inputs keeps
    inputs 0-15 of each row and drops 16-23, nonzero or not (measured:
    the file's output for such a row is off by the dropped terms).
    """
    found = []
    for graph in info.subgraphs:
        for t in graph.tensors:
            block = _flatbuffer.block_shape(t) if t.sparsity else None
            for size, b in zip(t.shape, block or ()):
                if b > 1 and size % b:
                    found.append((t.name, size, b))
    return found


def reasons(info, by_name, default):
    """``{tensor index: reason}`` for the weights of the main subgraph of ``info`` (what the report shows).

    ``by_name`` where it names the tensor, else ``default(tensor)``.
    """
    graph = info.subgraphs[0] if info.subgraphs else None
    return {t.index: by_name.get(t.name) or default(t) for t in (graph.tensors if graph else [])
            if t.is_constant and (t.sparsity or len(t.shape) >= 2)}
