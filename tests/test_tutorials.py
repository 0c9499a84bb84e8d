"""The tutorials run end to end on a slice of the real data (their --quick mode)."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

import tfprune

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "tutorials"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_mnist_magnitude_quick(tmp_path, data_dir):
    tutorial = _load("mnist_magnitude")
    results = tutorial.main(["--quick", "--data-dir", str(data_dir / "mnist"), "--output-dir", str(tmp_path)])
    names = [name for name, _ in results]
    assert names == ["baseline", "pruned 80%", "pruned 90%"]
    for (name, model), target in zip(results[1:], (0.8, 0.9)):
        rows = tfprune.sparsity_report(model).rows  # LAMP: the target is over the four kernels together
        total = sum(r["params"] for r in rows)
        assert abs(sum(r["nonzero"] for r in rows) - (1 - target) * total) <= 2, name
        assert len({round(r["sparsity"], 3) for r in rows}) > 1, name
    assert (tmp_path / "mnist_pruned_int8.tflite").stat().st_size > 0
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == {"schedule_80.png", "schedule_90.png", "sparsity.png", "weights.png"}
    reloaded = keras.saving.load_model(tmp_path / "mnist_pruned.keras")
    assert tfprune.sparsity_report(reloaded).total_sparsity > 0.85


@pytest.mark.slow
def test_mnist_dns_quick(tmp_path, data_dir):
    rows = _load("mnist_dns").main(["--quick", "--data-dir", str(data_dir / "mnist"), "--output-dir", str(tmp_path)])
    assert [r["model"] for r in rows] == ["lenet_300_100", "lenet5"]
    lenet5 = rows[1]
    assert lenet5["params"] == 431_080  # Caffe's LeNet-5, as in the paper
    for row in rows:
        assert row["compression_dns"] > 20 and row["history"][-1]["pruned"] > 0
        assert set(row["kept_per_layer"]) == {"fc1", "fc2", "fc3"} or set(row["kept_per_layer"]) == {
            "conv1", "conv2", "fc1", "fc2"}
    assert (tmp_path / "results.json").is_file() and (tmp_path / "lenet5_dns.keras").is_file()


@pytest.mark.slow
def test_imdb_lstm_quick(tmp_path, data_dir):
    results = _load("imdb_lstm").main(["--quick", "--data-dir", str(data_dir / "imdb"), "--output-dir", str(tmp_path)])
    baseline, pruned, by_rows = results["lstm"]
    assert pruned["sparsity"] > 0.75 and not pruned["embedding_rows"]
    for row in (baseline, pruned, by_rows):
        assert row["int8"]["fused_lstm"] and row["float32"]["fused_lstm"]
        assert row["int8"]["agreement"] >= 0.97 and row["float32"]["agreement"] >= 0.99
        assert row["int8"]["bytes"] < row["float32"]["bytes"] / 3
    assert pruned["int8"]["gzip_bytes"] < baseline["int8"]["gzip_bytes"] / 2
    # 80% of the 5,000 Embedding rows pruned whole and dropped from the file; ranked by |w| x count, the
    # 1,000 rows kept are nearly all of the 1,000 most frequent words
    assert by_rows["embedding_rows"] == "counts" and by_rows["embedding_rows_kept"] == 1000
    assert by_rows["frequent_words_kept"] > 900
    assert by_rows["int8"]["bytes"] < pruned["int8"]["bytes"] / 2
    vocabulary = (tmp_path / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert vocabulary[:2] == ["", "[UNK]"] and len(vocabulary) == 5000
    slim = results["conv"][1]
    assert slim["conv_filters"] == 128 and slim["params"] < results["conv"][0]["params"]


def test_imdb_tflite_scores_each_review_from_a_fresh_lstm_state(tmp_path):
    # The fused LSTM keeps its state in the interpreter between calls. With forget gates held
    # open, a review scored after another would carry that review's state if it were not reset.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,), dtype="int32"), keras.layers.Embedding(50, 8),
                              keras.layers.LSTM(6), keras.layers.Dense(1)])
    kernel, recurrent, bias = model.layers[1].get_weights()
    bias[6:12] = 10.0  # Keras orders the gates i, f, c, o
    model.layers[1].set_weights([kernel, recurrent, bias])
    path = tmp_path / "lstm.tflite"
    tfprune.export.to_tflite(model, path, latency_runs=0)
    reviews = np.random.default_rng(0).integers(1, 50, (2, 12)).astype("int32")
    def scores(x):  # what the IMDB tutorial scores each review with
        return tfprune.export.run_tflite(path, x, repeats=0).outputs[0].reshape(-1)

    alone, after_another = scores(reviews[1:])[0], scores(reviews)[1]
    np.testing.assert_allclose(after_another, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone, model.predict(reviews[1:], verbose=0)[0, 0], rtol=1e-4, atol=1e-5)
