"""Files written the way a normal write would: permissions, links, no leftovers from killed runs."""

import os
import stat
import subprocess
import sys

import pytest

from tfprune._common.files import atomic_path, scratch_directory, write_bytes_atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_file_gets_the_umask_mode(tmp_path, umask_022):
    path = write_bytes_atomic(tmp_path / "m.tflite", b"abc")
    assert _mode(path) == 0o644


def test_existing_file_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_a_link_is_written_through(tmp_path):
    target = tmp_path / "real.tflite"
    target.write_bytes(b"old")
    link = tmp_path / "link.tflite"
    link.symlink_to(target)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".m.tflite.{_dead_pid()}.x1.part"
    live = tmp_path / f".m.tflite.{os.getppid()}.x2.part"  # our parent is running
    other = tmp_path / ".other.tflite.1.x3.part"
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    write_bytes_atomic(tmp_path / "m.tflite", b"abc")
    assert not dead.exists()
    assert live.exists() and other.exists()


def test_scratch_directories_of_killed_runs_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    stale = tmp_path / f"tfprune_savedmodel_{_dead_pid()}.abc"
    (stale / "variables").mkdir(parents=True)
    with scratch_directory("tfprune_savedmodel_") as folder:
        assert os.path.isdir(folder) and str(folder).startswith(str(tmp_path))
    assert not stale.exists() and not os.path.exists(folder)
