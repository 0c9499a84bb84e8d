# %% [markdown]
# # Structured pruning on MNIST: fewer channels, a faster model
#
# Unstructured zeros shrink a file, but phones run dense kernels: to make a model faster,
# whole channels must go. This tutorial trains a small VGG-style CNN with BatchNorm on
# MNIST and removes channels three ways:
#
# * **network slimming** (Liu et al. 2017): an L1 penalty on the BatchNorm scales drives
#   unimportant gammas to zero; then the channels with the smallest |gamma| across the
#   whole network are removed and the network is fine-tuned;
# * **APoZ** (Hu et al. 2016): channels that are mostly zero after their ReLU go;
# * **entropy** (Luo & Wu 2017): channels whose pooled output hardly varies go.
#
# It prints accuracy, parameters, FLOPs and TFLite latency before and after, and writes
# the `.tflite` files. Run it from the repository root:
#
#     python tutorials/mnist_structured.py            # about 15 minutes on 2 cores
#     python tutorials/mnist_structured.py --quick    # a smoke run on 2,000 images
#
# MNIST is read from `--data-dir`, `$TFPRUNE_DATA_DIR/mnist`, or downloaded. Outputs go
# to `outputs/mnist_structured/`.

# %%
import argparse
import os
import pathlib
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfprune.structured as structured  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402
from tfprune.export import run_tflite, to_tflite  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Structured (channel) pruning on MNIST.")
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST .gz files")
    parser.add_argument("--output-dir", default="outputs/mnist_structured")
    parser.add_argument("--epochs", type=int, default=3, help="baseline training epochs")
    parser.add_argument("--sparsity-epochs", type=int, default=2, help="epochs with the L1 penalty on gamma")
    parser.add_argument("--l1", type=float, default=1e-4, help="network slimming's lambda")
    parser.add_argument("--slim-ratio", type=float, default=0.6, help="fraction of all channels removed by |gamma|")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of each layer removed by APoZ / entropy")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=2000, help="images for APoZ and entropy")
    parser.add_argument("--latency-rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="2,000 images, one epoch each: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = args.sparsity_epochs = args.finetune_epochs = 1
        args.calibration, args.latency_rounds = 256, 3
    return args


# %% [markdown]
# ## Data and the baseline model
#
# A VGG-style CNN: two 3x3 convolutions per stage, each followed by BatchNormalization
# and ReLU, max-pooling between stages, then Flatten -> Dense -> BN -> ReLU -> Dense.

# %%
def load(args):
    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data_dir)
    x_train = (x_train / 255.0).astype("float32")
    x_test = (x_test / 255.0).astype("float32")
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    return x_train, y_train, x_test, y_test


def vgg_model(widths=(32, 32, 64, 64, 128), hidden=128):
    def conv_bn_relu(x, filters, name):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        # momentum 0.9: the moving statistics settle within a short fine-tuning run
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((28, 28), name="image")
    x = keras.layers.Reshape((28, 28, 1), name="channel")(inputs)
    x = conv_bn_relu(x, widths[0], "conv1")
    x = conv_bn_relu(x, widths[1], "conv2")
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = conv_bn_relu(x, widths[2], "conv3")
    x = conv_bn_relu(x, widths[3], "conv4")
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = conv_bn_relu(x, widths[4], "conv5")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden, use_bias=False, name="fc1")(x)
    x = keras.layers.ReLU(name="fc1_relu")(keras.layers.BatchNormalization(momentum=0.9, name="fc1_bn")(x))
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_vgg")


def compile_model(model, learning_rate=1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(model, data, epochs, learning_rate=1e-3, batch_size=128):
    x_train, y_train = data
    compile_model(model, learning_rate)
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=2)
    return model


# %% [markdown]
# ## Network slimming
#
# `set_slimming_penalty` returns a copy with `gamma_regularizer=L1(lambda)` on every
# BatchNormalization (its gradient is the paper's `lambda * sign(gamma)` step). After a few
# epochs with the penalty, `prune(..., "bn_scale", scope="global")` removes the channels
# whose |gamma| falls below one global percentile, never emptying a layer; then the
# penalty is dropped and the smaller network fine-tuned.

