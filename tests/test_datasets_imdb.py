"""The IMDB loader: the real archive, hand-made archives and folders, caching, bad input, downloads."""

import io
import shutil
import tarfile

import numpy as np
import pytest

from tfprune.datasets import imdb


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def cache_files(tmp_path):
    folder = tmp_path / "keras_home" / "datasets" / "tfprune" / "imdb"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def reviews(n=3):
    """{member name: text} for a tiny aclImdb tree."""
    files = {}
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            for i in range(n):
                files[f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt"] = (
                    f"{split} {label} review {i}.<br />Second line, caf\u00e9.")
    return files


def make_archive(path, files, extra=None):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def make_folder(root, files):
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root / "aclImdb"


def test_the_real_data_set(data_dir, tmp_path):
    (x_train, y_train), (x_test, y_test) = imdb.load_data()
    assert len(x_train) == len(y_train) == len(x_test) == len(y_test) == 25_000
    assert x_train.dtype == object and isinstance(x_train[0], str) and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == np.bincount(y_test).tolist() == [12_500, 12_500]
    assert set(y_train[:100]) == {0, 1}  # shuffled: a slice holds both classes
    assert min(len(t) for t in x_train) > 0 and "<br />" in "".join(x_train[:200])
    assert len(cache_files(tmp_path)) == 1
    (again, labels), _ = imdb.load_data()  # from the cache
    assert list(again[:50]) == list(x_train[:50]) and np.array_equal(labels, y_train)


def test_archive_folder_and_parent_folder_give_the_same_data(tmp_path):
    files = reviews()
    archive = make_archive(tmp_path / "any_name.tar.gz", files)
    folder = make_folder(tmp_path / "extracted", files)
    results = [imdb.load_data(p, seed=None) for p in (archive, folder, folder.parent, tmp_path)]
    (x_train, y_train), (x_test, y_test) = results[0]
    assert list(x_train) == [f"train {c} review {i}.<br />Second line, caf\u00e9." for c in ("neg", "pos")
                             for i in range(3)]
    assert y_train.tolist() == [0, 0, 0, 1, 1, 1] and y_test.tolist() == [0, 0, 0, 1, 1, 1]
    for (a, b), (c, d) in results[1:]:
        assert list(a) == list(x_train) and list(c) == list(x_test)
        assert b.tolist() == y_train.tolist() and d.tolist() == y_test.tolist()


def test_seeded_shuffle_is_deterministic_and_keeps_pairs(tmp_path):
    archive = make_archive(tmp_path / "a.tar.gz", reviews(20))
    (x1, y1), _ = imdb.load_data(archive)
    (x2, y2), _ = imdb.load_data(archive)
    assert list(x1) == list(x2) and y1.tolist() == y2.tolist()
    assert y1.tolist() != sorted(y1.tolist())
    assert all((" pos " in text) == bool(label) for text, label in zip(x1, y1))


def test_the_archive_is_read_once(tmp_path, monkeypatch):
    archive = make_archive(tmp_path / "a.tar.gz", reviews())
    imdb.load_data(archive)
    assert len(cache_files(tmp_path)) == 1
    monkeypatch.setattr(imdb, "_parse_archive", lambda path: pytest.fail("read the archive again"))
    (x_train, _), _ = imdb.load_data(archive)
    assert len(x_train) == 6


def test_unsafe_members_are_never_written_or_read(tmp_path):
    outside = tmp_path / "evil.txt"
    link = tarfile.TarInfo("aclImdb/train/pos/99_9.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    escape = tarfile.TarInfo("../evil.txt")
    escape.size = 4
    absolute = tarfile.TarInfo(str(outside))
    absolute.size = 4
    archive = make_archive(tmp_path / "a.tar.gz", reviews(), extra=[link, escape, absolute])
    (x_train, y_train), _ = imdb.load_data(archive, seed=None)
    assert len(x_train) == 6 and not outside.exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_truncated_archive_fails_clearly_and_leaves_no_cache(tmp_path):
    good = make_archive(tmp_path / "good.tar.gz", reviews(50))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"bad.tar.gz' is not a complete .tar.gz .* truncated"):
        imdb.load_data(bad)
    assert cache_files(tmp_path) == []
    shutil.copy(good, bad)  # the user downloads it again
    (x_train, _), _ = imdb.load_data(bad)
    assert len(x_train) == 100 and len(cache_files(tmp_path)) == 1


def test_a_damaged_cache_is_rebuilt(tmp_path):
    archive = make_archive(tmp_path / "a.tar.gz", reviews())
    imdb.load_data(archive)
    [name] = cache_files(tmp_path)
    cache = tmp_path / "keras_home" / "datasets" / "tfprune" / "imdb" / name
    cache.write_bytes(cache.read_bytes()[:100])
    (x_train, _), _ = imdb.load_data(archive)
    assert len(x_train) == 6


def test_missing_parts_are_named(tmp_path):
    files = {k: v for k, v in reviews().items() if "test/neg" not in k}
    with pytest.raises(ValueError, match="no reviews in aclImdb/test/neg"):
        imdb.load_data(make_archive(tmp_path / "a.tar.gz", files))
    with pytest.raises(ValueError, match=r"test/neg' is missing or holds no reviews"):
        imdb.load_data(make_folder(tmp_path / "tree", files))
    not_tar = tmp_path / "notes.tar.gz"
    not_tar.write_bytes(b"these are not the reviews you are looking for")
    with pytest.raises(ValueError, match="not a complete .tar.gz"):
        imdb.load_data(not_tar)


def test_wrong_paths(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imdb.load_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds neither an aclImdb directory"):
        imdb.load_data(tmp_path / "empty")
    monkeypatch.setenv("TFPRUNE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="TFPRUNE_DATA_DIR is set"):
        imdb.load_data()


def test_download(served, tmp_path, monkeypatch):
    root, url = served
    make_archive(root / "aclImdb_v1.tar.gz", reviews())
    monkeypatch.delenv("TFPRUNE_DATA_DIR", raising=False)
    monkeypatch.setattr(imdb, "URL", url + "aclImdb_v1.tar.gz")
    (x_train, y_train), (x_test, _) = imdb.load_data()
    assert len(x_train) == len(x_test) == 6 and sorted(y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    assert "aclImdb_v1.tar.gz" in cache_files(tmp_path)
