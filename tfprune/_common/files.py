"""Writing files the way users expect: atomically, with normal permissions, leaving nothing behind.

``atomic_path`` is the one atomic file write: a reader never sees half a file, a failure
leaves the old one, the new file gets the permissions a plain ``open(path, "w")`` would give
it (an existing file's mode, else ``0o666`` minus the umask), and a destination that is a
symbolic link is written through, as ``open`` does. ``scratch_directory`` is the temporary
folder for work files. Both name their temporary files after the process that made them,
so files left by a process that was killed (SIGKILL leaves no chance to clean up) are
removed by the next run instead of piling up.
"""

import contextlib
import os
import pathlib
import shutil
import stat
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Whatever is written to the yielded path appears at ``path`` only when the block ends
    without an exception; otherwise the temporary file is removed and ``path`` is untouched.
    A symbolic link at ``path`` is followed: its target is replaced and the link stays.

    Example:

    ```python
    with atomic_path("model.tflite") as tmp:
        tmp.write_bytes(flatbuffer)
    ```
    """
    path = pathlib.Path(os.path.realpath(path))
    prefix = f".{path.name}."
    _remove_orphans(path.parent, prefix, ".part")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}.", suffix=".part")
    os.close(fd)
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data):
    """Writes ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


@contextlib.contextmanager
def scratch_directory(prefix):
    """A temporary directory (in ``$TMPDIR``) removed on exit; ones left by killed processes are removed too.

    Example:

    ```python
    with scratch_directory("tfprune_savedmodel_") as folder:
        model.export(folder)
    ```
    """
    root = pathlib.Path(tempfile.gettempdir())
    _remove_orphans(root, prefix, "")
    folder = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _mode_for(path):
    """The mode ``open(path, "w")`` would leave: the existing file's, else 0o666 minus the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_orphans(folder, prefix, suffix):
    """Removes ``<prefix><pid>.*<suffix>`` entries of ``folder`` whose process no longer runs."""
    try:
        names = os.listdir(folder)
    except OSError:
        return  # an unreadable folder: the write itself will say what is wrong
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            target = os.path.join(folder, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(target)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and its files are not ours
    return True
