"""Export to sparse, quantized TFLite (LiteRT) files that are checked before they are written.

``to_tflite`` converts a Keras 3 model (pruned, stripped or plain), loads
the result with the LiteRT interpreter as a phone would, compares it with
the Keras model, and only then moves it into place. ``inspect_tflite``
reports on any ``.tflite`` file from the file alone.

Converter path: Keras's own, ``keras.export.ExportArchive`` to a
SavedModel, then ``tf.lite.TFLiteConverter.from_saved_model``, the route
``model.export(format="litert")`` takes in Keras 3. It is not
``model.export`` itself because that enables ``SELECT_TF_OPS`` (TensorFlow
kernels a phone's LiteRT runtime does not have, so conversion "succeeds" and
the app fails) and writes straight to the final path. It is not
``from_concrete_functions`` either: on a Keras 3 model that leaves the
weights as resource variables (READ_VARIABLE ops), and int8 calibration
fails on them. Sparse storage comes from the converter's
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``.

Which sparse files work where (ai-edge-litert 2.3.0, measured by
``benchmarks/bench_export_size.py`` and the tests):

* full-integer int8 with weights pruned in blocks of 16 (Keras
  ``block_size=(16, 1)``: 16 consecutive inputs of one output): stored
  sparse, and the default XNNPACK delegate runs it. The smallest files that
  run everywhere. ``(4, 1)`` blocks work too, but the file is about twice
  as large.
* int8 with unstructured or ``(1, n)`` sparsity: stored sparse, but XNNPACK
  refuses the file ("failed to delegate FULLY_CONNECTED node"); it works
  only on an interpreter created without the default delegates.
* dynamic-range int8 with ``(16, 1)`` or ``(4, 1)`` blocks: XNNPACK loads
  the sparse file but computes NaN and garbage; without delegates it is
  right.
* float32: sparse files work everywhere. float16: unstructured sparse works
  everywhere; with ``(16, 1)`` blocks both configurations compute NaN.

Verification catches each of these, so ``sparse="auto"`` keeps the sparse
encoding only where the default delegate gives the Keras model's outputs,
and writes the weights dense otherwise. Recommended for small int8 files
that run: ``prune_low_magnitude(..., block_size=(16, 1))``, then
``to_tflite(..., quantization="int8", representative_data=...)``.

Example:

```python
import tfprune
from tfprune.export import to_tflite

pruned = tfprune.prune_low_magnitude(model, block_size=(16, 1), pruning_schedule=...)
# ... fit with tfprune.UpdatePruningStep() ...
report = to_tflite(pruned, "mnist.tflite", quantization="int8", representative_data=x_train[:300])
print(report)
```
"""

import os
import pathlib
import tempfile
import warnings

import numpy as np

from tfprune.export import _convert, _flatbuffer, _runtime, _verify
from tfprune.export._flatbuffer import FlatbufferError
from tfprune.export._report import ExportReport

__all__ = ["ExportError", "ExportReport", "FlatbufferError", "inspect_tflite", "to_tflite"]

SPARSE_CHOICES = ("auto", True, False)


class ExportError(RuntimeError):
    """A converted file failed verification, so ``to_tflite`` did not write it.

    Raised when the file cannot be loaded or run by any interpreter
    configuration, or (with ``require_default_delegate=True``) not by the
    default one. Nothing is left at the destination path.

    Example:

    ```python
    try:
        to_tflite(model, "m.tflite", quantization="int8", representative_data=x, sparse=True)
    except tfprune.export.ExportError as err:
        print(err)  # says which delegate refused it and what to do
    ```
    """


