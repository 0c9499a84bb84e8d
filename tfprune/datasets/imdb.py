"""The Large Movie Review Dataset (Maas et al. 2011): 50,000 IMDB reviews labelled positive or negative.

Reviews are read from the ``aclImdb`` directory, or straight from the
``.tar.gz`` archive without extracting it: the archive's members are read
in memory, and only ``aclImdb/{train,test}/{pos,neg}/*.txt`` are used, so
no member can write anywhere. The texts read from an archive are cached
once, as ``imdb-<archive key>.npz`` in ``~/.keras/datasets/tfprune/imdb``
(``$KERAS_HOME``), written to a temporary file and renamed into place only
when complete: an interrupted or failed read never leaves a cache that a
later call would trust. The second load takes about a second.
"""

import pathlib
import re
import tarfile
import warnings
import zipfile
import zlib

import numpy as np

from tfprune._common.files import atomic_path
from tfprune.datasets import _files

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SPLITS = ("train", "test")
CLASSES = ("neg", "pos")  # label 0, label 1
_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(neg|pos)/(\d+)_(\d+)\.txt$")
_CACHE_VERSION = 1
# The longest review in aclImdb is about 14 kB; a member or file declaring more than this is
# not a review, and reading it could exhaust memory.
MAX_REVIEW_BYTES = 1 << 20


def load_data(path=None, seed=113):
    """Loads the IMDB reviews as text, with their labels.

    Looks in ``path``, else in ``$TFPRUNE_DATA_DIR/imdb``; either may be the
    ``aclImdb`` directory, a directory that contains it, a ``.tar.gz``
    archive of it (such as the official ``aclImdb_v1.tar.gz``), or a
    directory that contains such an archive. Without either, the official
    archive is downloaded from Stanford into
    ``~/.keras/datasets/tfprune/imdb``.

    The texts are the raw reviews, decoded as UTF-8; they contain HTML line
    breaks (``<br />``), which a tokenizer should treat as spaces. Each split
    is shuffled with ``seed`` (the files are ordered negative then positive),
    so any slice such as ``x_train[:2000]`` holds both classes.

    Args:
        path: where the data set is (see above), or ``None``.
        seed: seed of the shuffle of each split (113, as
            ``keras.datasets.imdb``), or ``None`` to keep the file order.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: arrays of Python ``str``
        (dtype object) and int64 labels, 0 negative and 1 positive: 25,000
        reviews per split in the official data set.

    Raises:
        FileNotFoundError: ``path`` (or ``$TFPRUNE_DATA_DIR/imdb``) does not
            exist or holds no ``aclImdb`` directory and no archive.
        ValueError: the directory or archive is incomplete or corrupt; the
            message names it and what is missing.
        OSError: the download failed.

    Example:

    ```python
    from tfprune.datasets import imdb

    (x_train, y_train), (x_test, y_test) = imdb.load_data()
    print(len(x_train), y_train[:10], x_train[0][:80])
    ```
    """
    source = _files.data_dir("imdb", path)
    if source is None:
        folder = _files.cache_dir("imdb")
        archive = folder / pathlib.PurePosixPath(URL).name
        if not archive.is_file():
            _files.download(URL, archive)
        source = archive
    splits = _read(source)
    result = []
    for i, split in enumerate(SPLITS):
        texts, labels = splits[split]
        if seed is not None:
            order = np.random.default_rng(seed + i).permutation(len(texts))
            texts, labels = texts[order], labels[order]
        result.append((texts, labels))
    return tuple(result)


def _read(source):
    """``{split: (texts, labels)}`` from a directory or an archive, found at ``source``."""
    source = pathlib.Path(source)
    if source.is_file():
        return _from_archive(source)
    for candidate in (source, source / "aclImdb"):
        if (candidate / "train").is_dir() or (candidate / "test").is_dir():
            return _from_directory(candidate)
    archives = sorted(source.glob("*.tar.gz")) + sorted(source.glob("*.tgz"))
    if archives:
        return _from_archive(archives[0])
    raise FileNotFoundError(
        f"imdb: '{source}' holds neither an aclImdb directory (with train/ and test/) nor a .tar.gz archive "
        f"of it. Download {URL} there, pass `path=` to where it is, or unset {_files.ENV_VAR} to download it."
    )


