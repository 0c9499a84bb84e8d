"""Structured pruning: speed-up of the MNIST CNN, network slimming's MLP row, ResNet50 surgery time.

1. The VGG-style CNN of tutorials/mnist_structured.py (full MNIST), slimmed and pruned by
   APoZ and entropy, fine-tuned; accuracy, FLOPs and TFLite latency (float32, default
   delegate, 1 thread, batch 1, median over rounds, all models measured side by side).
   Target: <= 0.5 points of accuracy lost with >= 3x fewer FLOPs and >= 2x lower latency.
2. Network slimming's MNIST MLP (Liu et al. 2017): 784-500-300-10 with BatchNorm after
   each hidden Dense, trained with the L1 penalty on gamma, 80% of the hidden neurons
   removed by one global |gamma| threshold (the paper's rule) and, separately, 80% of each
   layer's, fine-tuned. Paper: 784-100-60-10, test error 1.43% -> 1.49%.
3. tfprune.surgery on keras.applications.ResNet50(weights=None) at 224x224: time to remove
   half of every prunable layer's channels. Target: under 30 s.

    python benchmarks/bench_structured.py            # writes benchmarks/results/structured.md
    python benchmarks/bench_structured.py --quick    # a smoke run on a slice of MNIST
"""

import argparse
import datetime
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune.structured as structured  # noqa: E402
import tfprune.surgery as surgery  # noqa: E402
from _sections import load_tutorial, write_section  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cnn(args):
    argv = ["--output-dir", str(ROOT / "outputs" / "bench_structured")] + (["--quick"] if args.quick else [])
    return load_tutorial("mnist_structured").main(argv)


def mlp_model():
    layers = keras.layers
    inputs = keras.Input((28, 28), name="image")
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate((500, 300), start=1):
        x = layers.Dense(units, use_bias=False, name=f"fc{i}")(x)
        x = layers.BatchNormalization(name=f"fc{i}_bn")(x)
        x = layers.ReLU(name=f"fc{i}_relu")(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="mlp_784_500_300_10")


def mlp(args):
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train, x_test = (x_train / 255.0).astype("float32"), (x_test / 255.0).astype("float32")
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    epochs, finetune = (1, 1) if args.quick else (args.mlp_epochs, args.mlp_finetune)
    tutorial = load_tutorial("mnist_structured")

    def train(model, n, lr=1e-3):
        tutorial.compile_model(model, lr)
        model.fit(x_train, y_train, batch_size=128, epochs=n, verbose=2)
        return model

    def error(model):
        tutorial.compile_model(model)
        return 1.0 - model.evaluate(x_test, y_test, verbose=0)[1]

    keras.utils.set_random_seed(0)
    baseline = train(mlp_model(), epochs)
    keras.utils.set_random_seed(0)
    sparse = train(structured.set_slimming_penalty(mlp_model(), l1=args.l1), epochs)  # from scratch, as the paper
    models = {"baseline": baseline, "sparse": sparse}
    for scope in ("global", "layer"):
        slim = structured.prune(sparse, "bn_scale", ratio=0.8, scope=scope, min_channels=4)
        models[f"slimmed_{scope}"] = train(structured.set_slimming_penalty(slim, l1=0), finetune, lr=3e-4)
    widths = lambda m: "-".join(["784"] + [str(m.get_layer(n).units) for n in ("fc1", "fc2", "logits")])
    rows = {name: (widths(m), error(m), m.count_params()) for name, m in models.items()}
    rows["epochs"] = (epochs, finetune)
    return rows


