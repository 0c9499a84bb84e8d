"""tfprune.structured: channel scores (higher = more important), selection, prune, FLOPs."""

import keras
import numpy as np
import pytest

import tfprune.structured as structured
import tfprune.surgery as surgery

L = keras.layers


def vgg(width=8, seed=0):
    """Conv-BN-ReLU x2, pool, Conv-BN-ReLU, Flatten, Dense-ReLU, Dense."""
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(width, 3, padding="same", name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu1"),
        L.Conv2D(width, 3, padding="same", name="conv2"),
        L.BatchNormalization(name="bn2"),
        L.ReLU(name="relu2"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(width, 3, padding="same", activation="relu", name="conv3"),
        L.Flatten(name="flat"),
        L.Dense(6, activation="relu", name="fc"),
        L.Dense(3, name="logits"),
    ], name="vgg")
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(0, 0.3, w.shape)
        if "variance" in w.name:
            value = np.abs(value) + 0.5
        if "gamma" in w.name:
            value = 1.0 + 0.1 * value
        w.assign(value.astype("float32"))
    return model


def residual():
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = L.Add(name="add")([x, y])
    return keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))


@pytest.fixture
def x():
    return np.random.default_rng(1).random((40, 8, 8, 1)).astype("float32")


def _set(layer, name, fn):
    w = {v.name: v for v in layer.weights}[name]
    value = np.array(w)
    fn(value)
    w.assign(value)


PRUNABLE = ["conv1", "conv2", "conv3", "fc"]


@pytest.mark.parametrize("method", structured.METHODS)
def test_every_method_scores_every_prunable_layer_aligned_with_its_channels(method, x):
    model = vgg()
    y = np.arange(len(x)) % 3
    scores = structured.channel_scores(
        model, method, data=(x, y), verbose=0, bins=10,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    expected = ["conv1", "conv2"] if method == "bn_scale" else PRUNABLE  # only those have a BN
    assert sorted(scores) == sorted(expected)
    for name, values in scores.items():
        assert values.shape == (model.get_layer(name).output.shape[-1],)
        assert np.isfinite(values).all() and (values >= 0).all()


def test_weight_scores_rank_a_weakened_filter_lowest():
    model = vgg()
    _set(model.get_layer("conv2"), "kernel", lambda k: k.__setitem__((..., 5), k[..., 5] * 0.01))
    _set(model.get_layer("bn2"), "gamma", lambda g: g.__setitem__(3, 0.01))
    assert np.argmin(structured.l1_norm(model)["conv2"]) == 5
    assert np.argmin(structured.l2_norm(model)["conv2"]) == 5
    assert np.argmin(structured.bn_scale(model)["conv2"]) == 3
    np.testing.assert_allclose(structured.l1_norm(model)["fc"], np.abs(np.array(model.get_layer("fc").kernel)).sum(0), rtol=1e-5)


def test_fpgm_ranks_the_filter_at_the_median_lowest():
    model = vgg()
    def put_mean_at_2(k):
        k[..., 2] = np.median(np.delete(k, 2, axis=-1), axis=-1)
    _set(model.get_layer("conv2"), "kernel", put_mean_at_2)
    assert np.argmin(structured.fpgm(model)["conv2"]) == 2


def test_apoz_matches_a_direct_count_over_all_activations(x):
    model = vgg()
    _set(model.get_layer("bn1"), "beta", lambda b: b.__setitem__(4, -50.0))  # channel 4 of relu1 is dead
    scores = structured.apoz(model, x, batch_size=7, verbose=0)  # several batches, a ragged last one
    relu1 = keras.Model(model.inputs[0], model.get_layer("relu1").output)(x)
    expected = 1.0 - (np.asarray(relu1) == 0).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(scores["conv1"], expected, atol=1e-6)
    assert scores["conv1"][4] == 0.0 and np.argmin(scores["conv1"]) == 4
    fc = np.asarray(keras.Model(model.inputs[0], model.get_layer("fc").output)(x))
    np.testing.assert_allclose(scores["fc"], 1.0 - (fc == 0).mean(axis=0), atol=1e-6)


def test_entropy_follows_the_documented_histogram_and_flags_a_constant_channel(x):
    model = vgg()
    _set(model.get_layer("bn2"), "gamma", lambda g: g.__setitem__(6, 0.0))  # relu2 channel 6 is constant
    bins = 8
    scores = structured.entropy(model, x, bins=bins, batch_size=16, verbose=0)
    assert scores["conv2"][6] == 0.0 and scores["conv2"].max() > 0
    pooled = np.asarray(keras.Model(model.inputs[0], model.get_layer("relu2").output)(x)).mean(axis=(1, 2))
    first = pooled[:16]
    lo, hi = first.min(), first.max()
    lo, hi = lo - (hi - lo) / 2, hi + (hi - lo) / 2
    expected = []
    for c in range(pooled.shape[1]):
        counts = np.bincount(np.clip(((pooled[:, c] - lo) / (hi - lo) * bins).astype(int), 0, bins - 1), minlength=bins)
        p = counts[counts > 0] / len(pooled)
        expected.append(-(p * np.log(p)).sum())
    np.testing.assert_allclose(scores["conv2"], expected, atol=1e-5)


def test_taylor_is_zero_for_a_channel_nothing_downstream_reads(x):
    model = vgg()
    # fc reads conv3 through Flatten: index (h*W + w)*C + c. Cut channel 1 out of fc's input.
    _set(model.get_layer("fc"), "kernel", lambda k: k.__setitem__(slice(1, None, 8), 0.0))
    y = np.arange(len(x)) % 3
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scores = structured.taylor(model, (x, y), verbose=0)
    assert scores["conv3"][1] == 0.0 and (np.delete(scores["conv3"], 1) > 0).any()


def test_progress_bar_is_shown(x, capsys):
    structured.apoz(vgg(), x, batch_size=10, verbose=1)
    assert "4/4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="apoz", data=None), ValueError, r"`data` is required"),
        (dict(method="apoz", data=np.zeros((4, 9, 9, 1))), ValueError, r"`data` batches have shape \(4, 9, 9, 1\).*\(None, 8, 8, 1\)"),
        (dict(method="apoz", data=np.zeros((4, 8, 8))), ValueError, r"shape \(4, 8, 8\)"),
        (dict(method="apoz", data=np.zeros((0, 8, 8, 1))), ValueError, r"empty"),
        (dict(method="taylor", data=np.zeros((4, 8, 8, 1)), loss="mse"), ValueError, r"no labels.*\(x, y\)"),
        (dict(method="taylor", data=(np.zeros((4, 8, 8, 1)), np.zeros(4))), ValueError, r"needs a loss"),
        (dict(method="magic"), ValueError, r"Unknown scoring method 'magic'.*l1_norm"),
        (dict(method="entropy", data=np.zeros((4, 8, 8, 1)), bins=1), ValueError, r"`bins`"),
        (dict(method="apoz", data=42), TypeError, r"`data` must be an array"),
    ],
)
def test_bad_scoring_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        structured.channel_scores(vgg(), verbose=0, **kwargs)


