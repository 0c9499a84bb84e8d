"""Edits a converted ``.tflite`` file: sparse tensors stored dense, their DENSIFY ops dropped, unused parts removed.

The converter encodes either every eligible weight sparse or none
(``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` is one switch). To keep the
sparse encoding only where the default delegate runs it, ``rewrite`` takes
the converted file through the generated schema's object API
(``schema_py_generated.ModelT``, the same module ``_flatbuffer`` reads with)
and writes it again with ``flatbuffers.Builder``:

* each tensor named in ``densify`` gets its values expanded to the dense
  layout (``sparse_to_dense``) and loses its ``sparsity`` field;
* a DENSIFY operator whose input was densified is removed, and its readers
  read the constant directly;
* tensors, buffers and operator codes nothing refers to any more are
  dropped, and every index is renumbered;
* with ``strip``, what the runtime never reads is dropped too: the
  converter's metadata buffers (``min_runtime_version``,
  ``CONVERSION_METADATA``), the model description, and the names of the
  tensors that are neither an input nor an output (the signature keeps its
  own names). Tensor indices do not change.

Only files this package converted are rewritten (they are trusted: the
object API reads without the bounds checks of ``_flatbuffer``), and every
rewritten file is verified with the interpreter like any export.
"""

import math

import flatbuffers
import numpy as np

from tfprune.export import _flatbuffer

# Buffers are aligned as the converter aligns them, so that the runtime may read int32 and float data in place.
_BUFFER_ALIGNMENT = 16
# Metadata the runtime does not read: the converter's version stamp and its options, for humans and tools.
STRIPPABLE_METADATA = ("min_runtime_version", "CONVERSION_METADATA")


class RewriteError(ValueError):
    """A file cannot be rewritten as asked (a sparse tensor stored outside the flatbuffer, an unknown index)."""


def rewrite(data, densify=(), strip=False):
    """The file ``data`` with the tensors ``densify`` stored dense; returns the new bytes.

    Args:
        data: the bytes of a ``.tflite`` file.
        densify: ``(subgraph index, tensor index)`` pairs of sparse tensors
            to store dense.
        strip: also drop what the runtime does not read: the metadata in
            ``STRIPPABLE_METADATA``, the description, and the names of
            tensors that are not a subgraph's input or output.
    """
    schema = _flatbuffer.schema_module()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    densify = set(densify)
    for g, t in sorted(densify):
        if g >= len(model.subgraphs) or t >= len(model.subgraphs[g].tensors or []):
            raise RewriteError(f"tensor {t} of subgraph {g} does not exist")
        _store_dense(model, model.subgraphs[g].tensors[t], schema)
    densify_code = _opcode_indices(model, schema, "DENSIFY")
    for g, graph in enumerate(model.subgraphs):
        _drop_densify(graph, {t for sg, t in densify if sg == g}, densify_code)
    if strip:
        _strip(model)
    _compact(model)
    return _pack(model, schema)


def sparse_to_dense(values, shape, sparsity, schema):
    """The dense array of a sparse tensor: ``values`` (its stored values, any dtype) placed at their coordinates.

    Follows the TFLite sparse format (the ``SparsityParameters`` of
    ``schema.fbs``, after TACO's level formats, Kjolstad et al. 2017): the
    stored dimensions are visited in ``traversal_order``; a DENSE dimension
    holds every index ``0 .. dense_size - 1``, a SPARSE_CSR one the indices
    ``array_indices[array_segments[p] : array_segments[p + 1]]`` of its
    parent position ``p``. Dimensions past the tensor's rank are the blocks
    of the dimensions ``block_map`` names, so a coordinate is ``block index
    x block size + index in block``. Elements not stored are zero, as the
    runtime's own densification makes them.
    """
    rank = len(shape)
    order = list(sparsity.traversalOrder)
    block_map = [] if sparsity.blockMap is None else list(sparsity.blockMap)
    positions = np.zeros(1, np.int64)
    coordinates = []
    for dim in sparsity.dimMetadata:
        if dim.format == schema.DimensionType.DENSE:
            size = int(dim.denseSize)
            count = positions.size
            coordinates = [np.repeat(c, size) for c in coordinates] + [np.tile(np.arange(size), count)]
            positions = (positions[:, None] * size + np.arange(size)[None, :]).ravel()
        else:
            segments = np.asarray(dim.arraySegments.values, np.int64)
            indices = np.asarray(dim.arrayIndices.values, np.int64)
            starts, counts = segments[positions], segments[positions + 1] - segments[positions]
            total = int(counts.sum())
            # Concatenated ranges starts[i] .. starts[i] + counts[i], without a Python loop.
            offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
            positions = offsets + np.arange(total)
            coordinates = [np.repeat(c, counts) for c in coordinates] + [indices[positions]]
    if positions.size != len(values):
        raise RewriteError(f"the sparsity parameters address {positions.size} values, but {len(values)} are stored")
    index = [coordinates[order.index(dim)] for dim in range(rank)]
    for level, dim in enumerate(order):
        if dim >= rank:
            original = block_map[dim - rank]
            index[original] = index[original] * int(sparsity.dimMetadata[level].denseSize) + coordinates[level]
    dense = np.zeros(math.prod(shape), values.dtype)
    dense[np.ravel_multi_index(index, shape)] = values[positions]
    return dense.reshape(shape)


