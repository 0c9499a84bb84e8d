"""Shared test set-up: quiet TensorFlow, real data from ../shared/data, determinism."""

import functools
import http.server
import os
import pathlib
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_REPO = pathlib.Path(__file__).resolve().parent.parent
_SHARED_DATA = _REPO.parent / "shared" / "data"
if "TFPRUNE_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["TFPRUNE_DATA_DIR"] = str(_SHARED_DATA)

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with default dtype policy, clean names and a fixed seed."""
    keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture
def data_dir():
    path = os.environ.get("TFPRUNE_DATA_DIR")
    if not path or not pathlib.Path(path).is_dir():
        pytest.skip("real data sets not found: set TFPRUNE_DATA_DIR to the folder holding mnist/ and imdb/")
    return pathlib.Path(path)


@pytest.fixture
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 serving a folder, like the public mirror."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
