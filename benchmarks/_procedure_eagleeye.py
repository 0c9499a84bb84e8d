"""EagleEye's procedure for bench_filter_methods.py: random per-layer ratios under the FLOP budget, each candidate
scored on the calibration images after adaptive BN, the best one returned (``tfprune.structured.eagleeye``)."""

import time

import tfprune.structured as structured

MIN_CHANNELS = 4  # as the score-based methods of bench_filter_methods.py
CANDIDATES = 20
BN_BATCHES, BN_BATCH_SIZE = 20, 64


def run(baseline, data, budget_flops, calibration):
    """``(model before fine-tuning, seconds, note)`` for one FLOP budget."""
    started = time.perf_counter()
    x_train = data[0]
    # Adaptive BN reads training images the candidates are not scored on, where there are enough.
    bn_images = x_train[len(calibration[0]):] if len(x_train) - len(calibration[0]) >= BN_BATCHES * BN_BATCH_SIZE else x_train
    model, report = structured.eagleeye(baseline, bn_images, budget_flops=budget_flops, validation_data=calibration,
                                        candidates=CANDIDATES, min_channels=MIN_CHANNELS, bn_batches=BN_BATCHES,
                                        batch_size=BN_BATCH_SIZE, seed=0)
    best = report.rows[report.best]
    note = (f"best of {len(report.rows)} candidates: score {best['score']:.4f} "
            f"({best['score_without_adaptive_bn']:.4f} before adaptive BN)")
    return model, time.perf_counter() - started, note