def to_tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    sparse="auto",
    *,
    io_dtype="float32",
    per_channel=True,
    fuse_lstm="auto",
    sample_data=None,
    batch_size=1,
    require_default_delegate=True,
    verify_samples=200,
    latency_runs=100,
):
    """Converts a Keras model to a ``.tflite`` file, verifies it, and reports on it.

    The model may be pruned (``PruneLowMagnitude`` wrappers are stripped on a
    copy), stripped, or plain; it is never modified. The file is written to
    a temporary file next to ``path``, loaded with the LiteRT interpreter
    under the default XNNPACK delegate and without delegates, run on sample
    inputs and compared with the Keras model, and only then renamed to
    ``path``. A configuration *works* when the file loads, runs, and gives
    finite outputs no further from Keras than the largest output. If
    anything fails, nothing is left at ``path``.

    Sparse encoding (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``) stores only
    the nonzero blocks of pruned weights. With int8 weights the default
    XNNPACK delegate runs such a file only for full-integer models pruned in
    blocks along the input (``block_size=(16, 1)`` or ``(4, 1)``):

    * ``sparse="auto"`` (default) tries the sparse encoding and keeps it if
      it works under the default delegate; otherwise it writes the weights
      dense and the report says what the sparse file would have weighed,
      how fast it ran without delegates, and why it was not written.
    * ``sparse=True`` writes the sparse encoding or raises ``ExportError``
      if the default delegate refuses it. With
      ``require_default_delegate=False`` it writes the file anyway, with a
      ``RuntimeWarning``, if it works without delegates: it then runs only
      on an interpreter created without the default delegates.
    * ``sparse=False`` stores every weight dense.

    Args:
        model: a built Sequential or Functional ``keras.Model`` with fixed
            input shapes (the batch dimension aside).
        path: where to write the ``.tflite`` file. Its folder must exist.
        quantization: ``None`` (float32), ``"dynamic"`` (int8 weights,
            float activations; no data needed), ``"int8"`` (int8 weights and
            activations; needs ``representative_data``) or ``"float16"``
            (float16 weights).
        representative_data: inputs prepared exactly as for
            ``model.predict``: an array of shape ``(n, *input_shape)`` (one
            array per input, as a list or a dict keyed by input name, for
            several inputs). ``"int8"`` calibrates activation ranges on the
            first 500 samples; 100 to 500 typical inputs are enough. Also
            used as ``sample_data`` when that is not given.
        sparse: ``"auto"``, ``True`` or ``False`` (see above).
        io_dtype: with ``"int8"`` only: ``"float32"`` (the file quantizes
            its input and dequantizes its output itself), ``"int8"`` or
            ``"uint8"`` (the app quantizes with the input tensor's scale and
            zero point; see ``export/android/README.md``).
        per_channel: with ``"int8"`` or ``"dynamic"``: one scale per output
            channel (the converter's default, most accurate). ``False`` uses
            one scale per tensor, which on small sparse models saves 12
            bytes per output channel (an int8 LeNet-300-100 at 95% sparsity
            shrinks by a third).
        fuse_lstm: ``"auto"`` (default), ``True`` or ``False``. Keras 3
            traces an LSTM as a WHILE loop; with ``"auto"`` a model with
            LSTM layers that is a chain of common layers is rebuilt in
            ``tf_keras`` (Keras 2, installed with ``tfprune[tflite]``) with
            the same weights, so the converter emits the fused
            ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op; otherwise the report notes
            why not. ``True`` raises if that is impossible; ``False`` keeps
            the loop.
        sample_data: inputs to compare Keras and TFLite on (default:
            ``representative_data``, else random values in [0, 1)).
        batch_size: the batch dimension of the file's inputs; phones run 1.
        require_default_delegate: raise ``ExportError`` when the file does
            not work under the default XNNPACK delegate (default). ``False``
            writes such a file with a warning if it works without delegates.
        verify_samples: how many samples of ``sample_data`` to compare.
        latency_runs: how many invokes to time per configuration (0: none).

    Returns:
        An ``ExportReport`` of the written file.

    Raises:
        ValueError: an argument, the data or a layer is not supported; the
            message names it and says what to do.
        ExportError: the converted file failed verification; nothing is
            written.
        OSError: ``path`` cannot be written (missing folder, a directory,
            no permission).

    Example:

    ```python
    from tfprune.export import to_tflite

    report = to_tflite(
        pruned_model, "mnist_int8.tflite", quantization="int8",
        representative_data=x_train[:300],  # pixels / 255, float32
    )
    print(report)  # sizes, per-tensor storage, latency with and without XNNPACK
    assert report.works_by_default
    ```
    """
    _check_options(quantization, representative_data, sparse, io_dtype, batch_size, fuse_lstm)
    destination = pathlib.Path(path)
    tmp_path = _reserve_temporary(destination)
    try:
        model = _convert.strip_wrappers(model)
        specs = _convert.input_specs(model, batch_size)
        representative = (
            _convert.as_input_list(representative_data, specs, "representative_data")
            if representative_data is not None else None
        )
        if sample_data is not None:
            samples = _convert.as_input_list(sample_data, specs, "sample_data")
        elif representative is not None:
            samples = representative
        else:
            samples = _random_samples(specs, min(verify_samples, 32))
        samples = [s[:verify_samples] for s in samples]
        if quantization == "int8":
            _convert.check_int8_layers(model)
            if io_dtype != "float32":
                _check_float_io(model, specs, io_dtype)
        legacy, lstm_note = _convert.lstm_route(model, specs, fuse_lstm)
        expected = _verify.keras_outputs(model, specs, samples)
        names = ([s.name for s in specs], [f"output_{i}" for i in range(len(expected))])

        def attempt(encode_sparse):
            data = _convert.convert(model, specs, quantization, representative, io_dtype, encode_sparse, per_channel,
                                    legacy)
            pathlib.Path(tmp_path).write_bytes(data)
            runs = {c: _runtime.probe(tmp_path, c, samples, names, latency_runs) for c in _runtime.CONFIGURATIONS}
            agreement = {c: _verify.check_run(r, expected, quantization) for c, r in runs.items()}
            return data, runs, {c: a for c, a in agreement.items() if a is not None}

        settings = {
            "quantization": quantization, "io_dtype": io_dtype if quantization == "int8" else "float32",
            "sparse": sparse, "per_channel": per_channel, "batch_size": batch_size,
        "fused_lstm": legacy is not None,
            "calibration_samples": min(len(representative[0]), _convert.MAX_CALIBRATION_SAMPLES)
            if quantization == "int8" else 0,
        }
        alternatives, notes, warns = [], [lstm_note] if lstm_note else [], []
        data, runs, agreement = attempt(sparse is not False)
        info = _flatbuffer.read_model(data)
        if sparse == "auto" and _has_sparse(info) and not runs["default"].works:
            alternatives.append(_alternative(data, runs))
            sparse_data, sparse_runs = data, runs
            data, runs, agreement = attempt(False)
            info = _flatbuffer.read_model(data)
            notes.append(_fallback_note(sparse_data, sparse_runs, data, runs))
        elif sparse is not False and not _has_sparse(info):
            notes.append(
                "Sparse encoding was allowed, but the converter stored every weight dense: no weight was "
                "sparse enough to gain from it (prune the model first, e.g. to 80% or more)."
            )
        _check_runs(runs, data, require_default_delegate, sparse, warns)
        notes += _notes(info, runs, quantization)
        if quantization == "int8":
            warns += _float_op_warnings(info, model)
        warns += _agreement_warnings(agreement, quantization)
        os.replace(tmp_path, destination)
        tmp_path = None
    finally:
        if tmp_path is not None and os.path.exists(tmp_path):
            os.remove(tmp_path)
    interpreter = _runtime.interpreter_api()[2]
    for warning in warns:
        warnings.warn(f"to_tflite({str(destination)!r}): {warning}", RuntimeWarning, stacklevel=2)
    return ExportReport(destination, data, info, runs, interpreter, agreement, settings, alternatives, notes, warns)


