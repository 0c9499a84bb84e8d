"""The export pipeline behind ``to_tflite`` and ``inspect_tflite``: convert, probe, choose encodings, verify, write.

Each step is a function; ``export`` runs them in order. The file is written to
a temporary path beside the destination (``_common.files.atomic_path``) and
only replaces it once every check has passed.
"""

import contextlib
import dataclasses
import gzip
import pathlib
import warnings

import numpy as np

from tfprune._common.files import atomic_path
from tfprune.export import _convert, _encoding, _flatbuffer, _quantization, _rewrite, _runtime, _verify
from tfprune.export._flatbuffer import FlatbufferError
from tfprune.export._quantization import DYNAMIC, FLOAT16, INT8
from tfprune.export._report import ExportReport

_HINT_BLOCKS = f"prune with block_size=(16, 1) (or (4, 1)) and export with {INT8.argument}"


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


@dataclasses.dataclass
class _Job:
    """What one export converts and checks against: the model, its inputs, the options."""

    model: object
    specs: list
    mode: _quantization.QuantizationMode
    representative: list | None
    samples: list
    expected: list
    names: tuple
    io_dtype: str
    per_channel: bool
    tf_keras_model: object
    latency_runs: int


@dataclasses.dataclass
class _Attempt:
    """One converted file and how each interpreter configuration ran it."""

    data: bytes
    runs: dict
    agreement: dict
    info: object


def export(model, path, quantization, representative_data, sparse, *, io_dtype, per_channel, fuse_lstm,
           sample_data, batch_size, require_default_delegate, verify_samples, latency_runs, strip=False):
    """``to_tflite`` (see its docstring); returns the report."""
    mode = check_options(quantization, representative_data, sparse, io_dtype, batch_size, fuse_lstm)
    check_count("to_tflite", "verify_samples", verify_samples, minimum=1)
    check_count("to_tflite", "latency_runs", latency_runs, minimum=0)
    if strip is not True and strip is not False:
        raise ValueError(f"to_tflite: `strip` must be True or False. Received: {strip!r}.")
    destination = _check_destination(pathlib.Path(path))
    with _reserved(destination) as tmp_path:
        job, lstm_note = _prepare(model, mode, representative_data, sample_data, io_dtype, per_channel,
                                  fuse_lstm, batch_size, verify_samples, latency_runs)
        notes, warns, alternatives = [lstm_note] if lstm_note else [], [], []
        attempt = convert_and_probe(job, tmp_path, encode_sparse=sparse is not False)
        why = {}
        if sparse == "auto" and _has_sparse(attempt.info) and not attempt.runs["default"].works:
            attempt, why = choose_encodings(job, tmp_path, attempt, alternatives, notes)
        elif sparse is not False and not _has_sparse(attempt.info):
            notes.append(
                "Sparse encoding was allowed, but the converter stored every weight dense: no weight was "
                "sparse enough to gain from it (prune the model first, e.g. to 80% or more)."
            )
        encodings = _encoding.reasons(attempt.info, why, _default_reason(sparse, attempt))
        check_runs(attempt.runs, attempt.data, require_default_delegate, sparse, warns)
        if mode.full_integer:  # before strip: it names layers from the tensor names
            warns += float_op_warnings(attempt.info, job.model, mode)
        warns += partial_block_warnings(attempt.info)
        if strip:
            attempt = strip_unread(job, tmp_path, attempt, notes)
        notes += runtime_notes(attempt.info, attempt.runs)
        warns += agreement_warnings(attempt.agreement, mode)
    for warning in warns:
        warnings.warn(f"to_tflite({str(destination)!r}): {warning}", RuntimeWarning, stacklevel=3)
    settings = _settings(job, sparse, batch_size, strip)
    return ExportReport(destination, attempt.data, attempt.info, attempt.runs, _runtime.interpreter_api()[2],
                        attempt.agreement, settings, alternatives, notes, warns, encodings)


