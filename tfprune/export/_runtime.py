"""Loads a ``.tflite`` file the way a phone does, runs it, and times it, in a child process.

Two configurations are probed, because they are what an app can get:

* ``"default"``: the interpreter as created with no options, which applies
  the default XNNPACK delegate. This is what ``Interpreter(model)`` on
  Android does, and the configuration that must work.
* ``"no_delegates"``: builtin kernels only
  (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``). Some sparse
  encodings run only here.

Every load, run and timing loop happens in a child process
(``run_isolated``, running ``_interpreter.py``) under a memory limit and a
timeout: LiteRT can crash, rather than raise, on a file it cannot handle
(a corrupt sparse index vector makes ``invoke`` read out of bounds), and a
file can declare tensors too big to allocate. Either must end the child
with an error naming the file, never the user's Python process. The child
imports only numpy and the interpreter, so it starts in a fraction of a
second; ``benchmarks/bench_export_size.py`` measures what isolation costs.

The interpreter comes from ``ai-edge-litert`` (the LiteRT runtime a phone
ships); ``tf.lite.Interpreter`` is used only when that package is missing.
Every run uses one thread so that latencies are comparable across machines
and between the two configurations.
"""

import dataclasses
import json
import pathlib
import signal
import subprocess
import sys
import tempfile

import numpy as np

from tfprune.export import _flatbuffer
from tfprune.export._interpreter import (  # noqa: F401 - load/run: in-process use on trusted files (tests)
    dequantize,
    interpreter_api,
    load,
    quantize,
    random_inputs,
    run,
)

CONFIGURATIONS = ("default", "no_delegates")
LABELS = {"default": "default (XNNPACK)", "no_delegates": "no delegates"}

# The child may use this much memory beyond what the runtime's own libraries take, plus a few times
# the file (the interpreter maps it and XNNPACK packs a copy of the weights).
MEMORY_BYTES = 4 * 2**30
MEMORY_PER_FILE_BYTE = 4
# A file that takes longer than this to load, run and time is reported as hanging.
TIMEOUT_S = 600
_CHILD = pathlib.Path(__file__).with_name("_interpreter.py")


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
        RuntimeError: the file does not load or run in this configuration
            (it runs in a child process: a crash of the interpreter is this
            error, naming the signal).
        FlatbufferError: the file is not a readable ``.tflite`` file.
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
        label = "the model (given as bytes)" if isinstance(model, (bytes, bytearray, memoryview)) else f"'{path}'"
        inputs = _declared_inputs(path, label)
        if samples is not None:
            samples = _sample_list(samples, inputs)
        outcome = run_isolated(path, configuration, samples, latency_runs=repeats, num_threads=num_threads)
    if not outcome["loads"]:
        raise RuntimeError(f"run_tflite: {label} does not load ({LABELS[configuration]}): {outcome['error']}")
    if outcome["error"]:
        raise RuntimeError(f"run_tflite: {label} loads, but fails to run: {outcome['error']}")
    return TFLiteRun(outcome["outputs"], outcome["latency_ms"], outcome["invokes"], configuration,
                     interpreter_api()[2])


def _declared_inputs(path, label):
    """``[(name, shape)]`` of the file's inputs, read from the flatbuffer (no interpreter involved)."""
    try:
        info = _flatbuffer.read_model(pathlib.Path(path).read_bytes())
    except _flatbuffer.FlatbufferError as err:
        raise _flatbuffer.FlatbufferError(f"run_tflite: {label} is not a readable .tflite file: {err}") from None
    graph = info.subgraphs[0] if info.subgraphs else None
    if graph is None:
        raise _flatbuffer.FlatbufferError(f"run_tflite: {label} has no subgraph to run.")
    return [(graph.tensors[i].name, graph.tensors[i].shape) for i in graph.inputs]


