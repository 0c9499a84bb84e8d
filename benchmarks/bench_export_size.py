"""TFLite file size of a pruned LeNet-300-100: block-sparse int8 vs unstructured vs dense float.

Trains LeNet-300-100 on the full MNIST, prunes it to 95% with tfprune twice
(blocks of (16, 1), the shape XNNPACK runs sparse in int8, and unstructured),
exports each with tfprune.export.to_tflite, and runs every file on all
10,000 test images with the LiteRT interpreter. Sizes are compared with the
dense float32 file and with the floor of an int8 file: one byte per nonzero
weight.

    python benchmarks/bench_export_size.py          # writes benchmarks/results/export_size.md
    python benchmarks/bench_export_size.py --quick  # a smoke run: 1 + 2 epochs
"""

import argparse
import datetime
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402
from tfprune.export import run_tflite, to_tflite  # noqa: E402

from _sections import load_tutorial, write_section  # noqa: E402

BATCH = 128
TARGET = 0.95


# The DNS tutorial's LeNet-300-100, so that every benchmark trains the same network.
lenet_300_100 = load_tutorial("mnist_dns").lenet_300_100


def compile_model(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def prune(baseline, x, y, block_size, epochs, granularity):
    steps = int(np.ceil(len(x) / BATCH)) * epochs
    schedule = tfprune.PolynomialDecay(0.0, TARGET, begin_step=0, end_step=steps // 2,
                                       frequency=max(steps // (8 * epochs), 1))
    pruned = compile_model(tfprune.prune_low_magnitude(
        baseline, pruning_schedule=schedule, block_size=block_size, granularity=granularity), 3e-4)
    pruned.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=2, callbacks=[tfprune.UpdatePruningStep()])
    return compile_model(tfprune.strip_pruning(pruned), 3e-4)


def tflite_accuracy(path, report, x_test, y_test):
    """Top-1 accuracy of the file on every test image, in the configuration an app would get."""
    run = run_tflite(path, x_test, delegates=report.works_by_default, repeats=0)
    return float(np.mean(run.outputs[0].argmax(-1) == y_test)), run.configuration


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 baseline epoch, 2 pruning epochs")
    parser.add_argument("--epochs", type=int, default=10, help="baseline epochs")
    parser.add_argument("--prune-epochs", type=int, default=20, help="epochs per pruned model")
    parser.add_argument("--granularity", choices=("layer", "global"), default="global")
    parser.add_argument("--output-dir", default=None, help="keep the .tflite files here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.prune_epochs = 1, 2
    start = time.time()
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train, x_test = (x_train / 255.0).astype("float32"), (x_test / 255.0).astype("float32")
    calibration = x_train[np.random.default_rng(0).choice(len(x_train), 500, replace=False)]

    baseline = compile_model(lenet_300_100(), 1e-3)
    baseline.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, verbose=2)
    base_acc = baseline.evaluate(x_test, y_test, verbose=0)[1]
    blocks = prune(baseline, x_train, y_train, (16, 1), args.prune_epochs, args.granularity)
    unstructured = prune(baseline, x_train, y_train, (1, 1), args.prune_epochs, args.granularity)

    folder = pathlib.Path(args.output_dir or tempfile.mkdtemp(prefix="bench_export_size_"))
    folder.mkdir(parents=True, exist_ok=True)
    common = {"sample_data": x_test[:500], "latency_runs": 200}
    int8 = {"quantization": "int8", "representative_data": calibration}
    variants = [
        ("dense float32", baseline, {"sparse": False}),
        ("(16, 1) blocks, int8, per-tensor scales", blocks, dict(int8, per_channel=False)),
        ("(16, 1) blocks, int8, per-channel scales", blocks, dict(int8)),
        ("(16, 1) blocks, float32", blocks, {}),
        ("unstructured, int8, per-tensor scales", unstructured, dict(int8, per_channel=False)),
        ("unstructured, float32", unstructured, {}),
    ]
    rows = []
    for i, (name, model, options) in enumerate(variants):
        path = folder / f"{i}_{name.split(',')[0].strip('()').replace(', ', 'x').replace(' ', '_')}.tflite"
        report = to_tflite(model, path, **options, **common)
        accuracy, configuration = tflite_accuracy(path, report, x_test, y_test)
        keras_acc = model.evaluate(x_test, y_test, verbose=0)[1]
        nonzero = sum(int(np.count_nonzero(layer.kernel)) for layer in model.layers if hasattr(layer, "kernel"))
        rows.append((name, report, accuracy, configuration, keras_acc, nonzero))
        print(report, flush=True)

    dense_size = rows[0][1].size_bytes
    minutes = (time.time() - start) / 60
    command = "python benchmarks/bench_export_size.py" + (" --quick" if args.quick else "")
    lines = [
        "## TFLite file size: LeNet-300-100 pruned to 95%, full MNIST",
        "",
        f"Command: `{command}` ({datetime.date.today()}; {minutes:.1f} min on {os.cpu_count()} cores; "
        f"{rows[0][1].interpreter}). Baseline: {args.epochs} epochs of Adam(1e-3), batch {BATCH}. Each "
        f"pruned model: {args.prune_epochs} epochs from the baseline with Adam(3e-4), PolynomialDecay(0 -> 95%) "
        f"over the first half, `granularity=\"{args.granularity}\"`. Every file written by "
        "`tfprune.export.to_tflite` (default `sparse=\"auto\"`); int8 calibrated on 500 training images. "
        "Accuracy: the .tflite file run by the LiteRT interpreter on all 10,000 test images, in the "
        "configuration an app gets (default XNNPACK delegate when the file works there).",
        "",
        "Floor: one byte per nonzero kernel weight (biases and indices excluded). 'Works' means loads, runs and "
        "matches Keras.",
        "",
        "| model and export | bytes | gzip bytes | dense float / this | nonzero weights | bytes / floor | "
        "sparse encoding | works with XNNPACK | works without delegates | Keras accuracy | TFLite accuracy | "
        "points lost vs dense Keras |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for name, report, accuracy, configuration, keras_acc, nonzero in rows:
        lines.append(
            f"| {name} | {report.size_bytes:,} | {report.gzip_bytes:,} | {dense_size / report.size_bytes:.1f}x | "
            f"{nonzero:,} | {report.size_bytes / nonzero:.2f} | {'yes' if report.sparse_encoded else 'no'} | "
            f"{'yes' if report.runtime['default']['works'] else 'NO'} | "
            f"{'yes' if report.runtime['no_delegates']['works'] else 'NO'} | {keras_acc:.4f} | {accuracy:.4f} | "
            f"{100 * (base_acc - accuracy) + 0.0:+.2f} |"
        )
    lines += ["", f"Dense Keras baseline accuracy: {base_acc:.4f}.", ""]
    for name, report, *_ in rows:
        for alt in report.alternatives:
            lines.append(
                f"- {name}: `sparse=\"auto\"` did not write the sparse encoding ({alt['size_bytes']:,} bytes, "
                f"{alt['gzip_bytes']:,} gzipped, {dense_size / alt['size_bytes']:.1f}x smaller than dense float): "
                f"{alt['reason']}."
            )
    latency = [(name, report.runtime) for name, report, *_ in rows]
    lines += ["", "Latency, median of 200 single-image invokes on one thread, measured side by side in this run "
              "(ratios only: the machine is shared):", ""]
    base = latency[0][1]["default"]["latency_ms"]
    for name, runtime in latency:
        cells = []
        for key, label in (("default", "XNNPACK"), ("no_delegates", "no delegates")):
            r = runtime[key]
            cells.append(f"{label} {r['latency_ms'] / base:.2f}x" if r["works"] and r["latency_ms"] else
                         f"{label} fails")
        lines.append(f"- {name}: {', '.join(cells)} (1.00x = dense float32 with XNNPACK)")
    best = rows[1]
    lines += [
        "",
        f"Target: the int8 file at least 40x smaller than dense float, working under the default delegate, "
        f"losing at most 0.3 points. Measured: {dense_size / best[1].size_bytes:.1f}x, "
        f"{'works' if best[1].works_by_default else 'does NOT work'} with XNNPACK, "
        f"{100 * (base_acc - best[2]):+.2f} points.",
    ]
    write_section("export_size", lines)


if __name__ == "__main__":
    main()