# -- steps -----------------------------------------------------------------------


def _store_dense(model, tensor, schema):
    if tensor.sparsity is None:
        raise RewriteError(f"tensor '{_text(tensor.name)}' is not stored sparse")
    buffer = model.buffers[tensor.buffer]
    if buffer.data is None or not len(buffer.data):
        raise RewriteError(f"tensor '{_text(tensor.name)}' keeps its data outside the flatbuffer; it cannot be "
                           "rewritten")
    shape = [int(d) for d in tensor.shape]
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    item = _flatbuffer.item_bytes(names[tensor.type].lower())
    raw = np.asarray(buffer.data, np.uint8)
    # Values are copied as opaque items of their width: no dtype conversion can change a bit.
    values = raw.view(f"V{item}") if item > 1 else raw
    dense = sparse_to_dense(values, shape, tensor.sparsity, schema)
    # A buffer may be shared by several tensors; a densified tensor gets a buffer of its own.
    model.buffers.append(schema.BufferT(data=np.frombuffer(dense.tobytes(), np.uint8)))
    tensor.buffer = len(model.buffers) - 1
    tensor.sparsity = None


def _drop_densify(graph, densified, densify_code):
    """Removes the DENSIFY ops that read a densified tensor; their readers read the tensor itself."""
    replaced, kept = {}, []
    for op in graph.operators or []:
        inputs = [] if op.inputs is None else [int(i) for i in op.inputs]
        if op.opcodeIndex in densify_code and len(inputs) == 1 and inputs[0] in densified:
            replaced[int(op.outputs[0])] = inputs[0]
        else:
            kept.append(op)
    if not replaced:
        return
    for op in kept:
        op.inputs = [replaced.get(int(i), int(i)) for i in op.inputs]
    graph.outputs = [replaced.get(int(i), int(i)) for i in graph.outputs]
    graph.operators = kept


def _strip(model):
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) not in STRIPPABLE_METADATA] or None
    model.description = None
    for graph in model.subgraphs:
        named = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
        for i, t in enumerate(graph.tensors or []):
            if i not in named:
                t.name = None


def _compact(model):
    """Drops tensors, buffers and operator codes nothing refers to, and renumbers every reference."""
    for g, graph in enumerate(model.subgraphs):
        used = set(int(i) for i in graph.inputs) | set(int(i) for i in graph.outputs)
        for op in graph.operators or []:
            for field in (op.inputs, op.outputs, op.intermediates):
                used |= {int(i) for i in (field if field is not None else []) if i >= 0}
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == g:
                used |= {m.tensorIndex for m in (signature.inputs or []) + (signature.outputs or [])}
        new = {old: i for i, old in enumerate(sorted(used))}
        graph.tensors = [graph.tensors[old] for old in sorted(used)]

        def renumber(indices):
            return None if indices is None else [new[int(i)] if i >= 0 else int(i) for i in indices]

        graph.inputs, graph.outputs = renumber(graph.inputs), renumber(graph.outputs)
        for op in graph.operators or []:
            op.inputs, op.outputs, op.intermediates = (renumber(op.inputs), renumber(op.outputs),
                                                        renumber(op.intermediates))
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == g:
                for m in (signature.inputs or []) + (signature.outputs or []):
                    m.tensorIndex = new[m.tensorIndex]
    # Buffer 0 is the schema's empty sentinel: it stays first.
    used = {0} | {t.buffer for graph in model.subgraphs for t in graph.tensors or []}
    used |= {m.buffer for m in model.metadata or []}
    used |= {int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else [])}
    new = {old: i for i, old in enumerate(sorted(used))}
    model.buffers = [model.buffers[old] for old in sorted(used)]
    for graph in model.subgraphs:
        for t in graph.tensors or []:
            t.buffer = new[t.buffer]
    for m in model.metadata or []:
        m.buffer = new[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [new[int(b)] for b in model.metadataBuffer]
    codes = sorted({op.opcodeIndex for graph in model.subgraphs for op in graph.operators or []})
    new = {old: i for i, old in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[old] for old in codes]
    for graph in model.subgraphs:
        for op in graph.operators or []:
            op.opcodeIndex = new[op.opcodeIndex]


def _pack(model, schema):
    model.buffers = [_AlignedBuffer(b, schema) for b in model.buffers]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_flatbuffer.FILE_IDENTIFIER)
    return bytes(builder.Output())


class _AlignedBuffer:
    """A ``BufferT`` packed with its data aligned to ``_BUFFER_ALIGNMENT`` bytes, as the converter writes it."""

    def __init__(self, buffer, schema):
        self.buffer, self.schema = buffer if buffer is not None else schema.BufferT(), schema

    def Pack(self, builder):
        s, b = self.schema, self.buffer
        data = None
        if b.data is not None:
            payload = np.asarray(b.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data = builder.EndVector()
        s.BufferStart(builder)
        if data is not None:
            s.BufferAddData(builder, data)
        s.BufferAddOffset(builder, b.offset)
        s.BufferAddSize(builder, b.size)
        return s.BufferEnd(builder)


def _opcode_indices(model, schema, name):
    code = getattr(schema.BuiltinOperator, name)
    return {i for i, c in enumerate(model.operatorCodes or [])
            if max(c.deprecatedBuiltinCode, c.builtinCode) == code}


def _text(raw):
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
