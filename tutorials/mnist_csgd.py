# %% [markdown]
# # Centripetal SGD on MNIST: prune a residual CNN without losing anything at the cut
#
# Score-based pruning removes channels and then has to fine-tune to recover. Centripetal SGD
# (C-SGD; Ding, Ding, Guo and Han, CVPR 2019) does the work before the cut: the filters of each
# layer are clustered, and training pulls the filters of a cluster together until they are
# identical. Then one filter per cluster is kept and the next layer's weights of the others are
# added onto it; since the channels were identical, the outputs do not change at all.
#
# This tutorial trains a small residual CNN (Conv-BN-ReLU blocks with residual Adds) on MNIST,
# clusters half the channels of every layer (the residual streams clustered alike), trains with
# the `CentripetalSGD` callback, cuts, shows that the accuracy before and after the cut is the
# same, and exports the smaller model with `tfprune.export.to_tflite`. Run it from the
# repository root:
#
#     python tutorials/mnist_csgd.py            # a few minutes on 2 cores
#     python tutorials/mnist_csgd.py --quick    # a smoke run on 2,000 images
#
# MNIST is read from `--data-dir`, `$TFPRUNE_DATA_DIR/mnist`, or downloaded. Outputs go to
# `outputs/mnist_csgd/`.

# %%
import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune.plots  # noqa: E402
import tfprune.structured as structured  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402
from tfprune.export import to_tflite  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Centripetal SGD on MNIST: a lossless cut of a residual CNN.")
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST .gz files")
    parser.add_argument("--output-dir", default="outputs/mnist_csgd")
    parser.add_argument("--epochs", type=int, default=None, help="baseline training epochs (2; quick: 1)")
    parser.add_argument("--csgd-epochs", type=int, default=None, help="epochs with CentripetalSGD (2; quick: 2)")
    parser.add_argument("--clusters", type=float, default=0.5, help="clusters per layer, as a fraction of its channels")
    parser.add_argument("--epsilon", type=float, default=None, help="centripetal strength per step (0.02; quick: 0.5)")
    parser.add_argument("--quick", action="store_true", help="2,000 images, a smoke run")
    args = parser.parse_args(argv)
    # 16 steps per epoch on the quick slice: a strong pull still makes the clusters identical (0.5**32)
    defaults = {"epochs": 1, "csgd_epochs": 2, "epsilon": 0.5} if args.quick else {"epochs": 2, "csgd_epochs": 2,
                                                                                  "epsilon": 0.02}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# %% [markdown]
# ## Data and a small residual CNN
#
# A stem convolution, a residual block (two Conv-BN with the stem added back), a strided stage
# with its own residual block, global average pooling and a Dense classifier. The convolutions
# whose outputs are added together form a *coupled group*: they must lose the same channels, so
# C-SGD clusters them alike.

# %%
def load(args):
    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data_dir)
    x_train = (x_train / 255.0).astype("float32")[..., None]
    x_test = (x_test / 255.0).astype("float32")[..., None]
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    return x_train, y_train, x_test, y_test


def residual_cnn(widths=(16, 32)):
    def conv_bn(x, filters, name, strides=1):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name)(x)
        return keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)

    def block(x, filters, name):
        y = keras.layers.ReLU(name=f"{name}a_relu")(conv_bn(x, filters, f"{name}a"))
        y = conv_bn(y, filters, f"{name}b")
        return keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([x, y]))

    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.ReLU(name="stem_relu")(conv_bn(inputs, widths[0], "stem"))
    x = block(x, widths[0], "block1")
    x = keras.layers.ReLU(name="down_relu")(conv_bn(x, widths[1], "down", strides=2))
    x = block(x, widths[1], "block2")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_resnet")


def compile_model(model, learning_rate=1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x, y):
    compile_model(model)
    return float(model.evaluate(x, y, verbose=0, batch_size=500)[1])