def test_prune_removes_the_ratio_from_each_layer_and_keeps_names(x):
    model = vgg()
    before = [np.array(w) for w in model.weights]
    smaller = structured.prune(model, "l1_norm", ratio=0.5)
    assert [w.shape for w in model.weights] == [b.shape for b in before]
    assert all(np.array_equal(np.array(w), b) for w, b in zip(model.weights, before))
    for name in PRUNABLE:
        assert smaller.get_layer(name).output.shape[-1] == model.get_layer(name).output.shape[-1] // 2
    assert smaller.get_layer("logits").output.shape[-1] == 3
    assert smaller.predict(x[:2], verbose=0).shape == (2, 3)


def test_prune_removes_exactly_the_lowest_scored_channels():
    model = vgg()
    scores = {name: np.random.default_rng(i).random(model.get_layer(name).output.shape[-1]) for i, name in enumerate(PRUNABLE)}
    cut = structured.select_channels(model, scores, ratio=0.25)
    for name in PRUNABLE:
        assert sorted(cut[name]) == sorted(np.argsort(scores[name])[: round(0.25 * len(scores[name]))].tolist())


def test_coupled_layers_are_ranked_by_the_mean_of_their_scores():
    model = residual()
    s1 = np.array([0.0, 5, 5, 5, 5, 5])   # c1 alone would drop channel 0
    s2 = np.array([9.0, 5, 5, 5, 0.5, 5])  # mean: channel 0 -> 4.5, channel 4 -> 2.75
    cut = structured.select_channels(model, {"c1": s1, "c2": s2}, ratio=1 / 6)
    assert cut == {"c1": [4], "c2": [4]}


def test_global_scope_and_min_channels():
    model = vgg(width=8)
    scores = {name: np.full(model.get_layer(name).output.shape[-1], 1.0) for name in PRUNABLE}
    scores["conv2"] = np.linspace(0.0, 0.1, 8)  # conv2 is globally the weakest
    cut = structured.select_channels(model, scores, ratio=0.2, scope="global", min_channels=3)
    assert len(cut["conv2"]) == 5  # the 6 weakest are all in conv2, but min_channels keeps 3
    assert sum(len(v) for v in cut.values()) == round(0.2 * 30)
    cut = structured.select_channels(model, scores, ratio=0.95, scope="global", min_channels=2)
    for name in PRUNABLE:
        assert model.get_layer(name).output.shape[-1] - len(cut.get(name, [])) == 2


