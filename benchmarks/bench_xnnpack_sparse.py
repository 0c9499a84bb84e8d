"""XNNPACK sparse inference: a MobileNetV2 pruned with PruneForLatencyOnXNNPack, timed against the dense file.

Builds a float MobileNetV2 (alpha 1.0) by hand in the layout XNNPACK's sparse
inference needs (keras.applications' MobileNetV2 is refused by the policy:
its stem uses padding "same" and its stride-2 depthwise convolutions are
padded ((0, 1), (0, 1)); the section quotes the refusal). Its 1x1
convolutions are pruned with tfprune.PruneForLatencyOnXNNPack to 70%, 80%
and 90% (ConstantSparsity(s, 0, frequency=1), one short fit on random data),
stripped, exported float32 with tfprune.export.to_tflite (sparse="auto"),
and every file is timed with tfprune.export.run_tflite under the default
XNNPACK delegate, interleaved with the dense float32 file in the same run.

    python benchmarks/bench_xnnpack_sparse.py          # writes benchmarks/results/xnnpack_sparse.md
    python benchmarks/bench_xnnpack_sparse.py --quick  # a smoke run: 96x96 input, fewer timing rounds
"""

import argparse
import datetime
import os
import pathlib
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune._pruning.xnnpack_policy import PruneForLatencyOnXNNPack  # noqa: E402
from tfprune.export import run_tflite, to_tflite  # noqa: E402

from _sections import write_section  # noqa: E402

SPARSITIES = (0.7, 0.8, 0.9)
L = keras.layers

# MobileNetV2's inverted residual blocks (Sandler et al. 2018, Table 2): expansion t, channels c, repeats n,
# first stride s.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_for_xnnpack(size, classes=1000):
    """MobileNetV2 1.0 with explicit symmetric padding before every stride-2 convolution.

    Same layers and widths as keras.applications.MobileNetV2(alpha=1.0); only
    the padding differs, ZeroPadding2D(1) + "valid" where Keras uses "same"
    or ((0, 1), (0, 1)), because XNNPACK's sparse path needs 1 pixel on
    every side.
    """
    inputs = keras.Input((size, size, 3), name="image")
    x = L.ZeroPadding2D(1, name="stem_pad")(inputs)
    x = L.Conv2D(32, 3, strides=2, padding="valid", use_bias=False, name="stem")(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    block = 0
    for t, c, n, s in BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            shortcut, y = x, x
            if t != 1:
                y = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(x.shape[-1] * t, 1, use_bias=False,
                                                                 name=f"b{block}_expand")(y)))
            if stride == 2:
                y = L.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False,
                                      name=f"b{block}_dw")(L.ZeroPadding2D(1)(y))
            else:
                y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"b{block}_dw")(y)
            y = L.ReLU(6.0)(L.BatchNormalization()(y))
            y = L.BatchNormalization()(L.Conv2D(c, 1, use_bias=False, name=f"b{block}_project")(y))
            x = L.Add()([shortcut, y]) if stride == 1 and shortcut.shape[-1] == c else y
            block += 1
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(1280, 1, use_bias=False, name="head")(x)))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(classes, name="classifier")(x), name=f"mobilenet_v2_xnnpack_{size}")


def keras_applications_refusal(size):
    model = keras.applications.MobileNetV2(alpha=1.0, input_shape=(size, size, 3), weights=None)
    try:
        PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
    except ValueError as err:
        return str(err).split(". XNNPACK's")[0] + "."
    return None


def compile_model(model):
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def prune(base, sparsity, x, y, batch):
    pruned = compile_model(tfprune.prune_low_magnitude(
        base, pruning_schedule=tfprune.ConstantSparsity(sparsity, 0, frequency=1),
        pruning_policy=PruneForLatencyOnXNNPack()))
    pruned.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return tfprune.strip_pruning(pruned)


def pointwise_sparsity(model):
    """Zeros among the 1x1 convolution weights, and the 1x1 weights' share of all weights."""
    pointwise = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers
                 if isinstance(layer, L.Conv2D) and tuple(layer.kernel_size) == (1, 1)]
    size = sum(k.size for k in pointwise)
    return sum(int(np.sum(k == 0)) for k in pointwise) / size, size / model.count_params()


