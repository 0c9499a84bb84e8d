"""sparse="auto" per weight: sparse where the default XNNPACK delegate runs it, dense elsewhere, in one file.

The model has a sparse convolution and an unstructured sparse Dense: under
ai-edge-litert 2.3.0, XNNPACK runs the int8 convolution sparse and refuses the
sparse FULLY_CONNECTED. The exporter must find that by probing, and the
flatbuffer rewrite (``_rewrite``) must store exactly the bytes a dense
conversion stores.
"""

import keras
import numpy as np
import pytest

from export_helpers import leftovers
from tfprune.export import _flatbuffer, _rewrite, _runtime, to_tflite


def conv_and_dense(sparsity=0.9):
    """Conv 3x3 -> conv 1x1 -> pool -> Dense -> Dense, every kernel with its largest 10% kept."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 3), name="image"),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv"),
        keras.layers.Conv2D(128, 1, activation="relu", name="pointwise"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ], name="mixed")
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kernel, bias = layer.get_weights()
            cut = np.quantile(np.abs(kernel), sparsity)
            layer.set_weights([np.where(np.abs(kernel) > cut, kernel, 0), bias + 0.01])
    return model


@pytest.fixture(scope="module")
def model():
    return conv_and_dense()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((64, 12, 12, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("encodings")


@pytest.fixture(scope="module")
def mixed(model, x, out):
    return to_tflite(model, out / "mixed.tflite", quantization="int8", representative_data=x, latency_runs=0)


@pytest.fixture(scope="module")
def all_sparse(model, x, out):
    with pytest.warns(RuntimeWarning, match="does not work under the default XNNPACK delegate"):
        return to_tflite(model, out / "sparse.tflite", quantization="int8", representative_data=x, sparse=True,
                         require_default_delegate=False, latency_runs=0)


@pytest.fixture(scope="module")
def all_dense(model, x, out):
    return to_tflite(model, out / "dense.tflite", quantization="int8", representative_data=x, sparse=False,
                     latency_runs=0)


def storage_by_layer(report):
    rows = {}
    for t in report.tensors:
        if t["constant"] and len(t["shape"]) >= 2:
            layer = next(name for name in ("pointwise", "conv", "fc", "logits", "StatefulPartitionedCall")
                         if name in t["name"])
            rows[layer] = t
    return rows


def test_auto_keeps_the_convolutions_sparse_and_stores_the_dense_layers_dense(mixed, all_sparse, all_dense):
    assert mixed.works_by_default and mixed.runtime["no_delegates"]["works"]
    assert mixed.agreement["default"]["top1_agreement"] >= 0.95
    rows = storage_by_layer(mixed)
    assert rows["conv"]["storage"] == "sparse" and rows["pointwise"]["storage"] == "sparse"
    dense_layers = [t for name, t in rows.items() if name not in ("conv", "pointwise")]
    assert len(dense_layers) == 2 and all(t["storage"] == "dense" for t in dense_layers)
    # The sparse FULLY_CONNECTED is refused, so its DENSIFY ops are gone; the convolutions keep theirs.
    assert mixed.operators.count("DENSIFY") == 2 and mixed.operators.count("FULLY_CONNECTED") == 2
    assert all_sparse.size_bytes < mixed.size_bytes < all_dense.size_bytes
    [alternative] = mixed.alternatives
    assert alternative["size_bytes"] == all_sparse.size_bytes and not alternative["works_default"]
    assert any("CONV_2D" in note and "FULLY_CONNECTED" in note for note in mixed.notes)


def test_the_report_says_why_each_weight_is_stored_as_it_is(mixed, all_dense, all_sparse):
    reasons = {e["name"]: e["reason"] for e in mixed.encodings}
    rows = storage_by_layer(mixed)
    assert reasons[rows["conv"]["name"]].startswith("sparse: the default XNNPACK delegate runs the sparse CONV_2D")
    for name in ("fc", "logits"):
        row = rows.get(name) or rows["StatefulPartitionedCall"]
        assert reasons[row["name"]].startswith("dense: XNNPACK refused the sparse FULLY_CONNECTED")
        assert "failed to delegate FULLY_CONNECTED" in reasons[row["name"]]
    assert "Weight encodings" in str(mixed) and mixed.to_dict()["encodings"] == mixed.encodings
    assert {e["reason"] for e in all_dense.encodings} == {"dense: sparse=False"}
    assert all(e["reason"].startswith("sparse: sparse=True") for e in all_sparse.encodings)


def test_the_mixed_file_computes_what_the_sparse_file_computes(mixed, all_sparse, x):
    # Densifying changes storage only: without delegates both files run the same int8 kernels on the same values.
    a = _runtime.run(_runtime.load(mixed.path, "no_delegates"), [x[:16]])
    b = _runtime.run(_runtime.load(all_sparse.path, "no_delegates"), [x[:16]])
    np.testing.assert_array_equal(a[0], b[0])


def weight_bytes(raw):
    """The stored bytes of the constant inputs of rank 2 or more (kernels), in the order operators read them.

    By operator, not by name: the converter names a tensor differently when it encodes it sparse.
    """
    model = _flatbuffer.schema_module().ModelT.InitFromPackedBuf(bytearray(raw), 0)
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators:
        for i in op.inputs:
            t = graph.tensors[i] if i >= 0 else None
            if t is not None and len(t.shape) >= 2 and model.buffers[t.buffer].data is not None:
                found.append(np.asarray(model.buffers[t.buffer].data).tobytes())
    return found


def test_densified_tensors_hold_the_bytes_a_dense_conversion_stores(all_sparse, all_dense):
    data = open(all_sparse.path, "rb").read()
    sparse = [(0, t.index) for t in _flatbuffer.read_model(data).subgraphs[0].tensors if t.sparsity]
    assert len(sparse) == 4
    raw = _rewrite.rewrite(data, densify=sparse)
    rewritten = _flatbuffer.read_model(raw).subgraphs[0]
    assert not any(t.sparsity for t in rewritten.tensors)
    assert "DENSIFY" not in [op.op for op in rewritten.operators]
    expected = weight_bytes(open(all_dense.path, "rb").read())
    assert len(expected) == 4 and weight_bytes(raw) == expected


def test_block_sparse_tensors_densify_to_the_dense_conversion(tmp_path):
    keras.utils.set_random_seed(1)
    # Inputs a multiple of 16: the converter drops a trailing partial block (24 inputs keep only 16 per row).
    model = keras.Sequential([keras.Input((48,)), keras.layers.Dense(32, name="fc"), keras.layers.Dense(5, name="out")])
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        mask = np.zeros_like(kernel)
        mask[:16, ::3] = 1  # (16, 1) blocks along the inputs: Keras (in, out)
        mask[16:32, 1::4] = 1
        layer.set_weights([kernel * mask, bias])
    x = np.random.default_rng(0).random((32, 48), dtype=np.float32)
    sparse = to_tflite(model, tmp_path / "s.tflite", quantization="int8", representative_data=x, latency_runs=0)
    dense = to_tflite(model, tmp_path / "d.tflite", quantization="int8", representative_data=x, sparse=False,
                      latency_runs=0)
    data = open(sparse.path, "rb").read()
    info = _flatbuffer.read_model(data)
    blocked = [t for t in info.subgraphs[0].tensors if t.sparsity]
    assert blocked and all(_flatbuffer.block_shape(t) == (1, 16) for t in blocked)
    densified = weight_bytes(_rewrite.rewrite(data, densify=[(0, t.index) for t in blocked]))
    assert len(densified) == 2 and densified == weight_bytes(open(dense.path, "rb").read())
    assert sorted(leftovers(tmp_path)) == ["d.tflite", "s.tflite"]


def test_rewrite_drops_what_nothing_uses_and_can_strip_metadata(all_sparse, x, tmp_path):
    data = open(all_sparse.path, "rb").read()
    schema = _flatbuffer.schema_module()
    stripped = _rewrite.rewrite(data, strip=True)
    model = schema.ModelT.InitFromPackedBuf(bytearray(stripped), 0)
    assert not model.metadata and not model.description and len(stripped) < len(data)
    graph = model.subgraphs[0]
    assert [bool(t.name) for t in graph.tensors] == [i in (*graph.inputs, *graph.outputs) for i in range(len(graph.tensors))]
    before = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    assert {m.name.decode() for m in before.metadata} >= {"min_runtime_version"}
    # Densifying every sparse tensor removes the DENSIFY operator code and the densified-tensor copies.
    info = _flatbuffer.read_model(data)
    sparse = [(0, t.index) for t in info.subgraphs[0].tensors if t.sparsity]
    dense = schema.ModelT.InitFromPackedBuf(bytearray(_rewrite.rewrite(data, densify=sparse)), 0)
    codes = {max(c.builtinCode, c.deprecatedBuiltinCode) for c in dense.operatorCodes}
    assert schema.BuiltinOperator.DENSIFY not in codes
    assert len(dense.subgraphs[0].tensors) == len(before.subgraphs[0].tensors) - len(sparse)
    used = {t.buffer for t in dense.subgraphs[0].tensors} | {m.buffer for m in dense.metadata} | {0}
    assert used == set(range(len(dense.buffers)))
    (tmp_path / "stripped.tflite").write_bytes(stripped)
    got = _runtime.run(_runtime.load(tmp_path / "stripped.tflite", "no_delegates"), [x[:8]])
    np.testing.assert_array_equal(got[0], _runtime.run(_runtime.load(all_sparse.path, "no_delegates"), [x[:8]])[0])


def test_rewrite_names_a_tensor_that_is_not_sparse(all_dense):
    with pytest.raises(_rewrite.RewriteError, match="is not stored sparse"):
        _rewrite.rewrite(open(all_dense.path, "rb").read(), densify=[(0, 0)])


def test_strip_drops_what_the_runtime_never_reads_and_still_verifies(model, x, mixed, tmp_path):
    report = to_tflite(model, tmp_path / "stripped.tflite", quantization="int8", representative_data=x,
                       strip=True, latency_runs=0)
    assert report.works_by_default and report.settings["strip"] is True
    assert report.size_bytes < mixed.size_bytes - 300
    assert report.agreement["default"]["max_abs_error"] == mixed.agreement["default"]["max_abs_error"]
    assert [t["storage"] for t in report.tensors] == [t["storage"] for t in mixed.tensors]
    assert [e["reason"] for e in report.encodings] == [e["reason"] for e in mixed.encodings]
    named = [t["name"] for t in report.tensors if t["name"]]
    assert named == [t["name"] for t in report.inputs + report.outputs]
    assert any("strip=True removed" in note for note in report.notes)
    with pytest.raises(ValueError, match="`strip` must be True or False"):
        to_tflite(model, tmp_path / "bad.tflite", strip="yes")


def test_a_partial_block_the_converter_drops_is_warned_about(tmp_path):
    # 24 inputs in (16, 1) blocks: the int8 converter keeps inputs 0-15 of each row and drops 16-23.
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((24,)), keras.layers.Dense(5, name="out")])
    kernel, bias = model.layers[0].get_weights()
    mask = np.zeros_like(kernel)
    mask[:16, 0] = 1
    mask[16:, 1] = 1  # output 1 reads only the partial block
    model.layers[0].set_weights([kernel * mask, bias])
    x = np.random.default_rng(0).random((32, 24), dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="not a whole number of blocks") as caught:
        report = to_tflite(model, tmp_path / "p.tflite", quantization="int8", representative_data=x, latency_runs=0)
    assert "24 = 1 x 16 + 8" in str(caught[0].message)
    [weight] = [t for t in report.tensors if t["constant"] and len(t["shape"]) == 2]
    assert weight["storage"] == "sparse" and weight["stored_values"] == 16  # output 1's 8 weights are gone
    outputs = _runtime.run(_runtime.load(report.path, "no_delegates"), [x])[0]
    assert np.abs(outputs[:, 1] - model(x).numpy()[:, 1]).max() > 0.1
