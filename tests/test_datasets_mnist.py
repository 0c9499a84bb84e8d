"""The MNIST loader: real files, hand-made idx files, corrupt files, downloads."""

import gzip
import shutil

import numpy as np
import pytest

from tfprune.datasets import mnist


def _write_idx(path, array):
    rank = array.ndim
    header = (2051 if rank == 3 else 2049).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _tiny_mnist(folder, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test)]
    for name, array in zip(mnist.FILES, arrays):
        _write_idx(folder / name, array)
    return arrays


def test_real_mnist_matches_keras_layout(data_dir):
    (x_train, y_train), (x_test, y_test) = mnist.load_data(data_dir / "mnist")
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == np.uint8
    assert list(y_train[:5]) == [5, 0, 4, 1, 9]
    assert sorted(np.unique(y_test)) == list(range(10)) and x_train.max() == 255


def test_env_var_is_used(data_dir, monkeypatch):
    monkeypatch.setenv("TFPRUNE_DATA_DIR", str(data_dir))
    (_, y_train), _ = mnist.load_data()
    assert len(y_train) == 60000


def test_hand_made_files_round_trip(tmp_path):
    arrays = _tiny_mnist(tmp_path)
    (x_train, y_train), (x_test, y_test) = mnist.load_data(tmp_path)
    for got, want in zip((x_train, y_train, x_test, y_test), arrays):
        np.testing.assert_array_equal(got, want)


def test_missing_file_names_it(tmp_path):
    _tiny_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        mnist.load_data(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load_data(tmp_path / "nowhere")


def test_truncated_and_wrong_files(tmp_path):
    _tiny_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(ValueError, match="truncated"):
        mnist.load_data(tmp_path)
    shutil.copy(tmp_path / "train-labels-idx1-ubyte.gz", images)
    with pytest.raises(ValueError, match="magic number"):
        mnist.load_data(tmp_path)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        mnist.load_data(tmp_path)


def test_download_checks_hashes_and_leaves_no_partial_file(served, tmp_path, monkeypatch):
    root, url = served
    arrays = _tiny_mnist(root)
    monkeypatch.delenv("TFPRUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist, "BASE_URL", url)
    cache = tmp_path / "home" / "datasets" / "tfprune" / "mnist"
    # The tiny files are not the real MNIST: their hashes are rejected.
    with pytest.raises(OSError, match="corrupt"):
        mnist.load_data()
    assert list(cache.iterdir()) == []
    real_hashes = {name: mnist._files.sha256(root / name) for name in mnist.FILES}
    monkeypatch.setattr(mnist, "FILES", real_hashes)
    (x_train, _), _ = mnist.load_data()
    np.testing.assert_array_equal(x_train, arrays[0])
    assert sorted(p.name for p in cache.iterdir()) == sorted(mnist.FILES)


def test_offline_download_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("TFPRUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(mnist, "BASE_URL", "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(OSError, match="TFPRUNE_DATA_DIR"):
        mnist.load_data()