def cpu_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def delegation(path):
    """``(DELEGATE nodes, names of the ops left to the builtin kernels)`` under the default delegate.

    Reads the interpreter's node list (a private API, as tfprune.export does for its partition count): an
    op ran outside XNNPACK when a delegate partition reads its output or it reads a partition's output.
    """
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    fed = {int(t) for op in partitions for t in op["inputs"]}
    made = {int(t) for op in partitions for t in op["outputs"]}
    outside = [op["op_name"] for op in ops if op["op_name"] != "DELEGATE"
               and ({int(t) for t in op["outputs"]} & fed or {int(t) for t in op["inputs"]} & made)]
    return len(partitions), outside


def interleaved_latency(paths, sample, rounds, repeats):
    """Median single-invoke latency per file under XNNPACK; files alternate within every round."""
    per_round = {p: [] for p in paths}
    for r in range(rounds):
        order = paths if r % 2 == 0 else paths[::-1]  # neither file always runs first after the other
        for path in order:
            per_round[path].append(run_tflite(path, sample, delegates=True, repeats=repeats).latency_ms)
    return {p: (float(np.median(v)), v) for p, v in per_round.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96x96 input, 4 fit steps, 3 timing rounds")
    parser.add_argument("--size", type=int, default=None, help="input height and width (default 128; quick 96)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 15; quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed invokes per file per round (default 40)")
    parser.add_argument("--output-dir", default=None, help="keep the .tflite files here (default: a temp dir)")
    args = parser.parse_args(argv)
    size = args.size or (96 if args.quick else 128)
    rounds = args.rounds or (3 if args.quick else 15)
    repeats = args.repeats or (20 if args.quick else 40)
    steps, batch = (4, 4) if args.quick else (16, 8)
    start = time.time()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 1000, steps * batch)
    sample = rng.random((1, size, size, 3), dtype=np.float32)
    refusal = keras_applications_refusal(size)

    base = mobilenet_v2_for_xnnpack(size)
    folder = pathlib.Path(args.output_dir or tempfile.mkdtemp(prefix="bench_xnnpack_sparse_"))
    folder.mkdir(parents=True, exist_ok=True)
    export = {"sample_data": x[:8], "verify_samples": 8, "latency_runs": 0}
    variants = [("dense float32 (unpruned)", base, folder / "dense.tflite", {"sparse": False})]
    for s in SPARSITIES:
        stripped = prune(base, s, x, y, batch)
        variants.append((f"1x1 convs pruned to {s:.0%}, sparse=\"auto\"", stripped,
                         folder / f"sparse_{int(s * 100)}.tflite", {}))
    # The 90% model once more, weights stored dense: tells the encoding apart from the zeros themselves.
    variants.append(("1x1 convs pruned to 90%, sparse=False", variants[-1][1], folder / "pruned90_dense.tflite",
                     {"sparse": False}))

    rows = []
    for name, model, path, options in variants:
        report = to_tflite(model, path, **options, **export)
        zeros, share = pointwise_sparsity(model)
        partitions, outside = delegation(path)
        rows.append({"name": name, "path": str(path), "report": report, "zeros": zeros, "share": share,
                     "partitions": partitions, "outside": outside})
        print(name, report.size_bytes, "sparse" if report.sparse_encoded else "dense", flush=True)

    timing = interleaved_latency([r["path"] for r in rows], sample, rounds, repeats)
    dense_rounds = np.array(timing[rows[0]["path"]][1])

    def speedup(row):
        # Paired by round: the shared machine's load drifts from round to round, and a ratio taken within
        # one round cancels it, where a ratio of overall medians would not.
        return float(np.median(dense_rounds / np.array(timing[row["path"]][1])))

    dense_bytes = rows[0]["report"].size_bytes
    minutes = (time.time() - start) / 60
    flags = cpu_flags()
    avx = "avx" in flags
    command = "python benchmarks/bench_xnnpack_sparse.py" + (" --quick" if args.quick else "")
    interpreter = rows[0]["report"].interpreter
    lines = [
        "## XNNPACK sparse inference: MobileNetV2 pruned with PruneForLatencyOnXNNPack"
        + (" (QUICK SMOKE RUN)" if args.quick else ""),
        "",
        f"Command: `{command}` ({datetime.date.today()}; {minutes:.1f} min on {os.cpu_count()} cores, "
        f"{platform.machine()}, {interpreter}). MobileNetV2 1.0, {size}x{size}x3 input, 1000 classes, built by "
        "hand with ZeroPadding2D(1) + padding=\"valid\" before every stride-2 convolution, because "
        "`keras.applications.MobileNetV2` is refused by the policy:",
        "",
        f"> {refusal}" if refusal else "> (keras.applications.MobileNetV2 was accepted in this Keras release.)",
        "",
        f"Each pruned model: `prune_low_magnitude(..., ConstantSparsity(s, 0, frequency=1), "
        f"pruning_policy=PruneForLatencyOnXNNPack())`, one fit of {steps} steps of {batch} random images "
        "(weights are random: this measures speed, not accuracy), `strip_pruning`, "
        "`to_tflite(float32, sparse=\"auto\")`. Latency: `run_tflite(delegates=True)` (the default XNNPACK "
        f"delegate, one thread), {repeats} invokes per file per round, {rounds} rounds with the files "
        "interleaved (order reversed every other round). 'median ms' is the median of the round medians; "
        "'speed-up' is the median over rounds of (dense round median / this file's round median), paired "
        "by round because the load of this shared machine drifts between rounds.",
        "",
        "| model and export | 1x1 weights zero | bytes | dense / this | sparse encoding kept | DENSIFY ops | "
        "XNNPACK partitions | ops left outside XNNPACK | works with XNNPACK | median ms (XNNPACK) | "
        "speed-up vs dense |",
        "|---|---:|---:|---:|---|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        report = row["report"]
        ms = timing[row["path"]][0]
        default = report.runtime["default"]
        lines.append(
            f"| {row['name']} | {row['zeros']:.1%} | {report.size_bytes:,} | {dense_bytes / report.size_bytes:.2f}x | "
            f"{'yes' if report.sparse_encoded else 'no'} | {report.operators.count('DENSIFY')} | "
            f"{default['delegate_partitions']} | {', '.join(row['outside']) or 'none'} | "
            f"{'yes' if default['works'] else 'NO'} | {ms:.2f} | "
            f"{speedup(row):.2f}x |"
        )
    lines += [
        "",
        f"1x1 convolutions hold {rows[0]['share']:.0%} of the model's weights; the stem, the depthwise "
        "convolutions and the classifier stay dense, as the policy wants.",
        "",
        "Round medians (ms), in round order: "
        + "; ".join(f"{row['name']}: " + ", ".join(f"{v:.2f}" for v in timing[row["path"]][1]) for row in rows)
        + ".",
        "",
    ]
    for row in rows:
        for alt in row["report"].alternatives:
            lines.append(f"- {row['name']}: the sparse file was not written: {alt['reason']}.")
    best = max(rows[1:-1], key=speedup)
    best_speedup = speedup(best)
    lines += [
        f"What it buys here: files {dense_bytes / rows[-2]['report'].size_bytes:.2f}x smaller at 90% "
        f"(1x1 weights stored sparse), and a best XNNPACK speed-up of {best_speedup:.2f}x ({best['name']}).",
        "",
        "Why no speed-up should be expected on this machine: the CPU "
        + ("reports AVX" if avx else "does not report AVX")
        + f" ({', '.join(sorted(f for f in flags if f.startswith('avx'))[:6]) or 'no avx flags'}). The TFLite "
        "XNNPACK delegate asks XNNPACK for sparse inference (`XNN_FLAG_HINT_SPARSE_INFERENCE`) when the file "
        "has DENSIFY operators, i.e. sparse-encoded weights, but XNNPACK rewrites the graph for its sparse (NCHW) "
        "kernels only where `xnn_is_chw_compatible_config` holds, and on x86 that is false on any CPU with "
        "AVX (XNNPACK's comment: on AVX processors dense inference is expected to be faster than sparse). The "
        "delegate then unpacks the sparse weights at load time and runs the dense kernels: the file is smaller, "
        "the latency is the dense one. The sparse path runs on ARM (phones) and WebAssembly, which this "
        "benchmark cannot measure.",
        "",
        "Delegation: 'XNNPACK partitions' is the export report's count of DELEGATE nodes under the default "
        "delegate; 'ops left outside XNNPACK' lists the operators that feed a partition or read one, from "
        "the interpreter's node list. 'none' with 1 partition means XNNPACK took the whole graph, the "
        "DENSIFY operators of the sparse files included; whether it then ran them sparse is not observable "
        "from Python (see above for why it cannot on this CPU).",
    ]
    write_section("xnnpack_sparse", lines)


if __name__ == "__main__":
    main()