def resnet50(args):
    start = time.perf_counter()
    model = keras.applications.ResNet50(weights=None)
    built = time.perf_counter() - start
    start = time.perf_counter()
    cut = structured.select_channels(model, structured.l1_norm(model), ratio=0.5)
    scored = time.perf_counter() - start
    start = time.perf_counter()
    smaller = surgery.remove_channels(model, cut)
    removed = time.perf_counter() - start
    x = np.random.default_rng(0).random((1, 224, 224, 3)).astype("float32")
    assert smaller(x).shape == model(x).shape
    return {"build": built, "score": scored, "surgery": removed, "layers": len(cut),
            "params": (model.count_params(), smaller.count_params()),
            "flops": (structured.flops_report(model).total_flops, structured.flops_report(smaller).total_flops)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mlp-epochs", type=int, default=20)
    parser.add_argument("--mlp-finetune", type=int, default=10)
    parser.add_argument("--l1", type=float, default=1e-4)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    surgery_timing = resnet50(args)
    print(surgery_timing)
    mlp_rows = mlp(args)
    print(mlp_rows)
    rows = cnn(args)
    minutes = (time.perf_counter() - started) / 60
    command = "python benchmarks/bench_structured.py" + (" --quick" if args.quick else "")
    base = rows[0]
    lines = [
        "## Structured pruning: channels removed, measured speed-up" + (" (QUICK SMOKE RUN)" if args.quick else ""),
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}; {minutes:.1f} min on "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, Keras {keras.__version__}).",
        "",
        "### VGG-style CNN with BatchNorm, full MNIST (tutorials/mnist_structured.py)",
        "",
        "Baseline: conv 32-32-pool-64-64-pool-128, each conv followed by BN + ReLU, Flatten, dense 128 + BN + ReLU,",
        "dense 10; 3 epochs of Adam(1e-3). Slimming: 2 more epochs with the L1 penalty on gamma (lambda 1e-4),",
        "then 60% of all channels removed by one global |gamma| threshold (`prune(..., 'bn_scale', scope='global',",
        "min_channels=4)`). APoZ / entropy: 50% of each layer's channels removed using 2,000 training images",
        "(entropy: 100 bins). Every pruned model is fine-tuned for 2 epochs with Adam(5e-4). Test set: all",
        "10,000 images. Latency: float32 TFLite, LiteRT interpreter with its default delegate, 1 thread,",
        "batch 1, median ms per call over 15 rounds of 50 calls, the four models taking turns in each round.",
        "",
        "| model | conv1-conv5, fc1 widths | test accuracy | points lost | params | FLOPs (MACs) | FLOPs / | TFLite ms | speed-up | target met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lost = 100 * (base["accuracy"] - row["accuracy"])
        met = "" if row is base else ("yes" if lost <= 0.5 and row["flops_ratio"] >= 3 and row["speedup"] >= 2 else "no")
        lines.append(
            f"| {row['model']} | {'-'.join(map(str, row['widths']))} | {row['accuracy']:.4f} | {lost:+.2f} | "
            f"{row['params']:,} | {row['flops']:,} | {row['flops_ratio']:.2f}x | {row['latency_ms']:.3f} | "
            f"{row['speedup']:.2f}x | {met} |"
        )
    lines += [
        "",
        "Target: at most 0.5 points lost, at least 3x fewer FLOPs and 2x lower TFLite latency.",
        "",
        "### Network slimming's MNIST MLP (Liu et al. 2017, Table 4)",
        "",
        f"784-500-300-10 with BatchNorm + ReLU after each hidden Dense; Adam(1e-3), batch 128, "
        f"{mlp_rows['epochs'][0]} epochs. The slimmed run trains from scratch with the L1 penalty on gamma "
        f"(lambda {args.l1:g}) and removes 80% of the hidden neurons, either by one global |gamma| threshold "
        f"(`scope='global'`, the paper's rule) or 80% of each layer (`scope='layer'`, which gives the paper's "
        f"widths); each is fine-tuned for {mlp_rows['epochs'][1]} epochs with Adam(3e-4).",
        "",
        "| model | widths | params | test error |",
        "|---|---|---:|---:|",
        "| paper: baseline | 784-500-300-10 | | 1.43% |",
        "| paper: slimmed | 784-100-60-10 | | 1.49% |",
    ]
    labels = {"baseline": "baseline", "sparse": "with the L1 penalty, before pruning",
              "slimmed_global": "slimmed, one global threshold", "slimmed_layer": "slimmed, 80% of each layer"}
    for name, label in labels.items():
        widths, err, params = mlp_rows[name]
        lines.append(f"| tfprune: {label} | {widths} | {params:,} | {100 * err:.2f}% |")
    t = surgery_timing
    lines += [
        "",
        "### Surgery on ResNet50 (weights=None, 224x224x3, 1000 classes)",
        "",
        f"Half of the channels of every prunable layer ({t['layers']} layers; residual stages cut as coupled "
        "groups) chosen by L1 norm, then removed.",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| build the model | {t['build']:.1f} |",
        f"| score (l1_norm) and select | {t['score']:.1f} |",
        f"| `tfprune.surgery.remove_channels` | {t['surgery']:.1f} |",
        "",
        f"Params {t['params'][0]:,} -> {t['params'][1]:,}; FLOPs {t['flops'][0]:,} -> {t['flops'][1]:,}. "
        "Target: surgery under 30 s.",
    ]
    write_section("structured", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
