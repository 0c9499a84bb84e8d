"""Sparsity allocation: LAMP, ERK, global, per layer, floors and dense layers, inside fit, saved, resumed."""

import warnings

import keras
import numpy as np
import pytest

import tfprune
from tfprune._pruning import masks as mask_lib
from tfprune._pruning.allocation import (
    ERK,
    LAMP,
    GlobalMagnitude,
    LayerUniform,
    SparsityAllocation,
    erk_densities,
    lamp_scores,
)
from tfprune._pruning.api import pruning_wrappers


def _data(n=192, features=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (x[:, :5].sum(axis=1) > 0).astype("int32")


def _mlp():
    return keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(32, activation="relu", name="d1"),
         keras.layers.Dense(16, activation="relu", name="d2"), keras.layers.Dense(2, name="out")],
        name="mlp",
    )


def _compile(model):
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _masks(model):
    return {w.layer.name: keras.ops.convert_to_numpy(w.masks[0]) for w in pruning_wrappers(model)}


def _fit(model, epochs=1, **kwargs):
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[tfprune.UpdatePruningStep()], **kwargs)
    return model


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    return {"a/kernel": np.abs(rng.normal(size=(8, 4))), "b/kernel": 0.1 * np.abs(rng.normal(size=(40, 10))),
            "c/kernel": np.abs(rng.normal(size=(10, 3)))}


SHAPES = {"a/kernel": (8, 4), "b/kernel": (40, 10), "c/kernel": (10, 3)}


# -- the maths ------------------------------------------------------------------


