#!/usr/bin/env python3
"""Checks a .tflite file the way a phone will use it: load, run, time. Needs only numpy and ai-edge-litert.

Loads the file with the LiteRT interpreter and its default XNNPACK delegate
(what `Interpreter(model)` does on Android), prints the inputs and outputs
with their quantization, the storage and sparsity of every weight tensor,
the file size, runs the model on random inputs (or on a .npy array) and
times it. Exits with status 1 if the file does not load or run, 2 on a
usage error, 0 otherwise. No TensorFlow, no tfprune: copy this file next
to a model and run it anywhere `pip install numpy ai-edge-litert` works.

The check runs in a child process (this script again) with a memory limit
and a timeout: a corrupt file can crash the interpreter (SIGSEGV in
invoke) or declare tensors of many GiB, and this script then says so
with exit status 1 instead of dying with the file.

    python export/check_tflite.py model.tflite
    python export/check_tflite.py model.tflite --input digits.npy --labels labels.npy
    python export/check_tflite.py model.tflite --no-delegate   # builtin kernels only

--input holds float values prepared as the app prepares them (MNIST:
pixels / 255 as float32, shape (n, 28, 28)); int8 inputs are quantized
here with the tensor's scale and zero point, as the app must do.
"""

import argparse
import gzip
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np

try:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
except ImportError:  # pragma: no cover - depends on the machine
    print("check_tflite: error: needs the LiteRT runtime: pip install ai-edge-litert", file=sys.stderr)
    sys.exit(2)

