"""LotteryTicket: iterative magnitude pruning with rewinding, its control, resuming, and bad input."""

import json

import keras
import numpy as np
import pytest

from tfprune._pruning import masks as mask_maths
from tfprune._pruning.fixed_masks import masks_of, prunable_weights
from tfprune import LotteryHistory, LotteryTicket

STEPS = 4  # batches per training: 32 samples, batch 16, 2 epochs


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(20, activation="relu", name="fc1"),
        keras.layers.Dense(10, activation="relu", name="fc2"),
        keras.layers.Dense(3, name="out"),
    ])


def _data(n=32):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 12)).astype("float32"), rng.integers(0, 3, n)


class Recorder:
    """A train_fn keeping what it was given: the models (weights before training) in call order."""

    def __init__(self, fail_at=None):
        self.before, self.masks, self.calls, self.fail_at = [], [], 0, fail_at

    def __call__(self, model, callbacks):
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.before.append({label: np.array(w) for label, w in prunable_weights(model).items()})
        self.masks.append(masks_of(model))
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"],
                      run_eagerly=True)  # tracing would cost more than these few steps
        x, y = _data()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks)


def _accuracy(model):
    x, y = _data()
    return model.evaluate(x, y, verbose=0)[1]


def test_fraction_remaining_is_a_power_of_the_kept_fraction_per_layer():
    model = _model()
    ticket = LotteryTicket(model, prune_fraction=0.2, rounds=3, output_fraction=0.1)
    history = ticket.run(Recorder(), _accuracy)
    assert [row["round"] for row in history.rounds] == [0, 1, 2, 3]
    sizes = {label: w.shape[0] * w.shape[1] for label, w in prunable_weights(model).items()}
    for r in range(4):
        masks = ticket.masks(r)
        for label, size in sizes.items():
            p = 0.1 if label.startswith("out") else 0.2
            kept = size
            for _ in range(r):
                kept = mask_maths.keep_count(kept, p)  # round(kept * (1 - p)) each round
            assert int(masks[label].sum()) == kept, (r, label)
            assert abs(kept / size - (1 - p) ** r) < r / size + 1e-9
            if r:
                assert np.all(masks[label] <= ticket.masks(r - 1)[label])  # nested
        assert history.rounds[r]["remaining"] == pytest.approx(
            sum(m.sum() for m in masks.values()) / sum(sizes.values()))
    assert all(0 <= m <= 1 for m in history.metrics)
    assert history.reinit_metrics == [None] * 4


def test_global_granularity_prunes_the_fraction_of_all_remaining_weights():
    ticket = LotteryTicket(_model(), prune_fraction=0.5, rounds=1, granularity="global")
    ticket.run(Recorder())
    total = sum(m.size for m in ticket.masks(0).values())
    assert sum(m.sum() for m in ticket.masks(1).values()) == mask_maths.keep_count(total, 0.5)
    per_layer = [m.mean() for m in ticket.masks(1).values()]
    assert max(per_layer) - min(per_layer) > 0.01  # one ranking: layers keep different fractions


