"""Pruning set-up and mask updates from 1M to 100M prunable parameters: tfprune next to tfmot.

The model is ``keras.Input(w)`` and four ``Dense(w)`` layers, ``4 w**2`` prunable
kernel weights (1M, 10M, 50M, 100M), float32, Glorot-uniform kernels from fixed
seeds. Every measurement runs in a fresh process per framework (tfmot needs
TF_USE_LEGACY_KERAS=1, which would switch the whole process to Keras 2); the two
frameworks alternate, round after round, and each figure is the median over the
rounds of the median of a few repeats in the process. Measured:

* prune: ``prune_low_magnitude(model)``; strip: ``strip_pruning(pruned)`` after a
  mask update at 50%;
* mask update: every layer's masks recomputed to 50% (read the weights, rank, assign
  masks and masked weights): tfprune's ``PruneLowMagnitude.update_masks``, tfmot's
  ``pruning_obj.conditional_mask_update()`` + ``weight_mask_op()`` at a due step;
* the previous tfprune mask update (argpartition and host copies, frozen below) against
  the current one on the same weights, with the share of updates whose k-th score is
  tied (ambiguous: which tied weights stay is then decided by ``np.argpartition``, as
  before, so the masks are identical);
* the step-time ratio pruned / plain for steps without a mask update (schedule begins
  at step 10**9), SGD, batch 32, plain and pruned fits alternating;
* peak memory: the rise of the process's peak RSS (VmHWM, reset with
  /proc/self/clear_refs) during prune and during strip, in copies of the weights.

    nice -n 10 python benchmarks/bench_scaling.py           # writes benchmarks/results/scaling.md
    nice -n 10 python benchmarks/bench_scaling.py --quick   # 1M and 10M only, fewer rounds
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from _sections import write_section

SIZES = {"1M": 500, "10M": 1581, "50M": 3536, "100M": 5000}  # w: 4 w**2 prunable weights
STEPS = {"1M": 60, "10M": 20, "50M": 8, "100M": 6}  # timed steps per epoch, fewer where a step is slow
FRAMEWORKS = ("tfprune", "tfmot")
BATCH = 32
SPARSITY = 0.5


# -- inside a worker -------------------------------------------------------------------------


def _rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _peak_rise(fn):
    """``(result, seconds, MB the peak RSS rose above the RSS before fn)``."""
    _reset_peak()
    before = _rss_mb("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, _rss_mb("VmHWM") - before


def _api(framework):
    if framework == "tfmot":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        api = tfmot.sparsity.keras
        return keras, api.prune_low_magnitude, api.strip_pruning, api.ConstantSparsity, api.UpdatePruningStep
    import keras

    import tfprune

    return keras, tfprune.prune_low_magnitude, tfprune.strip_pruning, tfprune.ConstantSparsity, \
        tfprune.UpdatePruningStep


def _build(keras, width, seed):
    layers = [keras.layers.Dense(width, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i))
              for i in range(4)]
    return keras.Sequential([keras.Input((width,))] + layers)


def _wrappers(framework, pruned):
    return [layer for layer in pruned.layers if hasattr(layer, "pruning_step")]


def _update(framework, wrappers, sparsity):
    if framework == "tfmot":
        for layer in wrappers:
            layer.pruning_step.assign(0)  # due: ConstantSparsity(s, begin_step=0, frequency=1)
            layer.pruning_obj.conditional_mask_update()
            layer.pruning_obj.weight_mask_op()
    else:
        for wrapper in wrappers:
            wrapper.update_masks(sparsity)


def _frozen_update(wrapper, sparsity):
    """tfprune's mask update before this benchmark was written: argpartition, host copies of scores and weights."""
    import keras
    import numpy as np

    results = []
    for weight in wrapper.pruned_weights:
        scores = np.abs(keras.ops.convert_to_numpy(weight).astype(np.float32))
        flat = np.concatenate([scores.reshape(-1)])
        k = min(max(int(np.round(flat.size * (1.0 - sparsity))), 1), flat.size)
        keep = np.argpartition(-flat, k - 1)[:k]
        mask = np.zeros(flat.size, dtype=np.float32)
        mask[keep] = 1.0
        results.append((mask.reshape(scores.shape), float(flat[keep].min())))
    for mask_var, thr_var, (mask, thr) in zip(wrapper.masks, wrapper.thresholds, results):
        mask_var.assign(mask.astype(mask_var.dtype))
        thr_var.assign(thr)
    for weight, mask_var in zip(wrapper.pruned_weights, wrapper.masks):
        weight.assign(keras.ops.convert_to_numpy(weight) * keras.ops.convert_to_numpy(mask_var))


