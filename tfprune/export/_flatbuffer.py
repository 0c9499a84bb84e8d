"""Reads the part of a ``.tflite`` flatbuffer that an export report needs.

The file is read through the TFLite schema's generated Python module (the
``schema_py_generated`` that ships with ``ai-edge-litert``, or TensorFlow's
copy) and the ``flatbuffers`` package, so field numbers, type and operator
names come from the schema itself. Reports come from the file, and work on
files that an interpreter refuses.

The generated readers check nothing: a corrupt offset reads from the wrong
place, and a negative one from the end of the buffer. Every generated
object here therefore reads through ``_CheckedTable``, which bounds-checks
each read, vtable, vector and string. A truncated or corrupt file raises
``FlatbufferError`` (a ``ValueError``) saying where it broke, never an
``IndexError``, a ``struct.error`` or garbage.
"""

import contextlib
import dataclasses
import importlib
import math
import struct

import numpy as np
from flatbuffers import encode
from flatbuffers import number_types as N
from flatbuffers.table import Table

FILE_IDENTIFIER = b"TFL3"
_SCHEMA_MODULES = ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated")

# Numeric types whose stored values can be counted; the rest report no nonzero count.
_NUMPY_TYPES = {
    "float32": "<f4", "float16": "<f2", "int32": "<i4", "uint8": "u1", "int64": "<i8", "bool": "u1",
    "int16": "<i2", "int8": "i1", "float64": "<f8", "uint64": "<u8", "uint32": "<u4", "uint16": "<u2",
}
# A tensor may declare at most this many bytes. The interpreter allocates every tensor a file declares,
# so a corrupt shape such as [1, 0x7fffffff] would otherwise reserve many GiB before anything can
# check it; no model a phone runs has a tensor near this size.
MAX_TENSOR_BYTES = 2**31
_ITEM_BYTES = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2, "int8": 1,
               "float64": 8, "uint64": 8, "uint32": 4, "uint16": 2, "complex64": 8, "complex128": 16,
               "int4": 1, "string": 1, "resource": 1, "variant": 1, "bfloat16": 2}

# Errors the generated readers and numpy raise on bytes that are not what the schema says.
_LOW_LEVEL = (struct.error, IndexError, ValueError, TypeError, OverflowError, AssertionError)


class FlatbufferError(ValueError):
    """The bytes are not a readable TFLite flatbuffer."""


@dataclasses.dataclass
class Tensor:
    """One tensor of a subgraph, as stored in the file (shapes in TFLite's layout)."""

    index: int
    name: str
    shape: list
    shape_signature: list
    dtype: str
    buffer: int
    is_variable: bool
    data_bytes: int  # bytes stored for a constant tensor, 0 for activations
    elements: int
    stored_values: int | None  # values stored in the buffer (sparse: kept blocks only)
    nonzero: int | None  # stored values different from the zero point
    quantization: dict | None
    sparsity: dict | None

    @property
    def is_constant(self):
        return self.data_bytes > 0


@dataclasses.dataclass
class Operator:
    index: int
    op: str
    version: int
    inputs: list
    outputs: list


@dataclasses.dataclass
class Subgraph:
    name: str
    tensors: list
    operators: list
    inputs: list
    outputs: list


@dataclasses.dataclass
class Model:
    version: int
    description: str
    subgraphs: list
    size_bytes: int


def read_model(data):
    """Parses ``data`` (the bytes of a ``.tflite`` file) into a ``Model``.

    Raises:
        FlatbufferError: the bytes are not a TFLite flatbuffer, or are cut
            short or corrupt.
    """
    data = bytes(data)
    if len(data) < 8:
        raise FlatbufferError(f"only {len(data)} bytes: a TFLite flatbuffer is at least 8 bytes long")
    if data[4:8] != FILE_IDENTIFIER:
        raise FlatbufferError(
            f"bytes 4-8 are {data[4:8]!r}, not the TFLite file identifier {FILE_IDENTIFIER!r}: "
            "this is not a .tflite file"
        )
    try:
        return _read_model(data)
    except _Corrupt as err:
        raise FlatbufferError(f"corrupt or truncated TFLite flatbuffer ({len(data):,} bytes): {err}") from None


# -- bounds-checked access ----------------------------------------------------------


class _Corrupt(Exception):
    """A read outside the buffer or an inconsistent structure; the message says where."""