@pytest.mark.parametrize("rewind_step", [0, 3])
def test_rewound_weights_are_the_step_k_values_where_kept_and_zero_where_pruned(rewind_step):
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    recorder = Recorder()
    ticket = LotteryTicket(model, prune_fraction=0.3, rounds=2, rewind_step=rewind_step)
    ticket.run(recorder)
    if rewind_step == 0:
        expected = {label: np.array(w) for label, w in prunable_weights(model).items()}
    else:
        # Train round 0 again by hand, stopping after step k: the values the ticket rewinds to.
        class Stop(keras.callbacks.Callback):
            steps = 0

            def on_train_batch_end(self, batch, logs=None):
                self.steps += 1
                self.model.stop_training = self.steps >= rewind_step

        ticket._seed(0, 0)
        again = _rewound_copy(model)
        Recorder()(again, [_update(), Stop()])
        expected = {label: np.array(w) for label, w in prunable_weights(again).items()}
        assert not np.allclose(expected["fc1/kernel"], before[0])  # k > 0 is not the initialisation
    for r in (1, 2):
        masks = recorder.masks[r]
        for label, weights in recorder.before[r].items():
            kept = masks[label] == 1
            np.testing.assert_array_equal(weights[kept], expected[label][kept])
            assert np.all(weights[~kept] == 0.0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # the user's model is never modified


def _update():
    from tfprune._pruning.callbacks import UpdatePruningStep
    return UpdatePruningStep()


def _rewound_copy(model):
    from tfprune._pruning.fixed_masks import prune_with_masks
    from tfprune._common.layers import copy_layer
    ones = {label: np.ones(w.shape) for label, w in prunable_weights(model).items()}
    return prune_with_masks(copy_layer(model), ones)


def test_reinitialize_trains_the_same_masks_from_other_values():
    model = _model()
    recorder = Recorder()
    history = LotteryTicket(model, prune_fraction=0.3, rounds=1, reinitialize=True).run(recorder, _accuracy)
    assert recorder.calls == 3  # dense, ticket 1, control 1
    initial = {label: np.array(w) for label, w in prunable_weights(model).items()}
    for ticket_call, control_call in ((1, 2),):
        for label in initial:
            np.testing.assert_array_equal(recorder.masks[control_call][label], recorder.masks[ticket_call][label])
            kept = recorder.masks[control_call][label] == 1
            control = recorder.before[control_call][label]
            assert not np.allclose(control[kept], initial[label][kept])
            assert np.all(control[~kept] == 0.0)
    assert history.reinit_metrics[0] is None and all(m is not None for m in history.reinit_metrics[1:])


def test_resume_after_an_interrupted_round_gives_identical_results(tmp_path):
    model = _model()
    whole = LotteryTicket(model, prune_fraction=0.3, rounds=2, rewind_step=2, directory=tmp_path / "whole")
    whole_history = whole.run(Recorder(), _accuracy)

    folder = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        LotteryTicket(model, prune_fraction=0.3, rounds=2, rewind_step=2, directory=folder).run(
            Recorder(fail_at=2), _accuracy)  # killed as round 2 starts
    assert len(json.loads((folder / "lottery.json").read_text())["history"]["rounds"]) == 2
    resumed = LotteryTicket(model, prune_fraction=0.3, rounds=2, rewind_step=2, directory=folder)
    assert len(resumed.history) == 2
    recorder = Recorder()
    history = resumed.run(recorder, _accuracy)
    assert recorder.calls == 1  # round 2 only
    assert history.get_config() == whole_history.get_config()
    for r in range(3):
        for label, mask in whole.masks(r).items():
            np.testing.assert_array_equal(resumed.masks(r)[label], mask)
    a, b = whole.ticket(), resumed.ticket()
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(whole._trained["fc1/kernel"], resumed._trained["fc1/kernel"])
    # A finished run reopened trains nothing more; given more rounds, it continues.
    assert LotteryTicket(model, prune_fraction=0.3, rounds=2, rewind_step=2, directory=folder).run(
        Recorder(fail_at=0)).get_config() == whole_history.get_config()
    more = LotteryTicket(model, prune_fraction=0.3, rounds=3, rewind_step=2, directory=folder).run(Recorder())
    assert len(more) == 4 and more.rounds[:3] == whole_history.rounds
    assert not list(folder.glob("*.part"))


def test_a_directory_of_another_run_is_refused(tmp_path):
    model = _model()
    LotteryTicket(model, prune_fraction=0.3, rounds=1, directory=tmp_path).run(Recorder())
    with pytest.raises(ValueError, match="another run.*prune_fraction"):
        LotteryTicket(model, prune_fraction=0.2, rounds=1, directory=tmp_path)
    with pytest.raises(ValueError, match="another run.*initial weights"):
        LotteryTicket(_model(seed=5), prune_fraction=0.3, rounds=1, directory=tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "lottery.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by LotteryTicket"):
        LotteryTicket(model, directory=tmp_path / "other")


@pytest.mark.parametrize("kwargs, message", [
    ({"prune_fraction": 0.0}, "prune_fraction.*strictly between 0 and 1"),
    ({"prune_fraction": 1.0}, "prune_fraction"),
    ({"prune_fraction": True}, "prune_fraction"),
    ({"output_fraction": 1.5}, "output_fraction"),
    ({"rounds": 0}, "rounds.*>= 1"),
    ({"rounds": 2.5}, "rounds"),
    ({"rewind_step": -1}, "rewind_step"),
    ({"granularity": "block"}, "granularity"),
    ({"reinitialize": "yes"}, "reinitialize"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LotteryTicket(_model(), **kwargs)


def test_unbuilt_model_is_refused():
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="LotteryTicket.*not built"):
        LotteryTicket(unbuilt)
    with pytest.raises(TypeError, match="keras Model"):
        LotteryTicket("model")


def test_rewind_step_after_the_end_of_training_is_refused():
    with pytest.raises(ValueError, match=f"rewind_step` is 50, but round 0 trained only {STEPS} steps"):
        LotteryTicket(_model(), rounds=1, rewind_step=50).run(Recorder())


def test_train_fn_that_is_not_callable_or_ignores_the_callbacks_is_refused():
    ticket = LotteryTicket(_model(), rounds=1)
    with pytest.raises(ValueError, match="train_fn` must be callable"):
        ticket.run("fit")
    with pytest.raises(ValueError, match="evaluate_fn` must be callable"):
        ticket.run(Recorder(), evaluate_fn=3)
    with pytest.raises(ValueError, match="trained no step"):
        ticket.run(lambda model, callbacks: None)

    def without_callbacks(model, callbacks):
        model.compile("sgd", "sparse_categorical_crossentropy")
        model.fit(*_data(), verbose=0)

    with pytest.raises(ValueError, match="without the callbacks"):
        ticket.run(without_callbacks)

    def only_update(model, callbacks):
        model.compile("sgd", "sparse_categorical_crossentropy")
        model.fit(*_data(), verbose=0, callbacks=callbacks[:1])

    with pytest.raises(ValueError, match="without the driver's callbacks"):
        ticket.run(only_update)
    with pytest.raises(ValueError, match="evaluate_fn` must return a number"):
        ticket.run(Recorder(), lambda model: "good")


def test_history_round_trips_its_config():
    history = LotteryHistory([{"round": 0, "remaining": 1.0, "metric": 0.5, "reinit_metric": None,
                               "steps": 3, "layers": {}}])
    assert LotteryHistory.from_config(history.get_config()).rounds == history.rounds
    assert "100.00%" in repr(history)
