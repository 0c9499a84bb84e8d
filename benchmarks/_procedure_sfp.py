"""Soft filter pruning (He et al. 2018) as a procedure of benchmarks/bench_filter_methods.py.

``run(baseline, data, budget_flops, calibration) -> (model_before_fine_tuning, seconds, note)``:
the single per-layer ratio whose cut meets the FLOP budget is found by bisection (the FLOPs of
a cut depend only on how many filters each layer keeps, so ``structured.prune`` at that ratio
measures it), then a copy of the trained baseline trains for ``EPOCHS`` epochs with
``tfprune.structured.SoftFilterPruning`` at that ratio (lowest-L2 filters zeroed at the end of
every epoch, free to recover), and ``remove()`` cuts the zero filters. The time counted is the
bisection and the SFP epochs; the benchmark's fine-tuning comes after.
"""

import time
import warnings

import keras

import tfprune.structured as structured
from _sections import load_tutorial

TUTORIAL = load_tutorial("mnist_structured")
EPOCHS = 2
LEARNING_RATE = 5e-4  # the benchmark's fine-tuning rate: SFP starts from the trained baseline
MIN_CHANNELS = 4  # as bench_filter_methods' score-based methods


def uniform_ratio(baseline, budget_flops, steps=12):
    """The smallest single per-layer ratio whose cut has at most ``budget_flops`` FLOPs (bisection)."""
    low, high, best = 0.0, 0.95, None
    for _ in range(steps):
        ratio = (low + high) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # layers held at min_channels near the top of the range
            cut = structured.prune(baseline, "l2_norm", ratio=ratio, min_channels=MIN_CHANNELS, verbose=0)
        if structured.flops_report(cut).total_flops <= budget_flops:
            best, high = ratio, ratio
        else:
            low = ratio
    if best is None:
        raise RuntimeError(f"no single ratio below {high} reaches {budget_flops:,} FLOPs with min_channels={MIN_CHANNELS}")
    return best


def run(baseline, data, budget_flops, calibration):
    started = time.perf_counter()
    ratio = uniform_ratio(baseline, budget_flops)
    model = keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    TUTORIAL.compile_model(model, LEARNING_RATE)
    sfp = structured.SoftFilterPruning(ratio=ratio, min_channels=MIN_CHANNELS)
    x_train, y_train = data
    model.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2, callbacks=[sfp])
    smaller = sfp.remove()
    recovered = ", ".join(str(h["recovered"]) for h in sfp.history)
    note = (f"{ratio:.3f} of each layer, {EPOCHS} SFP epochs (Adam {LEARNING_RATE:g}); "
            f"filters recovered per epoch: {recovered}")
    return smaller, time.perf_counter() - started, note
