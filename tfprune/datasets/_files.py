"""Where data sets are found, and how they are downloaded safely."""

import hashlib
import os
import pathlib
import urllib.request

from tfprune._common.files import atomic_path

ENV_VAR = "TFPRUNE_DATA_DIR"


def cache_dir(name):
    """``$KERAS_HOME/datasets/tfprune/<name>`` (``~/.keras`` by default), created if needed."""
    root = pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras"))
    path = root / "datasets" / "tfprune" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(name, path):
    """The directory to read ``name`` from: ``path``, else ``$TFPRUNE_DATA_DIR/<name>``, else None."""
    if path is not None:
        path = pathlib.Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{name}: `path` {str(path)!r} does not exist.")
        return path
    root = os.environ.get(ENV_VAR)
    if root:
        candidate = pathlib.Path(root).expanduser() / name
        if not candidate.is_dir():
            raise FileNotFoundError(
                f"{name}: {ENV_VAR} is set to {root!r}, but {str(candidate)!r} is not a directory. "
                f"Put the {name} files there, pass `path=`, or unset {ENV_VAR} to download them."
            )
        return candidate
    return None


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, target, expected_sha256=None):
    """Downloads ``url`` to ``target`` atomically; a wrong hash leaves no file behind."""
    target = pathlib.Path(target)
    with atomic_path(target) as tmp:
        print(f"Downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
        except OSError as err:  # URLError and socket errors are OSErrors
            raise OSError(
                f"Could not download {url} ({err}). Without a network, put the file in "
                f"{target.parent} yourself, pass `path=`, or set {ENV_VAR}."
            ) from err
        if expected_sha256 is not None:
            got = sha256(tmp)
            if got != expected_sha256:
                raise OSError(
                    f"Download of {url} is corrupt: sha256 {got}, expected {expected_sha256}. Try again, "
                    f"or place the file in {target.parent} yourself."
                )
    return target
