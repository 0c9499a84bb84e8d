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
import re
import subprocess
import sys
import time

import numpy as np

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
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # The C++ reporter runs messages together: "...node #2Node number 8 (...) failed to prepare."
    return re.sub(r"(\S)(Node number)", r"\1; \2", lines[0]) if lines else type(err).__name__
