"""Accuracy vs sparsity: LeNet-300-100 on the full MNIST, gradual magnitude pruning.

A dense baseline is trained once; each target sparsity starts from it,
prunes with PolynomialDecay (Zhu & Gupta 2017) over the first half of the
pruning epochs and fine-tunes at the target for the rest, once per layer
(every kernel at the target) and once globally (one threshold). Accuracy is on
the 10,000 test images. Han et al. (2015) kept LeNet-300-100's accuracy at
92% sparsity (1.64% -> 1.59% error).

    python benchmarks/bench_accuracy.py          # writes benchmarks/results/accuracy.md
    python benchmarks/bench_accuracy.py --quick  # 1 epoch each, a smoke run
"""

import argparse
import datetime
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402

from _sections import load_tutorial, write_section  # noqa: E402

TARGETS = (0.8, 0.9, 0.95, 0.98)
GRANULARITIES = ("layer", "global")
BATCH = 128


# The DNS tutorial's LeNet-300-100, so that every benchmark trains the same network.
lenet_300_100 = load_tutorial("mnist_dns").lenet_300_100


def compile_model(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=20, help="baseline epochs")
    parser.add_argument("--prune-epochs", type=int, default=16, help="epochs per sparsity target")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.prune_epochs = 1, 2
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train, x_test = x_train.astype("float32") / 255.0, x_test.astype("float32") / 255.0

    start = time.time()
    baseline = compile_model(lenet_300_100(), 1e-3)
    baseline.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, verbose=2)
    base_acc = baseline.evaluate(x_test, y_test, verbose=0)[1]
    rows = [("dense", 0.0, base_acc, 0.0, "")]
    steps_per_epoch = int(np.ceil(len(x_train) / BATCH))
    for granularity in GRANULARITIES:
        for target in TARGETS:
            total = steps_per_epoch * args.prune_epochs
            schedule = tfprune.PolynomialDecay(0.0, target, begin_step=0, end_step=total // 2,
                                               frequency=steps_per_epoch // 4)
            pruned = compile_model(tfprune.prune_low_magnitude(
                baseline, pruning_schedule=schedule, granularity=granularity), 3e-4)
            pruned.fit(x_train, y_train, batch_size=BATCH, epochs=args.prune_epochs, verbose=2,
                       callbacks=[tfprune.UpdatePruningStep()])
            final = compile_model(tfprune.strip_pruning(pruned), 3e-4)
            acc = final.evaluate(x_test, y_test, verbose=0)[1]
            kernels = tfprune.sparsity_report(final).rows
            sparsity = 1.0 - sum(r["nonzero"] for r in kernels) / sum(r["params"] for r in kernels)
            per_layer = ", ".join(f"{r['layer']} {r['sparsity']:.1%}" for r in kernels)
            rows.append((granularity, target, acc, sparsity, per_layer))
            print(f"{granularity} {target:.0%}: accuracy {acc:.4f} (baseline {base_acc:.4f}); {per_layer}",
                  flush=True)
    minutes = (time.time() - start) / 60

    command = "python benchmarks/bench_accuracy.py" + (" --quick" if args.quick else "")
    lines = [
        "## Accuracy vs sparsity: LeNet-300-100, full MNIST",
        "",
        f"Command: `{command}` ({datetime.date.today()}; {minutes:.1f} min on {os.cpu_count()} cores). "
        f"Baseline: {args.epochs} epochs of Adam(1e-3), batch {BATCH}. Each target: {args.prune_epochs} "
        "epochs from the baseline with Adam(3e-4), PolynomialDecay(0 -> target) over the first half, "
        "then fine-tuning at the target. Test set: all 10,000 images.",
        "",
        "`layer`: every kernel pruned to the target. `global`: one magnitude threshold across the three",
        "kernels (Han et al. 2015), so the small output layer keeps more of its weights.",
        "",
        "| granularity | target | measured kernel sparsity | per layer | test accuracy | points lost |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for granularity, target, acc, sparsity, per_layer in rows:
        lines.append(f"| {granularity} | {target:.0%} | {sparsity:.2%} | {per_layer} | {acc:.4f} | "
                     f"{100 * (base_acc - acc):+.2f} |")
    lines += ["", "Target: at most 0.2 points lost at 95% (Han et al. 2015 kept accuracy at 92%)."]
    write_section("accuracy", lines)


if __name__ == "__main__":
    main()
