"""Issue 18's careless and hostile input outside the .tflite reader: each case fails clearly, harms nothing.

(Corrupt .tflite files are in test_bad_input.py; file permissions and leftovers in test_files.py.)
"""

import gzip
import io
import os
import resource
import tarfile
import time

import keras
import numpy as np
import pytest

import tfprune
from tfprune.datasets import imdb, mnist
from tfprune.export import to_tflite
from tfprune.surgery import compact_embeddings, remove_channels

from test_datasets_imdb import make_archive, make_folder, reviews


# -- item 3: declared sizes are checked before anything is allocated -------------------------------


def _idx_header(shape):
    return (2051).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in shape)


def test_mnist_header_whose_product_wraps_int64_is_refused(tmp_path):
    path = tmp_path / "images.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx_header((2 ** 31, 2 ** 31, 4)) + b"\0" * 64)  # 2**64: zero in int64 arithmetic
    with pytest.raises(ValueError, match=r"images.gz declares dimensions \(2147483648, 2147483648, 4\)"):
        mnist.read_idx(path, 3)


def test_mnist_header_larger_than_the_file_can_hold_fails_without_allocating(tmp_path):
    path = tmp_path / "images.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx_header((60000, 28, 28)) + b"\0" * 100)
    with pytest.raises(ValueError, match="declares dimensions .* more than the"):
        mnist.read_idx(path, 3)
    with gzip.open(path, "wb") as f:  # a plausible header, data cut short: read in chunks, then refused
        f.write(_idx_header((2, 28, 28)) + b"\0" * 1000)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        mnist.read_idx(path, 3)


def test_imdb_member_declaring_a_huge_size_is_refused(tmp_path):
    huge = tarfile.TarInfo("aclImdb/train/pos/500_9.txt")
    huge.size = 2 ** 40
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in reviews().items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
        tar.addfile(huge)  # header only: the declared size is the lie
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"member 'aclImdb/train/pos/500_9.txt' declares a size of 1,099,511,627,776"):
        imdb.load_data(archive)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing near 2**40


# -- item 11: a FIFO among the reviews is skipped, not read forever ---------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_the_review_folder_is_skipped_with_a_warning(tmp_path):
    root = make_folder(tmp_path, reviews())
    os.mkfifo(root / "train" / "pos" / "77_8.txt")
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="skipped 1 entries .* not regular files"):
        (x_train, _), _ = imdb.load_data(root, seed=None)
    assert len(x_train) == 6 and time.monotonic() - start < 30


def test_an_oversized_review_file_is_refused(tmp_path):
    root = make_folder(tmp_path, reviews())
    with open(root / "test" / "neg" / "9_1.txt", "wb") as f:
        f.truncate(imdb.MAX_REVIEW_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ValueError, match="9_1.txt' is 1,048,577 bytes"):
        imdb.load_data(root)


# -- item 5: a schedule that cannot be saved is found out before a checkpoint is touched ----------


class _Unsaveable(tfprune.PruningSchedule):
    def __call__(self, step):
        return step == 0, 0.5  # no get_config: Keras would fail half-way through model.save


def _small_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc"), keras.layers.Dense(2)])


def test_an_unsaveable_schedule_is_refused_at_prune_time_and_the_checkpoint_survives(tmp_path):
    checkpoint = tmp_path / "ck.keras"
    _small_model().save(checkpoint)
    size = checkpoint.stat().st_size
    with pytest.raises(ValueError, match="_Unsaveable cannot be saved with the model .* get_config"):
        tfprune.prune_low_magnitude(_small_model(), pruning_schedule=_Unsaveable())
    assert checkpoint.stat().st_size == size


def test_a_saveable_but_unregistered_schedule_warns_that_it_will_not_load():
    class Local(tfprune.PruningSchedule):
        def __call__(self, step):
            return step == 0, 0.5

        def get_config(self):
            return {}

    with pytest.warns(RuntimeWarning, match="load_model will not load it"):
        tfprune.prune_low_magnitude(_small_model(), pruning_schedule=Local())


# -- item 8: arguments read the way they were meant ---------------------------------------------


def _conv_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(2, 3, name="c2")(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))


@pytest.mark.parametrize("mask", [[True, False, True, False], np.array([True, False, True, False]), [True, 1]])
def test_a_boolean_channel_mask_is_refused_not_read_as_indices(mask):
    with pytest.raises(TypeError, match=r"`channels\['c1'\]` is a boolean mask.*np.flatnonzero"):
        remove_channels(_conv_model(), {"c1": mask})


@pytest.mark.parametrize("model, layers, message", [
    ("x", None, "`model` must be a built keras Model. Received: str"),
    (None, "embedding", "`layers` must be a list of layer names"),
    (None, 3, "`layers` must be a list of layer names"),
])
def test_compact_embeddings_argument_types(model, layers, message):
    model = model if model is not None else _embedding_model(named_input=True)
    with pytest.raises(TypeError, match=message):
        compact_embeddings(model, layers)


@pytest.mark.parametrize("argument, value", [
    ("batch_size", True), ("batch_size", 2.0), ("verify_samples", -1), ("verify_samples", 0),
    ("latency_runs", "many"), ("latency_runs", -3),
])
def test_to_tflite_refuses_counts_that_are_not_counts(tmp_path, argument, value):
    with pytest.raises(ValueError, match=rf"`{argument}` must be an integer >= \d\. Received: {argument}="):
        to_tflite(_small_model(), tmp_path / "m.tflite", **{argument: value})
    assert not (tmp_path / "m.tflite").exists()


def test_inspect_tflite_refuses_a_latency_count_that_is_not_one(tmp_path):
    with pytest.raises(ValueError, match="`latency_runs` must be an integer >= 0"):
        tfprune.export.inspect_tflite(tmp_path / "m.tflite", latency_runs=1.5)


# -- item 9: compact_embeddings on a Functional model whose Input has no name -------------------


def _embedding_model(named_input):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32", **({"name": "tokens"} if named_input else {}))
    x = keras.layers.Embedding(50, 4, name="embedding")(inputs)
    x = keras.ops.mean(x, axis=1)  # a keras.ops node, as users write
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
    table = model.get_layer("embedding").embeddings
    values = table.numpy()
    values[10:] = 0.0  # 40 of 50 rows pruned
    table.assign(values)
    return model


def test_compact_embeddings_with_an_unnamed_input_keeps_the_outputs():
    model = _embedding_model(named_input=False)
    small = compact_embeddings(model)
    tokens = np.random.default_rng(0).integers(0, 50, (16, 5)).astype("int32")
    np.testing.assert_allclose(small.predict(tokens, verbose=0), model.predict(tokens, verbose=0), atol=1e-6)
    assert small.get_layer("embedding").embeddings.shape == (11, 4)
