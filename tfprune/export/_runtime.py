"""Loads a ``.tflite`` file the way a phone does, runs it, and times it.

Two configurations are probed, because they are what an app can get:

* ``"default"``: the interpreter as created with no options, which applies
  the default XNNPACK delegate. This is what ``Interpreter(model)`` on
  Android does, and the configuration that must work.
* ``"no_delegates"``: builtin kernels only
  (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``). Some sparse
  encodings run only here.

The interpreter comes from ``ai-edge-litert`` (the LiteRT runtime a phone
ships); ``tf.lite.Interpreter`` is used only when that package is missing.
Every run uses one thread so that latencies are comparable across machines
and between the two configurations.
"""

import dataclasses
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from tfprune._common.text import first_line

CONFIGURATIONS = ("default", "no_delegates")
LABELS = {"default": "default (XNNPACK)", "no_delegates": "no delegates"}

# Prepares a file in a child process. LiteRT can crash, rather than raise, while a delegate prepares
# a file it cannot handle; the crash must not take the user's Python process (and model) with it.
_PREPARE_IN_CHILD = """
import sys
from ai_edge_litert import interpreter as litert
kind = getattr(litert.OpResolverType, sys.argv[2])
litert.Interpreter(model_path=sys.argv[1], num_threads=1, experimental_op_resolver_type=kind).allocate_tensors()
"""


@dataclasses.dataclass
class RunResult:
    """What happened when one configuration loaded and ran the file."""

    configuration: str
    loads: bool
    error: str | None = None
    latency_ms: float | None = None
    invokes: int = 0
    delegate_partitions: int | None = None
    outputs: list | None = None  # per output, stacked over samples, dequantized to float
    correct: bool | None = None  # outputs checked (finite, near Keras); None: not checked

    @property
    def works(self):
        """Loads, runs, and its outputs were not found wrong."""
        return self.loads and self.correct is not False

    def mark_wrong(self, reason):
        self.correct = False
        self.error = f"loads and runs, but computes wrong outputs: {reason}"

    def to_dict(self):
        return {
            "configuration": self.configuration,
            "loads": self.loads,
            "correct": self.correct,
            "works": self.works,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "invokes": self.invokes,
            "delegate_partitions": self.delegate_partitions,
        }


@dataclasses.dataclass
class TFLiteRun:
    """What ``run_tflite`` returns.

    Attributes:
        outputs: one float array per output of the file, stacked over the
            samples (dequantized when the output tensor is integer).
        latency_ms: the median time of one invoke, in milliseconds (``None``
            when ``repeats=0``).
        invokes: how many invokes were timed.
        configuration: ``"default"`` (XNNPACK) or ``"no_delegates"``.
        runtime: the interpreter that ran it, e.g. ``"ai-edge-litert 2.3.0"``.
    """

    outputs: list
    latency_ms: float | None
    invokes: int
    configuration: str
    runtime: str


def run_tflite(model, samples=None, *, delegates=True, repeats=100, num_threads=1):
    """Runs a ``.tflite`` file on inputs, one sample per invoke as a phone does, and times it.

    Args:
        model: a path to a ``.tflite`` file, or its bytes.
        samples: one array of shape ``(n, *input_shape[1:])`` per input of the
            file (a single array for one input, a list for several, in the
            file's input order), prepared as for ``model.predict``; integer
            input tensors are quantized with their scale and zero point.
            ``None``: one random sample.
        delegates: ``True`` (default): the interpreter as an app creates it,
            with the default XNNPACK delegate; ``False``: builtin kernels only.
        repeats: invokes to time after one warm-up (0: no timing).
        num_threads: interpreter threads (1 makes latencies comparable).

    Returns:
        A ``TFLiteRun`` with ``.outputs`` and ``.latency_ms``.

    Raises:
        RuntimeError: the file does not load or run in this configuration.
        ValueError: ``samples`` do not fit the file's inputs.

    Example:

    ```python
    from tfprune.export import run_tflite

    result = run_tflite("mnist_int8.tflite", x_test[:100], repeats=200)
    accuracy = (result.outputs[0].argmax(-1) == y_test[:100]).mean()
    print(f"{accuracy:.2%} in {result.latency_ms:.3f} ms per sample")
    ```
    """
    if delegates not in (True, False):
        raise ValueError(f"run_tflite: `delegates` must be True or False. Received: {delegates!r}.")
    if not isinstance(repeats, int) or repeats < 0:
        raise ValueError(f"run_tflite: `repeats` must be a non-negative integer. Received: {repeats!r}.")
    configuration = "default" if delegates else "no_delegates"
    with _as_file(model) as path:
        try:
            interpreter = load(path, configuration, num_threads=num_threads)
        except RuntimeError as err:
            raise RuntimeError(f"run_tflite: the file does not load ({LABELS[configuration]}): {err}") from None
        details = interpreter.get_input_details()
        samples = random_inputs(details) if samples is None else _sample_list(samples, details)
        try:
            outputs = run(interpreter, samples)
            latency, count = _time_invokes(interpreter, repeats, budget_s=float("inf"))
        except RuntimeError as err:
            raise RuntimeError(f"run_tflite: the file loads, but fails to run: {_first_line(err)}") from None
    return TFLiteRun(outputs, latency, count, configuration, interpreter_api()[2])


