"""Filter pruning methods side by side on the MNIST VGG-style CNN, at the same FLOP budgets.

The CNN of tutorials/mnist_structured.py (conv 32-32-pool-64-64-pool-128 with BN + ReLU, dense
128 + BN + ReLU, dense 10), trained once; every channel method then brings that same baseline down
to each FLOP budget (``--budgets``, default 3x and 8x fewer multiply-adds than the baseline), and
every pruned model is fine-tuned with the same budget (``--finetune-epochs`` of Adam(5e-4)).

- Score-based methods (each registered criterion: l1_norm, l2_norm, fpgm, bn_scale, apoz, entropy,
  taylor, and any added later): scores computed once on the baseline, then one ratio for every
  layer, found by bisection so that the cut model has at most the budget's FLOPs
  (``min_channels=4``).
- Methods with their own procedure (training-time or search methods: C-SGD, SFP, AOFP, EagleEye) are
  modules ``benchmarks/_procedure_<name>.py`` with a function ``run(baseline, data, budget_flops,
  calibration) -> (model_before_fine_tuning, seconds, note)``, found by ``procedures()``.

For each model: test accuracy before and after fine-tuning (all 10,000 test images), params,
FLOPs (``tfprune.structured.flops_report``), TFLite latency (float32, ``tfprune.export.to_tflite``
and ``run_tflite``: the default delegate, 1 thread, batch 1, median over rounds in which all the
models take turns) and the method's own time (scoring, search or extra training; fine-tuning not
included, as it is the same for all).

    python benchmarks/bench_filter_methods.py            # writes benchmarks/results/filter_methods.md
    python benchmarks/bench_filter_methods.py --quick    # a smoke run on a slice of MNIST
"""

import argparse
import datetime
import importlib
import os
import pathlib
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfprune.structured as structured  # noqa: E402
from _sections import load_tutorial, write_section  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TUTORIAL = load_tutorial("mnist_structured")
MIN_CHANNELS = 4
DEFAULT_BUDGETS = [3.0, 8.0]


def flops(model):
    return structured.flops_report(model).total_flops


def uniform_cut(baseline, scores, budget_flops, steps=12):
    """The smallest single per-layer ratio whose cut has at most ``budget_flops`` FLOPs (bisection)."""
    low, high, best = 0.0, 0.95, None
    for _ in range(steps):
        ratio = (low + high) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # layers at min_channels: expected near the top of the range
            model = structured.prune(baseline, scores, ratio=ratio, min_channels=MIN_CHANNELS, verbose=0)
        if flops(model) <= budget_flops:
            best, high = (model, ratio), ratio
        else:
            low = ratio
    if best is None:
        raise RuntimeError(f"no single ratio below {high} reaches {budget_flops:,} FLOPs with min_channels={MIN_CHANNELS}")
    return best


def score_method(method):
    def run(baseline, data, budget_flops, calibration):
        started = time.perf_counter()
        needs_data = method in ("apoz", "entropy", "taylor")
        sample = (calibration if method == "taylor" else calibration[0]) if needs_data else None
        scores = structured.channel_scores(baseline, method, data=sample, verbose=0)
        model, ratio = uniform_cut(baseline, scores, budget_flops)
        return model, time.perf_counter() - started, f"{ratio:.3f} of each layer"
    return run


def procedures():
    """Methods with a procedure of their own: ``benchmarks/_procedure_<name>.py``, each with ``run``.

    ``run(baseline, data, budget_flops, calibration) -> (model_before_fine_tuning, seconds, note)``; the
    baseline is only read.
    """
    found = {}
    for path in sorted(pathlib.Path(__file__).resolve().parent.glob("_procedure_*.py")):
        module = importlib.import_module(path.stem)
        found[getattr(module, "NAME", path.stem[len("_procedure_"):])] = module.run
    return found


def methods():
    table = {name: score_method(name) for name in structured.criteria()}
    table.update(procedures())
    return table


def accuracy(model, x_test, y_test):
    TUTORIAL.compile_model(model)
    return float(model.evaluate(x_test, y_test, verbose=0, batch_size=500)[1])


