"""The interpreter calls a phone makes (load, feed, invoke, time), with numpy and LiteRT only.

``_runtime`` runs this file as a script in a child process for every file it
loads: LiteRT can crash (SIGSEGV) in ``invoke`` on a corrupt index vector,
or allocate without bound for a tensor that declares a huge shape, and that
must end the child, not the user's process. The child sets an address-space
limit before it loads the file and reports each stage it reaches, so the
parent can say what the file did (``_runtime.run_isolated``). The file
imports nothing from tfprune, so the child starts without TensorFlow or Keras.

Protocol: ``python _interpreter.py REQUEST.json``; the request names the
file, the configuration, the samples (an ``.npz``, or none for random
inputs) and a result folder; the child writes ``stage`` (what it is doing),
then ``result.json`` and ``outputs.npz``.
"""

import json
import pathlib
import re
import sys
import time

import numpy as np


def interpreter_api():
    """``(Interpreter, OpResolverType, description)`` of the runtime in use."""
    try:
        from importlib.metadata import version

        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, litert.OpResolverType, f"ai-edge-litert {version('ai-edge-litert')}"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, f"tf.lite {tf.__version__}"


def load(path, configuration, num_threads=1):
    """An allocated interpreter for ``path`` in this process; ``RuntimeError`` if it does not load.

    Only for files known to be sound (the tests' own exports): a corrupt file
    can crash this process. ``_runtime.run_isolated`` is the safe door.
    """
    interpreter_class, resolver, _ = interpreter_api()
    kind = resolver.AUTO if configuration == "default" else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = interpreter_class(model_path=str(path), num_threads=num_threads,
                                        experimental_op_resolver_type=kind)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(first_line(err)) from None
    return interpreter


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
    results = [[] for _ in outputs]
    for i in range(len(samples[0])):
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
        scale, _ = detail["quantization"]
        if np.issubdtype(detail["dtype"], np.floating) or scale:
            samples.append(rng.random(shape, dtype=np.float32))
        else:
            samples.append(rng.integers(0, 2, shape).astype(detail["dtype"]))
    return samples


def time_invokes(interpreter, runs, budget_s):
    """``(median ms, invokes timed)`` after one warm-up; stops early past ``budget_s`` (10 invokes at least)."""
    if runs <= 0:
        return None, 0
    interpreter.invoke()  # warm-up: the first invoke packs weights, allocates scratch
    times = []
    deadline = time.perf_counter() + budget_s
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
        if start > deadline and len(times) >= 10:
            break
    return float(np.median(times) * 1e3), len(times)


def delegate_partitions(interpreter):
    """How many DELEGATE nodes the interpreter made (``None`` if it cannot say)."""
    # Private API, present in ai-edge-litert and tf.lite alike; it only adds detail.
    try:
        return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # noqa: BLE001
        return None


def first_line(err):
    """The first non-empty line of an error, with the C++ reporter's run-together messages split."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = lines[0] if lines else type(err).__name__
    return re.sub(r"(\S)(Node number|failed to delegate)", r"\1; \2", line)


# -- the child process -----------------------------------------------------------


def _limit_memory(extra_bytes):
    """Caps this process's address space at what it uses now plus ``extra_bytes`` (Linux; elsewhere a no-op)."""
    try:
        import resource

        status = pathlib.Path("/proc/self/status").read_text()
        used_kb = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1))
        limit = used_kb * 1024 + int(extra_bytes)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, AttributeError, ValueError):
        pass  # no /proc or no RLIMIT_AS: the parent's timeout still ends a runaway child


def _child(request_path):
    request = json.loads(pathlib.Path(request_path).read_text())
    folder = pathlib.Path(request["result"])

    def stage(name):
        (folder / "stage").write_text(name)

    interpreter_api()  # imports the runtime before the limit: its libraries are not the file's doing
    _limit_memory(request["memory_bytes"])
    result = {"loads": False, "stage": "loading"}
    try:
        stage("loading")
        interpreter = load(request["path"], request["configuration"], request["num_threads"])
        stage("reading its inputs and outputs")
        names = request["names"]
        order = signature_order(interpreter, *names) if names else (None, None)
        if request["samples"]:
            with np.load(request["samples"], allow_pickle=False) as stored:
                samples = [stored[f"input_{i}"] for i in range(len(stored.files))]
        else:
            samples = random_inputs(interpreter.get_input_details(), request["seed"])
        result.update(loads=True, stage="running")
        stage("running")
        outputs = run(interpreter, samples, *order)
        stage("timing")
        latency, count = time_invokes(interpreter, request["latency_runs"], request["budget_s"])
        np.savez(folder / "outputs.npz", **{f"output_{i}": y for i, y in enumerate(outputs)})
        result.update(stage="done", latency_ms=latency, invokes=count,
                      delegate_partitions=delegate_partitions(interpreter))
    except MemoryError:
        result.update(error=f"ran out of memory while {result['stage']} (the limit is "
                            f"{request['memory_bytes'] / 2**30:.3g} GiB more than the runtime itself)")
    except Exception as err:  # noqa: BLE001 - whatever a corrupt file makes the runtime raise is reported
        text = first_line(err)
        result.update(error=text if isinstance(err, RuntimeError) else f"{type(err).__name__}: {text}")
    (folder / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1])