def _rank_times(wrappers, sparsity, repeats):
    """Ranking alone, old (argpartition) vs new (partition), on the same score arrays; and the tied share."""
    import keras
    import numpy as np

    from tfprune._pruning import masks as mask_lib

    old, new, tied = [], [], 0
    for wrapper in wrappers:
        scores = np.abs(keras.ops.convert_to_numpy(wrapper.pruned_weights[0]))
        flat = scores.reshape(-1)
        k = mask_lib.keep_count(flat.size, sparsity)
        for _ in range(repeats):
            start = time.perf_counter()
            keep = np.argpartition(-flat, k - 1)[:k]
            mask = np.zeros(flat.size, dtype=np.float32)
            mask[keep] = 1.0
            old_threshold = float(flat[keep].min())
            old.append(time.perf_counter() - start)
            start = time.perf_counter()
            (new_mask,), threshold = mask_lib.magnitude_masks([scores], sparsity)
            new.append(time.perf_counter() - start)
            if threshold != old_threshold or not np.array_equal(new_mask.reshape(-1), mask):
                raise AssertionError("the new ranking chose other weights than the old one")
            del keep, mask, new_mask
        tied += int(np.count_nonzero(flat >= threshold)) != k
    return sum(old) / repeats, sum(new) / repeats, tied


def _step_ratio(keras, plain, pruned, update_cls, width, rounds, steps):
    """Median over rounds of (pruned / plain) seconds per step, steps timed between batch ends."""
    import numpy as np

    class StepClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    rng = np.random.default_rng(0)
    x = rng.standard_normal(((steps + 2) * BATCH, width), dtype=np.float32)
    y = rng.standard_normal(((steps + 2) * BATCH, width), dtype=np.float32)
    clock = StepClock()
    runs = {"plain": (plain, [clock]), "pruned": (pruned, [update_cls(), clock])}
    for model, _ in runs.values():
        model.compile(keras.optimizers.SGD(1e-4), "mse")
    times = {kind: [] for kind in runs}
    for r in range(rounds + 1):
        for kind in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            model, callbacks = runs[kind]
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
            if r > 0:  # round 0 traces
                # From the end of step 1 on: every interval is one whole step (callbacks included).
                times[kind].append(statistics.median(np.diff(clock.ends[1:])))
    return statistics.median(q / p for p, q in zip(times["plain"], times["pruned"])), statistics.median(times["plain"])


def worker(framework, width, repeats, train_rounds, steps):
    import gc

    keras, prune, strip, constant, update_cls = _api(framework)
    keras.utils.set_random_seed(0)
    model = _build(keras, width, seed=1)
    weights_mb = 4 * width * width * 4 / 2**20
    out = {"framework": framework, "width": width, "weights_mb": weights_mb}

    schedule = constant(SPARSITY, 0, frequency=1)
    prune_s, prune_peak = [], []
    for _ in range(repeats):
        pruned, seconds, rise = _peak_rise(lambda: prune(model, pruning_schedule=schedule))
        prune_s.append(seconds)
        prune_peak.append(rise)
        del pruned
        gc.collect()
    out.update(prune_s=statistics.median(prune_s), prune_peak_copies=max(prune_peak) / weights_mb)

    pruned = prune(model, pruning_schedule=schedule)
    wrappers = _wrappers(framework, pruned)
    _, seconds, _ = _peak_rise(lambda: _update(framework, wrappers, SPARSITY))
    out["update_s"] = seconds
    if framework == "tfprune":
        # The frozen and the current update, alternating, each on its own copy of the same weights.
        old_s, new_s = [], []
        for r in range(repeats):
            for kind in (("old", "new") if r % 2 == 0 else ("new", "old")):
                copy = prune(model, pruning_schedule=schedule)
                copy_wrappers = _wrappers(framework, copy)
                start = time.perf_counter()
                if kind == "old":
                    for wrapper in copy_wrappers:
                        _frozen_update(wrapper, SPARSITY)
                else:
                    _update(framework, copy_wrappers, SPARSITY)
                (old_s if kind == "old" else new_s).append(time.perf_counter() - start)
                del copy, copy_wrappers
                gc.collect()
        out.update(update_old_s=statistics.median(old_s), update_new_s=statistics.median(new_s),
                   update_ratio=statistics.median(o / n for o, n in zip(old_s, new_s)))
        fresh = _wrappers(framework, prune(model, pruning_schedule=schedule))
        rank_old, rank_new, tied = _rank_times(fresh, SPARSITY, max(1, repeats - 1))
        out.update(rank_old_s=rank_old, rank_new_s=rank_new, tied_layers=tied, layers=len(fresh))
        del fresh
        gc.collect()

    strip_s, strip_peak = [], []
    for _ in range(repeats):
        stripped, seconds, rise = _peak_rise(lambda: strip(pruned))
        strip_s.append(seconds)
        strip_peak.append(rise)
        del stripped
        gc.collect()
    out.update(strip_s=statistics.median(strip_s), strip_peak_copies=max(strip_peak) / weights_mb)
    del pruned, wrappers
    gc.collect()

    # Steps without a mask update: the schedule begins long after this run.
    idle = prune(model, pruning_schedule=constant(SPARSITY, 10**9, frequency=100))
    out["step_ratio"], out["plain_step_s"] = _step_ratio(keras, model, idle, update_cls, width, train_rounds, steps)
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# -- the driver -------------------------------------------------------------------------------