class _CheckedTable(Table):
    """``flatbuffers.table.Table`` whose every read is checked against the buffer's end."""

    __slots__ = ()

    def __init__(self, buf, pos):
        super().__init__(buf, pos)
        self._check(pos, 4, "table")
        vtable = pos - self.Get(N.SOffsetTFlags, pos)
        self._check(vtable, 4, "vtable")
        size, object_size = self.Get(N.VOffsetTFlags, vtable), self.Get(N.VOffsetTFlags, vtable + 2)
        if size < 4 or size % 2:
            raise _Corrupt(f"table at offset {pos} has an invalid vtable size {size}")
        self._check(vtable, size, "vtable")
        self._check(pos, max(object_size, 4), "table")

    def _check(self, pos, size, what):
        if pos < 0 or pos + size > len(self.Bytes):
            raise _Corrupt(f"{what} of {size} bytes at offset {pos} runs past the end")

    def Get(self, flags, off):
        self._check(off, flags.bytewidth, "read")
        return super().Get(flags, off)

    def Indirect(self, off):
        return off + self.Get(N.UOffsetTFlags, off)

    def String(self, off):
        start = self.Indirect(off)
        length = self.Get(N.UOffsetTFlags, start)
        self._check(start + 4, length, "string")
        return bytes(self.Bytes[start + 4 : start + 4 + length])

    def VectorLen(self, off):
        start = self.Indirect(off + self.Pos)
        length = self.Get(N.UOffsetTFlags, start)
        self._check(start + 4, length, "vector")  # every element takes a byte at least
        return length

    def GetVectorAsNumpy(self, flags, off):
        start, length = self.Vector(off), self.VectorLen(off)
        self._check(start, length * flags.bytewidth, "vector")
        return encode.GetVectorAsNumpy(N.to_numpy_type(flags), self.Bytes, length, start)

    def Union(self, t2, off):
        t2.Pos, t2.Bytes = self.Indirect(off + self.Pos), self.Bytes


def _checked(obj):
    """``obj`` (a generated schema object, or a union's bare ``Table``) reading through ``_CheckedTable``."""
    if obj is None:
        return None
    if isinstance(obj, Table):
        return _CheckedTable(obj.Bytes, obj.Pos)
    obj._tab = _CheckedTable(obj._tab.Bytes, obj._tab.Pos)
    return obj


def _items(obj, name):
    """The tables of vector field ``name`` of ``obj``, each checked."""
    return [_checked(getattr(obj, name)(j)) for j in range(getattr(obj, f"{name}Length")())]


def _array(values, dtype):
    """A generated ``...AsNumpy()`` result (``0`` when the field is absent) as an array."""
    return np.zeros(0, dtype) if isinstance(values, int) else np.asarray(values).astype(dtype, copy=False)


def _text(raw):
    return raw.decode("utf-8", errors="replace") if raw else ""


@contextlib.contextmanager
def _section(label):
    """Names the part of the file being read in any error raised while reading it."""
    try:
        yield
    except _Located:
        raise
    except (_Corrupt, *_LOW_LEVEL) as err:
        raise _Located(f"{label}: {err or type(err).__name__}") from None


class _Located(_Corrupt):
    pass


# -- schema --------------------------------------------------------------------


def _schema():
    for module in _SCHEMA_MODULES:
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise ImportError("reading .tflite files needs ai-edge-litert (pip install ai-edge-litert) or tensorflow")


def schema_module():
    """The generated TFLite schema module (``schema_py_generated``) files are read and rewritten with."""
    return _schema()


def item_bytes(dtype):
    """Bytes per stored value of a tensor type named as ``Tensor.dtype`` is (``"int8"``: 1)."""
    return _ITEM_BYTES.get(dtype, 1)


def _enum_names(enum):
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def _read_model(data):
    schema = _schema()
    with _section("the root table"):
        root = _checked(schema.Model.GetRootAs(data, 0))
        version, description = root.Version(), _text(root.Description())
    with _section("the operator codes"):
        op_names = [_operator_name(code, schema) for code in _items(root, "OperatorCodes")]
    buffers = []
    for i, buffer in enumerate(_items_in(root, "Buffers", "the buffer table")):
        with _section(f"buffer {i}"):
            buffers.append(_buffer_bytes(data, buffer))
    with _section("the subgraph table"):
        graphs = _items(root, "Subgraphs")
    subgraphs = [_read_subgraph(i, sg, buffers, op_names, schema) for i, sg in enumerate(graphs)]
    return Model(version, description, subgraphs, len(data))


