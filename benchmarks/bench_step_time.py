"""Training step time and peak memory, pruned vs plain: tfprune (Keras 3) and tfmot (tf_keras).

Each framework runs in its own process (tfmot needs TF_USE_LEGACY_KERAS=1,
which would switch the whole process to Keras 2). Inside a process the plain
and the pruned model alternate, epoch by epoch, so machine noise hits both;
the figure that matters is the ratio pruned / plain, per framework, from the
same run. Peak memory is the max RSS of a fresh process running one fit.

Models: LeNet-300-100 and the Caffe LeNet-5 (conv 20@5x5, max-pool, conv
50@5x5, max-pool, dense 500 relu, dense 10), batch 128, on MNIST-shaped
random inputs (values do not change the time of a step).

    python benchmarks/bench_step_time.py            # writes benchmarks/results/step_time.md
    python benchmarks/bench_step_time.py --quick    # fewer rounds
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

MODELS = ("lenet300", "lenet5")
FRAMEWORKS = ("tfprune", "tfmot")
BATCH = 128


def _keras_and_pruning(framework):
    if framework == "tfmot":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        api = tfmot.sparsity.keras
        return keras, api.prune_low_magnitude, api.ConstantSparsity, api.UpdatePruningStep
    import keras

    import tfprune

    return keras, tfprune.prune_low_magnitude, tfprune.ConstantSparsity, tfprune.UpdatePruningStep


def build(keras, name):
    layers = keras.layers
    if name == "lenet300":
        body = [layers.Flatten(), layers.Dense(300, activation="relu"), layers.Dense(100, activation="relu")]
    else:
        body = [layers.Reshape((28, 28, 1)), layers.Conv2D(20, 5), layers.MaxPooling2D(2),
                layers.Conv2D(50, 5), layers.MaxPooling2D(2), layers.Flatten(),
                layers.Dense(500, activation="relu")]
    return keras.Sequential([keras.Input((28, 28))] + body + [layers.Dense(10)])


def _models(framework, name):
    keras, prune, constant, update = _keras_and_pruning(framework)
    plain = build(keras, name)
    pruned = prune(build(keras, name), pruning_schedule=constant(0.9, 0, frequency=100))
    for model in (plain, pruned):
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return {"plain": (plain, []), "pruned": (pruned, [update()])}


def worker_time(framework, name, rounds, steps):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, steps * BATCH)
    models = _models(framework, name)
    times = {k: [] for k in models}
    for r in range(rounds + 1):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for kind in order:
            model, callbacks = models[kind]
            start = time.perf_counter()
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
            if r > 0:  # round 0 traces and warms up
                times[kind].append((time.perf_counter() - start) / steps * 1e3)
    # The machine's speed drifts over a run: compare plain and pruned within each round, then take the median.
    ratios = sorted(q / p for p, q in zip(times["plain"], times["pruned"]))
    result = {kind: statistics.median(v) for kind, v in times.items()}
    result.update(ratio=statistics.median(ratios), ratio_low=ratios[len(ratios) // 4],
                  ratio_high=ratios[(3 * len(ratios)) // 4],
                  # timeit's rule: noise only ever adds time, so the fastest epoch is the least disturbed.
                  fastest_ratio=min(times["pruned"]) / min(times["plain"]))
    return result


def worker_memory(framework, name, kind, steps):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, steps * BATCH)
    model, callbacks = _models(framework, name)[kind]
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=callbacks)
    return {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run_worker(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Step time and memory, pruned vs plain.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        mode, framework, name, *rest = args.worker
        if mode == "time":
            result = worker_time(framework, name, int(rest[0]), int(rest[1]))
        else:
            result = worker_memory(framework, name, rest[0], int(rest[1]))
        print(json.dumps(result))
        return

    rounds, steps = (3, 50) if args.quick else (15, 200)
    command = "python benchmarks/bench_step_time.py" + (" --quick" if args.quick else "")
    rows, memory = [], []
    for name in MODELS:
        for framework in FRAMEWORKS:
            t = _run_worker("time", framework, name, rounds, steps)
            spread = f"{t['ratio_low']:.2f}-{t['ratio_high']:.2f}"
            rows.append((name, framework, t["plain"], t["pruned"], t["ratio"], spread, t["fastest_ratio"]))
            print(f"{name:9} {framework:8} plain {t['plain']:.2f} ms  pruned {t['pruned']:.2f} ms  "
                  f"ratio {t['ratio']:.3f} (middle half {spread}), fastest epochs {t['fastest_ratio']:.3f}",
                  flush=True)
    for framework in FRAMEWORKS:
        plain = _run_worker("memory", framework, "lenet5", "plain", steps)["max_rss_mb"]
        pruned = _run_worker("memory", framework, "lenet5", "pruned", steps)["max_rss_mb"]
        memory.append((framework, plain, pruned, pruned / plain))
        print(f"memory {framework:8} plain {plain:.0f} MB pruned {pruned:.0f} MB ratio {pruned / plain:.3f}")

    lines = [
        "## Training step time and memory, pruned vs plain",
        "",
        f"Command: `{command}` ({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores). "
        f"Batch {BATCH}, SGD with momentum, ConstantSparsity(0.9) (masks recomputed every 100 steps), "
        f"{rounds} rounds of one {steps}-step epoch of each model, the order alternating from round to round. "
        "ms/step: median over the rounds; pruned / plain: median of the per-round ratios, and the middle half "
        "of them (this machine is shared, and its speed drifts); and the ratio of each model's fastest epoch "
        "(noise only adds time). tfprune runs on Keras 3; tfmot on tf_keras, in its own process.",
        "",
        "| model | framework | plain ms/step | pruned ms/step | pruned / plain | middle half of the ratios "
        "| fastest pruned / fastest plain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {f} | {p:.2f} | {q:.2f} | {r:.3f} | {h} | {m:.3f} |" for n, f, p, q, r, h, m in rows]
    lines += [
        "",
        f"Peak memory (max RSS of a fresh process, LeNet-5, 2 epochs of {steps} steps):",
        "",
        "| framework | plain MB | pruned MB | pruned / plain |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {f} | {p:.0f} | {q:.0f} | {r:.3f} |" for f, p, q, r in memory]
    write_section("step_time", lines)


if __name__ == "__main__":
    main()
