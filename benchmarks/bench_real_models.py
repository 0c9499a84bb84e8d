"""Real architectures: int8 file size at 80% unstructured sparsity, FLOPs and latency of channel pruning.

Models: keras.applications MobileNetV2, MobileNetV3Small, EfficientNetB0 and ResNet50
(weights=None, random weights from a fixed seed, 10 classes) and a small Transformer text
classifier (Embedding, MultiHeadAttention, FFN, LayerNorm, residual ``+`` written with operators).

(a) ``tfprune.prune_low_magnitude`` with ConstantSparsity(0.8, 0, frequency=1), one short fit on
    random data with ``tfprune.UpdatePruningStep``, ``strip_pruning``, then ``to_tflite`` int8
    with the default ``sparse="auto"`` (the sparse encoding is kept only if the default
    XNNPACK delegate runs it; otherwise the report gives the sparse file's size and why it was
    not written) and with ``sparse=False``; compared with the unpruned dense float32 file.
(b) ``tfprune.structured.prune(model, "l1_norm", ratio)`` at 30% and 50% of the channels: FLOPs
    ratio from ``tfprune.structured.compare`` and float32 ``.tflite`` latency measured with
    ``tfprune.export.run_tflite``, every file of a model timed in turn within each round.

A step that fails is recorded in the table as ``fails: <first line of the error>`` and the run
goes on, so the table shows what works today.

    python benchmarks/bench_real_models.py          # writes benchmarks/results/real_models.md
    python benchmarks/bench_real_models.py --quick  # a smoke run: 96x96 inputs, fewer samples and rounds
"""

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
import tfprune.structured as structured  # noqa: E402
from tfprune.export import run_tflite, to_tflite  # noqa: E402

from _sections import write_section  # noqa: E402

L = keras.layers
CLASSES = 10
TARGET = 0.8
RATIOS = (0.3, 0.5)
SEQ, VOCAB = 64, 2000


class Failed:
    """A step that raised: shown as ``fails: <first line>`` in the tables."""

    def __init__(self, error):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        line = lines[0] if lines else type(error).__name__
        self.text = f"{type(error).__name__}: {line}"

    def __str__(self):
        text = self.text if len(self.text) <= 140 else self.text[:137] + "..."
        return "fails: " + text.replace("|", "\\|").replace("`", "'")