def _items_in(obj, name, label):
    with _section(label):
        return _items(obj, name)


def _buffer_bytes(data, buffer):
    # Files over 2 GB keep data after the flatbuffer, addressed by offset/size; offset 1 is a placeholder.
    inline = _array(buffer.DataAsNumpy(), "u1")
    if inline.size:
        return inline
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and size:
        if offset + size > len(data):
            raise _Corrupt(f"buffer of {size} bytes at offset {offset} runs past the end")
        return np.frombuffer(data, "u1", count=size, offset=offset)
    return inline


def _read_subgraph(index, sg, buffers, op_names, schema):
    where = f"subgraph {index}"
    dtypes = {value: name.lower() for value, name in _enum_names(schema.TensorType).items()}
    tensors = []
    for i, t in enumerate(_items_in(sg, "Tensors", f"{where}'s tensor table")):
        with _section(f"{where}, tensor {i}"):
            tensors.append(_read_tensor(i, t, buffers, dtypes, schema))
    operators = []
    for i, op in enumerate(_items_in(sg, "Operators", f"{where}'s operator table")):
        with _section(f"{where}, operator {i}"):
            code = op.OpcodeIndex()
            if code >= len(op_names):
                raise _Corrupt(f"it uses opcode {code}, but the model has {len(op_names)}")
            name, version = op_names[code]
            ins, outs = _array(op.InputsAsNumpy(), "<i4").tolist(), _array(op.OutputsAsNumpy(), "<i4").tolist()
            _check_indices(ins + outs, len(tensors), "its tensor indices", optional=True)
            operators.append(Operator(i, name, version, ins, outs))
    with _section(where):
        inputs, outputs = _array(sg.InputsAsNumpy(), "<i4").tolist(), _array(sg.OutputsAsNumpy(), "<i4").tolist()
        _check_indices(inputs + outputs, len(tensors), "its input and output tensors")
        return Subgraph(_text(sg.Name()), tensors, operators, inputs, outputs)


def _check_indices(indices, count, what, optional=False):
    bad = [i for i in indices if not (0 <= i < count or (optional and i == -1))]
    if bad:
        raise _Corrupt(f"{what} {bad[:5]} are not tensors of a subgraph with {count} tensors")


def _read_tensor(index, t, buffers, dtypes, schema):
    shape = _array(t.ShapeAsNumpy(), "<i4").tolist()
    dtype = dtypes.get(t.Type(), f"type_{t.Type()}")
    name = _text(t.Name())
    _check_shape(name, shape, dtype)
    buffer_index = t.Buffer()
    raw = buffers[buffer_index] if buffer_index < len(buffers) else np.zeros(0, "u1")
    quantization = _read_quantization(_checked(t.Quantization()))
    sparsity = _read_sparsity(_checked(t.Sparsity()), schema, len(shape))
    stored, nonzero = _count_values(raw, dtype, shape, quantization, sparsity is not None)
    return Tensor(
        index=index,
        name=name,
        shape=shape,
        shape_signature=_array(t.ShapeSignatureAsNumpy(), "<i4").tolist() or shape,
        dtype=dtype,
        buffer=buffer_index,
        is_variable=bool(t.IsVariable()),
        data_bytes=int(raw.size),
        elements=math.prod(shape),
        stored_values=stored,
        nonzero=nonzero,
        quantization=quantization,
        sparsity=sparsity,
    )


def _check_shape(name, shape, dtype):
    """Refuses a negative dimension, or a shape declaring more than ``MAX_TENSOR_BYTES``, before anything allocates."""
    if any(d < 0 for d in shape):
        raise _Corrupt(f"'{name}' has the shape {shape}: a stored shape has no negative dimension")
    declared = math.prod(shape) * _ITEM_BYTES.get(dtype, 1)
    if declared > MAX_TENSOR_BYTES:
        raise _Corrupt(
            f"'{name}' declares the shape {shape} ({dtype}), {declared:,} bytes: more than the "
            f"{MAX_TENSOR_BYTES:,} bytes (MAX_TENSOR_BYTES) a tensor may have, so the file is not loaded"
        )


def _read_quantization(q):
    if q is None:
        return None
    scale = _array(q.ScaleAsNumpy(), "<f4")
    if not scale.size:
        return None
    return {
        "scale": scale.astype(float).tolist(),
        "zero_point": _array(q.ZeroPointAsNumpy(), "<i8").astype(int).tolist(),
        "quantized_dimension": q.QuantizedDimension(),
    }


