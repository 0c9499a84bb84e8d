"""MNIST handwritten digits, read from the four original idx files."""

import gzip
import math
import pathlib
import zlib

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
# Larger idx files are refused: MNIST-format sets are tens of MB; 4 GiB is far beyond any of them.
MAX_IDX_BYTES = 1 << 32
_GZIP_MAX_RATIO = 1032


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
    """Reads one gzipped idx file of ``rank`` dimensions into a uint8 array.

    The sizes the header declares are checked before anything is allocated: against the most
    gzip can expand the file to, and against ``MAX_IDX_BYTES``. The data is then read in
    chunks, so a file shorter than its header says fails without reserving the declared size.
    """
    path = pathlib.Path(path)
    header = 4 + 4 * rank
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(header)
            magic = int.from_bytes(head[:4], "big")
            if magic != _MAGIC[rank]:
                raise ValueError(f"mnist: {path.name} has idx magic number {magic}, expected {_MAGIC[rank]}.")
            if len(head) < header:
                raise ValueError(f"mnist: {path.name} is too short to be an idx file.")
            shape = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
            expected = math.prod(shape)  # Python ints: no int64 wrap-around for hostile headers
            _check_declared_size(path, shape, expected)
            data = _read_at_most(f, expected + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"mnist: {path.name} is not a readable gzip file ({err}).") from None
    if len(data) != expected:
        raise ValueError(
            f"mnist: {path.name} holds {header + len(data)}{'+' if len(data) > expected else ''} bytes but its "
            f"header {shape} needs {header + expected}: the file is truncated or corrupt."
        )
    return np.frombuffer(bytes(data), dtype=np.uint8).reshape(shape)


def _check_declared_size(path, shape, size):
    # deflate expands at most about 1032:1, so a header claiming more than that is false.
    possible = _GZIP_MAX_RATIO * path.stat().st_size
    if size > min(possible, MAX_IDX_BYTES):
        limit = (f"the {possible:,} bytes a {path.stat().st_size:,}-byte gzip file can hold" if possible < MAX_IDX_BYTES
                 else f"the {MAX_IDX_BYTES:,}-byte limit (MAX_IDX_BYTES)")
        raise ValueError(f"mnist: {path.name} declares dimensions {shape} in its header, {size:,} bytes, more than "
                         f"{limit}: the header is corrupt.")


def _read_at_most(f, count, chunk=1 << 24):
    data = bytearray()
    while len(data) < count:
        piece = f.read(min(chunk, count - len(data)))
        if not piece:
            break
        data += piece
    return data