# Set in the child that does the work; the parent only watches it.
CHILD = "CHECK_TFLITE_CHILD"
# A tensor may declare at most this many bytes (no phone model comes near it): a corrupt shape such
# as [1, 0x7fffffff] is refused before the interpreter allocates it.
MAX_TENSOR_BYTES = 2**31


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[9:]))
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--input", metavar="NPY", help="inputs, shape (n, *input_shape) (default: random in [0, 1))")
    parser.add_argument("--labels", metavar="NPY", help="integer labels for --input: prints top-1 accuracy")
    parser.add_argument("--runs", type=int, default=100, help="invokes to time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default: %(default)s)")
    parser.add_argument("--no-delegate", action="store_true",
                        help="builtin kernels only (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    parser.add_argument("--memory-gib", type=float, default=4.0,
                        help="memory the check may use beyond the runtime itself, plus 4x the file "
                             "(default: %(default)s GiB)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before the check is stopped "
                                                                   "(default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    path = pathlib.Path(args.model)
    if not path.is_file():
        return fail(f"no such file: '{path}'", status=2)
    if os.environ.get(CHILD) == "1":
        try:
            return check(args, path)
        except UnicodeDecodeError:
            return fail(f"'{path}': a tensor name is not valid UTF-8: the file is corrupt")
        except (IndexError, KeyError) as err:  # sparsity parameters that point outside the tensor
            return fail(f"'{path}': the file is corrupt ({type(err).__name__} reading its tensors: {first_line(err)})")
    return supervise(argv, args, path)


def supervise(argv, args, path):
    """Runs the check in a child process; a crash, a runaway allocation or a hang becomes exit status 1."""
    sys.stdout.flush()
    env = dict(os.environ, **{CHILD: "1"})
    try:
        child = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return fail(f"'{path}': the check did not finish within {args.timeout:g} s; the interpreter may hang "
                    "on this file (--timeout sets the limit)")
    if child.returncode < 0:
        number = -child.returncode
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else "?"
        memory = (f"; it may have needed more than the {args.memory_gib:g} GiB allowed (--memory-gib)"
                  if number == signal.SIGABRT else "")
        return fail(f"'{path}': the interpreter crashed (signal {number}, {name}) on this file: it is corrupt or "
                    f"uses something this runtime cannot run{memory}")
    return child.returncode


def limit_memory(extra_bytes):
    """Caps the address space at what this process uses now plus ``extra_bytes`` (Linux; elsewhere no-op)."""
    try:
        import resource

        used_kb = int(re.search(r"VmSize:\s+(\d+) kB", pathlib.Path("/proc/self/status").read_text()).group(1))
        resource.setrlimit(resource.RLIMIT_AS, (used_kb * 1024 + int(extra_bytes),
                                                resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, AttributeError, ValueError):
        pass  # the parent's timeout still ends a runaway check


def oversized_tensor(interpreter):
    """The first tensor whose declared shape needs more than ``MAX_TENSOR_BYTES``, as text (``None`` if none)."""
    for d in interpreter.get_tensor_details():
        declared = int(np.prod([int(n) for n in d["shape"]], dtype=object)) * np.dtype(d["dtype"]).itemsize
        if declared > MAX_TENSOR_BYTES:
            return (f"tensor {d['index']} ('{d['name'][:60]}') declares the shape {[int(n) for n in d['shape']]}, "
                    f"{declared:,} bytes: more than the {MAX_TENSOR_BYTES:,} a tensor may have")
    return None


def check(args, path):
    """Loads, describes, runs and times the file (in the child process)."""
    data = path.read_bytes()
    print(f"{path}: {len(data):,} bytes ({len(gzip.compress(data, 9)):,} gzipped)")
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if args.no_delegate else OpResolverType.AUTO
    config = "no delegates" if args.no_delegate else "default delegate (XNNPACK)"
    limit_memory(args.memory_gib * 2**30 + 4 * len(data))
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=args.threads,
                                  experimental_op_resolver_type=resolver)
        oversized = oversized_tensor(interpreter)
        if oversized:
            return fail(f"'{path}': {oversized}; the file is corrupt, so it is not loaded")
        interpreter.allocate_tensors()
    except MemoryError:
        return fail(f"'{path}': ran out of the memory allowed (--memory-gib {args.memory_gib:g}) while loading")
    except (RuntimeError, ValueError) as err:
        return fail(f"does not load with the {config}: {first_line(err)}")
    print(f"loads with the {config}")

    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    for kind, details in (("input", inputs), ("output", outputs)):
        for d in details:
            print(f"  {kind:<6} {d['name']}: shape {[int(n) for n in d['shape']]}, {np.dtype(d['dtype']).name}{quant_text(d)}")
    print_weights(interpreter, {int(d["index"]) for d in inputs + outputs})

    try:
        samples = load_inputs(args.input, inputs)
        labels = np.load(args.labels, allow_pickle=False) if args.labels else None
    except (OSError, ValueError) as err:
        return fail(str(err), status=2)
    try:
        predictions = []
        for i in range(len(samples[0])):
            # Recurrent ops (a fused LSTM) keep their state in variable tensors
            # between invokes; each sample is a new sequence, as on a phone.
            interpreter.reset_all_variables()
            for d, values in zip(inputs, samples):
                interpreter.set_tensor(d["index"], quantize(values[i : i + 1], d))
            interpreter.invoke()
            out = dequantize(interpreter.get_tensor(outputs[0]["index"]), outputs[0])
            predictions.append(out.reshape(-1))
        times = []
        for _ in range(max(args.runs, 1)):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
    except MemoryError:
        return fail(f"'{path}': ran out of the memory allowed (--memory-gib {args.memory_gib:g}) while running")
    except (RuntimeError, ValueError) as err:
        return fail(f"loads, but does not run: {first_line(err)}")

    if not all(np.all(np.isfinite(p)) for p in predictions):
        return fail(f"loads and runs with the {config}, but its outputs contain NaN or infinity")
    first = predictions[0]
    print(f"ran {len(predictions)} sample(s); output 0 of sample 0: {np.array2string(first[:10], precision=4)}"
          + (f", arg-max {int(np.argmax(first))}" if first.size > 1 else ""))
    if labels is not None:
        top1 = np.array([np.argmax(p) for p in predictions])
        print(f"top-1 accuracy on {len(top1)} labelled samples: {np.mean(top1 == labels[: len(top1)]):.4f}")
    print(f"latency: {np.median(times) * 1e3:.4f} ms median of {len(times)} invokes "
          f"({args.threads} thread(s), {config})")
    return 0


def constant_tensors(interpreter):
    """Indices of tensors that ops read but no op writes: the weights (None if unknown)."""
    try:
        ops = interpreter._get_ops_details()  # private, but the only view of the graph the runtime gives
    except AttributeError:
        return None
    read = {int(i) for op in ops for i in op["inputs"] if i >= 0}
    written = {int(i) for op in ops for i in op["outputs"]}
    return read - written


def print_weights(interpreter, io_indices):
    """Storage and nonzero share of every constant tensor."""
    constants = constant_tensors(interpreter)
    rows = []
    for d in interpreter.get_tensor_details():
        if d["index"] in io_indices or (constants is not None and d["index"] not in constants):
            continue
        try:
            values = interpreter.get_tensor(d["index"])
        except ValueError:
            continue  # activations: no data until invoke
        sparse = d.get("sparsity_parameters") or {}
        elements = int(np.prod(d["shape"])) if len(d["shape"]) else 1
        if not sparse and values.size != elements:
            continue
        nonzero = int(np.count_nonzero(values))
        if sparse:
            blocks = block_shape(d)
            storage = f"sparse {'x'.join(map(str, blocks))} blocks, {values.size:,} values stored"
        else:
            storage = "dense"
        rows.append(f"  {d['name'][:50]:<50} {'x'.join(map(str, d['shape'])):>9} "
                    f"{np.dtype(d['dtype']).name:<8} {storage}; nonzero {nonzero:,}/{elements:,} "
                    f"({nonzero / max(elements, 1):.1%})")
    print(f"weights ({len(rows)} constant tensors; shapes as stored, FULLY_CONNECTED is out x in):")
    print("\n".join(rows) if rows else "  none readable")


def block_shape(detail):
    sparse = detail["sparsity_parameters"]
    rank = len(detail["shape"])
    blocks = [1] * rank
    for position, dim in enumerate(sparse["traversal_order"]):
        if dim >= rank:
            blocks[sparse["block_map"][dim - rank]] = sparse["dim_metadata"][position]["dense_size"]
    return blocks


def load_inputs(name, details):
    if name is None:
        rng = np.random.default_rng(0)
        return [rng.random((1,) + tuple(d["shape"][1:]), dtype=np.float32) for d in details]
    values = np.load(name, allow_pickle=False)
    expected = tuple(int(s) for s in details[0]["shape"][1:])
    if len(details) != 1:
        raise ValueError(f"--input feeds one input, but the model has {len(details)}")
    if values.shape == expected:
        values = values[None]
    if tuple(values.shape[1:]) != expected:
        raise ValueError(f"--input has shape {values.shape}; the model expects (n, {', '.join(map(str, expected))})")
    if values.dtype == np.uint8 and not np.issubdtype(details[0]["dtype"], np.integer):
        print("note: --input is uint8 but the model takes float: did the app forget pixels / 255?")
    return [values.astype(np.float32)]


def quantize(values, detail):
    scale, zero_point = detail["quantization"]
    dtype = detail["dtype"]
    values = values.reshape(detail["shape"])
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)
    return values.astype(dtype)


def dequantize(values, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


def quant_text(detail):
    scale, zero_point = detail["quantization"]
    return f", quantized: real = (q - {zero_point}) * {scale:.6g}" if scale else ""


def first_line(err):
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def fail(message, status=1):
    print(f"check_tflite: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