def inspect(path, run=True, latency_runs=100):
    """``inspect_tflite`` (see its docstring)."""
    check_count("inspect_tflite", "latency_runs", latency_runs, minimum=0)
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
    notes = runtime_notes(info, runs) if run else []
    warns = []
    if run and not runs["default"].works:
        where = "only without delegates" if runs["no_delegates"].works else "with no interpreter configuration"
        warns.append(f"the file does not work under the default XNNPACK delegate ({runs['default'].error}); "
                     f"it works {where}.")
    return ExportReport(path, data, info, runs, _runtime.interpreter_api()[2], notes=notes, warnings=warns)


# -- steps ---------------------------------------------------------------------


def check_options(quantization, representative_data, sparse, io_dtype, batch_size, fuse_lstm):
    """The ``QuantizationMode``, once every option is known to be valid; ``ValueError`` naming the bad one."""
    mode = _quantization.resolve(quantization)
    for name, value in (("sparse", sparse), ("fuse_lstm", fuse_lstm)):
        if not (value is True or value is False or (isinstance(value, str) and value == "auto")):
            raise ValueError(f"to_tflite: `{name}` must be 'auto', True or False. Received: {value!r}.")
    _quantization.check_io_dtype(mode, io_dtype)
    if mode.needs_representative_data and representative_data is None:
        raise ValueError(
            f"to_tflite: {mode.argument} needs `representative_data`: 100 to 500 typical inputs, "
            "prepared as for model.predict (e.g. x_train[:300]), to calibrate activation ranges. "
            f"Without data, use {DYNAMIC.argument} (int8 weights, float activations)."
        )
    check_count("to_tflite", "batch_size", batch_size, minimum=1)
    return mode


