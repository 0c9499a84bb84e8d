"""What running a .tflite file in a child process costs, against running it in this process.

Every load, run and timing loop of a .tflite file happens in a child process
(``tfprune.export._runtime.run_isolated``), so that a corrupt file crashing
LiteRT cannot take the user's process with it. This measures the price on a
trusted file: the same work (load, allocate, one sample, 100 timed invokes)
in this process and in the child, interleaved, median of several repeats.

    python benchmarks/bench_isolation.py [--quick]
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time


HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _sections import write_section  # noqa: E402
from export_helpers import synthetic_digits, trained_mlp, zeroed  # noqa: E402
from tfprune.export import _interpreter, _runtime, to_tflite  # noqa: E402


def in_process(path, configuration, samples, runs):
    interpreter = _interpreter.load(path, configuration)
    _interpreter.run(interpreter, samples)
    _interpreter.time_invokes(interpreter, runs, float("inf"))


def isolated(path, configuration, samples, runs):
    outcome = _runtime.run_isolated(path, configuration, samples, latency_runs=runs)
    assert outcome["loads"] and not outcome["error"], outcome["error"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    repeats, runs = (3, 20) if args.quick else (9, 100)
    x, y, _, _ = synthetic_digits(train=300, test=10)
    model = zeroed(trained_mlp(x, y, hidden=64, epochs=1), block=(16, 1), sparsity=0.5)
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "sparse_int8.tflite"
        to_tflite(model, path, quantization="int8", representative_data=x[:50], latency_runs=0)
        size = path.stat().st_size
        samples = [x[:1]]
        times = {"in this process": [], "in a child process": []}
        for _ in range(repeats):  # interleaved, so both see the same machine
            for label, how in (("in this process", in_process), ("in a child process", isolated)):
                start = time.perf_counter()
                for configuration in _runtime.CONFIGURATIONS:
                    how(path, configuration, samples, runs)
                times[label].append(time.perf_counter() - start)
    median = {label: statistics.median(values) for label, values in times.items()}
    extra = median["in a child process"] - median["in this process"]
    command = "python benchmarks/bench_isolation.py" + (" --quick" if args.quick else "")
    lines = [
        "## Running a .tflite file in a child process",
        "",
        f"`{command}`: a {size:,}-byte sparse int8 MLP, both interpreter configurations, each loaded, run on "
        f"one sample and timed over {runs} invokes; median of {repeats} interleaved repeats.",
        "",
        "| where | seconds for both configurations |",
        "|---|---|",
        *(f"| {label} | {value:.3f} |" for label, value in median.items()),
        "",
        f"The child adds {extra:.3f} s for the two configurations ({extra / 2:.3f} s each: starting Python "
        "with numpy and LiteRT, and passing the samples and outputs as files). `inspect_tflite`, `run_tflite` "
        "and the exporter's probe pay it once per configuration. The exporter paid about as much before: it "
        "already prepared each file in a child (for crashes in `allocate_tensors`) and then loaded it again "
        "in-process; now the child does the whole probe.",
    ]
    print("\n".join(lines))
    write_section("isolation", lines)


if __name__ == "__main__":
    main()
