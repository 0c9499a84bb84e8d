"""Channel-importance criteria as plug-ins: register_criterion, criteria(), custom methods."""

import keras
import numpy as np
import pytest

import tfprune.structured as structured
from tfprune.structured import _criteria

L = keras.layers


def net(seed=0):
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        L.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        L.Flatten(name="flat"),
        L.Dense(3, name="logits"),
    ])
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    return model


class NegativeL1(structured.WeightCriterion):
    name = "test_negative_l1"

    def score(self, analysis):
        return {n: -np.abs(self.filters(layer)).sum(axis=1) for n, layer in self.prunable_layers(analysis)}


class MeanActivation(structured.DataCriterion):
    name = "test_mean_activation"

    def start(self, channels, **options):
        self.total, self.count = np.zeros(channels), 0

    def update(self, activation, gradient):
        assert gradient is None
        a = np.asarray(activation).reshape(-1, activation.shape[-1])
        self.total += a.sum(axis=0)
        self.count += len(a)

    def result(self):
        return self.total / max(self.count, 1)


@pytest.fixture
def registered():
    structured.register_criterion(NegativeL1)
    structured.register_criterion(MeanActivation())
    yield
    _criteria.unregister(NegativeL1.name)
    _criteria.unregister(MeanActivation.name)


def test_builtins_are_listed():
    assert structured.criteria()[:len(structured.METHODS)] == structured.METHODS
    assert "taylor" in structured.METHODS


def test_custom_weight_criterion_scores_and_prunes(registered):
    model = net()
    assert NegativeL1.name in structured.criteria()
    scores = structured.channel_scores(model, NegativeL1.name)
    np.testing.assert_allclose(scores["conv"], -structured.l1_norm(model)["conv"])
    kernel = np.array(model.get_layer("conv").kernel)
    keep = sorted(np.argsort(np.abs(kernel).sum(axis=(0, 1, 2)))[:2])  # the two smallest L1 are kept
    smaller = structured.prune(model, NegativeL1.name, ratio=0.5)
    np.testing.assert_allclose(np.array(smaller.get_layer("conv").kernel), kernel[..., keep])


def test_custom_data_criterion_scores_and_prunes(registered):
    model = net()
    conv = model.get_layer("conv")
    bias = np.array(conv.bias)
    bias[:] = [1.0, -100.0, 1.0, -100.0]  # channels 1 and 3 are dead: mean activation 0
    conv.bias.assign(bias)
    x = np.random.default_rng(1).random((10, 6, 6, 1)).astype("float32")
    scores = structured.channel_scores(model, MeanActivation.name, x, batch_size=3, verbose=0)
    direct = np.asarray(keras.Model(model.inputs[0], conv.output)(x)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(scores["conv"], direct, rtol=1e-5, atol=1e-7)
    smaller = structured.prune(model, MeanActivation.name, ratio=0.5, data=x, verbose=0)
    np.testing.assert_allclose(np.array(smaller.get_layer("conv").bias), bias[[0, 2]])


def test_duplicate_and_wrong_types_are_refused(registered):
    with pytest.raises(ValueError, match="'l1_norm' is already registered"):
        structured.register_criterion(type("Again", (NegativeL1,), {"name": "l1_norm"}))
    with pytest.raises(ValueError, match="already registered"):
        structured.register_criterion(NegativeL1)
    with pytest.raises(TypeError, match="WeightCriterion or DataCriterion; got int"):
        structured.register_criterion(42)
    with pytest.raises(TypeError, match="must implement score"):
        structured.register_criterion(type("Empty", (structured.WeightCriterion,), {"name": "test_empty"}))
    with pytest.raises(ValueError, match="non-empty string"):
        structured.register_criterion(type("NoName", (NegativeL1,), {"name": None}))


def test_unknown_method_lists_registered_names(registered):
    with pytest.raises(ValueError, match=r"Unknown scoring method 'nope'.*l1_norm.*test_mean_activation"):
        structured.channel_scores(net(), "nope")
    with pytest.raises(ValueError, match=r"Unknown scoring method 'nope'.*test_negative_l1"):
        structured.prune(net(), "nope")
