"""``ExportReport``: what a ``.tflite`` file holds, whether it runs, and how well it matches Keras."""

import gzip
import json

import numpy as np

from tfprune._common.text import format_table
from tfprune.export import _flatbuffer, _quantization
from tfprune.export._runtime import CONFIGURATIONS, LABELS


class ExportReport:
    """What an exported ``.tflite`` file contains and how it runs.

    Built by ``tfprune.export.to_tflite`` (which also compares the file with
    the Keras model) and by ``tfprune.export.inspect_tflite`` (from the file
    alone). Everything about tensors and operators is read back from the
    flatbuffer, so the report describes the file that ships, not the model
    it came from. Shapes are TFLite's: a FULLY_CONNECTED weight is stored
    (out, in), the transpose of the Keras kernel.

    ``print(report)`` gives tables; ``report.to_dict()`` / ``report.to_json()``
    the same data for scripts.

    Attributes:
        path: the file.
        size_bytes, gzip_bytes: its size, and after ``gzip -9`` (what a
            download or an APK's compression sees).
        tensors: one dict per tensor: ``index``, ``name``, ``shape``,
            ``dtype``, ``constant``, ``storage`` (``"dense"``,
            ``"sparse"`` or ``"activation"``), ``block`` (the stored block
            shape of a sparse tensor), ``elements``, ``stored_values``,
            ``nonzero``, ``quantization`` (``scales``, ``scale_min``,
            ``scale_max``, ``zero_points``) and ``bytes``.
        operators: the operator names in execution order.
        runtime: per configuration (``"default"``, the XNNPACK delegate an
            app gets by default, and ``"no_delegates"``): ``loads``,
            ``correct`` (outputs finite and, for ``to_tflite``, close to
            Keras; ``None`` if not checked), ``works`` (both), the
            ``error`` if not, and ``latency_ms``, the median of ``invokes``
            single-sample runs on one thread.
        agreement: per configuration, ``samples``, ``max_abs_error`` and
            ``top1_agreement`` (share of samples whose arg-max over the last
            axis matches Keras) against the Keras model; empty for
            ``inspect_tflite``.
        settings: the export options (``quantization``, ``io_dtype``,
            ``sparse`` as asked and ``sparse_encoded`` as written, ...).
        alternatives: encodings that were tried and not written, with
            their size and why they were rejected.
        encodings: per weight (constant tensor of rank 2 or more, or stored
            sparse) of a ``to_tflite`` file, ``{"name", "storage",
            "reason"}`` (and its ``index``): e.g. ``"dense: XNNPACK refused the sparse
            FULLY_CONNECTED (...)"``. Empty for ``inspect_tflite`` (a file
            alone does not say why).
        notes, warnings: sentences about trade-offs and problems.

    Example:

    ```python
    report = tfprune.export.to_tflite(model, "model.tflite", quantization="dynamic")
    print(report)
    report.size_bytes, report.runtime["default"]["latency_ms"]
    report.to_json(indent=2)
    ```
    """

    def __init__(self, path, data, model_info, runtime, interpreter, agreement=None, settings=None,
                 alternatives=None, notes=None, warnings=None, encodings=None):
        self.path = str(path)
        self.size_bytes = len(data)
        self.gzip_bytes = len(gzip.compress(data, compresslevel=9))
        graph = model_info.subgraphs[0] if model_info.subgraphs else None
        self.subgraphs = len(model_info.subgraphs)
        self.tensors = [_tensor_row(t) for t in graph.tensors] if graph else []
        self.inputs = [self.tensors[i] for i in graph.inputs] if graph else []
        self.outputs = [self.tensors[i] for i in graph.outputs] if graph else []
        self.operators = [op.op for op in graph.operators] if graph else []
        self.runtime = {k: r.to_dict() for k, r in runtime.items()}
        self.interpreter = interpreter
        self.agreement = agreement or {}
        self.settings = settings or {}
        self.alternatives = alternatives or []
        self.notes = notes or []
        self.warnings = warnings or []
        encodings = encodings or {}
        self.encodings = [{"index": t["index"], "name": t["name"], "storage": t["storage"],
                           "reason": encodings[t["index"]]} for t in self.tensors if t["index"] in encodings]

    # -- summaries ------------------------------------------------------------

    @property
    def works_by_default(self):
        """True when the file loads, runs and gives sound outputs with the default XNNPACK delegate."""
        return bool(self.runtime.get("default", {}).get("works"))

    @property
    def sparse_encoded(self):
        """True when at least one tensor is stored in TFLite's sparse format."""
        return any(t["storage"] == "sparse" for t in self.tensors)

    @property
    def weight_nonzeros(self):
        """Nonzero values over all constant tensors: 1 byte each is the floor of an int8 file."""
        return int(sum(t["nonzero"] or 0 for t in self.tensors if t["constant"]))

    def to_dict(self):
        """The report as plain Python data (JSON-serialisable)."""
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "interpreter": self.interpreter,
            "settings": self.settings,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "operators": self.operators,
            "tensors": self.tensors,
            "sparse_encoded": self.sparse_encoded,
            "weight_nonzeros": self.weight_nonzeros,
            "runtime": self.runtime,
            "agreement": self.agreement,
            "alternatives": self.alternatives,
            "encodings": self.encodings,
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def to_json(self, **kwargs):
        """The report as JSON; ``kwargs`` go to ``json.dumps`` (e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __repr__(self):
        state = "works" if self.works_by_default else "does NOT work"
        return f"<ExportReport '{self.path}': {self.size_bytes:,} bytes, {state} with the default delegate>"

    def __str__(self):
        lines = [f"TFLite file {self.path}: {self.size_bytes:,} bytes ({self.gzip_bytes:,} gzipped)"]
        if self.settings:
            s = self.settings
            mode = _quantization.resolve(s.get("quantization"))
            lines.append(
                f"quantization {mode.cli_name}"
                + (f", {s['io_dtype']} input/output" if len(mode.io_dtypes) > 1 else "")
                + f"; sparse encoding {'yes' if self.sparse_encoded else 'no'} (sparse={s.get('sparse')!r})"
            )
        for warning in self.warnings:
            lines.append(f"WARNING: {warning}")
        lines += ["", "Inputs and outputs"]
        lines += format_table(
            ("", "name", "shape", "dtype", "quantization"),
            [(kind, t["name"], _shape(t["shape"]), t["dtype"], _quant(t["quantization"]))
             for kind, group in (("in", self.inputs), ("out", self.outputs)) for t in group],
        )
        lines += ["", "Constant tensors (shapes as stored: FULLY_CONNECTED weights are out x in)"]
        lines += format_table(
            ("#", "name", "shape", "dtype", "storage", "nonzero", "bytes", "quantization"),
            [(t["index"], _clip(t["name"], 48), _shape(t["shape"]), t["dtype"], _storage(t),
              _nonzero(t), f"{t['bytes']:,}", _quant(t["quantization"]))
             for t in self.tensors if t["constant"]],
            right={0, 5, 6},
        )
        if self.encodings:
            lines += ["", "Weight encodings"]
            by_reason = {}
            for e in self.encodings:
                by_reason.setdefault(e["reason"], []).append(e["name"])
            for reason, names in by_reason.items():
                shown = ", ".join(_clip(n or "(unnamed)", 40) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                lines.append(f"- {len(names)} weight(s) {reason}: {shown}")
        lines += ["", "Operators: " + _op_summary(self.operators)]
        lines += ["", "Runtime (one thread; latency is the median of single-sample invokes)"]
        rows = []
        for key in CONFIGURATIONS:
            r = self.runtime.get(key)
            if r is None:
                continue
            a = self.agreement.get(key) or {}
            rows.append((
                LABELS[key],
                "yes" if r["works"] else ("WRONG OUTPUT" if r["loads"] else "NO"),
                f"{r['latency_ms']:.4f} ms x{r['invokes']}" if r["latency_ms"] is not None else "-",
                f"{a['max_abs_error']:.3g}" if a.get("max_abs_error") is not None else "-",
                f"{a['top1_agreement']:.2%}" if a.get("top1_agreement") is not None else "-",
                _clip(r["error"], 70) if r["error"] else "",
            ))
        header = ("configuration", "works", "latency", "max |keras - tflite|", "top-1 agreement", "error")
        lines += format_table(header, rows, right={2, 3, 4})
        if self.agreement:
            samples = max((a.get("samples", 0) for a in self.agreement.values() if a), default=0)
            lines.append(f"(agreement with the Keras model on {samples} sample(s))")
        for alt in self.alternatives:
            lines.append(
                f"Not written: {alt['encoding']} encoding, {alt['size_bytes']:,} bytes "
                f"({alt['gzip_bytes']:,} gzipped): {alt['reason']}"
            )
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        lines.append(f"(read with {self.interpreter})")
        return "\n".join(lines)


# -- rows and formatting -----------------------------------------------------------


def _tensor_row(t):
    quant = None
    if t.quantization:
        scales = np.asarray(t.quantization["scale"])
        zps = np.asarray(t.quantization["zero_point"])
        quant = {
            "scales": int(scales.size),
            "scale_min": float(scales.min()),
            "scale_max": float(scales.max()),
            "zero_points": sorted({int(z) for z in zps})[:4],
            "quantized_dimension": t.quantization["quantized_dimension"],
        }
    return {
        "index": t.index,
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "constant": t.is_constant,
        "storage": "activation" if not t.is_constant else ("sparse" if t.sparsity else "dense"),
        "block": list(_flatbuffer.block_shape(t)) if t.sparsity else None,
        "elements": t.elements,
        "stored_values": t.stored_values,
        "nonzero": t.nonzero,
        "bytes": t.data_bytes,
        "quantization": quant,
    }


def _shape(shape):
    return "x".join(map(str, shape)) if shape else "scalar"


def _quant(q):
    if not q:
        return "-"
    if q["scales"] == 1:
        return f"scale {q['scale_min']:.3g}, zero point {q['zero_points'][0]}"
    zps = ",".join(map(str, q["zero_points"]))
    return f"{q['scales']} scales {q['scale_min']:.2g}..{q['scale_max']:.2g} (axis {q['quantized_dimension']}), zp {zps}"


def _storage(t):
    if t["storage"] == "sparse":
        return "sparse " + "x".join(map(str, t["block"])) + " blocks"
    return t["storage"]


def _nonzero(t):
    if t["nonzero"] is None:
        return "-"
    return f"{t['nonzero']:,} ({t['nonzero'] / t['elements']:.1%})" if t["elements"] else "0"


def _op_summary(ops):
    counts = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in counts.items()) or "none"


def _clip(text, width):
    text = str(text)
    return text if len(text) <= width else text[: width - 3] + "..."
