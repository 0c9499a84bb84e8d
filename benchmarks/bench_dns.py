"""Dynamic network surgery on MNIST: the paper's table, reproduced side by side with magnitude pruning.

Runs tutorials/mnist_dns.py (LeNet-300-100 and Caffe's LeNet-5 on the full
MNIST) and writes benchmarks/results/dns.md: compression and test error of
the paper (Guo et al. 2016, Table 1), of tfprune's dynamic surgery, and of
tfprune's magnitude pruning at the same per-layer sparsities.

    python benchmarks/bench_dns.py           # about 20 minutes on 2 cores
    python benchmarks/bench_dns.py --quick   # a smoke run: 2,000 images, one epoch
"""

import argparse
import datetime
import platform
import sys
import tempfile
import time

from _sections import load_tutorial, write_section

TARGETS = {"lenet_300_100": 50, "lenet5": 100}  # minimum compression; error at most baseline + 0.1 points
NAMES = {"lenet_300_100": "LeNet-300-100", "lenet5": "LeNet-5 (Caffe)"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args, rest = parser.parse_known_args(argv)
    dns = load_tutorial("mnist_dns")
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        rows = dns.main(rest + ["--output-dir", out] + (["--quick"] if args.quick else []))
    minutes = (time.time() - start) / 60
    command = "python benchmarks/bench_dns.py" + (" --quick" if args.quick else "") + "".join(f" {a}" for a in rest)
    lines = [
        "## Dynamic network surgery: the paper's MNIST table" + (" (QUICK SMOKE RUN)" if args.quick else ""),
        "",
        f"Command: `{command}` ({datetime.date.today()}; {minutes:.1f} min on this 2-core machine, "
        f"Python {platform.python_version()}). Full MNIST; test error on all 10,000 test images. "
        "Each network is trained dense (Adam), then `tfprune.dynamic_surgery` runs from the trained "
        "weights with per-layer `c` from `tfprune.dynamic_surgery_c_for_sparsity`, chosen so that the first mask update "
        "keeps `kept_scale` times the paper's per-layer fractions (splicing and weight decay move it from "
        "there), SGD with momentum 0.9, a cosine learning rate from 0.01 and decoupled weight decay; masks "
        "stop changing after `stop_fraction` of the steps (`iter_stop`). Settings per network (the "
        "tutorial's `SETTINGS`) are below. Magnitude pruning: same start, steps and optimizer, each layer "
        "pruned by PolynomialDecay up to `iter_stop` to the sparsity surgery reached in it. Compression "
        "counts every parameter, biases included (surgery masks biases, as the authors' code does; "
        "magnitude pruning does not).",
        "",
        "| network | kept_scale | weight_decay | surgery epochs | stop_fraction |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row["settings"]
        lines.append(f"| {NAMES[row['model']]} | {s['kept_scale']} | {s['weight_decay']:g} | "
                     f"{s['surgery_epochs']} | {s['stop_fraction']} |")
    lines += [
        "",
        "| network | method | parameters | nonzero | compression | test error | error vs own baseline | wall time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for row in rows:
        name, paper = row["model"], dns.PAPER[row["model"]]
        seconds = row["seconds"]
        lines += [
            f"| {NAMES[name]} | paper: reference | {row['params']:,} | | 1x | {paper['error_before']:.2f}% | | |",
            f"| {NAMES[name]} | paper: dynamic surgery | | | {paper['compression']}x | {paper['error_after']:.2f}% "
            f"| {paper['error_after'] - paper['error_before']:+.2f} | |",
            f"| {NAMES[name]} | tfprune: dense baseline | {row['params']:,} | {row['params']:,} | 1x "
            f"| {row['error_baseline']:.2f}% | | {seconds['baseline']:.0f} s |",
            f"| {NAMES[name]} | tfprune: dynamic surgery | {row['params']:,} | {row['nonzero']:,} "
            f"| {row['compression_dns']:.1f}x | {row['error_dns']:.2f}% "
            f"| {row['error_dns'] - row['error_baseline']:+.2f} | {seconds['surgery']:.0f} s |",
            f"| {NAMES[name]} | tfprune: magnitude pruning, same sparsities | {row['params']:,} | "
            f"| {row['compression_magnitude']:.1f}x | {row['error_magnitude']:.2f}% "
            f"| {row['error_magnitude'] - row['error_baseline']:+.2f} | {seconds['magnitude']:.0f} s |",
        ]
        met = row["compression_dns"] >= TARGETS[name] and row["error_dns"] - row["error_baseline"] <= 0.1
        verdicts.append(
            f"- {NAMES[name]}: target >= {TARGETS[name]}x with at most +0.10 points of error: measured "
            f"{row['compression_dns']:.1f}x, {row['error_dns'] - row['error_baseline']:+.2f} points: "
            f"**{'met' if met else 'not met'}**. Fraction kept per layer (kernels): "
            + ", ".join(f"{k} {v:.1%}" for k, v in row["kept_per_layer"].items())
            + "; paper: " + ", ".join(f"{k} {v:.1%}" for k, v in dns.PAPER_KEPT[name].items()) + "."
        )
        history = row["history"]
        if history:
            last = history[-1]
            verdicts.append(
                f"  Over the surgery, {last['pruned']:,} connections were cut and {last['spliced']:,} "
                "spliced back (counted at every mask update)."
            )
    lines += [""] + verdicts
    write_section("dns", lines)
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