def test_per_layer_ratio_dict_prunes_only_those_groups():
    model = residual()
    smaller = structured.prune(model, "l2_norm", ratio={"c2": 0.5})
    assert smaller.get_layer("c1").filters == 3 and smaller.get_layer("c2").filters == 3  # coupled by Add


@pytest.mark.parametrize(
    "ratio, kwargs, match",
    [
        (1.0, {}, r"`ratio` must be a number in \[0, 1\)"),
        (-0.1, {}, r"`ratio` must be a number in \[0, 1\)"),
        ("half", {}, r"`ratio` must be a number"),
        ({"conv9": 0.5}, {}, r"`ratio` names 'conv9'.*'conv1'"),
        ({"logits": 0.5}, {}, r"No channel of 'logits' can be removed: it is an output"),
        ({"conv1": 1.5}, {}, r"`ratio\['conv1'\]` must be a number in \[0, 1\)"),
        ({"conv1": 0.5}, {"scope": "global"}, r"dict cannot be used with scope='global'"),
        (0.5, {"scope": "model"}, r"`scope` must be 'layer'"),
        (0.5, {"min_channels": 0}, r"`min_channels` must be an integer >= 1"),
    ],
)
def test_bad_pruning_arguments_leave_the_model_alone(ratio, kwargs, match):
    model = vgg()
    before = [np.array(w) for w in model.weights]
    with pytest.raises(ValueError, match=match):
        structured.prune(model, "l1_norm", ratio=ratio, **kwargs)
    assert all(np.array_equal(np.array(w), b) for w, b in zip(model.weights, before))


def test_conflicting_ratios_in_a_coupled_group():
    with pytest.raises(ValueError, match=r"'c1'.*'c2'.*coupled"):
        structured.prune(residual(), "l1_norm", ratio={"c1": 0.5, "c2": 0.25})


def test_apoz_prune_after_zeroing_is_exact(x):
    """The dead channels APoZ finds are removed without changing the outputs."""
    model = vgg()
    _set(model.get_layer("bn1"), "beta", lambda b: b.__setitem__(slice(None), 10.0))
    _set(model.get_layer("bn1"), "beta", lambda b: b.__setitem__([2, 5], -100.0))
    scores = structured.apoz(model, x, verbose=0)
    cut = structured.select_channels(model, {"conv1": scores["conv1"]}, ratio={"conv1": 0.25})
    assert sorted(cut["conv1"]) == [2, 5]
    smaller = surgery.remove_channels(model, cut)
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_flops_report_counts_multiply_adds():
    model = vgg(width=8)
    report = structured.flops_report(model)
    assert report["conv1"]["flops"] == 8 * 8 * 3 * 3 * 1 * 8
    assert report["conv3"]["flops"] == 4 * 4 * 3 * 3 * 8 * 8
    assert report["fc"]["flops"] == 4 * 4 * 8 * 6
    assert report.total_params == model.count_params()
    assert report.total_flops == sum(r["flops"] for r in report.rows)
    assert "conv1" in str(report) and report.to_dict()["total_flops"] == report.total_flops
    sep = keras.Sequential([keras.Input((6, 6, 4)), L.SeparableConv2D(5, 3, depth_multiplier=2),
                            L.DepthwiseConv2D(3), L.Conv2DTranspose(3, 2)])
    rows = structured.flops_report(sep).rows
    assert [r["flops"] for r in rows] == [4 * 4 * (9 * 4 * 2 + 8 * 5), 2 * 2 * 9 * 5, 2 * 2 * 4 * 5 * 3]


def test_compare_shows_the_reduction():
    model = vgg()
    smaller = structured.prune(model, "l1_norm", ratio=0.5)
    comparison = structured.compare(model, smaller)
    row = next(r for r in comparison.rows if r["layer"] == "conv2")
    assert (row["channels_before"], row["channels_after"]) == (8, 4)
    assert row["flops_after"] * 4 == row["flops_before"]  # both in and out channels halved
    assert comparison.flops_ratio > 3 and comparison.params_ratio > 2
    assert "conv2" in str(comparison) and comparison.to_dict()["flops_ratio"] == comparison.flops_ratio


@pytest.mark.slow
def test_prune_a_keras_application_by_activations():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    smaller = structured.prune(model, "entropy", ratio=0.25, data=x, bins=4, verbose=0, min_channels=2)
    comparison = structured.compare(model, smaller)
    assert 1.3 < comparison.flops_ratio and smaller.predict(x, verbose=0).shape == (8, 10)
    expand = next(r for r in comparison.rows if r["layer"] == "block_1_expand")
    assert expand["channels_after"] == expand["channels_before"] - round(0.25 * expand["channels_before"])
