"""Models and data shared by the exporter tests (test_export, test_check_tflite, test_cli).

``synthetic_digits`` makes MNIST-shaped data anywhere, from a fixed seed: each of 10
classes is a random binary 28x28 pattern, and a sample is its pattern plus noise, so a
small MLP learns it in a few seconds. ``mnist_slice`` reads real MNIST, for the tests
whose point is real data.
"""

import os
import pathlib

import keras
import numpy as np
import pytest

SPARSITY = 0.9


def synthetic_digits(train=2000, test=300, seed=0):
    """Float32 images in [0, 1] of shape (n, 28, 28) and labels 0-9: class patterns plus noise."""
    rng = np.random.default_rng(seed)
    patterns = (rng.random((10, 28, 28)) < 0.3).astype("float32")

    def draw(count):
        labels = rng.integers(0, 10, count)
        images = 0.6 * patterns[labels] + 0.4 * rng.random((count, 28, 28), dtype=np.float32)
        return images.astype("float32"), labels.astype("int64")

    (x_train, y_train), (x_test, y_test) = draw(train), draw(test)
    return x_train, y_train, x_test, y_test


def mnist_slice(train=2000, test=300):
    """Float32 pixels / 255 of shape (n, 28, 28) and labels, from $TFPRUNE_DATA_DIR/mnist (skips without)."""
    folder = pathlib.Path(os.environ.get("TFPRUNE_DATA_DIR", "")) / "mnist"
    if not folder.is_dir():
        pytest.skip("MNIST not found: set TFPRUNE_DATA_DIR to the folder holding mnist/")
    from tfprune.datasets import mnist

    (x_train, y_train), (x_test, y_test) = mnist.load_data(str(folder))
    return ((x_train[:train] / 255.0).astype("float32"), y_train[:train],
            (x_test[:test] / 255.0).astype("float32"), y_test[:test])


def trained_mlp(x, y, hidden=64, epochs=2):
    """A 784-``hidden``-10 MLP (layers fc1, fc2) on (n, 28, 28) inputs, trained for ``epochs``."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28), name="image"),
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2"),
    ], name="mlp")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def zeroed(model, block=(1, 1), sparsity=SPARSITY):
    """A copy of ``model`` whose Dense kernels keep only the largest-magnitude blocks (Keras layout (in, out))."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if not isinstance(layer, keras.layers.Dense):
            continue
        kernel, bias = layer.get_weights()
        rows, cols = block
        padded = np.pad(np.abs(kernel), ((0, -kernel.shape[0] % rows), (0, -kernel.shape[1] % cols)))
        scores = padded.reshape(padded.shape[0] // rows, rows, -1, cols).mean(axis=(1, 3))
        keep = max(1, int(round(scores.size * (1 - sparsity))))
        mask = np.zeros(scores.size)
        mask[np.argsort(scores, axis=None)[-keep:]] = 1
        mask = np.repeat(np.repeat(mask.reshape(scores.shape), rows, 0), cols, 1)[: kernel.shape[0], : kernel.shape[1]]
        layer.set_weights([kernel * mask, bias])
    return copy


def kernel_nonzeros(model):
    """Nonzero counts of the Dense kernels, sorted."""
    return sorted(int(np.count_nonzero(layer.get_weights()[0])) for layer in model.layers
                  if isinstance(layer, keras.layers.Dense))


def constant_weights(report, rank=2):
    """The constant tensors of rank ``rank`` in an ``ExportReport`` (the weight matrices)."""
    return [t for t in report.tensors if t["constant"] and len(t["shape"]) == rank]


def leftovers(folder):
    """The names in ``folder``, sorted: what an export left behind."""
    return sorted(p.name for p in pathlib.Path(folder).iterdir())