def widths(model):
    names = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1")
    return "-".join(str(model.get_layer(n).output.shape[-1]) for n in names)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 training images, a smoke run")
    parser.add_argument("--epochs", type=int, default=3, help="baseline epochs (the tutorial's)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--budgets", type=float, nargs="+", default=DEFAULT_BUDGETS, help="x fewer FLOPs")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every method")
    parser.add_argument("--calibration", type=int, default=2000)
    parser.add_argument("--latency-rounds", type=int, default=10)
    args = parser.parse_args(argv)
    if args.quick:
        # 3 epochs on the slice: fewer steps leave BatchNorm's moving statistics unsettled (chance accuracy)
        args.epochs, args.finetune_epochs = 3, 1
        args.calibration, args.latency_rounds = 256, 2
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    out = ROOT / "outputs" / "bench_filter_methods"
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = TUTORIAL.load(TUTORIAL.parse_args(["--quick"] if args.quick else []))
    data = (x_train, y_train)
    calibration = (x_train[: args.calibration], y_train[: args.calibration])
    print(f"Training the baseline on {len(x_train):,} images", flush=True)
    baseline = TUTORIAL.fit(TUTORIAL.vgg_model(), data, args.epochs)
    base_flops = flops(baseline)
    table = methods()
    chosen = args.methods or list(table)
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(table)}")

    rows = [{"method": "baseline", "budget": 1.0, "model": baseline, "seconds": 0.0, "note": "",
             "before": accuracy(baseline, x_test, y_test)}]
    for budget in args.budgets:
        for name in chosen:
            print(f"\n{name} at {budget:g}x fewer FLOPs", flush=True)
            keras.utils.set_random_seed(1)
            model, seconds, note = table[name](baseline, data, base_flops / budget, calibration)
            before = accuracy(model, x_test, y_test)
            model = TUTORIAL.fit(model, data, args.finetune_epochs, learning_rate=5e-4)
            rows.append({"method": name, "budget": budget, "model": model, "seconds": seconds, "note": note,
                         "before": before})
    for row in rows:
        model = row["model"]
        row.update(after=accuracy(model, x_test, y_test), params=model.count_params(), flops=flops(model),
                   widths=widths(model))
    paths = [TUTORIAL.export_float(r["model"], out / f"{r['method']}_{r['budget']:g}x.tflite", x_test[:100])
             for r in rows]
    latencies = TUTORIAL.tflite_latencies(paths, x_test[:1], rounds=args.latency_rounds)
    for row, latency in zip(rows, latencies):
        row["latency_ms"] = latency
    write_section("filter_methods", report(rows, args, (time.perf_counter() - started) / 60))


def report(rows, args, minutes):
    base = rows[0]
    command = "python benchmarks/bench_filter_methods.py" + " ".join(
        [""] + (["--quick"] if args.quick else [])
        + ([f"--budgets {' '.join(f'{b:g}' for b in args.budgets)}"] if args.budgets != DEFAULT_BUDGETS else [])
        + ([f"--methods {' '.join(args.methods)}"] if args.methods else []))
    lines = [
        "## Filter pruning methods at the same FLOP budgets (MNIST VGG-style CNN)"
        + (" (QUICK SMOKE RUN)" if args.quick else ""),
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}; {minutes:.1f} min on {os.cpu_count()} cores, "
        f"Keras {keras.__version__}).",
        "",
        f"Baseline: tutorials/mnist_structured.py's CNN, {args.epochs} epochs of Adam(1e-3). Every pruned model is "
        f"fine-tuned for {args.finetune_epochs} epoch(s) of Adam(5e-4) on the same data. Score-based methods: one "
        f"ratio for every layer, the smallest whose cut meets the budget (min_channels={MIN_CHANNELS}). "
        "Accuracy on all 10,000 test images; latency: float32 TFLite, default delegate, 1 thread, batch 1, "
        f"median ms per call over {args.latency_rounds} rounds with all models taking turns. "
        "'method s': the method's own time (scoring, search, extra training), fine-tuning excluded.",
        "",
        "| budget | method | widths (conv1-5, fc1) | acc. before fine-tune | acc. after | vs baseline | params | "
        "FLOPs | FLOPs / | TFLite ms | speed-up | method s | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['budget']:g}x | {row['method']} | {row['widths']} | {row['before']:.4f} | {row['after']:.4f} | "
            f"{100 * (row['after'] - base['after']):+.2f} | {row['params']:,} | {row['flops']:,} | "
            f"{base['flops'] / row['flops']:.2f}x | {row['latency_ms']:.3f} | "
            f"{base['latency_ms'] / row['latency_ms']:.2f}x | {row['seconds']:.1f} | {row['note']} |"
        )
    lines += ["", "Targets (issue 20): the best method at 8x fewer FLOPs within 0.5 points of the baseline; "
              "EagleEye's pick above uniform L1 at the same budget; C-SGD's cut itself loses nothing (within "
              "0.05 points: its note gives the accuracy just before and after the cut)."]
    for budget in sorted({r["budget"] for r in rows[1:]}):
        at_budget = {r["method"]: r for r in rows[1:] if r["budget"] == budget}
        best = max(at_budget.values(), key=lambda r: r["after"])
        lines.append(f"- {budget:g}x: best {best['method']} at {best['after']:.4f} "
                     f"({100 * (best['after'] - base['after']):+.2f} points).")
        if "eagleeye" in at_budget and "l1_norm" in at_budget:
            eagle, l1 = at_budget["eagleeye"]["after"], at_budget["l1_norm"]["after"]
            lines.append(f"- {budget:g}x: EagleEye {eagle:.4f} against uniform L1 {l1:.4f} "
                         f"({'above' if eagle > l1 else 'not above'}, {100 * (eagle - l1):+.2f} points).")
    return lines


if __name__ == "__main__":
    main(sys.argv[1:])