def _read_sparsity(s, schema, rank):
    if s is None:
        return None
    dims = []
    for d in _items(s, "DimMetadata"):
        dense = d.Format() == schema.DimensionType.DENSE
        entry = {"format": "DENSE" if dense else "SPARSE_CSR", "dense_size": d.DenseSize()}
        if not dense:
            entry["segments"] = _index_vector(d.ArraySegmentsType(), d.ArraySegments(), schema)
            entry["indices"] = _index_vector(d.ArrayIndicesType(), d.ArrayIndices(), schema)
        dims.append(entry)
    sparsity = {
        "traversal_order": _array(s.TraversalOrderAsNumpy(), "<i4").tolist(),
        "block_map": _array(s.BlockMapAsNumpy(), "<i4").tolist(),
        "dim_metadata": dims,
    }
    _check_sparsity(sparsity, rank)
    return sparsity


def _check_sparsity(sparsity, rank):
    """The invariants of TFLite's sparsity parameters that ``block_shape`` and readers rely on."""
    order, block_map, dims = sparsity["traversal_order"], sparsity["block_map"], sparsity["dim_metadata"]
    if len(dims) != len(order) or sorted(order) != list(range(len(order))):
        raise _Corrupt(f"sparsity parameters: traversal order {order} is not a permutation of the "
                       f"{len(dims)} stored dimensions")
    if len(order) != rank + len(block_map) or any(not 0 <= b < rank for b in block_map):
        raise _Corrupt(f"sparsity parameters: block map {block_map} does not fit a tensor of rank {rank} "
                       f"traversed in {len(order)} dimensions")


def _index_vector(kind, table, schema):
    """A ``SparseIndexVector`` union (Int32/Uint16/Uint8Vector) as an array."""
    names = _enum_names(schema.SparseIndexVector)
    if table is None or kind not in names or names[kind] == "NONE":
        return np.zeros(0, "<i4")
    vector = getattr(schema, names[kind])()
    vector._tab = _checked(table)
    values = vector.ValuesAsNumpy()
    return np.zeros(0, "<i4") if isinstance(values, int) else values


def block_shape(tensor):
    """The shape of the blocks a sparse tensor stores, in the tensor's own layout.

    ``(1, 16)`` for a FULLY_CONNECTED weight (out, in) means 16 consecutive
    inputs of one output: Keras ``block_size=(16, 1)`` on the (in, out) kernel.
    """
    if tensor.sparsity is None:
        return None
    rank = len(tensor.shape)
    blocks = [1] * rank
    order = tensor.sparsity["traversal_order"]
    for position, dim in enumerate(order):
        if dim >= rank:
            original = tensor.sparsity["block_map"][dim - rank]
            blocks[original] = tensor.sparsity["dim_metadata"][position]["dense_size"]
    return tuple(blocks)


def _count_values(raw, dtype, shape, quantization, is_sparse):
    if not raw.size or dtype not in _NUMPY_TYPES:
        return None, None
    item = np.dtype(_NUMPY_TYPES[dtype]).itemsize
    if raw.size % item:
        return None, None
    values = raw.view(_NUMPY_TYPES[dtype]) if raw.size else raw
    zero = 0
    if quantization and not is_sparse:
        zp = np.asarray(quantization["zero_point"])
        if zp.size == 1:
            zero = zp[0]
        elif zp.size > 1 and values.size == int(np.prod(shape)):
            # Per-channel zero points broadcast along the quantized dimension.
            axis = quantization["quantized_dimension"]
            view = [1] * len(shape)
            view[axis] = zp.size
            return int(values.size), int(np.count_nonzero(values.reshape(shape) != zp.reshape(view)))
    return int(values.size), int(np.count_nonzero(values != zero))


def _operator_name(code, schema):
    # Codes above 127 live only in builtin_code; readers take the larger of the two.
    builtin = max(code.DeprecatedBuiltinCode(), code.BuiltinCode())
    custom = _text(code.CustomCode())
    if builtin == schema.BuiltinOperator.CUSTOM and custom:
        return f"CUSTOM:{custom}", code.Version()
    return _builtin_names(schema).get(builtin, f"BUILTIN_{builtin}"), code.Version()


_NAMES = {}


def _builtin_names(schema):
    """Builtin operator names, from the schema module."""
    if schema not in _NAMES:
        _NAMES[schema] = _enum_names(schema.BuiltinOperator)
    return _NAMES[schema]
