"""Centripetal SGD's procedure for bench_filter_methods.py: ``run(baseline, data, budget_flops, calibration)``.

1. One uniform fraction of each layer's channels is kept as clusters (at least ``MIN_CLUSTERS``),
   the largest whose cut meets the FLOP budget, found by bisection with ``flops_report`` of the
   cut model (the widths do not depend on which channels are clustered together).
2. The filters are clustered by k-means (``cluster_filters``) and a copy of the baseline trains
   for ``EPOCHS`` epoch(s) with the ``CentripetalSGD`` callback (Adam, as the baseline), epsilon
   chosen so the deviations shrink by ``SHRINK`` over the run: ``(1 - epsilon) ** steps = SHRINK``.
3. ``csgd_cut`` folds each cluster into one channel. The note reports the cut's own accuracy
   change (the trained model against the cut model on the same test images; target: within 0.05
   points, i.e. nothing lost) and the largest logit change.
"""

import math
import time
import warnings

import keras
import numpy as np

import tfprune.structured as structured
import tfprune.surgery as surgery
from tfprune.datasets import mnist

NAME = "csgd"
MIN_CLUSTERS = 4
EPOCHS = 1
SHRINK = 1e-8
LEARNING_RATE = 5e-4
BATCH_SIZE = 128


def _cut_flops(baseline, fraction):
    """FLOPs of the model C-SGD would cut to when each layer keeps ``fraction`` of its channels as clusters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers left alone are reported by the final cluster_filters
        clusters = structured.cluster_filters(baseline, fraction, method="even", min_clusters=MIN_CLUSTERS)
    drop = {name: [c for cluster in partition for c in cluster[1:]] for name, partition in clusters.items()}
    drop = {name: channels for name, channels in drop.items() if channels}
    model = surgery.remove_channels(baseline, drop) if drop else baseline
    return structured.flops_report(model).total_flops


def uniform_fraction(baseline, budget_flops, steps=12):
    """The largest single fraction of clusters per channel whose cut has at most ``budget_flops`` FLOPs."""
    low, high, best = 0.0, 1.0, None
    for _ in range(steps):
        fraction = (low + high) / 2
        if _cut_flops(baseline, fraction) <= budget_flops:
            best, low = fraction, fraction
        else:
            high = fraction
    if best is None:
        raise RuntimeError(f"C-SGD: no uniform fraction reaches {budget_flops:,} FLOPs with "
                           f"min_clusters={MIN_CLUSTERS}")
    return best


def _compile(model):
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _test_images(baseline, data, calibration):
    """``(x, y, where)``: the test split if ``data`` holds one, else MNIST's test images, else the calibration set."""
    if len(data) == 2 and isinstance(data[0], (tuple, list)):
        (x, y) = data[1]
        return x, y, f"the {len(x):,} test images"
    if tuple(baseline.input_shape[1:]) in ((28, 28), (28, 28, 1)):
        _, (x, y) = mnist.load_data()
        x = (x / 255.0).astype("float32").reshape((-1,) + tuple(baseline.input_shape[1:]))
        return x, y, f"the {len(x):,} MNIST test images"
    x, y = calibration
    return x, y, f"the {len(x):,} calibration images"


def run(baseline, data, budget_flops, calibration):
    """C-SGD from the trained ``baseline`` down to ``budget_flops``: ``(cut model, seconds, note)``."""
    started = time.perf_counter()
    x_train, y_train = data[0] if isinstance(data[0], (tuple, list)) else data
    fraction = uniform_fraction(baseline, budget_flops)
    clusters = structured.cluster_filters(baseline, fraction, min_clusters=MIN_CLUSTERS)
    steps = EPOCHS * math.ceil(len(x_train) / BATCH_SIZE)
    epsilon = 1.0 - SHRINK ** (1.0 / steps)
    model = keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    csgd = structured.CentripetalSGD(clusters, epsilon=epsilon, every_n_steps=max(1, steps // 20))
    _compile(model).fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=2, callbacks=[csgd])
    smaller = structured.csgd_cut(model, clusters)
    seconds = time.perf_counter() - started

    x_test, y_test, where = _test_images(baseline, data, calibration)
    before = model.predict(x_test, verbose=0, batch_size=500)
    after = smaller.predict(x_test, verbose=0, batch_size=500)
    acc_before = float((before.argmax(1) == y_test).mean())
    acc_after = float((after.argmax(1) == y_test).mean())
    distance = csgd.history["cluster_distance"]
    note = (f"keep {fraction:.3f} of each layer as k-means clusters, {EPOCHS} epoch(s) of C-SGD (epsilon "
            f"{epsilon:.3g}; cluster distance {distance[0]:.3g} -> {distance[-1]:.2g}); the cut itself: "
            f"{acc_before:.4f} -> {acc_after:.4f} ({100 * (acc_after - acc_before):+.2f} points) on {where}, "
            f"{int((before.argmax(1) != after.argmax(1)).sum())} predictions changed, largest logit change "
            f"{float(np.abs(before - after).max()):.2g}")
    return smaller, seconds, note
