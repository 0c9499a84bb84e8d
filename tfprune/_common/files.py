"""The one atomic file write: a reader never sees half a file, a failure leaves the old one."""

import contextlib
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Whatever is written to the yielded path appears at ``path`` only when the block ends
    without an exception; otherwise the temporary file is removed and ``path`` is untouched.

    Example:

    ```python
    with atomic_path("model.tflite") as tmp:
        tmp.write_bytes(flatbuffer)
    ```
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data):
    """Writes ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)
