"""tfprune.plots: the figures hold the right data, and PNGs are written atomically."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import plots

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def mlp():
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(8, activation="relu", name="fc1"),
                             keras.layers.Dense(3, name="fc2")])


def data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 10)).astype("float32"), rng.integers(0, 3, n)


def trained_pruned(schedule, epochs=2, history=None):
    pruned = tfprune.prune_low_magnitude(mlp(), pruning_schedule=schedule)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    callbacks = [tfprune.UpdatePruningStep()] + ([history] if history else [])
    pruned.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)
    return pruned


def assert_png(path):
    assert path.read_bytes().startswith(PNG)
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []


def test_sparsity_bars_match_the_report(tmp_path):
    final = tfprune.strip_pruning(trained_pruned(tfprune.ConstantSparsity(0.75, 0)))
    report = tfprune.sparsity_report(final)
    figure = plots.plot_sparsity(final, path=tmp_path / "sparsity.png")
    widths = [bar.get_width() for bar in figure.axes[0].patches]
    assert widths == pytest.approx([100 * r["sparsity"] for r in report.rows])
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["fc1/kernel", "fc2/kernel"]
    assert_png(tmp_path / "sparsity.png")


def test_schedule_line_and_measured_points():
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=12, frequency=4)
    history = tfprune.SparsityHistory(every_n_steps=4)
    trained_pruned(schedule, epochs=2, history=history)  # 8 steps per epoch
    rows = history.history
    assert rows["step"] == [4, 8, 8, 12, 16, 16]
    assert rows["target_sparsity"] == pytest.approx([float(schedule(s)[1]) for s in rows["step"]])
    # Batch k runs step k (as in tfmot): masks are updated at steps 4, 8 and 12.
    assert rows["sparsity"][-1] == pytest.approx(0.8, abs=0.01)
    assert all(m <= t + 0.01 for m, t in zip(rows["sparsity"], rows["target_sparsity"]))
    figure = plots.plot_schedule(schedule, 20, history=history)
    line, updates, measured = figure.axes[0].get_lines()
    assert list(line.get_ydata()) == pytest.approx([100 * float(schedule(s)[1]) for s in range(21)])
    assert list(updates.get_xdata()) == [0, 4, 8, 12]
    assert list(measured.get_xdata()) == rows["step"]
    assert list(measured.get_ydata()) == pytest.approx([100 * s for s in rows["sparsity"]])


def test_histograms_show_nonzeros_and_count_zeros(tmp_path):
    baseline = mlp()
    final = tfprune.strip_pruning(trained_pruned(tfprune.ConstantSparsity(0.5, 0)))
    figure = plots.plot_weight_histograms(baseline, final, path=tmp_path / "w.png")
    assert len(figure.axes) == 2
    kernel = final.get_layer("fc1").kernel.numpy()
    after = [p for p in figure.axes[0].patches if p.get_facecolor()[2] > 0.5 and p.get_alpha() == 0.7]
    assert sum(p.get_height() for p in after) == np.count_nonzero(kernel)
    assert any(f"{kernel.size - np.count_nonzero(kernel):,} zeros after" == t.get_text() for t in figure.axes[0].texts)
    assert_png(tmp_path / "w.png")
    with pytest.raises(ValueError, match="no kernel named"):
        plots.plot_weight_histograms(baseline, final, layers=["nope"])


def test_channel_bars_follow_surgery():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(4, name="fc")])
    slim = tfprune.surgery.remove_channels(model, {"conv": [0, 2]})
    figure = plots.plot_channels(model, slim)
    before, after = figure.axes[0].containers
    assert [b.get_height() for b in before] == [6, 4] and [b.get_height() for b in after] == [4, 4]


def test_accuracy_curves_and_baseline():
    figure = plots.plot_accuracy_vs_sparsity({"global": [(0.95, 0.98), (0.8, 0.983)], "layer": [(0.8, 0.982)]},
                                             baseline=0.981)
    lines = figure.axes[0].get_lines()
    assert list(lines[0].get_xdata()) == pytest.approx([80, 95]) and list(lines[0].get_ydata()) == pytest.approx([98.3, 98])
    assert list(lines[2].get_ydata()) == pytest.approx([98.1, 98.1])


def test_surgery_history_from_a_real_run(tmp_path):
    surgery = tfprune.dynamic_surgery(mlp(), c=0.3)
    surgery.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = tfprune.SparsityHistory(every_n_steps=2)
    x, y = data()
    surgery.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep(), history])
    rows = history.history
    assert rows["target_sparsity"] == [None] * len(rows["step"]) and rows["pruned"][-1] > 0
    figure = plots.plot_surgery_history(history, path=tmp_path / "s.png")
    pruned_line, spliced_line = figure.axes[1].get_lines()
    assert list(pruned_line.get_ydata()) == rows["pruned"] and list(spliced_line.get_ydata()) == rows["spliced"]
    assert_png(tmp_path / "s.png")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plots.plot_accuracy_vs_sparsity([(0.5, 0.9)], path=tmp_path / "no" / "x.png")