def _from_directory(root):
    splits = {}
    for split in SPLITS:
        texts, labels = [], []
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            files = sorted(_review_files(folder), key=_review_order) if folder.is_dir() else []
            if not files:
                raise ValueError(
                    f"imdb: '{folder}' is missing or holds no reviews (*.txt). The aclImdb directory needs "
                    "train/neg, train/pos, test/neg and test/pos; extract the complete archive again."
                )
            texts += [f.read_text(encoding="utf-8", errors="replace") for f in files]
            labels += [label] * len(files)
        splits[split] = (_as_texts(texts), np.array(labels, np.int64))
    return splits


def _review_files(folder):
    """The ``*.txt`` regular files of ``folder``; others (a FIFO would block forever) are skipped with a warning."""
    files, skipped = [], []
    for path in folder.glob("*.txt"):
        (files if path.is_file() else skipped).append(path)
    if skipped:
        warnings.warn(f"imdb: skipped {len(skipped)} entries of '{folder}' that are not regular files "
                      f"(e.g. '{skipped[0].name}'): devices, FIFOs, sockets and folders are never read.",
                      RuntimeWarning, stacklevel=4)
    for path in files:
        size = path.stat().st_size
        if size > MAX_REVIEW_BYTES:
            raise ValueError(f"imdb: '{path}' is {size:,} bytes, more than any review "
                             f"({MAX_REVIEW_BYTES:,}, MAX_REVIEW_BYTES): it is not part of aclImdb.")
    return files


def _review_order(path):
    review_id = path.stem.split("_")[0]  # "<id>_<rating>.txt"
    return (int(review_id) if review_id.isdigit() else 0, path.name)


def _from_archive(archive):
    stat = archive.stat()
    key = f"{archive.name}-{stat.st_size}-{stat.st_mtime_ns}-v{_CACHE_VERSION}"
    cache = _files.cache_dir("imdb") / f"imdb-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.npz"
    if cache.is_file():
        try:
            return _load_cache(cache)
        except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile):
            cache.unlink(missing_ok=True)  # a damaged cache is rebuilt, never trusted
    splits = _parse_archive(archive)
    _write_cache(cache, splits)
    return splits


def _parse_archive(archive):
    found = {(s, c): [] for s in SPLITS for c in CLASSES}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                match = _MEMBER.match(member.name)
                if match is None or not member.isfile():
                    continue  # symlinks, devices, other files: never read, never written anywhere
                split, name, review_id, _ = match.groups()
                if member.size > MAX_REVIEW_BYTES:
                    raise ValueError(
                        f"imdb: '{archive}': member '{member.name}' declares a size of {member.size:,} bytes, more "
                        f"than any review ({MAX_REVIEW_BYTES:,}, MAX_REVIEW_BYTES): the archive is corrupt or "
                        "not aclImdb."
                    )
                data = tar.extractfile(member).read()
                found[(split, name)].append((int(review_id), member.name, data.decode("utf-8", errors="replace")))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ValueError(
            f"imdb: '{archive}' is not a complete .tar.gz of the aclImdb data set ({type(err).__name__}: {err}). "
            f"It may be truncated: delete it and download {URL} again."
        ) from None
    empty = [f"aclImdb/{s}/{c}" for (s, c), reviews in found.items() if not reviews]
    if empty:
        raise ValueError(
            f"imdb: '{archive}' holds no reviews in {', '.join(empty)}. Expected the aclImdb layout "
            f"(aclImdb/train/neg/*.txt, ...), as in {URL}."
        )
    splits = {}
    for split in SPLITS:
        texts, labels = [], []
        for label, name in enumerate(CLASSES):
            reviews = sorted(found[(split, name)])
            texts += [text for _, _, text in reviews]
            labels += [label] * len(reviews)
        splits[split] = (_as_texts(texts), np.array(labels, np.int64))
    return splits


def _as_texts(texts):
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return array


def _write_cache(cache, splits):
    # Texts as one UTF-8 byte string per split plus offsets: no pickled objects in the cache.
    arrays = {}
    for split, (texts, labels) in splits.items():
        encoded = [t.encode("utf-8") for t in texts]
        arrays[f"{split}_bytes"] = np.frombuffer(b"".join(encoded), np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(e) for e in encoded]).astype(np.int64)
        arrays[f"{split}_labels"] = labels
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_cache(cache):
    splits = {}
    with np.load(cache, allow_pickle=False) as data:
        for split in SPLITS:
            blob = data[f"{split}_bytes"].tobytes()
            offsets = data[f"{split}_offsets"]
            texts = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
            labels = data[f"{split}_labels"]
            if len(texts) != len(labels) or not len(texts):
                raise ValueError(f"imdb: cache '{cache}' is inconsistent")
            splits[split] = (_as_texts(texts), labels)
    return splits