def _run_worker(framework, width, repeats, train_rounds, steps):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, __file__, "--worker", framework, str(width), str(repeats),
                           str(train_rounds), str(steps)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {framework} w={width} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(results, key):
    return statistics.median(r[key] for r in results)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Set-up and mask-update time from 1M to 100M parameters.")
    parser.add_argument("--quick", action="store_true", help="1M and 10M only, fewer rounds")
    parser.add_argument("--rounds", type=int, help="processes per framework and size (default 3, quick 2)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        framework, *numbers = args.worker
        print(json.dumps(worker(framework, *map(int, numbers))))
        return

    sizes = ["1M", "10M"] if args.quick else list(SIZES)
    rounds, repeats, train_rounds = (2, 2, 2) if args.quick else (3, 3, 3)
    rounds = args.rounds or rounds
    command = "nice -n 10 python benchmarks/bench_scaling.py" + (" --quick" if args.quick else "") + \
        (f" --rounds {args.rounds}" if args.rounds else "")
    results = {}
    for size in sizes:
        for r in range(rounds):
            # The frameworks alternate from round to round (and from size to size with one round).
            first = (r + sizes.index(size)) % 2 == 0
            for framework in (FRAMEWORKS if first else FRAMEWORKS[::-1]):
                res = _run_worker(framework, SIZES[size], repeats, train_rounds, STEPS[size])
                results.setdefault((size, framework), []).append(res)
                print(size, framework, {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()},
                      flush=True)

    write_section("scaling", render(results, sizes, rounds, repeats, train_rounds, command))


def render(results, sizes, rounds, repeats, train_rounds, command):
    """The section's lines from ``{(size, framework): [worker result, ...]}``."""
    lines = [
        "## Scaling: pruning set-up and mask updates from 1M to 100M parameters",
        "",
        f"Command: `{command}` ({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, shared "
        f"with other jobs). Model: `Input(w)` and four `Dense(w)`, 4 w² prunable float32 kernel weights; "
        f"{rounds} rounds of one fresh process per framework, the frameworks alternating; each figure is the "
        f"median over the rounds of the median of {repeats} repeats. Mask update: all four layers to "
        f"{SPARSITY:.0%}. Step ratio: pruned / plain seconds per step without a mask update (SGD, batch {BATCH}, "
        f"median interval between batch ends over {', '.join(f'{STEPS[s]}' for s in sizes)} steps, "
        f"{train_rounds} alternating epochs each). Peak: how far the process's peak RSS "
        "rose during the call, in copies of the kernels (the pruned model's masks are one copy in both "
        "frameworks). tfmot 0.8.1 on tf_keras, tfprune on Keras 3, in separate processes.",
        "",
        "| prunable | framework | prune s | strip s | mask update s | step ratio | prune peak (copies) "
        "| strip peak (copies) | process max RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for framework in FRAMEWORKS:
            rs = results[(size, framework)]
            lines.append(
                f"| {size} | {framework} | {_median(rs, 'prune_s'):.3f} | {_median(rs, 'strip_s'):.3f} | "
                f"{_median(rs, 'update_s'):.3f} | {_median(rs, 'step_ratio'):.3f} | "
                f"{_median(rs, 'prune_peak_copies'):.2f} | {_median(rs, 'strip_peak_copies'):.2f} | "
                f"{_median(rs, 'max_rss_mb'):.0f} |")
    lines += [
        "",
        "Side by side, per round (tfprune / tfmot, median over the rounds):",
        "",
        "| prunable | prune | strip | mask update |",
        "|---|---:|---:|---:|",
    ]
    for size in sizes:
        ours, theirs = results[(size, "tfprune")], results[(size, "tfmot")]
        ratios = {key: statistics.median(a[key] / b[key] for a, b in zip(ours, theirs))
                  for key in ("prune_s", "strip_s", "update_s")}
        lines.append(f"| {size} | {ratios['prune_s']:.2f} | {ratios['strip_s']:.2f} | {ratios['update_s']:.2f} |")
    lines += [
        "",
        "tfprune's mask update before and after the selection rewrite, on copies of the same weights, "
        "alternating (same masks: the benchmark checks the kept indices and thresholds). Ranking alone: "
        "`argpartition` and the scatter of the kept indices against `partition` into the mask's buffer. "
        "Tied layers: layers whose 50% threshold value is shared by more weights than can be kept, where "
        "`argpartition` still decides which tied weights stay (float32 Glorot weights repeat values from about "
        "10M weights per layer on).",
        "",
        "| prunable | update old s | update new s | old / new | rank old s | rank new s | rank old / new "
        "| tied layers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        rs = results[(size, "tfprune")]
        tied, layers = rs[0]["tied_layers"], rs[0]["layers"]  # the same seeded weights in every round
        lines.append(
            f"| {size} | {_median(rs, 'update_old_s'):.3f} | {_median(rs, 'update_new_s'):.3f} | "
            f"{_median(rs, 'update_ratio'):.2f} | {_median(rs, 'rank_old_s'):.3f} | {_median(rs, 'rank_new_s'):.3f} | "
            f"{statistics.median(r['rank_old_s'] / r['rank_new_s'] for r in rs):.2f} | {tied} of {layers} |")
    return lines


if __name__ == "__main__":
    main()
