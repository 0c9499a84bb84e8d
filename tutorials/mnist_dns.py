# %% [markdown]
# # Dynamic network surgery on MNIST
#
# Magnitude pruning never takes back a mistake. Dynamic network surgery (Guo,
# Yao & Chen 2016) prunes *and splices*: the weights stay dense, the forward
# pass uses `W * T` for a 0/1 mask `T`, and every weight keeps learning, so a
# connection cut too early comes back when it grows. The paper compressed
# LeNet-5 108x and LeNet-300-100 56x with no accuracy lost.
#
# This tutorial trains both networks on the full MNIST, applies
# `tfprune.dynamic_surgery` to the trained models, and compares the result with
# tfprune's own magnitude pruning at the same per-layer sparsities.
#
#     python tutorials/mnist_dns.py                     # both networks, about 20 minutes on 2 cores
#     python tutorials/mnist_dns.py --model lenet_300_100
#     python tutorials/mnist_dns.py --quick             # a smoke run on 2,000 images
#
# MNIST is read from `--data-dir`, `$TFPRUNE_DATA_DIR/mnist`, or downloaded.
# Outputs go to `outputs/mnist_dns/`.

# %%
import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402

BATCH = 64  # the batch size of the Caffe LeNet solvers the paper used

# The paper's per-layer fractions of parameters kept (Guo et al. 2016, Tables 2 and 3).
PAPER_KEPT = {
    "lenet_300_100": {"fc1": 0.018, "fc2": 0.018, "fc3": 0.055},
    "lenet5": {"conv1": 0.142, "conv2": 0.031, "fc1": 0.007, "fc2": 0.043},
}
# Surgery settings per network, each overridable from the command line.
# kept_scale: `c` is chosen so that the first mask update keeps this multiple of the paper's per-layer
#   rates. Splicing then brings connections back, most of all in LeNet-5's small conv1 and fc2.
# weight_decay: SGD's decoupled decay. The thresholds a and b are fixed from the starting weights,
#   so decay keeps pruning after the first update: weights the loss does not hold up sink under a.
#   LeNet-300-100 therefore starts lenient and is pruned gradually, which costs less accuracy than
#   one hard cut (docs/howto/dns.md has the comparison). The authors' Caffe solvers also decayed
#   weights (L2 5e-4 under momentum 0.9, about 5e-3 in decoupled terms).
# stop_fraction: masks stay fixed after this fraction of the surgery steps (iter_stop).
SETTINGS = {
    "lenet_300_100": {"kept_scale": 2.5, "weight_decay": 3e-3, "surgery_epochs": 48, "stop_fraction": 0.4},
    "lenet5": {"kept_scale": 0.5, "weight_decay": 0.0, "surgery_epochs": 24, "stop_fraction": 0.6},
}
PAPER = {  # compression and test error (reference -> pruned), from the paper's Table 1
    "lenet_300_100": {"compression": 56, "error_before": 2.28, "error_after": 1.99},
    "lenet5": {"compression": 108, "error_before": 0.91, "error_after": 0.91},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Dynamic network surgery on MNIST.")
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST .gz files")
    parser.add_argument("--output-dir", default="outputs/mnist_dns")
    parser.add_argument("--model", choices=("lenet_300_100", "lenet5", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs")
    # These four default to the network's entry in SETTINGS.
    parser.add_argument("--surgery-epochs", type=int, default=None, help="epochs of surgery")
    parser.add_argument("--stop-fraction", type=float, default=None,
                        help="masks stay fixed after this fraction of the surgery steps (iter_stop)")
    parser.add_argument("--kept-scale", type=float, default=None,
                        help="multiplies the paper's per-layer fractions kept when choosing c")
    parser.add_argument("--weight-decay", type=float, default=None, help="decoupled weight decay of the surgery")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="surgery optimizer: SGD(momentum 0.9) or AdamW, cosine-decayed from --lr")
    parser.add_argument("--lr", type=float, default=0.01, help="initial learning rate of the surgery")
    parser.add_argument("--quick", action="store_true", help="2,000 images, one epoch each: a smoke run")
    return parser.parse_args(argv)


# %% [markdown]
# ## Data and the two networks
#
# LeNet-300-100 is a 784-300-100-10 perceptron; LeNet-5 is Caffe's version
# (conv 20@5x5, max-pool, conv 50@5x5, max-pool, dense 500, dense 10:
# 431,080 parameters), the one the paper pruned.

# %%
def load(args):
    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data_dir)
    x_train = (x_train / 255.0).astype("float32")
    x_test = (x_test / 255.0).astype("float32")
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    return x_train, y_train, x_test, y_test


def lenet_300_100():
    return keras.Sequential([
        keras.Input((28, 28), name="image"), keras.layers.Flatten(),
        keras.layers.Dense(300, activation="relu", name="fc1"),
        keras.layers.Dense(100, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="fc3"),
    ], name="lenet_300_100")


def lenet5():
    return keras.Sequential([
        keras.Input((28, 28), name="image"), keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(20, 5, name="conv1"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(50, 5, name="conv2"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(500, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2"),
    ], name="lenet5")


def compile_model(model, optimizer):
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def error(model, x, y):
    compile_model(model, "sgd")
    return 100.0 * (1.0 - model.evaluate(x, y, batch_size=1000, verbose=0)[1])


def compression(model):
    report = tfprune.sparsity_report(model)
    return report.total_params / max(report.total_nonzero, 1), report


# %% [markdown]
# ## Surgery
#
# `c` sets how much of a layer is cut. The authors tune it by hand per layer;
# `tfprune.dynamic_surgery_c_for_sparsity` gives, for each layer, the `c` whose first mask
# update prunes a chosen multiple of the paper's own per-layer rates.
# SGD with momentum then trains all weights with the gradient of `W * T`;
# masks are updated with probability `(1 + gamma * iter) ** -1` until
# `iter_stop`, after which the network only recovers. Weight decay keeps
# pulling unneeded weights under the fixed threshold `a` while masks change.

# %%
def settings(name, args):
    """The network's SETTINGS, with any given on the command line in their place."""
    chosen = dict(SETTINGS[name])
    for key in chosen:
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    return chosen


def surgery(baseline, name, s, x_train, y_train, args):
    steps = int(np.ceil(len(x_train) / BATCH)) * s["surgery_epochs"]
    kept = {layer: min(1.0, rate * s["kept_scale"]) for layer, rate in PAPER_KEPT[name].items()}
    c = tfprune.dynamic_surgery_c_for_sparsity(baseline, {layer: 1.0 - k for layer, k in kept.items()})
    print(f"\n{name}: surgery for {steps} steps, {s}, c = " + ", ".join(f"{k} {v:.2f}" for k, v in c.items()))
    model = tfprune.dynamic_surgery(baseline, c=c, iter_stop=int(steps * s["stop_fraction"]), seed=0)
    compile_model(model, surgery_optimizer(args, steps, s["weight_decay"]))
    history = SurgeryLog()
    model.fit(x_train, y_train, batch_size=BATCH, epochs=s["surgery_epochs"], verbose=2,
              callbacks=[tfprune.UpdatePruningStep(), history])
    return tfprune.strip_pruning(model), history


def surgery_optimizer(args, steps, weight_decay):
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps)
    if args.optimizer == "adam":
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay or None)


class SurgeryLog(keras.callbacks.Callback):
    """Connections pruned and spliced back so far, per epoch."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        wrappers = [layer for layer in self.model.layers if isinstance(layer, tfprune.DynamicSurgery)]
        self.rows.append({
            "epoch": epoch + 1,
            "pruned": int(sum(w.pruned_count.numpy() for w in wrappers)),
            "spliced": int(sum(w.spliced_count.numpy() for w in wrappers)),
            "kept": float(np.mean(np.concatenate(
                [np.ravel(m.numpy()) for w in wrappers for m in w.masks]))),
        })


# %% [markdown]
# ## The comparison: magnitude pruning at the same sparsities
#
# Same start, same number of steps, same optimizer; each layer pruned by
# tfprune's gradual magnitude pruning to the sparsity surgery reached in it.

# %%
def magnitude(baseline, s, surgery_model, x_train, y_train, args):
    steps = int(np.ceil(len(x_train) / BATCH)) * s["surgery_epochs"]
    rows = {r["layer"]: r for r in tfprune.sparsity_report(surgery_model).rows if r["weight"] != "bias"}

    def wrap(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if layer.name not in rows:
            return clone
        schedule = tfprune.PolynomialDecay(0.0, rows[layer.name]["sparsity"], 0,
                                           int(steps * s["stop_fraction"]), frequency=max(steps // 60, 1))
        return tfprune.prune_low_magnitude(clone, pruning_schedule=schedule)

    model = keras.models.clone_model(baseline, clone_function=wrap)
    for source, target in zip(baseline.layers, model.layers):
        inner = getattr(target, "layer", target)
        inner.set_weights(source.get_weights())
    compile_model(model, surgery_optimizer(args, steps, s["weight_decay"]))
    model.fit(x_train, y_train, batch_size=BATCH, epochs=s["surgery_epochs"], verbose=0,
              callbacks=[tfprune.UpdatePruningStep()])
    return tfprune.strip_pruning(model)


# %% [markdown]
# ## Run everything

# %%
def run(name, data, args, out):
    x_train, y_train, x_test, y_test = data
    s = settings(name, args)
    keras.utils.set_random_seed(0)
    start = time.time()
    baseline = compile_model({"lenet_300_100": lenet_300_100, "lenet5": lenet5}[name](),
                             keras.optimizers.Adam(1e-3))
    print(f"\nTraining {name} on {len(x_train):,} images")
    baseline.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, verbose=2)
    base_seconds = time.time() - start
    start = time.time()
    pruned, log = surgery(baseline, name, s, x_train, y_train, args)
    surgery_seconds = time.time() - start
    start = time.time()
    compared = magnitude(baseline, s, pruned, x_train, y_train, args)
    magnitude_seconds = time.time() - start
    ratio, report = compression(pruned)
    print(f"\n{report}")
    pruned.save(out / f"{name}_dns.keras")
    row = {
        "model": name,
        "params": report.total_params,
        "nonzero": report.total_nonzero,
        "error_baseline": error(baseline, x_test, y_test),
        "error_dns": error(pruned, x_test, y_test),
        "compression_dns": ratio,
        "error_magnitude": error(compared, x_test, y_test),
        "compression_magnitude": compression(compared)[0],
        "settings": s,
        "kept_per_layer": {r["layer"]: 1.0 - r["sparsity"] for r in report.rows if r["weight"] != "bias"},
        "history": log.rows,
        "seconds": {"baseline": base_seconds, "surgery": surgery_seconds, "magnitude": magnitude_seconds},
    }
    print(f"{name}: error {row['error_baseline']:.2f}% -> {row['error_dns']:.2f}% at {ratio:.0f}x "
          f"(magnitude pruning, same sparsities: {row['error_magnitude']:.2f}% at "
          f"{row['compression_magnitude']:.0f}x); paper: {PAPER[name]['error_before']}% -> "
          f"{PAPER[name]['error_after']}% at {PAPER[name]['compression']}x")
    return row


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.surgery_epochs = 1, 1
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load(args)
    names = ["lenet_300_100", "lenet5"] if args.model == "both" else [args.model]
    rows = [run(name, data, args, out) for name in names]
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nWrote {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    main()
