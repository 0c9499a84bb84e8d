# %% [markdown]
# # Magnitude pruning on MNIST with tfprune
#
# Train a small CNN on the full MNIST, then prune it gradually (Zhu & Gupta
# 2017) to 80% and to 90% sparsity inside `model.fit`, strip the pruning
# wrappers, and compare accuracy and compressed size. Finally write a
# `.tflite` file for a phone, and plots of what pruning did.
#
# Run it from the repository root:
#
#     make tutorial                     # or: python tutorials/mnist_magnitude.py
#     python tutorials/mnist_magnitude.py --quick   # a one-minute smoke run
#
# The MNIST files are read from `--data-dir`, `$TFPRUNE_DATA_DIR/mnist`, or
# downloaded. Outputs go to `outputs/mnist_magnitude/`.

# %%
import argparse
import gzip
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune import plots  # noqa: E402
from tfprune.datasets import mnist  # noqa: E402
from tfprune.export import to_tflite  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__ or "Magnitude pruning on MNIST.")
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST .gz files")
    parser.add_argument("--output-dir", default="outputs/mnist_magnitude")
    parser.add_argument("--epochs", type=int, default=4, help="baseline training epochs")
    parser.add_argument("--prune-epochs", type=int, default=3, help="epochs of pruning per target")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--granularity", default="lamp", choices=["layer", "global", "lamp", "erk"],
                        help="where the sparsity goes; LAMP held accuracy best at 95%% (docs/howto/allocation.md)")
    parser.add_argument("--quick", action="store_true", help="2,000 images, one epoch each: a smoke run")
    return parser.parse_args(argv)


# %% [markdown]
# ## Data and the baseline model

# %%
def load(args):
    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data_dir)
    # The app feeds pixels / 255 as float32, shape (28, 28): see export/android/README.md.
    x_train = (x_train / 255.0).astype("float32")
    x_test = (x_test / 255.0).astype("float32")
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    return x_train, y_train, x_test, y_test


def baseline_model():
    return keras.Sequential(
        [
            keras.Input((28, 28), name="image"),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="mnist_cnn",
    )


def compile_model(model, learning_rate=1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def gzip_size(model):
    """Bytes of the saved .keras file after gzip: zeros compress, so pruning shows here."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.keras"
        model.save(path)
        return len(gzip.compress(path.read_bytes(), compresslevel=9))


# %% [markdown]
# ## Pruning: PolynomialDecay inside fit
#
# `prune_low_magnitude` copies the model and wraps each prunable layer. The
# `UpdatePruningStep` callback raises the sparsity from 0 to the target over
# the first 70% of the pruning steps, then the model keeps training at the
# target so it can recover. The target is over all four kernels together;
# `granularity="lamp"` (Lee et al. 2021) decides how much each layer keeps, so
# the 288-weight conv1 is not cut to 14 weights at 95% as per-layer pruning
# (`--granularity layer`) would: on the full data that costs 2.5 points of
# accuracy, where LAMP loses none (docs/howto/allocation.md).

# %%
def prune(baseline, target, x_train, y_train, args, batch_size, fit_history=None):
    steps = int(np.ceil(len(x_train) / batch_size)) * args.prune_epochs
    schedule = tfprune.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target, begin_step=0,
        end_step=max(int(steps * 0.7), 1), frequency=max(steps // 40, 1),
    )
    pruned = compile_model(
        tfprune.prune_low_magnitude(baseline, pruning_schedule=schedule, granularity=args.granularity), 5e-4)
    print(f"\nPruning to {target:.0%} over {steps} steps")
    history = tfprune.SparsityHistory(every_n_steps=max(steps // 30, 1))
    trained = pruned.fit(
        x_train, y_train, batch_size=batch_size, epochs=args.prune_epochs, validation_split=0.1,
        callbacks=[tfprune.UpdatePruningStep(), history],
    )
    # The schedule, and the sparsity the masks really held, side by side.
    plots.plot_schedule(schedule, steps, history=history,
                        path=pathlib.Path(args.output_dir) / f"schedule_{target:.0%}.png".replace("%", ""))
    if fit_history is not None:  # the per-epoch metrics, validation included, for a caller that compares runs
        fit_history.update(trained.history)
    return tfprune.strip_pruning(pruned)


# %% [markdown]
# ## Run everything

# %%
def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.prune_epochs = 1, 1
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load(args)
    batch_size = 128

    baseline = compile_model(baseline_model())
    print(f"Training the baseline on {len(x_train):,} images")
    baseline.fit(x_train, y_train, batch_size=batch_size, epochs=args.epochs, validation_split=0.1)
    results = [("baseline", baseline)]
    for target in args.targets:
        results.append((f"pruned {target:.0%}", prune(baseline, target, x_train, y_train, args, batch_size)))

    print("\nResults on the MNIST test set")
    print(f"{'model':<14}{'accuracy':>10}{'sparsity':>10}{'gzip .keras':>14}")
    for name, model in results:
        compile_model(model)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        sparsity = tfprune.sparsity_report(model).total_sparsity
        print(f"{name:<14}{accuracy:>10.4f}{sparsity:>10.1%}{gzip_size(model):>13,}B")

    final_name, final = results[-1]
    print(f"\n{tfprune.sparsity_report(final)}")
    plots.plot_sparsity(final, path=out / "sparsity.png")
    plots.plot_weight_histograms(baseline, final, path=out / "weights.png")
    final.save(out / "mnist_pruned.keras")

    # %% [markdown]
    # ## A file for the phone
    #
    # `to_tflite` quantizes to int8 (calibrated on 300 training images), checks the
    # file with the LiteRT interpreter against the Keras model, and only then writes it.
    # Unstructured int8 weights stay dense in the file (XNNPACK cannot run them sparse);
    # see `benchmarks/bench_export_size.py` for block pruning, which gives small files.

    # %%
    tflite_path = out / "mnist_pruned_int8.tflite"
    report = to_tflite(final, tflite_path, quantization="int8", representative_data=x_train[:300],
                       sample_data=x_test[:500], latency_runs=50)
    agreement = report.agreement["default"]["top1_agreement"]
    print(f"\nWrote {out / 'mnist_pruned.keras'} and {tflite_path} ({report.size_bytes:,} bytes, "
          f"{report.gzip_bytes:,} gzipped); the int8 file agrees with Keras on {agreement:.1%} of 500 test "
          f"images; figures: {', '.join(sorted(p.name for p in out.glob('*.png')))}")
    return results


if __name__ == "__main__":
    main()
