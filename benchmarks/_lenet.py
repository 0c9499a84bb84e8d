"""The MNIST networks of the sparse-training papers, and MNIST as they feed it.

LeNet-300-100 (LeCun et al. 1998): 784-300-100-10, ReLU, 266,200 weights in its
three kernels. LeNet-5-Caffe, the Caffe example network SNIP and the lottery
ticket follow-ups use: conv 5x5x20, max-pool 2, conv 5x5x50, max-pool 2,
dense 500, dense 10 (430,500 weights in its four kernels).
"""

import keras
import numpy as np

from tfprune.datasets import mnist


def load_mnist(flat, data_dir=None):
    """``(x_train, y_train), (x_test, y_test)`` scaled to [0, 1]; flat 784 vectors or 28x28x1 images."""
    (x_train, y_train), (x_test, y_test) = mnist.load_data(data_dir)
    shape = (-1, 784) if flat else (-1, 28, 28, 1)
    return ((x_train.reshape(shape).astype("float32") / 255.0, y_train.astype("int64")),
            (x_test.reshape(shape).astype("float32") / 255.0, y_test.astype("int64")))


def lenet_300_100(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, activation="relu", name="fc1"),
        keras.layers.Dense(100, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="fc3"),
    ], name="lenet_300_100")


def lenet5_caffe(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(20, 5, name="conv1"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(50, 5, name="conv2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(500, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2"),
    ], name="lenet5_caffe")


def error_percent(model, x_test, y_test):
    """Test error in percent, from the logits."""
    predictions = np.argmax(model.predict(x_test, batch_size=1000, verbose=0), axis=1)
    return 100.0 * float(np.mean(predictions != y_test))