def attempt(label, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or a ``Failed`` (printed) if it raises."""
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the benchmark records every failure and carries on
        result = Failed(error)
        print(f"  {label}: {result}", flush=True)
    else:
        print(f"  {label}: ok ({time.perf_counter() - start:.1f} s)", flush=True)
    return result


def text_transformer(dim=64, heads=4, blocks=2):
    """Token ids -> Embedding -> blocks of MHA + FFN with LayerNorm and operator residuals -> logits."""
    inp = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = L.Embedding(VOCAB, dim, name="embed")(inp)
    for i in range(blocks):
        attention = L.MultiHeadAttention(heads, dim // heads, name=f"mha{i}")(x, x)
        x = L.LayerNormalization(name=f"ln{i}a")(x + attention)
        ffn = L.Dense(dim, name=f"ffn{i}b")(L.Dense(2 * dim, activation="relu", name=f"ffn{i}a")(x))
        x = L.LayerNormalization(name=f"ln{i}b")(x + ffn)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, L.Dense(CLASSES, activation="softmax", name="logits")(x), name="text_transformer")


def image_data(size, low, high):
    def make(n, seed):
        rng = np.random.default_rng(seed)
        return rng.uniform(low, high, (n, size, size, 3)).astype("float32")
    return make


def token_data(n, seed):
    return np.random.default_rng(seed).integers(1, VOCAB, (n, SEQ)).astype("int32")


def models(size):
    """``[(name, builder, data(n, seed))]``; the input ranges are what each model's preprocessing expects."""
    apps = keras.applications
    common = dict(input_shape=(size, size, 3), weights=None, classes=CLASSES)
    return [
        ("MobileNetV2", lambda: apps.MobileNetV2(**common), image_data(size, -1, 1)),
        ("MobileNetV3Small", lambda: apps.MobileNetV3Small(**common), image_data(size, 0, 255)),
        ("EfficientNetB0", lambda: apps.EfficientNetB0(**common), image_data(size, 0, 255)),
        ("ResNet50", lambda: apps.ResNet50(**common), image_data(size, -120, 120)),
        (f"Transformer (2 blocks, d=64, seq {SEQ})", text_transformer, token_data),
    ]


def unstructured(model, x, y, steps, batch):
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(TARGET, 0, frequency=1))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    pruned.fit(x[:steps * batch], y[:steps * batch], batch_size=batch, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(pruned)
    report = tfprune.sparsity_report(stripped).to_dict()
    # Depthwise kernels are listed but left dense by design (tiny, sensitive): not part of the target.
    rows = [r for r in report["layers"] if not r["class"].startswith("DepthwiseConv")]
    params = sum(r["params"] for r in rows)
    return stripped, (1 - sum(r["nonzero"] for r in rows) / max(params, 1), report["total_sparsity"])


def latencies(paths, sample, rounds, repeats):
    """Median ms per single-sample invoke of each file, the files taking turns within each round."""
    times = {key: [] for key in paths}
    for _ in range(rounds):
        for key, path in paths.items():
            times[key].append(run_tflite(path, sample, repeats=repeats).latency_ms)
    return {key: statistics.median(values) for key, values in times.items()}


def bench_model(name, build, data, args, folder):
    print(f"{name}:", flush=True)
    start = time.perf_counter()
    result = {"name": name}
    keras.utils.set_random_seed(0)
    model = attempt("build", build)
    result["model"] = model
    if isinstance(model, Failed):
        return result
    result["params"] = model.count_params()
    n = args.steps * args.batch
    x, y = data(max(n, args.calibration), 0), np.random.default_rng(1).integers(0, CLASSES, max(n, args.calibration))
    calibration, samples = x[:args.calibration], x[:args.verify]
    stem = folder / name.split()[0]
    export = dict(sample_data=samples, verify_samples=args.verify, latency_runs=0)
    int8 = dict(quantization="int8", representative_data=calibration)
    files = {}

    result["float"] = attempt("dense float32 export", to_tflite, model, f"{stem}_float.tflite", **export)
    if not isinstance(result["float"], Failed):
        files["dense"] = f"{stem}_float.tflite"

    pruned = attempt("prune_low_magnitude, fit, strip", unstructured, model, x, y, args.steps, args.batch)
    if isinstance(pruned, Failed):
        result["sparsity"] = result["int8_auto"] = result["int8_dense"] = pruned
    else:
        stripped, result["sparsity"] = pruned
        result["int8_auto"] = attempt("int8 export, sparse='auto'", to_tflite, stripped,
                                      f"{stem}_int8_auto.tflite", **int8, **export)
        auto = result["int8_auto"]
        if isinstance(auto, Failed) or auto.sparse_encoded:
            result["int8_dense"] = attempt("int8 export, sparse=False", to_tflite, stripped,
                                           f"{stem}_int8_dense.tflite", sparse=False, **int8, **export)
        else:
            result["int8_dense"] = auto  # "auto" fell back to dense weights: that file is the dense int8 one

    for ratio in RATIOS:
        key = f"ratio_{ratio}"
        smaller = attempt(f"structured.prune l1_norm {ratio:.0%}", structured.prune, model, "l1_norm", ratio=ratio)
        if isinstance(smaller, Failed):
            result[key] = {"flops": smaller, "export": smaller}
            continue
        comparison = attempt("compare", structured.compare, model, smaller)
        path = f"{stem}_channels{int(ratio * 100)}_float.tflite"
        report = attempt(f"float32 export at {ratio:.0%}", to_tflite, smaller, path, **export)
        result[key] = {"flops": comparison, "export": report, "params": smaller.count_params()}
        if not isinstance(report, Failed):
            files[key] = path

    if "dense" in files:
        timed = attempt("latency", latencies, files, samples[:1], args.rounds, args.repeats)
        result["latency"] = timed
    result["seconds"] = time.perf_counter() - start
    return result


def cell_bytes(report):
    return str(report) if isinstance(report, Failed) else f"{report.size_bytes:,}"


def size_rows(results):
    rows, notes = [], []
    for r in results:
        if isinstance(r["model"], Failed):
            rows.append(f"| {r['name']} | {r['model']} | | | | | | | |")
            continue
        dense, auto, plain = r["float"], r["int8_auto"], r["int8_dense"]
        sparsity = (str(r["sparsity"]) if isinstance(r["sparsity"], Failed) else
                    f"{100 * r['sparsity'][0]:.1f}% ({100 * r['sparsity'][1]:.1f}%)")
        if isinstance(auto, Failed):
            sparse_bytes = kept = str(auto)
        else:
            alternatives = [a for a in auto.alternatives if "size_bytes" in a]
            kept = "yes" if auto.sparse_encoded else "no"
            if auto.sparse_encoded:
                sparse_bytes = f"{auto.size_bytes:,}"
            elif alternatives:
                sparse_bytes = f"{alternatives[0]['size_bytes']:,} (not written)"
                notes.append(f"- {r['name']}: the sparse int8 file was not written: {alternatives[0].get('reason')}.")
            else:
                sparse_bytes = "not tried"
        ratio = ""
        if not isinstance(dense, Failed) and not isinstance(auto, Failed):
            ratio = f"{dense.size_bytes / auto.size_bytes:.1f}x"
        rows.append(f"| {r['name']} | {r['params']:,} | {sparsity} | {cell_bytes(dense)} | {cell_bytes(plain)} | "
                    f"{sparse_bytes} | {kept} | {ratio} | {r['seconds']:.0f} |")
    return rows, notes


def speed_rows(results):
    rows = []
    for r in results:
        if isinstance(r["model"], Failed):
            continue
        timed = r.get("latency")
        base = timed.get("dense") if isinstance(timed, dict) else None
        base_cell = (str(timed) if isinstance(timed, Failed) else f"{base:.2f}") if base else str(r["float"])
        rows.append(f"| {r['name']} | unpruned | 1.00x | {r['params']:,} | {base_cell} | 1.00x |")
        for ratio in RATIOS:
            step = r[f"ratio_{ratio}"]
            flops = step["flops"]
            flops_cell = str(flops) if isinstance(flops, Failed) else f"{flops.flops_ratio:.2f}x"
            params = f"{step['params']:,}" if "params" in step else ""
            if isinstance(step["export"], Failed):
                ms = speed = str(step["export"])
            elif isinstance(timed, Failed):
                ms = speed = str(timed)
            elif timed and f"ratio_{ratio}" in timed and base:
                ms, speed = f"{timed[f'ratio_{ratio}']:.2f}", f"{base / timed[f'ratio_{ratio}']:.2f}x"
            else:
                ms = speed = "not timed (no unpruned file)"
            rows.append(f"| {r['name']} | {ratio:.0%} of channels | {flops_cell} | {params} | {ms} | {speed} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96x96 inputs, 2 fit steps, 16 calibration samples")
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--steps", type=int, default=8, help="fit steps of the unstructured pruning")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calibration", type=int, default=100, help="int8 representative samples")
    parser.add_argument("--verify", type=int, default=16, help="samples each export is verified on")
    parser.add_argument("--rounds", type=int, default=9, help="latency rounds (files take turns in each)")
    parser.add_argument("--repeats", type=int, default=50, help="invokes per file per round")
    parser.add_argument("--models", nargs="*", help="a subset, by name prefix (e.g. MobileNetV2 Transformer)")
    parser.add_argument("--output-dir", default=None, help="keep the .tflite files here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.batch, args.calibration, args.verify = 96, 2, 4, 16, 4
        args.rounds, args.repeats = 3, 10
    started = time.perf_counter()
    folder = pathlib.Path(args.output_dir or tempfile.mkdtemp(prefix="bench_real_models_"))
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [m for m in models(args.size) if not args.models or any(m[0].startswith(p) for p in args.models)]
    results = [bench_model(name, build, data, args, folder) for name, build, data in chosen]

    minutes = (time.perf_counter() - started) / 60
    command = "python benchmarks/bench_real_models.py" + (" --quick" if args.quick else "")
    if args.models:
        command += " --models " + " ".join(args.models)
    sizes, notes = size_rows(results)
    lines = [
        "## Real architectures: int8 size at 80% sparsity, channel pruning FLOPs and latency"
        + (" (QUICK SMOKE RUN)" if args.quick else ""),
        "",
        f"Command: `{command}` ({datetime.date.today().isoformat()}; {minutes:.1f} min on {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, Keras {keras.__version__}). keras.applications models with "
        f"weights=None at {args.size}x{args.size}x3, {CLASSES} classes, random weights (seed 0); the Transformer "
        f"reads {SEQ} token ids from a vocabulary of {VOCAB}. Data: uniform random in each model's input range.",
        "A failing step shows `fails: <first line of the error>`.",
        "",
        f"### (a) 80% unstructured: ConstantSparsity({TARGET}, 0, frequency=1), {args.steps} fit steps of batch "
        f"{args.batch}, stripped, int8 with {args.calibration} representative samples",
        "",
        "Kernel sparsity: zeros over the weights `sparsity_report` lists in the stripped model, depthwise kernels "
        "(left dense by design) excluded; in brackets, zeros over all parameters. Dense float: the "
        "unpruned model, float32. int8 dense: the pruned model with dense weights (`sparse=False`, or the file "
        "`sparse=\"auto\"` wrote when it fell back to dense). int8 sparse: `sparse=\"auto\"`, "
        "which keeps the sparse encoding only if the default XNNPACK delegate runs it (else the size the sparse "
        "file would have had). Random weights and random inputs: int8 files rarely agree with Keras on the "
        "top-1 class (to_tflite warns); sizes and speed do not depend on it.",
        "",
        "| model | params | kernel sparsity (all params) | dense float bytes | int8 dense bytes | int8 sparse bytes | "
        "sparse encoding kept | dense float / int8 written | seconds, whole model |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
        *sizes,
    ]
    if notes:
        lines += [""] + notes
    lines += [
        "",
        "### (b) channels removed by L1 norm: FLOPs and float32 TFLite latency",
        "",
        f"`structured.prune(model, \"l1_norm\", ratio)` on the unpruned model. FLOPs ratio: "
        f"`structured.compare(before, after).flops_ratio` (before / after). Latency: float32 .tflite, "
        f"`run_tflite` with the default delegate, 1 thread, batch 1; median over {args.rounds} rounds of "
        f"{args.repeats} invokes, a model's files taking turns within each round (ratios only: the machine is shared).",
        "",
        "| model | pruned | FLOPs before / after | params | ms per invoke | speed-up |",
        "|---|---|---:|---:|---:|---:|",
        *speed_rows(results),
    ]
    write_section("real_models", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
