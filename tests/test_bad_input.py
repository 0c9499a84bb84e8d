"""Corrupt .tflite files through inspect_tflite, the CLI and export/check_tflite.py: a clear error or a report.

The mutation test changes a small exported sparse int8 file in fixed-seed
ways (single bytes in the sparse index vectors, anywhere in the file, runs
of bytes, huge declared shapes, names that are not UTF-8) and checks that
each ends in a documented error naming the file or in a report, never in a
signal, a raw exception or a run past the time and memory limits. The
quick cases run in every test run; the few hundred behind them are
``slow``.
"""

import collections
import concurrent.futures
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from export_helpers import synthetic_digits, trained_mlp, zeroed
from tfprune.cli import main as cli_main
from tfprune.export import FlatbufferError, _flatbuffer, _runtime, inspect_tflite, to_tflite

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "export" / "check_tflite.py"
INT32_MAX = 0x7FFFFFFF


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory):
    """A small exported int8 model whose two kernels are stored as sparse 1x16 blocks, and its bytes."""
    x, y, _, _ = synthetic_digits(train=300, test=10)
    model = zeroed(trained_mlp(x, y, hidden=32, epochs=1), block=(16, 1), sparsity=0.5)
    path = tmp_path_factory.mktemp("bad_input") / "sparse.tflite"
    to_tflite(model, path, quantization="int8", representative_data=x[:50], latency_runs=0)
    return path, path.read_bytes()


def index_vector_spans(data):
    """``[(offset, length)]`` of the bytes of every sparse index vector (segments and indices) in the file."""
    spans = []
    for tensor in _flatbuffer.read_model(data).subgraphs[0].tensors:
        for dim in (tensor.sparsity or {}).get("dim_metadata", []):
            for key in ("segments", "indices"):
                raw = np.asarray(dim.get(key, [])).tobytes()
                if raw and data.find(raw) >= 0:
                    spans.append((data.find(raw), len(raw)))
    return spans


def shape_offset(data, shape):
    """Offset of the first dimension of a stored shape vector (length prefix, then int32 dimensions)."""
    encoded = np.asarray([len(shape), *shape], "<u4").tobytes()
    return data.index(encoded) + 4


