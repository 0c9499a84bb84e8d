"""AOFP's procedure for bench_filter_methods.py: each layer's width found by the halving search, tolerance raised
by bisection until the FLOP budget is met (``tfprune.structured.aofp_prune``)."""

import time

import tfprune.structured as structured

MIN_CHANNELS = 4  # as the score-based methods of bench_filter_methods.py
SAMPLES = 128  # calibration images the damage is measured on
SEARCH_STEPS = 4  # bisection steps on the tolerance, after it has been raised x4 until the budget is met


def run(baseline, data, budget_flops, calibration):
    """``(model before fine-tuning, seconds, note)`` for one FLOP budget."""
    started = time.perf_counter()
    model, report = structured.aofp_prune(baseline, calibration[0], tolerance=0.01, budget_flops=budget_flops,
                                          min_channels=MIN_CHANNELS, samples=SAMPLES,
                                          search_steps=SEARCH_STEPS)
    note = f"tolerance {report.tolerance:.3g} ({len(report.tried)} searches, {report.evaluations} evaluations)"
    return model, time.perf_counter() - started, note