# %%
def slim(baseline, data, args):
    sparse = fit(structured.set_slimming_penalty(baseline, l1=args.l1), data, args.sparsity_epochs)
    pruned = structured.prune(sparse, "bn_scale", ratio=args.slim_ratio, scope="global", min_channels=4)
    pruned = structured.set_slimming_penalty(pruned, l1=0)
    return fit(pruned, data, args.finetune_epochs, learning_rate=5e-4)


# %% [markdown]
# ## APoZ and entropy
#
# Both look at each channel's post-activation output on calibration images (here the
# ReLU after the BatchNorm), gathered in one pass with a progress bar. Each layer loses
# `--ratio` of its channels; then the network is fine-tuned.

# %%
def by_activations(baseline, method, data, args):
    calibration = data[0][: args.calibration]
    pruned = structured.prune(baseline, method, ratio=args.ratio, data=calibration, min_channels=4)
    return fit(pruned, data, args.finetune_epochs, learning_rate=5e-4)


# %% [markdown]
# ## TFLite latency, measured side by side
#
# Each model is converted to a float32 `.tflite` by `tfprune.export.to_tflite` (which checks it
# against Keras) and timed by `tfprune.export.run_tflite`: the LiteRT interpreter with its
# default delegate, one thread, batch 1. The models take turns in every round, so machine
# noise hits all of them alike; we report the median per-call time over the rounds.

# %%
def export_float(model, path, sample):
    """A checked float32 `.tflite` file, converted and verified by tfprune's exporter."""
    return to_tflite(model, path, sample_data=sample, latency_runs=0).path


def tflite_latencies(paths, sample, rounds=15, calls=50, threads=1):
    """Median milliseconds per call for each .tflite file, the files taking turns every round."""
    times = [[] for _ in paths]
    for _ in range(rounds):
        for i, path in enumerate(paths):
            times[i].append(run_tflite(path, sample, repeats=calls, num_threads=threads).latency_ms)
    return [statistics.median(t) for t in times]


# %% [markdown]
# ## Run everything

# %%
def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load(args)
    data = (x_train, y_train)

    print(f"Training the baseline on {len(x_train):,} images")
    baseline = fit(vgg_model(), data, args.epochs)
    results = {"baseline": baseline}
    print("\nNetwork slimming")
    results["slimming"] = slim(baseline, data, args)
    for method in ("apoz", "entropy"):
        print(f"\nPruning by {method}")
        results[method] = by_activations(baseline, method, data, args)

    print(f"\n{structured.compare(baseline, results['slimming'])}")
    paths = [export_float(model, out / f"mnist_{name}.tflite", x_test[:100]) for name, model in results.items()]
    latencies = tflite_latencies(paths, x_test[:1], rounds=args.latency_rounds)
    rows = []
    base_report = structured.flops_report(baseline)
    print("\nResults on the MNIST test set (TFLite: float32, 1 thread, batch 1, median)")
    print(f"{'model':<10}{'accuracy':>10}{'params':>11}{'FLOPs':>13}{'FLOPs /':>9}{'latency ms':>12}{'speed-up':>10}")
    for (name, model), latency, path in zip(results.items(), latencies, paths):
        compile_model(model)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        report = structured.flops_report(model)
        row = {
            "model": name, "accuracy": float(accuracy), "params": report.total_params, "flops": report.total_flops,
            "flops_ratio": base_report.total_flops / report.total_flops, "latency_ms": latency,
            "speedup": latencies[0] / latency, "tflite": str(path),
            "widths": [model.get_layer(n).output.shape[-1] for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1")],
        }
        rows.append(row)
        print(f"{name:<10}{accuracy:>10.4f}{row['params']:>11,}{row['flops']:>13,}{row['flops_ratio']:>8.2f}x"
              f"{latency:>12.3f}{row['speedup']:>9.2f}x")
    print(f"\nWrote {', '.join(str(p) for p in paths)}")
    return rows


if __name__ == "__main__":
    main()