def _sample_list(samples, inputs):
    arrays = list(samples) if isinstance(samples, (list, tuple)) else [samples]
    if len(arrays) != len(inputs):
        raise ValueError(f"run_tflite: got {len(arrays)} input array(s), but the file has {len(inputs)} input(s).")
    checked = []
    for array, (name, shape) in zip(arrays, inputs):
        array = np.asarray(array)
        expected = tuple(int(d) for d in shape[1:])
        if array.ndim != len(expected) + 1 or tuple(array.shape[1:]) != expected or not len(array):
            raise ValueError(f"run_tflite: input '{name}' has shape {array.shape}; expected "
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
    outcome = run_isolated(path, configuration, samples, names, latency_runs, latency_budget_s, seed)
    if not outcome["loads"]:
        return RunResult(configuration, loads=False, error=outcome["error"])
    if outcome["error"]:
        return RunResult(configuration, loads=False, error=f"loads, but fails to run: {outcome['error']}")
    result = RunResult(
        configuration, loads=True, latency_ms=outcome["latency_ms"], invokes=outcome["invokes"],
        delegate_partitions=outcome["delegate_partitions"], outputs=outcome["outputs"],
    )
    if not all(np.all(np.isfinite(y)) for y in result.outputs):
        result.mark_wrong("NaN or infinity")
    return result


def run_isolated(path, configuration, samples=None, names=None, latency_runs=0, budget_s=float("inf"), seed=0,
                 num_threads=1):
    """Loads, runs and times ``path`` in a child process; what happened, as a dict.

    Returns:
        ``{"loads", "error", "outputs", "latency_ms", "invokes", "delegate_partitions"}``:
        ``loads`` False with ``error`` when the file did not load; ``loads``
        True with ``error`` when it loaded but failed to run. A crash, a
        runaway allocation or a hang of the child is such an error, naming
        the signal and the stage it reached.
    """
    outcome = {"loads": False, "error": None, "outputs": None, "latency_ms": None, "invokes": 0,
               "delegate_partitions": None}
    size = pathlib.Path(path).stat().st_size
    with tempfile.TemporaryDirectory(prefix="tfprune_probe_") as folder:
        folder = pathlib.Path(folder)
        if samples is not None:
            np.savez(folder / "samples.npz", **{f"input_{i}": np.asarray(s) for i, s in enumerate(samples)})
        request = {
            "path": str(path), "configuration": configuration, "names": names, "seed": seed,
            "samples": str(folder / "samples.npz") if samples is not None else None,
            "latency_runs": int(latency_runs), "budget_s": budget_s if budget_s != float("inf") else 1e30,
            "num_threads": int(num_threads), "memory_bytes": MEMORY_BYTES + MEMORY_PER_FILE_BYTE * size,
            "result": str(folder),
        }
        (folder / "request.json").write_text(json.dumps(request))
        try:
            child = subprocess.run([sys.executable, str(_CHILD), str(folder / "request.json")],
                                   capture_output=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return dict(outcome, error=f"the interpreter did not finish within {TIMEOUT_S} s while "
                                       f"{_stage(folder)} the file; it may hang on it")
        reported = folder / "result.json"
        if child.returncode != 0 or not reported.exists():
            return dict(outcome, loads=_stage(folder) not in ("loading", "starting"),
                        error=_death(child, _stage(folder), request["memory_bytes"]))
        outcome.update(json.loads(reported.read_text()))
        if outcome["loads"] and not outcome.get("error"):
            with np.load(folder / "outputs.npz", allow_pickle=False) as stored:
                outcome["outputs"] = [stored[f"output_{i}"] for i in range(len(stored.files))]
    outcome.setdefault("error", None)
    return outcome


def _stage(folder):
    marker = folder / "stage"
    return marker.read_text() if marker.exists() else "starting"


def _death(child, stage, memory_bytes):
    """Why the child ended without a result, in one line."""
    if child.returncode < 0:
        number = -child.returncode
        try:
            name = f", {signal.Signals(number).name}"
        except ValueError:
            name = ""
        memory = (f"; it may have run out of the {memory_bytes / 2**30:.3g} GiB it may use"
                  if number == signal.SIGABRT else "")
        return f"the interpreter crashed (signal {number}{name}) while {stage} the file{memory}"
    lines = [line.strip() for line in child.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    last = lines[-1] if lines else "no message"
    return f"the interpreter process failed (exit status {child.returncode}) while {stage} the file: {last}"
