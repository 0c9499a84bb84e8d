"""Reads the part of a ``.tflite`` flatbuffer that an export report needs.

A small reader of the TFLite schema (``tensorflow/compiler/mlir/lite/schema/
schema.fbs``) written against the flatbuffers wire format, so that reports
come from the file itself, work on files that an interpreter refuses, and
need neither the ``flatbuffers`` nor the ``tflite`` package. Every offset is
bounds-checked: a truncated or corrupt file raises ``FlatbufferError`` (a
``ValueError``) saying where it broke, never an ``IndexError`` or garbage.

Field numbers are those of the schema; ``_Table.field(n)`` reads the n-th
field of a table, as declared.
"""

import dataclasses
import struct

import numpy as np

FILE_IDENTIFIER = b"TFL3"

TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
    19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2",
}
# Numeric types whose stored values can be counted; the rest report no nonzero count.
_NUMPY_TYPES = {
    "float32": "<f4", "float16": "<f2", "int32": "<i4", "uint8": "u1", "int64": "<i8", "bool": "u1",
    "int16": "<i2", "int8": "i1", "float64": "<f8", "uint64": "<u8", "uint32": "<u4", "uint16": "<u2",
}
_INDEX_VECTORS = {1: "<i4", 2: "<u2", 3: "u1"}  # SparseIndexVector union: Int32/Uint16/Uint8Vector


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
    except _OutOfBounds as err:
        raise FlatbufferError(f"corrupt or truncated TFLite flatbuffer ({len(data):,} bytes): {err}") from None


# -- wire format ---------------------------------------------------------------


class _OutOfBounds(Exception):
    pass


def _unpack(data, fmt, pos):
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(data):
        raise _OutOfBounds(f"read of {size} bytes at offset {pos} is past the end")
    return struct.unpack_from(fmt, data, pos)[0]


class _Table:
    def __init__(self, data, pos):
        self.data = data
        self.pos = pos
        vtable = pos - _unpack(data, "<i", pos)
        self.vtable = vtable
        self.vtable_size = _unpack(data, "<H", vtable)
        if self.vtable_size < 4 or self.vtable_size % 2:
            raise _OutOfBounds(f"table at offset {pos} has an invalid vtable size {self.vtable_size}")

    def _offset(self, field):
        entry = 4 + 2 * field
        if entry >= self.vtable_size:
            return 0
        return _unpack(self.data, "<H", self.vtable + entry)

    def scalar(self, field, fmt, default=0):
        off = self._offset(field)
        return _unpack(self.data, fmt, self.pos + off) if off else default

    def _target(self, field):
        off = self._offset(field)
        if not off:
            return None
        where = self.pos + off
        return where + _unpack(self.data, "<I", where)

    def table(self, field):
        target = self._target(field)
        return None if target is None else _Table(self.data, target)

    def _vector(self, field):
        target = self._target(field)
        if target is None:
            return None, 0
        return target + 4, _unpack(self.data, "<I", target)

    def tables(self, field):
        start, length = self._vector(field)
        if start is None:
            return []
        self._check(start, 4 * length)
        return [_Table(self.data, start + 4 * i + _unpack(self.data, "<I", start + 4 * i)) for i in range(length)]

    def array(self, field, dtype):
        start, length = self._vector(field)
        dtype = np.dtype(dtype)
        if start is None:
            return np.zeros(0, dtype)
        self._check(start, dtype.itemsize * length)
        return np.frombuffer(self.data, dtype, count=length, offset=start)

    def string(self, field):
        raw = self.array(field, "u1")
        return raw.tobytes().decode("utf-8", errors="replace")

    def _check(self, start, size):
        if start < 0 or start + size > len(self.data):
            raise _OutOfBounds(f"vector of {size} bytes at offset {start} runs past the end")


# -- schema --------------------------------------------------------------------


def _read_model(data):
    root = _Table(data, _unpack(data, "<I", 0))
    # Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers.
    op_names = [_operator_name(code) for code in root.tables(1)]
    buffers = [_buffer_bytes(data, b) for b in root.tables(4)]
    subgraphs = [_read_subgraph(sg, buffers, op_names) for sg in root.tables(2)]
    return Model(root.scalar(0, "<I"), root.string(3), subgraphs, len(data))


def _buffer_bytes(data, buffer):
    # Buffer: 0 data, 1 offset, 2 size. Files over 2 GB keep data after the
    # flatbuffer, addressed by offset/size; offset 1 is a placeholder.
    inline = buffer.array(0, "u1")
    if inline.size:
        return inline
    offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
    if offset > 1 and size:
        if offset + size > len(data):
            raise _OutOfBounds(f"buffer of {size} bytes at offset {offset} runs past the end")
        return np.frombuffer(data, "u1", count=size, offset=offset)
    return inline