# %% [markdown]
# ## Clusters, then training with the centripetal pull
#
# `cluster_filters(model, 0.5)` runs k-means on the filters of every layer whose channels can be
# removed (the classifier's outputs cannot), with half as many clusters as channels; a residual
# stream is one set of points, so its convolutions get the same clusters. `CentripetalSGD` then
# runs after every optimizer step: each clustered weight (filters, BatchNorm gamma, beta and
# statistics) moves to its cluster's new mean, the step of the gradient averaged over the
# cluster, plus its old deviation times `1 - epsilon`. The deviations die away geometrically while
# the cluster means keep learning. `fit`'s history gets `csgd_cluster_distance` every epoch.

# %%
def train_csgd(baseline, clusters, data, args):
    model = keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    compile_model(model)
    csgd = structured.CentripetalSGD(clusters, epsilon=args.epsilon, every_n_steps=5)
    x_train, y_train = data
    model.fit(x_train, y_train, batch_size=128, epochs=args.csgd_epochs, verbose=2, callbacks=[csgd])
    return model, csgd


# %% [markdown]
# ## The cut: one channel per cluster, the others folded into the next layers
#
# `csgd_cut` returns a new, smaller model: the first channel of each cluster stays, and every layer
# reading the cluster's channels (the next convolution, both convolutions reading a residual
# stream, the classifier after the pooling) gets the sum of their input weights on the kept
# channel. No fine-tuning follows: the cut model computes what the trained model computed.

# %%
def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load(args)
    data = (x_train, y_train)

    print(f"Training the baseline on {len(x_train):,} images")
    baseline = compile_model(residual_cnn())
    baseline.fit(x_train, y_train, batch_size=128, epochs=args.epochs, verbose=2)
    clusters = structured.cluster_filters(baseline, args.clusters)
    print("Clusters per layer:", {name: len(c) for name, c in clusters.items()})

    print(f"\nTraining with CentripetalSGD (epsilon={args.epsilon})")
    trained, csgd = train_csgd(baseline, clusters, data, args)
    tfprune.plots.plot_cluster_distance(csgd, path=out / "csgd_distance.png")
    smaller = structured.csgd_cut(trained, clusters)

    before, after = trained.predict(x_test, verbose=0), smaller.predict(x_test, verbose=0)
    result = {
        "baseline_accuracy": accuracy(baseline, x_test, y_test),
        "csgd_accuracy": accuracy(trained, x_test, y_test),
        "cut_accuracy": accuracy(smaller, x_test, y_test),
        "max_logit_change": float(np.abs(before - after).max()),
        "changed_predictions": int((before.argmax(1) != after.argmax(1)).sum()),
        "cluster_distance": csgd.history["cluster_distance"],
        "flops": (structured.flops_report(trained).total_flops, structured.flops_report(smaller).total_flops),
        "params": (trained.count_params(), smaller.count_params()),
    }
    export = to_tflite(smaller, out / "mnist_csgd.tflite", sample_data=x_test[:100], latency_runs=0)
    result["tflite"] = export.path
    print(f"\nCluster distance: {result['cluster_distance'][0]:.3g} at the start, "
          f"{result['cluster_distance'][-1]:.3g} at the end")
    print(f"Test accuracy: baseline {result['baseline_accuracy']:.4f}, after C-SGD {result['csgd_accuracy']:.4f}, "
          f"after the cut {result['cut_accuracy']:.4f} (no fine-tuning)")
    print(f"The cut changed {result['changed_predictions']} of {len(x_test):,} predictions; largest logit change "
          f"{result['max_logit_change']:.2g}")
    print(f"Params {result['params'][0]:,} -> {result['params'][1]:,}; FLOPs {result['flops'][0]:,} -> "
          f"{result['flops'][1]:,}")
    print(f"Wrote {export.path} and {out / 'csgd_distance.png'}")
    return result


if __name__ == "__main__":
    main()