def mutations(data, count, seed):
    """``count`` fixed-seed mutated copies of ``data``, as ``(description, bytes)``, cycling through the kinds."""
    rng = np.random.default_rng(seed)
    spans = index_vector_spans(data)
    input_shape = _flatbuffer.read_model(data).subgraphs[0].tensors[0].shape
    name_at = data.index(b"serving_default")
    cases = []
    for i in range(count):
        copy = bytearray(data)
        kind = ("index byte", "any byte", "byte run", "index byte", "huge shape", "bad name")[i % 6]
        if kind == "index byte":
            start, length = spans[int(rng.integers(len(spans)))]
            at = start + int(rng.integers(length))
            copy[at] = int(rng.integers(256))
        elif kind == "any byte":
            at = int(rng.integers(len(copy)))
            copy[at] = int(rng.integers(256))
        elif kind == "byte run":
            at = int(rng.integers(len(copy) - 16))
            length = int(rng.integers(2, 16))
            copy[at : at + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        elif kind == "huge shape":
            at = shape_offset(data, input_shape) + 4 * int(rng.integers(len(input_shape)))
            copy[at : at + 4] = np.asarray([INT32_MAX - int(rng.integers(1000))], "<u4").tobytes()
        else:
            at = name_at + int(rng.integers(8))
            copy[at] = 0xFF
        cases.append((f"{kind} at offset {at}", bytes(copy)))
    return cases


def inspect_outcome(path):
    """``"report"``, ``"refused"`` (a documented error naming the file) or ``"bad: ..."``."""
    try:
        report = inspect_tflite(path, latency_runs=2)
        str(report), report.to_json()  # rendering reads the block shapes and names too
    except FlatbufferError as err:
        return "refused" if str(path) in str(err) else f"bad: FlatbufferError without the file: {err}"
    except Exception as err:  # noqa: BLE001 - anything else is what the test is looking for
        return f"bad: {type(err).__name__}: {err}"
    failed = [r for r in report.runtime.values() if not r["works"]]
    if any(not r["error"] for r in failed):
        return "bad: a configuration failed without saying why"
    return "report"


def check_script_outcome(path):
    try:
        done = subprocess.run([sys.executable, str(SCRIPT), str(path), "--runs", "2"], capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "bad: check_tflite.py ran past 120 s"
    lines = done.stderr.strip().splitlines()
    if done.returncode == 0:
        return "report"
    if done.returncode == 1 and lines and lines[-1].startswith("check_tflite: error:") and "Traceback" not in done.stderr:
        return "refused"
    return f"bad: exit status {done.returncode}: {lines[-1] if lines else ''}"


def run_mutations(sparse_file, tmp_path, count, seed, tool):
    _, data = sparse_file
    paths = []
    for i, (description, mutated) in enumerate(mutations(data, count, seed)):
        path = tmp_path / f"mutation_{i:03d}.tflite"
        path.write_bytes(mutated)
        paths.append((description, path))
    # The tools spend their time waiting for child processes, so two run side by side.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda case: (case[0], tool(case[1])), paths))
    counts = collections.Counter(outcome.split(":")[0] for _, outcome in outcomes)
    bad = [f"{description}: {outcome}" for description, outcome in outcomes if outcome.startswith("bad")]
    print(f"{tool.__name__}: {count} cases, {counts['report']} reports, {counts['refused']} clear errors, "
          f"{len(bad)} bad")
    assert not bad, "\n".join(bad[:10])
    return counts


def test_a_few_mutations_end_in_a_report_or_a_clear_error(sparse_file, tmp_path):
    counts = run_mutations(sparse_file, tmp_path, 12, seed=1, tool=inspect_outcome)
    assert counts["refused"] >= 2  # the huge shapes at least; the rest is what the bytes happen to make


def test_a_few_mutations_through_check_tflite(sparse_file, tmp_path):
    counts = run_mutations(sparse_file, tmp_path, 6, seed=2, tool=check_script_outcome)
    assert counts["refused"] >= 1


@pytest.mark.slow
def test_hundreds_of_mutations_through_inspect_tflite(sparse_file, tmp_path):
    run_mutations(sparse_file, tmp_path, 240, seed=0, tool=inspect_outcome)


@pytest.mark.slow
def test_hundreds_of_mutations_through_check_tflite(sparse_file, tmp_path):
    run_mutations(sparse_file, tmp_path, 96, seed=3, tool=check_script_outcome)


# -- the cases the issue names, one by one ---------------------------------------------------------


def with_huge_input(data):
    shape = _flatbuffer.read_model(data).subgraphs[0].tensors[0].shape
    copy = bytearray(data)
    at = shape_offset(data, shape) + 4
    copy[at : at + 4] = np.asarray([INT32_MAX], "<u4").tobytes()
    return bytes(copy)


def test_a_huge_declared_shape_is_refused_before_allocating(sparse_file, tmp_path):
    path = tmp_path / "huge.tflite"
    path.write_bytes(with_huge_input(sparse_file[1]))
    with pytest.raises(FlatbufferError, match=r"huge\.tflite.*tensor \d+: '.*' declares the shape "
                                              r"\[1, 2147483647, 28\].*MAX_TENSOR_BYTES"):
        inspect_tflite(path)
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "declares the shape [1, 2147483647, 28]" in done.stderr.splitlines()[-1]


def test_a_name_that_is_not_utf8_is_reported(sparse_file, tmp_path):
    data = bytearray(sparse_file[1])
    name = _flatbuffer.read_model(data).subgraphs[0].tensors[0].name.encode()
    data[data.index(np.asarray([len(name)], "<u4").tobytes() + name) + 4] = 0xFF
    path = tmp_path / "name.tflite"
    path.write_bytes(bytes(data))
    report = inspect_tflite(path, latency_runs=0)  # the reader replaces the bad byte; the runtime reports it
    assert "\ufffd" in report.inputs[0]["name"]
    for run in report.runtime.values():
        assert run["works"] or "UnicodeDecodeError" in run["error"]
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr
    if done.returncode:
        assert "not valid UTF-8" in done.stderr


def test_a_crash_in_invoke_is_an_error_naming_the_stage(sparse_file, tmp_path, monkeypatch):
    # The child as it is up to invoke, then the crash a corrupt index vector gives.
    crashing = tmp_path / "crashing_child.py"
    crashing.write_text(
        "import json, os, pathlib, signal, sys\n"
        "folder = pathlib.Path(json.loads(pathlib.Path(sys.argv[1]).read_text())['result'])\n"
        "(folder / 'stage').write_text('running')\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    monkeypatch.setattr(_runtime, "_CHILD", crashing)
    report = inspect_tflite(sparse_file[0], latency_runs=0)
    for run in report.runtime.values():
        assert not run["works"]
        assert "the interpreter crashed (signal 11, SIGSEGV) while running the file" in run["error"]
    with pytest.raises(RuntimeError, match=r"sparse\.tflite.*crashed \(signal 11, SIGSEGV\) while running"):
        _runtime.run_tflite(sparse_file[0])


def test_a_hanging_interpreter_is_stopped(sparse_file, tmp_path, monkeypatch):
    hanging = tmp_path / "hanging_child.py"
    hanging.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(_runtime, "_CHILD", hanging)
    monkeypatch.setattr(_runtime, "TIMEOUT_S", 1)
    result = _runtime.probe(sparse_file[0], "default", latency_runs=0)
    assert not result.loads and "did not finish within 1 s while starting" in result.error


def test_the_child_runs_under_a_memory_limit(sparse_file, monkeypatch):
    # With almost no memory beyond the runtime's own, allocating the tensors must fail in the child.
    monkeypatch.setattr(_runtime, "MEMORY_BYTES", 0)
    monkeypatch.setattr(_runtime, "MEMORY_PER_FILE_BYTE", 0)
    result = _runtime.probe(sparse_file[0], "no_delegates", latency_runs=0)
    assert not result.loads and result.error


def test_a_corrupt_block_map_is_a_flatbuffer_error_not_an_index_error(sparse_file, tmp_path):
    data = sparse_file[1]
    graph = _flatbuffer._schema().Model.GetRootAs(data, 0).Subgraphs(0)
    sparsity = next(graph.Tensors(i).Sparsity() for i in range(graph.TensorsLength()) if graph.Tensors(i).Sparsity())
    at = sparsity._tab.Vector(sparsity._tab.Offset(6))  # field 1 of SparsityParameters: block_map
    copy = bytearray(data)
    copy[at : at + 4] = np.asarray([7], "<u4").tobytes()  # a block of dimension 7 in a rank-2 tensor
    path = tmp_path / "block_map.tflite"
    path.write_bytes(bytes(copy))
    with pytest.raises(FlatbufferError, match=r"block_map\.tflite.*block map \[7\] does not fit a tensor of rank 2"):
        inspect_tflite(path)


def test_the_cli_names_the_file_in_one_line(sparse_file, tmp_path, capsys):
    path = tmp_path / "huge.tflite"
    path.write_bytes(with_huge_input(sparse_file[1]))
    assert cli_main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "huge.tflite" in err[0] and "declares the shape" in err[0]


def test_a_sound_file_still_runs_in_the_child(sparse_file):
    report = inspect_tflite(sparse_file[0], latency_runs=5)
    assert report.runtime["default"]["works"] and report.runtime["default"]["invokes"] == 5
    run = _runtime.run_tflite(sparse_file[0], np.zeros((3, 28, 28), np.float32), repeats=0)
    assert run.outputs[0].shape == (3, 10) and np.all(np.isfinite(run.outputs[0]))
