"""MNIST handwritten digits, read from the four original idx files."""

import gzip
import pathlib

import numpy as np

from tfprune.datasets import _files

BASE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# sha256 of the original files as published by LeCun, Cortes and Burges.
FILES = {
    "train-images-idx3-ubyte.gz": "627f05e228fa53e79c4d97c930074996d09189e462741f1e6d28d95b670a5294",
    "train-labels-idx1-ubyte.gz": "025e5aa1afce5c1877bd4556f1a588bc47c58887d093fc331fb8f57bc4374ee3",
    "t10k-images-idx3-ubyte.gz": "b893319f990255d9961960047677ed5029db49c849b7b42dc4e9abd1e41279b4",
    "t10k-labels-idx1-ubyte.gz": "d4205094abd80a432c7f9f48b1d35b3d2745ed01c7a72cb64877669c3ed79a6d",
}
_MAGIC = {3: 2051, 1: 2049}  # idx magic number by rank: images, labels


def load_data(path=None):
    """Loads MNIST as ``keras.datasets.mnist.load_data()`` does.

    Reads the four original idx ``.gz`` files from ``path`` (a directory), or
    from ``$TFPRUNE_DATA_DIR/mnist``; otherwise downloads them (checked by
    sha256) into ``~/.keras/datasets/tfprune/mnist`` and reads them there.

    Args:
        path: directory holding ``train-images-idx3-ubyte.gz``,
            ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
            ``t10k-labels-idx1-ubyte.gz``, or ``None``.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 arrays of shapes
        (60000, 28, 28), (60000,), (10000, 28, 28) and (10000,).

    Raises:
        FileNotFoundError: a file is missing where tfprune was told to look.
        ValueError: a file is not a valid idx file of the expected rank.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = tfprune.datasets.mnist.load_data()
    x_train = x_train.astype("float32") / 255.0
    ```
    """
    folder = _files.data_dir("mnist", path)
    if folder is None:
        folder = _files.cache_dir("mnist")
        for name, digest in FILES.items():
            if not (folder / name).exists():
                _files.download(BASE_URL + name, folder / name, digest)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"mnist: {', '.join(missing)} not found in {str(folder)!r}. That folder must hold the four "
            f"original idx .gz files: {', '.join(FILES)}."
        )
    x_train, y_train, x_test, y_test = (
        read_idx(folder / name, rank) for name, rank in zip(FILES, (3, 1, 3, 1))
    )
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"mnist: image and label counts differ in {str(folder)!r}.")
    return (x_train, y_train), (x_test, y_test)


def read_idx(path, rank):
    """Reads one gzipped idx file of ``rank`` dimensions into a uint8 array."""
    path = pathlib.Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"mnist: {path.name} is not a readable gzip file ({err}).") from None
    magic = int.from_bytes(data[:4], "big")
    if magic != _MAGIC[rank]:
        raise ValueError(f"mnist: {path.name} has idx magic number {magic}, expected {_MAGIC[rank]}.")
    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(f"mnist: {path.name} is too short to be an idx file.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"mnist: {path.name} holds {len(data)} bytes but its header {shape} needs {expected}: "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