def test_lamp_scores_follow_the_paper():
    w = np.random.default_rng(1).normal(size=(5, 7))
    scores = lamp_scores(np.abs(w))
    flat = (w ** 2).reshape(-1)
    for u in range(flat.size):
        expected = flat[u] / flat[flat >= flat[u]].sum()
        assert scores.reshape(-1)[u] == pytest.approx(expected)
    assert scores.max() == pytest.approx(1.0)
    assert lamp_scores(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_builtins_without_options_are_todays_layer_and_global():
    scores = _scores()
    masks, thresholds = GlobalMagnitude().group_masks(scores, SHAPES, 0.7)
    expected, threshold = mask_lib.magnitude_masks(list(scores.values()), 0.7)
    for mask, want in zip(masks.values(), expected):
        np.testing.assert_array_equal(mask, want)
    assert set(thresholds.values()) == {threshold}
    masks, _ = LayerUniform().group_masks(scores, SHAPES, 0.7)
    for label, mask in masks.items():
        assert mask.sum() == mask_lib.keep_count(mask.size, 0.7)


def test_lamp_uses_one_threshold_on_its_scores_and_keeps_every_layer():
    scores = _scores()
    masks, thresholds = LAMP().group_masks(scores, SHAPES, 0.95)
    total = sum(m.size for m in masks.values())
    assert sum(m.sum() for m in masks.values()) == mask_lib.keep_count(total, 0.95)
    (threshold,) = set(thresholds.values())
    for label, mask in masks.items():
        lamp = lamp_scores(scores[label])
        assert lamp[mask == 1].min() >= threshold >= lamp[mask == 0].max(initial=0)
        assert mask.sum() >= 1
    # Global magnitude at 95% empties the small-magnitude layer b; LAMP does not.
    global_masks, _ = GlobalMagnitude().group_masks(scores, SHAPES, 0.95)
    assert global_masks["b/kernel"].sum() == 0 < masks["b/kernel"].sum()


def test_erk_gives_erk_densities():
    masks, _ = ERK().group_masks(_scores(), SHAPES, 0.8)
    densities = erk_densities(SHAPES, 0.8)
    for label, mask in masks.items():
        assert mask.sum() == mask_lib.keep_count(mask.size, 1 - densities[label])


@pytest.mark.parametrize("allocation", [
    GlobalMagnitude(min_density=0.1), LAMP(min_density={"a": 0.5}), ERK(min_density=0.15),
    LayerUniform(min_density={"c": 0.9}),
])
def test_min_density_is_kept_and_the_total_stays_on_target(allocation):
    scores = _scores()
    masks, _ = allocation.group_masks(scores, SHAPES, 0.8)
    for label, mask in masks.items():
        assert mask.mean() >= allocation.floor_of(label) - 1e-9
    total = sum(m.size for m in masks.values())
    assert abs(sum(m.sum() for m in masks.values()) - 0.2 * total) <= len(masks)


@pytest.mark.parametrize("cls", [LayerUniform, GlobalMagnitude, LAMP, ERK])
def test_dense_layers_and_keep_first_last_stay_whole(cls):
    scores = _scores()
    for allocation in (cls(dense_layers=["c"]), cls(keep_first_last=True)):
        masks, _ = allocation.group_masks(scores, SHAPES, 0.7)
        assert masks["c/kernel"].all()
        if allocation.keep_first_last:
            assert masks["a/kernel"].all()
        total = sum(m.size for m in masks.values())
        assert abs(sum(m.sum() for m in masks.values()) - 0.3 * total) <= len(masks)


# -- inside fit ------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["global", "lamp", "erk", LAMP(min_density=0.2, dense_layers=["out"])])
def test_allocations_prune_the_overall_target_in_fit(granularity):
    pruned = _fit(_compile(tfprune.prune_low_magnitude(_mlp(), tfprune.ConstantSparsity(0.75, 0, frequency=4),
                                                       granularity=granularity)))
    masks = _masks(pruned)
    total = sum(m.size for m in masks.values())
    assert abs(sum(m.sum() for m in masks.values()) - 0.25 * total) <= 3
    assert len({round(float(m.mean()), 3) for m in masks.values()}) > 1  # layers differ
    for wrapper in pruning_wrappers(pruned):
        values = keras.ops.convert_to_numpy(wrapper.pruned_weights[0])
        assert (values[keras.ops.convert_to_numpy(wrapper.masks[0]) == 0] == 0).all()
    if not isinstance(granularity, str):
        assert masks["out"].all() and masks["d1"].mean() >= 0.2


def _resumable(granularity):
    keras.utils.set_random_seed(7)
    schedule = tfprune.PolynomialDecay(0.0, 0.9, begin_step=2, end_step=22, frequency=4)
    return _compile(tfprune.prune_low_magnitude(_mlp(), pruning_schedule=schedule, granularity=granularity))


@pytest.mark.parametrize("granularity", ["lamp", "erk", ERK(keep_first_last=False, min_density={"out": 0.5})])
def test_save_mid_schedule_reload_and_continue_gives_the_same_masks(tmp_path, granularity):
    straight = _fit(_resumable(granularity), epochs=2)  # 12 steps an epoch
    first = _fit(_resumable(granularity))
    first.save(tmp_path / "half.keras")
    resumed = keras.saving.load_model(tmp_path / "half.keras")
    wrappers = pruning_wrappers(resumed)
    assert [int(w.pruning_step.numpy()) for w in wrappers] == [12, 12, 12]
    assert len({w.global_group for w in wrappers}) == 1
    assert wrappers[0].allocation == pruning_wrappers(first)[0].allocation
    _fit(resumed)
    for name, mask in _masks(straight).items():
        np.testing.assert_array_equal(mask, _masks(resumed)[name])
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_strip_and_export_keep_the_allocated_zeros(tmp_path):
    pruned = _fit(_compile(tfprune.prune_low_magnitude(_mlp(), tfprune.ConstantSparsity(0.8, 0, frequency=4),
                                                       granularity="lamp")))
    masks = _masks(pruned)
    stripped = tfprune.strip_pruning(pruned)
    assert not pruning_wrappers(stripped)
    for name, mask in masks.items():
        kernel = keras.ops.convert_to_numpy(stripped.get_layer(name).kernel)
        assert np.count_nonzero(kernel) == mask.sum()
    stripped.save(tmp_path / "plain.keras")
    report = tfprune.sparsity_report(keras.saving.load_model(tmp_path / "plain.keras"))
    assert {r["layer"]: r["nonzero"] for r in report.rows} == {n: int(m.sum()) for n, m in masks.items()}


@pytest.mark.slow
def test_an_allocated_model_exports_to_tflite(tmp_path):
    from tfprune.export import to_tflite

    pruned = _fit(_compile(tfprune.prune_low_magnitude(_mlp(), tfprune.ConstantSparsity(0.8, 0, frequency=4),
                                                       granularity="erk")))
    x, _ = _data(64)
    report = to_tflite(tfprune.strip_pruning(pruned), tmp_path / "m.tflite", sample_data=x)
    assert report.size_bytes > 0 and (tmp_path / "m.tflite").exists()


@keras.saving.register_keras_serializable(package="tfprune_tests")
class FirstLayerHalf(SparsityAllocation):
    """A user's allocation: the first layer at 50%, the others share the rest of the budget."""

    def allocate(self, scores, shapes, sparsity):
        labels = list(scores)
        sizes = {label: scores[label].size for label in labels}
        kept = (1 - sparsity) * sum(sizes.values()) - 0.5 * sizes[labels[0]]
        rest = sum(sizes[label] for label in labels[1:])
        return {label: 0.5 if i == 0 else 1 - kept / rest for i, label in enumerate(labels)}


def test_a_user_allocation_trains_saves_and_loads(tmp_path):
    pruned = _fit(_compile(tfprune.prune_low_magnitude(_mlp(), tfprune.ConstantSparsity(0.7, 0, frequency=4),
                                                       granularity=FirstLayerHalf())))
    assert _masks(pruned)["d1"].mean() == 0.5
    pruned.save(tmp_path / "custom.keras")
    loaded = keras.saving.load_model(tmp_path / "custom.keras")
    assert isinstance(pruning_wrappers(loaded)[0].allocation, FirstLayerHalf)


def test_configs_round_trip():
    for allocation in (LayerUniform(), GlobalMagnitude(min_density=0.1), LAMP(min_density={"d1": 0.2}),
                       ERK(kernel=False, dense_layers=["out"], keep_first_last=True)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(allocation))
        assert restored == allocation and type(restored) is type(allocation)


def test_a_layer_pruned_to_almost_nothing_is_named_in_a_warning():
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(200, name="wide"),
                              keras.layers.Dense(2, name="tiny")])
    weights = model.get_weights()
    weights[2] *= 1e-3  # 'tiny' has the smallest magnitudes: a global threshold empties it
    model.set_weights(weights)
    pruned = _compile(tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.9, 0, frequency=4),
                                                  granularity="global"))
    with pytest.warns(RuntimeWarning, match=r"'tiny/kernel' keeps 0 of its 400 weights.*min_density"):
        _fit(pruned)
    report = tfprune.sparsity_report(tfprune.strip_pruning(pruned))
    assert [r["layer"] for r in report.nearly_empty] == ["tiny"]
    assert "note: tiny kernel keeps 0 of 400 weights" in str(report)
    pruned = _compile(tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.9, 0, frequency=4),
                                                  granularity="lamp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _fit(pruned)


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    (dict(granularity="lampp"), r"`granularity` must be one of \('layer', 'global', 'lamp', 'erk'\)"),
    (dict(granularity=3), "granularity"),
    (dict(granularity=LAMP(min_density={"nope": 0.1})), r"`min_density` of LAMP names \['nope'\]"),
    (dict(granularity=ERK(dense_layers=["fc9"])), r"`dense_layers` of ERK names \['fc9'\]"),
    (dict(granularity=GlobalMagnitude(min_density=0.5)), r"target sparsity 0.9 keeps .*min_density=0.5"),
    (dict(granularity="lamp", sparsity_m_by_n=(2, 4)), r"sparsity_m_by_n.*granularity='layer'"),
])
def test_bad_allocations_are_refused_at_prune_time(kwargs, message):
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    kwargs.setdefault("pruning_schedule", tfprune.ConstantSparsity(0.9, 0))
    with pytest.raises(ValueError, match=message):
        tfprune.prune_low_magnitude(model, **kwargs)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("kwargs,message", [
    (dict(min_density=1.5), r"LAMP: `min_density` must be a fraction in \[0, 1\]"),
    (dict(min_density={"d1": -0.1}), r"`min_density\['d1'\]` must be a fraction"),
    (dict(dense_layers="d1"), "`dense_layers` must be a list of layer names"),
    (dict(keep_first_last="yes"), "`keep_first_last` must be True or False"),
])
def test_bad_options_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LAMP(**kwargs)


def test_row_importance_needs_the_layer_granularity():
    with pytest.raises(ValueError, match="granularity='layer'"):
        tfprune.prune_low_magnitude(keras.layers.Embedding(10, 4), row_importance=np.ones(10), granularity="erk")
