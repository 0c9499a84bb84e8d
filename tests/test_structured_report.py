"""What structured pruning did: channels cut per layer, layers left alone and why, a warning when nothing is cut."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import tfprune.structured as structured
import tfprune.surgery as surgery

L = keras.layers


def model_with_a_blocked_branch():
    """'a' feeds a softmax over its channels (blocked); 'b' and 'c' are free; 'logits' is the output."""
    inp = keras.Input((4, 8))
    a = ops.softmax(L.Dense(8, name="a")(inp))
    b = L.Dense(8, activation="relu", name="b")(inp)
    c = L.Dense(4, activation="relu", name="c")(b)
    h = L.Concatenate()([L.Flatten()(a), L.Flatten()(c)])
    return keras.Model(inp, L.Dense(3, name="logits")(h), name="branchy")


def test_prune_returns_the_report_on_request():
    model = model_with_a_blocked_branch()
    smaller = structured.prune(model, ratio=0.5, verbose=0)
    assert isinstance(smaller, keras.Model)  # unchanged default return
    smaller, report = structured.prune(model, ratio=0.5, verbose=0, return_report=True)
    assert isinstance(report, structured.StructuredReport)
    assert report.cut == {"b": (8, 4), "c": (4, 2)}
    assert len(report.removed["b"]) == 4 and report.channels_removed == 6
    assert "(keras.ops Softmax): it works across the channel axis" in report.left_alone["a"]
    assert "it is an output of model 'branchy'" in report.left_alone["logits"]
    assert "it works across the channel axis" in report.left_alone["softmax"]  # the op node itself
    text = str(report)
    assert "8 -> 4" in text and "logits" in text and "6 channels removed from 2 layers" in text
    assert report.to_dict()["cut"]["b"] == [8, 4]
    assert smaller.get_layer("b").units == 4


def test_min_channels_and_rounding_are_reasons():
    model = model_with_a_blocked_branch()
    _, report = structured.prune(model, ratio=0.5, min_channels=4, verbose=0, return_report=True)
    assert report.cut == {"b": (8, 4)}
    assert report.left_alone["c"] == "min_channels=4 reached"
    _, report = structured.prune(model, ratio=0.1, verbose=0, return_report=True)
    assert report.cut == {"b": (8, 7)}
    assert report.left_alone["c"] == "ratio 0.1 of 4 channels rounds to 0"
    _, report = structured.prune(model, ratio={"c": 0.5}, verbose=0, return_report=True)
    assert report.left_alone["b"] == "not named in `ratio`"


def test_a_prune_that_cuts_nothing_warns_why():
    inp = keras.Input((8,))
    model = keras.Model(inp, L.Dense(2, name="logits")(ops.softmax(L.Dense(6, name="a")(inp))), name="tiny")
    with pytest.warns(UserWarning, match=r"structured.prune cut nothing from model 'tiny'.*'a': no channel can be "
                                         r"removed: it flows into 'softmax'"):
        same, report = structured.prune(model, ratio=0.5, verbose=0, return_report=True)
    assert report.cut == {} and same.get_layer("a").units == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        structured.prune(model_with_a_blocked_branch(), ratio=0.5, verbose=0)  # a real cut: silent


def test_remove_channels_reports_the_coupled_group():
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    z = L.Conv2D(4, 1, name="c3")(L.Add()([x, y]))
    model = keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(z)))
    smaller, report = surgery.remove_channels(model, {"c1": [0, 5]}, return_report=True)
    assert report.cut == {"c1": (6, 4), "c2": (6, 4)} and report.removed["c2"] == [0, 5]
    assert report.left_alone["c3"] == "not named in `channels`"
    assert smaller.get_layer("c3").kernel.shape[-2] == 4


def test_iterative_prune_keeps_a_report_per_step():
    model = model_with_a_blocked_branch()
    _, history = structured.iterative_prune(model, ratio_per_step=0.5, steps=2, verbose=0)
    assert [h["report"].cut["b"] for h in history] == [(8, 4), (4, 2)]
    assert history[0]["removed"] == 6


def test_a_shared_layer_and_the_global_threshold_are_reasons():
    inp = keras.Input((8,))
    shared = L.Dense(8, name="shared")
    small, big = L.Dense(8, name="small")(inp), L.Dense(8, name="big")(inp)
    model = keras.Model(inp, L.Dense(2, name="logits")(L.Concatenate()([shared(inp), shared(inp), small, big])))
    model.get_layer("small").kernel.assign(np.full((8, 8), 0.01, "float32"))
    model.get_layer("big").kernel.assign(np.full((8, 8), 1.0, "float32"))
    _, report = structured.prune(model, ratio=0.25, scope="global", verbose=0, return_report=True)
    assert "'shared' (Dense): a layer shared by several calls" in report.left_alone["shared"]
    assert report.cut == {"small": (8, 4)}
    assert report.left_alone["big"] == "its channels score above the global threshold"