def inspect_tflite(path, run=True, latency_runs=100):
    """Reports on a ``.tflite`` file from the file alone.

    Reads tensors (shape, dtype, quantization, dense or sparse storage,
    nonzero count) and operators from the flatbuffer, then, with
    ``run=True``, loads the file under the default XNNPACK delegate and
    without delegates, runs it on random inputs and times it.

    Args:
        path: a ``.tflite`` file.
        run: also load and run the file (``False``: read it only).
        latency_runs: invokes to time per configuration.

    Returns:
        An ``ExportReport`` (``agreement`` is empty: there is no Keras model
        to compare with).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FlatbufferError: (a ``ValueError``) the file is not a TFLite
            flatbuffer, or is truncated or corrupt.

    Example:

    ```python
    report = tfprune.export.inspect_tflite("mnist_int8.tflite")
    print(report)
    [t["name"] for t in report.tensors if t["storage"] == "sparse"]
    ```
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"inspect_tflite: no file at '{path}'" + (" (it is a directory)" if path.is_dir() else "") + "."
        )
    data = path.read_bytes()
    try:
        info = _flatbuffer.read_model(data)
    except FlatbufferError as err:
        raise FlatbufferError(f"inspect_tflite: '{path}' is not a readable .tflite file: {err}") from None
    runs = {}
    if run:
        runs = {c: _runtime.probe(path, c, latency_runs=latency_runs) for c in _runtime.CONFIGURATIONS}
    notes = _notes(info, runs, None) if run else []
    warns = []
    if run and not runs["default"].works:
        where = "only without delegates" if runs["no_delegates"].works else "with no interpreter configuration"
        warns.append(f"the file does not work under the default XNNPACK delegate ({runs['default'].error}); "
                     f"it works {where}.")
    return ExportReport(path, data, info, runs, _runtime.interpreter_api()[2], notes=notes, warnings=warns)


# -- helpers -------------------------------------------------------------------


def _check_options(quantization, representative_data, sparse, io_dtype, batch_size, fuse_lstm):
    if quantization not in _convert.QUANTIZATIONS:
        raise ValueError(
            f"to_tflite: `quantization` must be one of {_convert.QUANTIZATIONS}. Received: {quantization!r}."
        )
    for name, value in (("sparse", sparse), ("fuse_lstm", fuse_lstm)):
        if not (value is True or value is False or (isinstance(value, str) and value == "auto")):
            raise ValueError(f"to_tflite: `{name}` must be 'auto', True or False. Received: {value!r}.")
    if io_dtype not in _convert.IO_DTYPES:
        raise ValueError(f"to_tflite: `io_dtype` must be one of {_convert.IO_DTYPES}. Received: {io_dtype!r}.")
    if io_dtype != "float32" and quantization != "int8":
        raise ValueError(
            f"to_tflite: io_dtype={io_dtype!r} needs quantization='int8' (integer inputs and outputs exist "
            f"only in full-integer models). Received: quantization={quantization!r}."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "to_tflite: quantization='int8' needs `representative_data`: 100 to 500 typical inputs, "
            "prepared as for model.predict (e.g. x_train[:300]), to calibrate activation ranges. "
            "Without data, use quantization='dynamic' (int8 weights, float activations)."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"to_tflite: `batch_size` must be a positive integer. Received: {batch_size!r}.")


def _reserve_temporary(destination):
    """Creates the temporary file next to ``destination``: proves the folder is writable, early."""
    folder = destination.parent
    if destination.is_dir():
        raise IsADirectoryError(f"to_tflite: '{destination}' is a directory; give a file path such as "
                                f"'{destination / 'model.tflite'}'.")
    if not folder.is_dir():
        raise FileNotFoundError(f"to_tflite: the folder '{folder}' does not exist; create it first "
                                f"(os.makedirs) or write elsewhere.")
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise type(err)(err.errno, f"to_tflite: cannot write into '{folder}': {err.strerror}") from None
    os.close(handle)
    return tmp


def _random_samples(specs, count):
    rng = np.random.default_rng(0)
    samples = []
    for s in specs:
        shape = (count,) + s.shape[1:]
        if np.issubdtype(np.dtype(s.dtype), np.floating):
            samples.append(rng.random(shape).astype(s.dtype))
        else:
            samples.append(np.zeros(shape, s.dtype))
    return samples


def _check_float_io(model, specs, io_dtype):
    integer = [s.name for s in specs if not np.issubdtype(np.dtype(s.dtype), np.floating)]
    if integer:
        raise ValueError(
            f"to_tflite: io_dtype={io_dtype!r} quantizes float inputs, but input(s) {integer} of model "
            f"'{model.name}' are already integers. Use io_dtype='float32'."
        )


def _has_sparse(info):
    return any(t.sparsity for g in info.subgraphs for t in g.tensors)


def _alternative(data, runs):
    import gzip

    default, bare = runs["default"], runs["no_delegates"]
    return {
        "encoding": "sparse",
        "size_bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9)),
        "loads_default": default.loads,
        "works_default": default.works,
        "loads_no_delegates": bare.loads,
        "works_no_delegates": bare.works,
        "latency_ms_no_delegates": bare.latency_ms,
        "reason": f"it fails under the default XNNPACK delegate ({default.error})"
        + ("; it works only without delegates" if bare.works else "; it does not work without delegates either"),
    }


def _fallback_note(sparse_data, sparse_runs, data, runs):
    bare, default = sparse_runs["no_delegates"], sparse_runs["default"]
    speed = ""
    if bare.works and bare.latency_ms and runs["default"].latency_ms:
        speed = (f" Without delegates it runs in {bare.latency_ms:.4f} ms per sample, against "
                 f"{runs['default'].latency_ms:.4f} ms for this file with XNNPACK.")
    failure = "loads but computes wrong outputs" if default.loads else "does not load"
    return (
        f"sparse='auto' wrote the weights dense ({len(data):,} bytes): the sparse encoding "
        f"({len(sparse_data):,} bytes, {len(data) / len(sparse_data):.1f}x smaller) {failure} under the "
        f"default XNNPACK delegate.{speed} For small files that work under XNNPACK, prune with "
        "block_size=(16, 1) (or (4, 1)) and export with quantization='int8'; to ship the sparse file to "
        "an interpreter created without the default delegates, pass sparse=True, "
        "require_default_delegate=False."
    )


def _check_runs(runs, data, require_default_delegate, sparse, warns):
    default, bare = runs["default"], runs["no_delegates"]
    if not default.works and not bare.works:
        raise ExportError(
            f"to_tflite: the converted file ({len(data):,} bytes) does not work under any interpreter "
            f"configuration. Default (XNNPACK): {default.error}. Without delegates: {bare.error}. Nothing "
            "was written."
        )
    if default.works:
        return
    hint = (" Prune with block_size=(16, 1) (or (4, 1)) and use quantization='int8' for sparse files "
            "XNNPACK runs, or use sparse='auto' to fall back to dense weights." if sparse is True else "")
    message = (f"the file ({len(data):,} bytes) does not work under the default XNNPACK delegate "
               f"({default.error}); it works only on an interpreter created without the default delegates "
               "(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).")
    if require_default_delegate:
        raise ExportError(f"to_tflite: {message}{hint} To write it anyway, pass require_default_delegate=False. "
                          "Nothing was written.")
    warns.append(message)


def _notes(info, runs, quantization):
    notes = []
    graph = info.subgraphs[0] if info.subgraphs else None
    if graph is None:
        return notes
    ops = {op.op for op in graph.operators}
    sparse = [t for t in graph.tensors if t.sparsity]
    if sparse and "DENSIFY" in ops:
        notes.append(
            "Float weights are stored sparse, and DENSIFY ops expand them to dense when the file loads: "
            "the saving is in file size only; memory and speed are those of the dense model."
        )
    elif sparse:
        blocks = sorted({"x".join(map(str, _flatbuffer.block_shape(t))) for t in sparse})
        notes.append(
            f"{len(sparse)} weight tensor(s) stored sparse in {', '.join(blocks)} blocks (out x in), "
            "used sparse by the kernels."
        )
    if any(t.is_variable for t in graph.tensors):
        notes.append(
            "The file keeps state in variable tensors (a fused LSTM's h and c) from one invoke to the "
            "next. For independent inputs, reset them before every run: "
            "interpreter.resetVariableTensors() on Android, interpreter.reset_all_variables() in Python."
        )
    default, bare = runs.get("default"), runs.get("no_delegates")
    if default and bare and default.works and bare.works and default.latency_ms and bare.latency_ms:
        notes.append(
            f"Latency: {default.latency_ms:.4f} ms with XNNPACK, {bare.latency_ms:.4f} ms without delegates "
            f"({bare.latency_ms / default.latency_ms:.2f}x), median of single-sample invokes on one thread."
        )
    return notes


def _float_op_warnings(info, model):
    found = _verify.float_operators(info.subgraphs[0], model)
    if not found:
        return []
    where = ", ".join(f"{op} (layer '{layer}')" if layer else op for op, layer in found)
    return [
        f"quantization='int8' left {len(found)} operator(s) computing in float: {where}. The file runs "
        "on CPU, but an integer-only accelerator (NPU, Edge TPU) cannot run these; quantization='dynamic' "
        "is the honest choice if such layers must stay."
    ]


def _agreement_warnings(agreement, quantization):
    warns = []
    for config, a in agreement.items():
        if quantization is None and a["relative_error"] > 1e-4:
            warns.append(f"float32 file differs from Keras by up to {a['max_abs_error']:.3g} "
                         f"({a['relative_error']:.2g} of the largest output, {_runtime.LABELS[config]}); "
                         "expected float rounding only.")
        if a["top1_agreement"] is not None and a["top1_agreement"] < 0.9:
            warns.append(f"top-1 agrees with Keras on only {a['top1_agreement']:.0%} of {a['samples']} samples "
                         f"({_runtime.LABELS[config]}); check representative_data and sample_data.")
    return warns
