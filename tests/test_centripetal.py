"""Centripetal SGD: clusters become identical in fit, and the cut that folds them changes no output."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import structured

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_bn_relu(x, filters, name, bias=False):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=bias, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def residual_model():
    """Conv-BN-ReLU blocks around a residual Add, then Flatten and Dense."""
    inputs = keras.Input((6, 6, 3))
    x = conv_bn_relu(inputs, 8, "stem")
    y = conv_bn_relu(x, 8, "b1")
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="b2")(y)
    y = keras.layers.BatchNormalization(name="b2_bn")(y)
    x = keras.layers.ReLU(name="add_relu")(keras.layers.Add(name="add")([x, y]))
    x = conv_bn_relu(x, 6, "head")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="tiny_resnet")


def images(n=48, shape=(6, 6, 3)):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, 3, n)


def train(model, clusters, x, y, epsilon, epochs, optimizer=None, **kwargs):
    model.compile(optimizer or keras.optimizers.Adam(1e-3), LOSS)
    csgd = structured.CentripetalSGD(clusters, epsilon=epsilon, **kwargs)
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[csgd])
    return csgd, history


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_same_weights(before, model):
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_residual_model_cut_after_convergence_changes_no_output():
    keras.utils.set_random_seed(0)
    model = residual_model()
    x, y = images()
    clusters = structured.cluster_filters(model, 0.5)
    # the residual stream (stem, b2) is clustered alike; the output layer cannot be
    assert clusters["stem"] == clusters["b2"] and "logits" not in clusters
    csgd, history = train(model, clusters, x, y, epsilon=0.2, epochs=25)
    distances = history.history["csgd_cluster_distance"]
    assert distances[-1] < 1e-6 * distances[0]
    assert all(later < earlier for earlier, later in zip(distances, distances[1:]))
    trained = weights_of(model)
    smaller, report = structured.csgd_cut(model, clusters, return_report=True)
    assert_same_weights(trained, model)  # the cut works on a copy
    assert report.cut == {"stem": (8, 4), "b1": (8, 4), "b2": (8, 4), "head": (6, 3), "fc1": (12, 6)}
    assert smaller.count_params() < model.count_params() / 2
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    # fc1 reads Flatten: row p*6 + c of its kernel is channel c of 'head' at position p; after the cut,
    # row p*3 + k is the sum over cluster k's rows at that position: the cut folded, not dropped
    before = model.get_layer("fc1").get_weights()[0].reshape(36, 6, 12)
    after = smaller.get_layer("fc1").get_weights()[0].reshape(36, 3, 6)
    units = [c[0] for c in clusters["fc1"]]  # fc1 is clustered too: its kept columns
    for k, cluster in enumerate(clusters["head"]):
        np.testing.assert_allclose(after[:, k], before[:, cluster].sum(axis=1)[:, units], atol=1e-5)


def test_without_training_the_cut_warns_and_changes_outputs():
    keras.utils.set_random_seed(0)
    model = residual_model()
    x, _ = images(8)
    clusters = structured.cluster_filters(model, {"b1": 4})
    with pytest.warns(UserWarning, match="have not converged"):
        smaller = structured.csgd_cut(model, clusters)
    assert np.abs(smaller.predict(x, verbose=0) - model.predict(x, verbose=0)).max() > 1e-3


def test_dense_to_dense_mean_follows_the_averaged_gradient_with_sgd():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="tanh", name="fc1"),
                              keras.layers.Dense(2, name="fc2")])
    x, y = np.random.default_rng(1).normal(size=(16, 5)).astype("float32"), np.arange(16) % 2
    clusters = {"fc1": [[0, 1, 2], [3, 4], [5]]}
    kernel = model.get_layer("fc1").kernel
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grad = tape.gradient(loss, kernel).numpy()
    before = kernel.numpy().copy()
    train(model, clusters, x, y, epsilon=0.25, epochs=1, optimizer=keras.optimizers.SGD(0.1))
    after = kernel.numpy()
    for cluster in ([0, 1, 2], [3, 4]):
        centre = before[:, cluster].mean(axis=1) - 0.1 * grad[:, cluster].mean(axis=1)
        np.testing.assert_allclose(after[:, cluster].mean(axis=1), centre, atol=1e-5)
        deviation = before[:, cluster] - before[:, cluster].mean(axis=1, keepdims=True)
        np.testing.assert_allclose(after[:, cluster] - centre[:, None], 0.75 * deviation, atol=1e-5)
    np.testing.assert_allclose(after[:, 5], before[:, 5] - 0.1 * grad[:, 5], atol=1e-5)  # a cluster of one: plain SGD


def test_dense_to_dense_cut_is_exact():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu", name="fc1"),
                              keras.layers.Dense(4, activation="relu", name="fc2"), keras.layers.Dense(2, name="out")])
    x, y = np.random.default_rng(2).normal(size=(32, 5)).astype("float32"), np.arange(32) % 2
    clusters = {"fc1": [[0, 5], [1, 2, 3], [4]], "fc2": [[0, 1], [2, 3]]}
    train(model, clusters, x, y, epsilon=1.0, epochs=1)  # epsilon 1: identical after the first step
    smaller = structured.csgd_cut(model, clusters)
    assert isinstance(smaller, keras.Sequential)
    assert [layer.units for layer in smaller.layers] == [3, 2, 2]
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_conv_bn_conv_ties_the_batchnorm_statistics_too():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    x = conv_bn_relu(inputs, 6, "c1", bias=True)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling2D()(x)))
    x_data, y = images(32, (6, 6, 2))
    clusters = {"c1": [[0, 2, 4], [1, 3], [5]]}
    train(model, clusters, x_data, y, epsilon=0.3, epochs=10)
    bn = model.get_layer("c1_bn")
    for weight in bn.get_weights():  # gamma, beta, moving mean and variance
        np.testing.assert_allclose(weight[[0, 2, 4]], weight[0], rtol=1e-5, atol=1e-6)
    smaller = structured.csgd_cut(model, clusters)
    assert smaller.get_layer("c1").filters == 3 and smaller.get_layer("c2").kernel.shape[2] == 3
    np.testing.assert_allclose(smaller.predict(x_data, verbose=0), model.predict(x_data, verbose=0), atol=1e-4)


def test_depthwise_between_keeps_channels_identical_and_the_next_conv_folds():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, name="c1")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.Conv2D(3, 1, name="c2")(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    x_data, y = images(32, (6, 6, 2))
    y = y % 2
    clusters = {"c1": [[0, 3], [1, 2]]}
    train(model, clusters, x_data, y, epsilon=1.0, epochs=1)
    kernel = model.get_layer("dw").get_weights()[0]  # (3, 3, in, multiplier): the input channels are tied
    np.testing.assert_allclose(kernel[:, :, 0], kernel[:, :, 3], atol=1e-6)
    smaller = structured.csgd_cut(model, clusters)
    assert smaller.get_layer("dw").output.shape[-1] == 4 and smaller.get_layer("c2").kernel.shape[2] == 4
    np.testing.assert_allclose(smaller.predict(x_data, verbose=0), model.predict(x_data, verbose=0), atol=1e-5)


def test_coupled_layers_named_differently_or_partly_are_refused():
    model = residual_model()
    stem = [[0, 1], [2, 3], [4, 5], [6, 7]]
    b2 = [[0, 2], [1, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="'stem' and 'b2' differently.*coupled"):
        structured.csgd_cut(model, {"stem": stem, "b2": b2})
    with pytest.raises(ValueError, match="gives 4 clusters to 'stem' and 2 to 'b2'"):
        structured.cluster_filters(model, {"stem": 4, "b2": 2})
    # naming one member ties the whole stream: b2 folds like stem
    smaller = structured.csgd_cut(model, {"stem": stem}, tolerance=np.inf)
    assert smaller.get_layer("b2").filters == 4


@pytest.mark.parametrize("clusters, match", [
    ({"b1": 9}, r"`clusters\['b1'\]` must be an integer in \[1, 8\]"),
    ({"b1": 0}, r"`clusters\['b1'\]` must be an integer in \[1, 8\]"),
    ({"nope": 2}, "'nope', which is not a layer of model 'tiny_resnet'"),
    ({"b1_bn": 2}, "'b1_bn' .BatchNormalization., which does not make output channels"),
    ({"logits": 2}, "'logits' cannot be clustered: 3 of its 3 channels cannot be removed, because it is an output"),
    (0.0, r"must be in \(0, 1\]"),
    ("half", "must be a dict"),
])
def test_bad_cluster_counts_are_refused_and_the_model_is_untouched(clusters, match):
    model = residual_model()
    before = weights_of(model)
    with pytest.raises((ValueError, TypeError), match=match):
        structured.cluster_filters(model, clusters)
    assert_same_weights(before, model)


@pytest.mark.parametrize("partition, match", [
    ([[0, 1], [2, 3], [4, 5], [6]], r"leaves out channel\(s\) \[7\]"),
    ([[0, 1], [1, 2, 3, 4, 5, 6, 7]], "puts channel 1 in two clusters"),
    ([[0, 1, 2, 3, 4, 5, 6, 7], []], "empty cluster"),
    ([[0, 8]], r"has 8 output channels: indices must be in \[0, 7\]"),
    ([[0, 1.5]], "must be integers"),
])
def test_bad_partitions_are_refused(partition, match):
    model = residual_model()
    with pytest.raises((ValueError, TypeError), match=match):
        structured.csgd_cut(model, {"b1": partition})
    with pytest.raises((ValueError, TypeError), match=match):
        train(model, {"b1": partition}, *images(16), epsilon=0.1, epochs=1)


def test_a_separable_conv_consumer_cannot_fold_and_is_named():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, name="c1")(inputs)
    x = keras.layers.SeparableConv2D(3, 3, name="sep")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="'sep' .SeparableConv2D. filters each input channel"):
        structured.csgd_cut(model, {"c1": [[0, 1], [2], [3]]})


def test_blocked_by_an_opaque_layer_names_it():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, name="c1")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="'c1' cannot be clustered.*'ln' .LayerNormalization."):
        structured.cluster_filters(model, {"c1": 2})


def test_float_clusters_skip_partly_blocked_layers_with_a_warning():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    d = keras.layers.Dense(8, name="d")(inputs)
    # d's last 4 channels are tied to the model's input (which stays), its first 4 to 'a'
    x = keras.layers.Add(name="add")([keras.layers.Concatenate(name="cat")([a, inputs]), d])
    h = keras.layers.Dense(6, name="h")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    with pytest.warns(UserWarning, match="left alone.*'a'.*input of model"):
        clusters = structured.cluster_filters(model, 0.5)
    assert set(clusters) == {"h"} and len(clusters["h"]) == 3
    with pytest.raises(ValueError, match="'d' cannot be clustered, coupled with 'a': 4 of its 8 channels"):
        structured.cluster_filters(model, {"d": 4})


def test_kmeans_finds_separated_clusters_and_even_splits_consecutively():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(6, name="fc"), keras.layers.Dense(1)])
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    noise = np.random.default_rng(0).normal(scale=0.01, size=(6, 3))
    kernel = (centres[[0, 1, 2, 0, 1, 2]] + noise).T  # filters are the columns
    model.get_layer("fc").set_weights([kernel, np.zeros(6)])
    assert structured.cluster_filters(model, {"fc": 3})["fc"] == [[0, 3], [1, 4], [2, 5]]
    assert structured.cluster_filters(model, {"fc": 3}, method="even")["fc"] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="`method` must be one of kmeans, even"):
        structured.cluster_filters(model, {"fc": 3}, method="spectral")


def test_history_tensorboard_and_config(tmp_path):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, name="fc1"), keras.layers.Dense(2)])
    x, y = np.random.default_rng(5).normal(size=(32, 5)).astype("float32"), np.arange(32) % 2
    clusters = {"fc1": [[0, 1, 2], [3, 4, 5]]}
    csgd, history = train(model, clusters, x, y, epsilon=0.2, epochs=3, every_n_steps=2, log_dir=tmp_path)
    assert csgd.history["step"] == [0, 2, 4, 6]  # 2 steps per epoch
    d = csgd.history["cluster_distance"]
    np.testing.assert_allclose(d[1:], [d[0] * 0.8 ** s for s in (2, 4, 6)], rtol=1e-4)
    assert len(history.history["csgd_max_deviation"]) == 3
    events = list(tmp_path.glob("events.out.tfevents.*"))
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events[0])) for v in e.summary.value}
    assert tags == {"csgd/cluster_distance", "csgd/max_deviation"}
    again = structured.CentripetalSGD(**csgd.get_config())
    assert again.get_config() == csgd.get_config()
    with pytest.raises(ValueError, match="`epsilon` must be a number in"):
        structured.CentripetalSGD(clusters, epsilon=0)
    with pytest.raises(TypeError, match="`clusters` must be a non-empty dict"):
        structured.CentripetalSGD([[0, 1]])


@pytest.mark.slow  # the exporter checks the file in a child process
def test_cut_model_exports_to_tflite(tmp_path):
    keras.utils.set_random_seed(6)
    model = residual_model()
    x, y = images(32)
    clusters = structured.cluster_filters(model, 0.5, method="even")
    train(model, clusters, x, y, epsilon=1.0, epochs=1)
    smaller = structured.csgd_cut(model, clusters)
    report = tfprune.export.to_tflite(smaller, tmp_path / "small.tflite", sample_data=x[:8], latency_runs=0)
    assert (tmp_path / "small.tflite").stat().st_size > 0 and report.path == str(tmp_path / "small.tflite")


def test_plot_cluster_distance_draws_the_history(tmp_path):
    pytest.importorskip("matplotlib")
    from tfprune import plots

    history = {"step": [0, 10, 20], "cluster_distance": [1.0, 0.1, 0.0], "max_deviation": [0.5, 0.05, 0.005]}
    figure = plots.plot_cluster_distance(history, path=tmp_path / "csgd.png")
    distance, worst = figure.axes[0].get_lines()
    assert list(distance.get_xdata()) == [0, 10, 20] and list(worst.get_ydata()) == [0.5, 0.05, 0.005]
    assert distance.get_ydata()[2] > 0  # an exact zero is drawn at the float floor of the log axis
    assert (tmp_path / "csgd.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="needs equal, non-empty lists"):
        plots.plot_cluster_distance({"step": [], "cluster_distance": []})


def test_benchmark_procedure_meets_the_flop_budget_and_the_cut_loses_nothing():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "_procedure_csgd.py"
    spec = importlib.util.spec_from_file_location("_procedure_csgd", path)
    procedure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(procedure)
    keras.utils.set_random_seed(7)
    baseline = residual_model()
    x, y = images(64)
    baseline.compile(keras.optimizers.Adam(1e-3), LOSS)
    baseline.fit(x, y, batch_size=16, epochs=1, verbose=0)
    budget = structured.flops_report(baseline).total_flops / 2
    model, seconds, note = procedure.run(baseline, (x, y), budget, (x[:32], y[:32]))
    assert structured.flops_report(model).total_flops <= budget and seconds > 0
    assert "the cut itself" in note and "(+0.00 points) on the 32 calibration images" in note
    assert "0 predictions changed" in note