def _sample_list(samples, details):
    arrays = list(samples) if isinstance(samples, (list, tuple)) else [samples]
    if len(arrays) != len(details):
        raise ValueError(f"run_tflite: got {len(arrays)} input array(s), but the file has {len(details)} input(s).")
    checked = []
    for array, detail in zip(arrays, details):
        array = np.asarray(array)
        expected = tuple(int(d) for d in detail["shape"][1:])
        if array.ndim != len(expected) + 1 or tuple(array.shape[1:]) != expected or not len(array):
            raise ValueError(f"run_tflite: input '{detail['name']}' has shape {array.shape}; expected "
                             f"(n, {', '.join(map(str, expected))}) with n >= 1 samples.")
        checked.append(array)
    if len({len(a) for a in checked}) > 1:
        raise ValueError("run_tflite: the input arrays hold different numbers of samples.")
    return checked


class _as_file:
    """A path to the model: the path given, or a temporary file holding the bytes given."""

    def __init__(self, model):
        self.model, self.tmp = model, None

    def __enter__(self):
        if isinstance(self.model, (bytes, bytearray, memoryview)):
            handle, name = tempfile.mkstemp(prefix="tfprune_run_", suffix=".tflite")
            with open(handle, "wb") as f:
                f.write(bytes(self.model))
            self.tmp = pathlib.Path(name)
            return self.tmp
        path = pathlib.Path(self.model)
        if not path.is_file():
            raise FileNotFoundError(f"run_tflite: no file at '{path}'.")
        return path

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def interpreter_api():
    """``(Interpreter, OpResolverType, description)`` of the runtime in use."""
    try:
        from ai_edge_litert import interpreter as litert
        from importlib.metadata import version

        return litert.Interpreter, litert.OpResolverType, f"ai-edge-litert {version('ai-edge-litert')}"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, f"tf.lite {tf.__version__}"


def load(path, configuration, num_threads=1):
    """An allocated interpreter for ``path``; raises ``RuntimeError`` if it cannot load."""
    interpreter_class, resolver, runtime = interpreter_api()
    kind = resolver.AUTO if configuration == "default" else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if runtime.startswith("ai-edge-litert"):
        crash = _crash_while_preparing(path, kind.name)
        if crash:
            raise RuntimeError(crash)
    try:
        interpreter = interpreter_class(
            model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=kind
        )
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(_first_line(err)) from None
    return interpreter


def _crash_while_preparing(path, resolver_name):
    """A message if preparing ``path`` with ai-edge-litert kills a child process; ``None`` if it does not."""
    child = subprocess.run([sys.executable, "-c", _PREPARE_IN_CHILD, str(path), resolver_name],
                           capture_output=True, timeout=300)
    if child.returncode < 0:
        return f"the interpreter crashed (signal {-child.returncode}) while preparing the file"
    return None  # loaded, or raised: the load in this process reports the error itself