def check_count(caller, name, value, minimum):
    """``value`` must be an integer >= ``minimum``; True, 2.5 and "many" are not counts."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{caller}: `{name}` must be an integer >= {minimum}. Received: {name}={value!r}.")


def _check_destination(destination):
    if destination.is_dir():
        raise IsADirectoryError(f"to_tflite: '{destination}' is a directory; give a file path such as "
                                f"'{destination / 'model.tflite'}'.")
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"to_tflite: the folder '{destination.parent}' does not exist; create it first "
                                f"(os.makedirs) or write elsewhere.")
    return destination


@contextlib.contextmanager
def _reserved(destination):
    """``atomic_path(destination)``, entered at once so that an unwritable folder fails before converting."""
    stack = contextlib.ExitStack()
    try:
        tmp_path = stack.enter_context(atomic_path(destination))
    except OSError as err:
        raise type(err)(err.errno, f"to_tflite: cannot write into '{destination.parent}': {err.strerror}") from None
    with stack:
        yield tmp_path


def _prepare(model, mode, representative_data, sample_data, io_dtype, per_channel, fuse_lstm, batch_size,
             verify_samples, latency_runs):
    """The ``_Job`` (stripped model, checked data, Keras outputs) and a note on how LSTMs convert."""
    model = _convert.strip_wrappers(model)
    specs = _convert.input_specs(model, batch_size, example=sample_data if sample_data is not None
                                 else representative_data)
    representative = (_convert.as_input_list(representative_data, specs, "representative_data")
                      if representative_data is not None else None)
    if sample_data is not None:
        samples = _convert.as_input_list(sample_data, specs, "sample_data")
    elif representative is not None:
        samples = representative
    else:
        samples = _random_samples(specs, min(verify_samples, 32))
    samples = [s[:verify_samples] for s in samples]
    if mode.full_integer:
        _convert.check_full_integer_layers(model, mode)
        if io_dtype != _quantization.FLOAT_IO:
            _check_float_inputs(model, specs, io_dtype)
    tf_keras_model, lstm_note = _convert.lstm_route(model, specs, fuse_lstm)
    expected = _verify.keras_outputs(model, specs, samples)
    names = ([s.name for s in specs], [f"output_{i}" for i in range(len(expected))])
    job = _Job(model, specs, mode, representative, samples, expected, names, io_dtype, per_channel,
               tf_keras_model, latency_runs)
    return job, lstm_note


def convert_and_probe(job, tmp_path, encode_sparse):
    """Converts, writes to ``tmp_path``, runs under every configuration and compares with Keras."""
    data = _convert.convert(job.model, job.specs, job.mode, job.representative, job.io_dtype, encode_sparse,
                            job.per_channel, job.tf_keras_model)
    return probe_file(job, tmp_path, data)


def probe_file(job, tmp_path, data, configurations=_runtime.CONFIGURATIONS, latency=True):
    """Writes ``data`` to ``tmp_path``, runs it under ``configurations`` and compares it with Keras."""
    pathlib.Path(tmp_path).write_bytes(data)
    runs = {c: _runtime.probe(tmp_path, c, job.samples, job.names, job.latency_runs if latency else 0)
            for c in configurations}
    agreement = {c: _verify.check_run(r, job.expected, job.mode) for c, r in runs.items()}
    agreement = {c: a for c, a in agreement.items() if a is not None}
    return _Attempt(data, runs, agreement, _flatbuffer.read_model(data))


def choose_encodings(job, tmp_path, sparse_attempt, alternatives, notes):
    """``sparse="auto"`` after the all-sparse file failed under the default delegate: sparse where it runs.

    Groups the sparse weights by the operator that reads them
    (``_encoding.sparse_groups``), finds the groups the default delegate
    refuses by probing each alone (``_encoding.refused_groups``), and
    rewrites the file with only those stored dense (``_rewrite.rewrite``).
    If no group runs sparse, or the mixed file fails too, converts again
    with every weight dense (``fall_back_to_dense``).

    Returns:
        ``(attempt, {tensor name: reason})``: the file chosen, and why each
        weight that was sparse in the first file is stored as it is.
    """
    groups = _encoding.sparse_groups(sparse_attempt.info)

    def probe_default(data):
        return probe_file(job, tmp_path, data, ("default",), latency=False).runs["default"]

    refused = _encoding.refused_groups(groups, sparse_attempt.data, sparse_attempt.runs["default"], probe_default)
    why = {}
    for group in groups:
        reason = (_encoding.refusal_reason(group, refused[group.label]) if group.label in refused
                  else _encoding.kept_reason(group))
        why.update(dict.fromkeys(group.names, reason))
    kept = [g for g in groups if g.label not in refused]
    if kept:
        densify = [t for g in groups if g.label in refused for t in g.tensors]
        mixed = probe_file(job, tmp_path, _rewrite.rewrite(sparse_attempt.data, densify=densify))
        if mixed.runs["default"].works:
            alternatives.append(_alternative(sparse_attempt.data, sparse_attempt.runs))
            notes.append(_mixed_note(mixed, sparse_attempt, kept, [g for g in groups if g.label in refused]))
            return mixed, why
        failed = (f"dense: the file keeping {', '.join(g.label for g in kept)} sparse failed under the default "
                  f"XNNPACK delegate too ({mixed.runs['default'].error})")
        why.update({name: failed for g in kept for name in g.names})
    dense = fall_back_to_dense(job, tmp_path, sparse_attempt, alternatives, notes)
    return dense, _encoding.renamed(why, sparse_attempt.info, dense.info)


def strip_unread(job, tmp_path, attempt, notes):
    """``strip=True``: the file without what the runtime never reads, if it runs exactly as the file before.

    Drops the converter's metadata, the description and the names of inner
    tensors (``_rewrite.rewrite(strip=True)``; tensor indices are kept, so
    the report's rows line up), verifies the result like the file it
    replaces, and keeps the unstripped file, with a note, if any
    configuration works differently or the outputs differ.
    """
    stripped = probe_file(job, tmp_path, _rewrite.rewrite(attempt.data, strip=True))
    same = all(stripped.runs[c].works == attempt.runs[c].works for c in attempt.runs) and all(
        np.array_equal(a, b) for c in attempt.runs if attempt.runs[c].works
        for a, b in zip(attempt.runs[c].outputs, stripped.runs[c].outputs))
    if same and len(stripped.info.subgraphs[0].tensors) == len(attempt.info.subgraphs[0].tensors):
        notes.append(f"strip=True removed {len(attempt.data) - len(stripped.data):,} bytes the runtime never reads "
                     "(converter metadata, description, inner tensor names).")
        return stripped
    pathlib.Path(tmp_path).write_bytes(attempt.data)
    notes.append("strip=True: the stripped file did not run exactly as the converted one; the file is written "
                 "unstripped.")
    return attempt


def fall_back_to_dense(job, tmp_path, sparse_attempt, alternatives, notes):
    """``sparse="auto"``: no sparse weight runs under the default delegate; converts again with dense weights.

    Records the sparse file in ``alternatives`` and explains the choice in ``notes``.
    """
    alternatives.append(_alternative(sparse_attempt.data, sparse_attempt.runs))
    dense = convert_and_probe(job, tmp_path, encode_sparse=False)
    notes.append(_fallback_note(sparse_attempt, dense))
    return dense


def check_runs(runs, data, require_default_delegate, sparse, warns):
    """Raises ``ExportError`` when no configuration works, or the default one must and does not."""
    default, bare = runs["default"], runs["no_delegates"]
    if not default.works and not bare.works:
        raise ExportError(
            f"to_tflite: the converted file ({len(data):,} bytes) does not work under any interpreter "
            f"configuration. Default (XNNPACK): {default.error}. Without delegates: {bare.error}. Nothing "
            "was written."
        )
    if default.works:
        return
    hint = (f" Prune with block_size=(16, 1) (or (4, 1)) and use {INT8.argument} for sparse files "
            "XNNPACK runs, or use sparse='auto' to fall back to dense weights." if sparse is True else "")
    message = (f"the file ({len(data):,} bytes) does not work under the default XNNPACK delegate "
               f"({default.error}); it works only on an interpreter created without the default delegates "
               "(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).")
    if require_default_delegate:
        raise ExportError(f"to_tflite: {message}{hint} To write it anyway, pass require_default_delegate=False. "
                          "Nothing was written.")
    warns.append(message)


def runtime_notes(info, runs):
    """Sentences about sparse storage, state kept between invokes, and latency."""
    graph = info.subgraphs[0] if info.subgraphs else None
    if graph is None:
        return []
    notes = []
    ops = {op.op for op in graph.operators}
    sparse = [t for t in graph.tensors if t.sparsity]
    if sparse and "DENSIFY" in ops:
        kinds = " and ".join(sorted({t.dtype for t in sparse}))
        notes.append(
            f"The {kinds} weights are stored sparse, and DENSIFY ops expand them to dense when the file loads: "
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


def float_op_warnings(info, model, mode):
    """A warning naming the operators a full-integer file still computes in float."""
    found = _verify.float_operators(info.subgraphs[0], model)
    if not found:
        return []
    where = ", ".join(f"{op} (layer '{layer}')" if layer else op for op, layer in found)
    return [
        f"{mode.argument} left {len(found)} operator(s) computing in float: {where}. The file runs "
        "on CPU, but an integer-only accelerator (NPU, Edge TPU) cannot run these; "
        f"{DYNAMIC.argument} is the honest choice if such layers must stay."
    ]


def partial_block_warnings(info):
    """A warning for sparse weights whose blocks do not tile a dimension: the converter drops the rest."""
    found = _encoding.partial_blocks(info)
    if not found:
        return []
    where = ", ".join(f"'{name}' ({size} = {size // b} x {b} + {size % b})" for name, size, b in found[:3])
    return [
        f"{len(found)} sparse weight(s) have a dimension that is not a whole number of blocks: {where}. The "
        "converter stores whole blocks only, so the last partial block of each row is dropped where it held "
        "nonzero weights, and the file computes without them (verification tolerates it when the effect is "
        "small). Use layer widths that are multiples of the block, or sparse=False for exact weights."
    ]


def agreement_warnings(agreement, mode):
    """Warnings when a file is further from Keras than its mode's rounding, or disagrees on top-1."""
    warns = []
    for config, a in agreement.items():
        limit = mode.rounding_relative_error
        if limit is not None and a["relative_error"] > limit:
            warns.append(f"{mode.label} file differs from Keras by up to {a['max_abs_error']:.3g} "
                         f"({a['relative_error']:.2g} of the largest output, {_runtime.LABELS[config]}); "
                         "expected float rounding only.")
        if a["top1_agreement"] is not None and a["top1_agreement"] < 0.9:
            warns.append(f"top-1 agrees with Keras on only {a['top1_agreement']:.0%} of {a['samples']} samples "
                         f"({_runtime.LABELS[config]}); check representative_data and sample_data.")
    return warns


# -- helpers -------------------------------------------------------------------


def _settings(job, sparse, batch_size, strip):
    mode = job.mode
    return {
        "quantization": mode.name,
        "io_dtype": job.io_dtype if mode.full_integer else _quantization.FLOAT_IO,
        "sparse": sparse, "per_channel": job.per_channel, "batch_size": batch_size, "strip": strip,
        "fused_lstm": job.tf_keras_model is not None,
        "calibration_samples": min(len(job.representative[0]), _convert.MAX_CALIBRATION_SAMPLES)
        if mode.needs_representative_data else 0,
    }


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


def _check_float_inputs(model, specs, io_dtype):
    integer = [s.name for s in specs if not np.issubdtype(np.dtype(s.dtype), np.floating)]
    if integer:
        raise ValueError(
            f"to_tflite: io_dtype={io_dtype!r} quantizes float inputs, but input(s) {integer} of model "
            f"'{model.name}' are already integers. Use io_dtype={_quantization.FLOAT_IO!r}."
        )


def _default_reason(sparse, attempt):
    """The reason for a weight's encoding when no probe decided it."""
    works = attempt.runs["default"].works

    def reason(tensor):
        if sparse is False:
            return _encoding.ASKED_DENSE
        if not tensor.sparsity:
            return _encoding.CONVERTER_DENSE
        if works:
            return "sparse: the default XNNPACK delegate runs the file with every weight the converter encoded sparse"
        return "sparse: sparse=True (the default XNNPACK delegate does not run this file)"

    return reason


def _mixed_note(mixed, sparse_attempt, kept, refused):
    return (
        f"sparse='auto' kept the sparse encoding for {_listing(kept)} and stored {_listing(refused)} dense, "
        f"which the default XNNPACK delegate does not run sparse ({len(mixed.data):,} bytes; the all-sparse "
        f"file, {len(sparse_attempt.data):,} bytes, fails under the default delegate)."
    )


def _listing(groups):
    return ", ".join(f"{g.label}: {len(g.tensors)} tensor(s)" for g in groups)


def _has_sparse(info):
    return any(t.sparsity for g in info.subgraphs for t in g.tensors)


def _alternative(data, runs):
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


def _fallback_note(sparse_attempt, dense):
    bare, default = sparse_attempt.runs["no_delegates"], sparse_attempt.runs["default"]
    speed = ""
    if bare.works and bare.latency_ms and dense.runs["default"].latency_ms:
        speed = (f" Without delegates it runs in {bare.latency_ms:.4f} ms per sample, against "
                 f"{dense.runs['default'].latency_ms:.4f} ms for this file with XNNPACK.")
    failure = "loads but computes wrong outputs" if default.loads else "does not load"
    size, sparse_size = len(dense.data), len(sparse_attempt.data)
    return (
        f"sparse='auto' wrote the weights dense ({size:,} bytes): the sparse encoding "
        f"({sparse_size:,} bytes, {size / sparse_size:.1f}x smaller) {failure} under the "
        f"default XNNPACK delegate.{speed} For small files that work under XNNPACK, {_HINT_BLOCKS}; to ship "
        "the sparse file to an interpreter created without the default delegates, pass sparse=True, "
        "require_default_delegate=False."
    )