def _read_subgraph(sg, buffers, op_names):
    # SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators, 4 name.
    tensors = [_read_tensor(i, t, buffers) for i, t in enumerate(sg.tables(0))]
    operators = []
    for i, op in enumerate(sg.tables(3)):
        # Operator: 0 opcode_index, 1 inputs, 2 outputs.
        code = op.scalar(0, "<I")
        if code >= len(op_names):
            raise _OutOfBounds(f"operator {i} uses opcode {code}, but the model has {len(op_names)}")
        name, version = op_names[code]
        operators.append(Operator(i, name, version, op.array(1, "<i4").tolist(), op.array(2, "<i4").tolist()))
    return Subgraph(sg.string(4), tensors, operators, sg.array(1, "<i4").tolist(), sg.array(2, "<i4").tolist())


def _read_tensor(index, t, buffers):
    # Tensor: 0 shape, 1 type, 2 buffer, 3 name, 4 quantization, 5 is_variable,
    # 6 sparsity, 7 shape_signature.
    shape = t.array(0, "<i4").tolist()
    dtype = TENSOR_TYPES.get(t.scalar(1, "<b"), f"type_{t.scalar(1, '<b')}")
    buffer_index = t.scalar(2, "<I")
    raw = buffers[buffer_index] if buffer_index < len(buffers) else np.zeros(0, "u1")
    quantization = _read_quantization(t.table(4))
    sparsity = _read_sparsity(t.table(6))
    stored, nonzero = _count_values(raw, dtype, shape, quantization, sparsity is not None)
    return Tensor(
        index=index,
        name=t.string(3),
        shape=shape,
        shape_signature=t.array(7, "<i4").tolist() or shape,
        dtype=dtype,
        buffer=buffer_index,
        is_variable=bool(t.scalar(5, "<B")),
        data_bytes=int(raw.size),
        elements=int(np.prod(shape)) if shape else 1,
        stored_values=stored,
        nonzero=nonzero,
        quantization=quantization,
        sparsity=sparsity,
    )


def _read_quantization(q):
    # QuantizationParameters: 0 min, 1 max, 2 scale, 3 zero_point, 6 quantized_dimension.
    if q is None:
        return None
    scale = q.array(2, "<f4")
    if not scale.size:
        return None
    return {
        "scale": scale.astype(float).tolist(),
        "zero_point": q.array(3, "<i8").astype(int).tolist(),
        "quantized_dimension": q.scalar(6, "<i"),
    }


def _read_sparsity(s):
    # SparsityParameters: 0 traversal_order, 1 block_map, 2 dim_metadata.
    if s is None:
        return None
    dims = []
    for d in s.tables(2):
        # DimensionMetadata: 0 format, 1 dense_size, 2/3 array_segments, 4/5 array_indices.
        fmt = d.scalar(0, "<b")
        entry = {"format": "DENSE" if fmt == 0 else "SPARSE_CSR", "dense_size": d.scalar(1, "<i")}
        if fmt != 0:
            entry["segments"] = _index_vector(d, 2, 3)
            entry["indices"] = _index_vector(d, 4, 5)
        dims.append(entry)
    return {
        "traversal_order": s.array(0, "<i4").tolist(),
        "block_map": s.array(1, "<i4").tolist(),
        "dim_metadata": dims,
    }


def _index_vector(d, type_field, value_field):
    kind = d.scalar(type_field, "<B")
    table = d.table(value_field)
    if table is None or kind not in _INDEX_VECTORS:
        return np.zeros(0, "<i4")
    return table.array(0, _INDEX_VECTORS[kind])  # Int32Vector etc.: 0 values


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


def _operator_name(code):
    # OperatorCode: 0 deprecated_builtin_code (int8), 1 custom_code, 2 version, 3 builtin_code.
    # Codes above 127 live only in builtin_code; readers take the larger of the two.
    builtin = max(code.scalar(0, "<b"), code.scalar(3, "<i"))
    version = code.scalar(2, "<i", default=1)
    custom = code.string(1)
    if builtin == _CUSTOM_CODE and custom:
        return f"CUSTOM:{custom}", version
    return _builtin_names().get(builtin, f"BUILTIN_{builtin}"), version


_CUSTOM_CODE = 32
_NAMES = None


def _builtin_names():
    """Builtin operator names, from the schema module the interpreter itself ships."""
    global _NAMES
    if _NAMES is None:
        _NAMES = {}
        for module in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
            try:
                enum = __import__(module, fromlist=["BuiltinOperator"]).BuiltinOperator
            except (ImportError, AttributeError):
                continue
            _NAMES = {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}
            break
    return _NAMES