def probe(path, configuration, samples=None, names=None, latency_runs=100, latency_budget_s=2.0, seed=0):
    """Loads ``path`` in ``configuration``, runs ``samples`` and times invokes.

    Args:
        samples: a list with one float array per model input, each of shape
            ``(n, *input_shape[1:])``, or ``None`` for one random sample.
        names: ``(input_names, output_names)`` of the file's signature, in
            the order of ``samples`` and of the wanted outputs; ``None``
            takes the interpreter's own order.
        latency_runs: invokes to time (after one warm-up); 0 skips timing.
        latency_budget_s: stop timing early once this much time has passed.

    Returns:
        A ``RunResult``; ``loads`` is False when loading or running failed.
    """
    try:
        interpreter = load(path, configuration)
    except RuntimeError as err:
        return RunResult(configuration, loads=False, error=str(err))
    order = signature_order(interpreter, *names) if names else (None, None)
    if samples is None:
        samples = random_inputs(interpreter.get_input_details(), seed)
    try:
        outputs = run(interpreter, samples, *order)
        latency, count = _time_invokes(interpreter, latency_runs, latency_budget_s)
    except (RuntimeError, ValueError) as err:
        return RunResult(configuration, loads=False, error=f"loads, but fails to run: {_first_line(err)}")
    result = RunResult(
        configuration, loads=True, latency_ms=latency, invokes=count,
        delegate_partitions=_delegate_partitions(interpreter), outputs=outputs,
    )
    if not all(np.all(np.isfinite(y)) for y in outputs):
        result.mark_wrong("NaN or infinity")
    return result


def signature_order(interpreter, input_names, output_names):
    """Tensor indices of the named signature inputs and outputs, or ``(None, None)`` if unnamed."""
    try:
        runner = interpreter.get_signature_runner()
        ins, outs = runner.get_input_details(), runner.get_output_details()
        return [ins[n]["index"] for n in input_names], [outs[n]["index"] for n in output_names]
    except Exception:  # noqa: BLE001 - no signature: fall back to the file's order
        return None, None


def run(interpreter, samples, input_indices=None, output_indices=None):
    """Runs each sample (batch of one, as on a phone); returns float outputs stacked per output."""
    inputs = _in_order(interpreter.get_input_details(), input_indices)
    outputs = _in_order(interpreter.get_output_details(), output_indices)
    count = len(samples[0])
    results = [[] for _ in outputs]
    for i in range(count):
        # A fused LSTM keeps its state in variable tensors between invokes;
        # every sample starts a new sequence, as Keras's predict does.
        interpreter.reset_all_variables()
        for detail, values in zip(inputs, samples):
            interpreter.set_tensor(detail["index"], quantize(values[i : i + 1], detail))
        interpreter.invoke()
        for k, detail in enumerate(outputs):
            results[k].append(dequantize(interpreter.get_tensor(detail["index"]), detail))
    return [np.concatenate(r, axis=0) for r in results]


def _in_order(details, indices):
    if indices is None:
        return details
    by_index = {d["index"]: d for d in details}
    return [by_index[i] for i in indices]


def quantize(values, detail):
    """Real values to what the input tensor holds: ``q = round(x / scale) + zero_point``."""
    dtype = detail["dtype"]
    values = np.asarray(values).reshape(detail["shape"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)
    return values.astype(dtype)


def dequantize(values, detail):
    """What an output tensor holds to real values: ``x = (q - zero_point) * scale``."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


def random_inputs(details, seed=0, count=1):
    """Inputs in [0, 1) for float tensors and small non-negative integers otherwise."""
    rng = np.random.default_rng(seed)
    samples = []
    for detail in details:
        shape = (count,) + tuple(int(d) for d in detail["shape"][1:])
        scale, zero_point = detail["quantization"]
        if np.issubdtype(detail["dtype"], np.floating) or scale:
            samples.append(rng.random(shape, dtype=np.float32))
        else:
            samples.append(rng.integers(0, 2, shape).astype(detail["dtype"]))
    return samples


def _time_invokes(interpreter, runs, budget_s):
    if runs <= 0:
        return None, 0
    interpreter.invoke()  # warm-up: first invoke packs weights, allocates scratch
    times = []
    deadline = time.perf_counter() + budget_s
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
        if start > deadline and len(times) >= 10:
            break
    return float(np.median(times) * 1e3), len(times)


def _delegate_partitions(interpreter):
    # Private API, present in ai-edge-litert and tf.lite alike; it only adds detail.
    try:
        return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # noqa: BLE001
        return None


def _first_line(err):
    # The C++ reporter runs messages together: "...node #2failed to delegate ...node #5Node number 8 (...)".
    return re.sub(r"(\S)(Node number|failed to delegate)", r"\1; \2", first_line(err, default=type(err).__name__))
