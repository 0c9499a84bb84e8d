"""Int8 files near the floor: bytes / (one byte per nonzero kernel weight), tfprune beside tfmot's documented flow.

Four pruned models, each exported to full-integer int8 three ways:

* tfprune ``to_tflite(..., quantization="int8")`` with the default
  ``sparse="auto"``: sparse where the default XNNPACK delegate runs it,
  dense elsewhere, in one file;
* the same with ``strip=True`` (no converter metadata, no inner tensor names);
* tfmot 0.8's documented flow on the same weights, in a child process
  (tfmot needs ``TF_USE_LEGACY_KERAS=1``, which switches a whole process to
  tf_keras): ``prune_low_magnitude`` (``ConstantSparsity`` at the same
  target and block shape, on the layers tfprune pruned), one fit step with
  ``UpdatePruningStep``, ``strip_pruning``, then
  ``TFLiteConverter.from_keras_model`` with ``Optimize.DEFAULT`` +
  ``Optimize.EXPERIMENTAL_SPARSITY`` and the same representative data.

Every file is run with ``run_tflite`` under the default XNNPACK delegate on
the same samples and compared with the Keras model. The floor is one byte
per nonzero kernel weight of the Keras model (int8: one byte per weight,
nothing else); the parts table says where the other bytes go.

Models: LeNet-300-100 at 95% in (16, 1) blocks and the MLP 784-2048-2048-10
at 95%, unstructured and in (16, 1) blocks (both trained on MNIST, short
schedules: sizes, not accuracy, are the point), and keras.applications
MobileNetV2 at 128x128 (weights=None, 1000 classes), its convolutions and
Dense pruned to 90% unstructured on random data (depthwise kernels stay
dense, as tfprune leaves them).

    python benchmarks/bench_export_floor.py          # writes benchmarks/results/export_floor.md
    python benchmarks/bench_export_floor.py --quick  # a smoke run: fewer epochs, MNIST subset
"""

import argparse
import collections
import datetime
import gzip
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BATCH = 128


# -- models, built the same way in Keras 3 and in tf_keras ---------------------------------------------------


def build(keras, arch):
    layers = keras.layers
    if arch == "lenet":
        return keras.Sequential([keras.Input((28, 28)), layers.Flatten(), layers.Dense(300, activation="relu"),
                                 layers.Dense(100, activation="relu"), layers.Dense(10)], name="lenet_300_100")
    if arch == "mlp":
        return keras.Sequential([keras.Input((28, 28)), layers.Flatten(), layers.Dense(2048, activation="relu"),
                                 layers.Dense(2048, activation="relu"), layers.Dense(10)], name="mlp_2048")
    return keras.applications.MobileNetV2(input_shape=(128, 128, 3), weights=None, classes=1000)


def pruned_layer_names(model):
    """The layers tfprune pruned (Conv2D and Dense; DepthwiseConv2D is a Conv2D subclass in neither Keras)."""
    return [layer.name for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")]


# -- tfmot, in its own process -------------------------------------------------------------------------------


def tfmot_worker(request_path):
    request = json.loads(pathlib.Path(request_path).read_text())
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    api = tfmot.sparsity.keras
    with np.load(request["weights"]) as stored:
        weights = [stored[f"w{i}"] for i in range(len(stored.files))]
    model = build(keras, request["arch"])
    model.set_weights(weights)
    names = set(request["layers"])

    def wrap(layer):
        if layer.name not in names:
            return layer
        block = tuple(request["block"]) if isinstance(layer, keras.layers.Dense) else (1, 1)
        return api.prune_low_magnitude(layer, pruning_schedule=api.ConstantSparsity(request["sparsity"], 0,
                                                                                    frequency=1), block_size=block)

    pruned = keras.models.clone_model(model, clone_function=wrap)
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # the one fit step must not move the statistics
    x = np.load(request["representative"])
    pruned.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:8], np.zeros(8, "int64"), batch_size=8, epochs=1, verbose=0, callbacks=[api.UpdatePruningStep()])
    stripped = api.strip_pruning(pruned)
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]

    def representative():
        for sample in x[:300]:
            yield [sample[None].astype("float32")]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not request["per_channel"]:
        converter._experimental_disable_per_channel = True
    pathlib.Path(request["out"]).write_bytes(converter.convert())
    print(json.dumps({"tfmot": tfmot.__version__ if hasattr(tfmot, "__version__") else "?"}))


def tfmot_file(arch, model, sparsity, block, representative, per_channel, out, folder):
    np.savez(folder / "weights.npz", **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    np.save(folder / "representative.npy", representative)
    request = {"arch": arch, "weights": str(folder / "weights.npz"), "sparsity": sparsity, "block": list(block),
               "representative": str(folder / "representative.npy"), "per_channel": per_channel, "out": str(out),
               "layers": pruned_layer_names(model)}
    (folder / "request.json").write_text(json.dumps(request))
    done = subprocess.run([sys.executable, __file__, "--tfmot-worker", str(folder / "request.json")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    return out, None


# -- where the bytes go ------------------------------------------------------------------------------------------


def parts(path):
    """Bytes of a .tflite file by part, read through the generated schema's object API."""
    from ai_edge_litert import schema_py_generated as schema

    data = pathlib.Path(path).read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    found = dict.fromkeys(("nonzero kernel values", "stored zeros in kernels", "sparse indices", "biases and other "
                           "vectors", "quantization scales and zero points", "tensor names", "metadata and signature"),
                          0)
    for graph in model.subgraphs:
        for t in graph.tensors:
            found["tensor names"] += len(t.name or b"")
            q = t.quantization
            if q is not None:
                found["quantization scales and zero points"] += sum(
                    np.asarray(v).nbytes for v in (q.scale, q.zeroPoint) if v is not None)
            buffer = model.buffers[t.buffer]
            raw = np.asarray(buffer.data if buffer.data is not None else [], np.uint8)
            if not raw.size:
                continue
            if len(t.shape) >= 2 and t.type == schema.TensorType.INT8:
                nonzero = int(np.count_nonzero(raw))
                found["nonzero kernel values"] += nonzero
                found["stored zeros in kernels"] += raw.size - nonzero
            else:
                found["biases and other vectors"] += raw.size
            if t.sparsity is not None:
                for dim in t.sparsity.dimMetadata:
                    for vector in (dim.arraySegments, dim.arrayIndices):
                        if vector is not None and vector.values is not None:
                            found["sparse indices"] += np.asarray(vector.values).nbytes
    for m in model.metadata or []:
        b = model.buffers[m.buffer]
        found["metadata and signature"] += len(m.name or b"") + (0 if b.data is None else len(b.data))
    for s in model.signatureDefs or []:
        found["metadata and signature"] += len(s.signatureKey or b"") + sum(
            len(x.name or b"") for x in (s.inputs or []) + (s.outputs or []))
    found["flatbuffer tables, shapes, alignment"] = len(data) - sum(found.values())
    return found


# -- the run ----------------------------------------------------------------------------------------------------


def kernel_nonzeros(model):
    return sum(int(np.count_nonzero(np.asarray(w))) for layer in model.layers for w in layer.weights
               if w.name in ("kernel", "depthwise_kernel"))


def check(path, samples, expected):
    """``(works under the default delegate, top-1 agreement with Keras or the error)``."""
    from tfprune.export import run_tflite

    try:
        run = run_tflite(path, samples, delegates=True, repeats=0)
    except RuntimeError as err:
        return False, str(err).split(": ", 2)[-1][:90]
    got = run.outputs[0]
    if not np.all(np.isfinite(got)):
        return False, "NaN or infinity"
    return True, float(np.mean(got.argmax(-1) == expected.argmax(-1)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 + 1 epochs on 6,000 images; MobileNetV2 at 2 steps")
    parser.add_argument("--epochs", type=int, default=2, help="baseline epochs (MNIST models)")
    parser.add_argument("--prune-epochs", type=int, default=3, help="pruning epochs per MNIST model")
    parser.add_argument("--mlp-images", type=int, default=12000, help="MNIST training images for the MLP")
    parser.add_argument("--output-dir", default=None, help="keep the .tflite files here (default: a temp dir)")
    parser.add_argument("--tfmot-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--table-from", default=None, help="write the section again from a run's --output-dir")
    args = parser.parse_args(argv)
    if args.tfmot_worker:
        return tfmot_worker(args.tfmot_worker)
    if args.table_from:
        stored = json.loads((pathlib.Path(args.table_from) / "records.json").read_text())
        return write_table(stored["records"], stored["meta"])
    if args.quick:
        args.epochs, args.prune_epochs = 1, 1

    import keras

    import tfprune
    from tfprune.datasets import mnist
    from tfprune.export import to_tflite

    start = time.time()
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train, x_test = (x_train / 255.0).astype("float32"), (x_test / 255.0).astype("float32")
    if args.quick:
        x_train, y_train = x_train[:6000], y_train[:6000]
    rng = np.random.default_rng(0)
    calibration = x_train[rng.choice(len(x_train), 300, replace=False)]

    def compile_model(model, lr):
        model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    def prune_mnist(baseline, block, x, y):
        steps = int(np.ceil(len(x) / BATCH)) * args.prune_epochs
        schedule = tfprune.PolynomialDecay(0.0, 0.95, begin_step=0, end_step=max(steps // 2, 1),
                                           frequency=max(steps // (8 * args.prune_epochs), 1))
        # Per layer, as tfmot's ConstantSparsity prunes: every kernel at 95%.
        pruned = compile_model(tfprune.prune_low_magnitude(baseline, pruning_schedule=schedule, block_size=block,
                                                           granularity="layer"), 3e-4)
        pruned.fit(x, y, batch_size=BATCH, epochs=args.prune_epochs, verbose=2,
                   callbacks=[tfprune.UpdatePruningStep()])
        return tfprune.strip_pruning(pruned)

    cases = []
    for arch in ("lenet", "mlp"):
        # The 5.8M-weight MLP trains on a subset: a full MNIST epoch takes minutes on 2 shared cores.
        x, y = (x_train, y_train) if arch == "lenet" else (x_train[: args.mlp_images], y_train[: args.mlp_images])
        baseline = compile_model(build(keras, arch), 1e-3)
        baseline.fit(x, y, batch_size=BATCH, epochs=args.epochs, verbose=2)
        blocks = ("(16, 1) blocks", (16, 1))
        for label, block in ([blocks] if arch == "lenet" else [("unstructured", (1, 1)), blocks]):
            name = ("LeNet-300-100" if arch == "lenet" else "MLP 784-2048-2048-10") + f", 95% {label}"
            cases.append({"name": name, "arch": arch, "model": prune_mnist(baseline, block, x, y), "sparsity": 0.95,
                          "block": block, "per_channel": arch != "lenet", "representative": calibration,
                          "samples": x_test[:500]})
    size = 128
    steps = 2 if args.quick else 8
    x = rng.uniform(-1, 1, (steps * 8 + 300, size, size, 3)).astype("float32")
    mobilenet = build(keras, "mobilenet")
    pruned = tfprune.prune_low_magnitude(mobilenet, pruning_schedule=tfprune.ConstantSparsity(0.9, 0, frequency=1))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    pruned.fit(x[:steps * 8], rng.integers(0, 1000, steps * 8), batch_size=8, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    cases.append({"name": f"MobileNetV2 {size}x{size} (weights=None), convs and Dense 90% unstructured",
                  "arch": "mobilenet", "model": tfprune.strip_pruning(pruned), "sparsity": 0.9, "block": (1, 1),
                  "per_channel": True, "representative": x[-300:-200], "samples": x[-200:-150]})
    meta = {"quick": args.quick, "command": "python benchmarks/bench_export_floor.py" + (" --quick" if args.quick
            else ""), "date": str(datetime.date.today()), "epochs": args.epochs, "prune_epochs": args.prune_epochs,
            "mlp_images": args.mlp_images, "steps": steps, "minutes": 0.0, "interpreter": "?"}

    folder = pathlib.Path(args.output_dir or tempfile.mkdtemp(prefix="bench_export_floor_"))
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, case in enumerate(cases):
        model, floor = case["model"], kernel_nonzeros(case["model"])
        expected = keras.ops.convert_to_numpy(model(case["samples"], training=False))
        files = []
        for label, options in (("tfprune, sparse=\"auto\"", {}), ("tfprune, sparse=\"auto\", strip=True",
                                                                  {"strip": True})):
            path = folder / f"{i}_{'strip' if options else 'auto'}.tflite"
            t0 = time.time()
            try:
                report = to_tflite(model, path, quantization="int8", representative_data=case["representative"],
                                   sample_data=case["samples"], per_channel=case["per_channel"], latency_runs=0,
                                   **options)
            except (ValueError, RuntimeError) as err:  # a failed export is a row of the table, not a lost run
                files.append((label, None, str(err).splitlines()[0][:120], time.time() - t0, []))
                continue
            meta["interpreter"] = report.interpreter
            reasons = collections.Counter(e["reason"].split(" (")[0] for e in report.encodings)
            kept = [f"{n} {reason}" for reason, n in sorted(reasons.items())]
            files.append((label, path, report, time.time() - t0, kept))
            print(report, flush=True)
        work = folder / f"{i}_tfmot"
        work.mkdir(exist_ok=True)
        t0 = time.time()
        tfmot_path, error = tfmot_file(case["arch"], model, case["sparsity"], case["block"], case["representative"],
                                       case["per_channel"], work / "tfmot.tflite", work)
        files.append(("tfmot 0.8 documented flow", tfmot_path, error, time.time() - t0, []))
        for label, path, report, seconds, kept in files:
            record = {"model": case["name"], "floor": floor, "file": label, "seconds": seconds, "kept": kept}
            if path is None:
                record["error"] = report
            else:
                data = pathlib.Path(path).read_bytes()
                works, agreement = check(path, case["samples"], expected)
                record.update(bytes=len(data), gzip=len(gzip.compress(data, compresslevel=9)), works=works,
                              agreement=agreement, parts=parts(path))
            records.append(record)
        # Kept beside the files: the table can be written again from them (--table-from).
        (folder / "records.json").write_text(json.dumps({"records": records, "meta": meta}, indent=1))

    meta["minutes"] = (time.time() - start) / 60
    (folder / "records.json").write_text(json.dumps({"records": records, "meta": meta}, indent=1))
    write_table(records, meta)


def write_table(records, meta):
    from _sections import write_section

    lines = [
        "## Int8 files near the floor: bytes per nonzero kernel weight, tfprune beside tfmot"
        + (" (QUICK SMOKE RUN)" if meta["quick"] else ""),
        "",
        f"Command: `{meta['command']}` ({meta['date']}; {meta['minutes']:.1f} min on {os.cpu_count()} cores, shared; "
        f"{meta['interpreter']}). "
        f"MNIST models: baseline {meta['epochs']} epochs of Adam(1e-3), then {meta['prune_epochs']} epochs of "
        "Adam(3e-4) with PolynomialDecay(0 -> 95%) over the first half, `granularity=\"layer\"` (every kernel at "
        "95%, as tfmot prunes; short schedules: the point is bytes); the MLP on the first "
        f"{meta['mlp_images']:,} training images. MobileNetV2: `ConstantSparsity(0.9, 0, frequency=1)`, "
        f"{meta['steps']} fit steps of 8 random images. Every file is "
        "full-integer int8 (float input and output), calibrated on 300 samples; LeNet with per-tensor scales "
        "(`per_channel=False`), the others per channel. tfmot: the same pruned weights loaded into the same "
        "architecture in tf_keras, `prune_low_magnitude(ConstantSparsity(s, 0), block_size)` on the same layers, one "
        "fit step with `UpdatePruningStep` (learning rate 0), `strip_pruning`, `TFLiteConverter.from_keras_model` "
        "with `[Optimize.DEFAULT, Optimize.EXPERIMENTAL_SPARSITY]`, in a child process.",
        "",
        "Floor: one byte per nonzero kernel weight of the Keras model (depthwise kernels included). 'works': loads "
        "and runs under the default XNNPACK delegate (`run_tflite(delegates=True)`) with finite outputs; top-1: "
        "agreement with the Keras model on the same samples. Seconds: the whole export, verification included.",
        "",
        "| model | file | bytes | bytes / floor | gzip bytes | gzip / floor | works with XNNPACK | top-1 vs Keras | "
        "seconds |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['file']} | fails: {r['error']} | | | | | | {r['seconds']:.0f} |")
            continue
        floor = r["floor"]
        lines.append(
            f"| {r['model']} (floor {floor:,}) | {r['file']} | {r['bytes']:,} | {r['bytes'] / floor:.2f}x | "
            f"{r['gzip']:,} | {r['gzip'] / floor:.2f}x | {'yes' if r['works'] else 'NO: ' + str(r['agreement'])} | "
            f"{format(r['agreement'], '.1%') if r['works'] else '-'} | {r['seconds']:.0f} |")
    lines += ["", "Where the bytes go (bytes / floor per part; 'stored zeros' are int8 zeros inside kept blocks or in "
              "dense kernels):", ""]
    names = list(next(r["parts"] for r in records if "parts" in r).keys())
    lines += ["| model | file | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for r in records:
        if "parts" in r:
            lines.append(f"| {r['model']} | {r['file']} | "
                         + " | ".join(f"{r['parts'][n] / r['floor']:.3f}" for n in names) + " |")
    lines += ["", "Encodings tfprune chose (`report.encodings`, weights per reason):", ""]
    for r in records:
        if r["kept"] and "strip" not in r["file"]:
            lines.append(f"- {r['model']}: " + "; ".join(r["kept"]) + ".")
    lines += ["", "Reading the figures:", ""] + findings(records)
    write_section("export_floor", lines)


def findings(records):
    """Sentences whose numbers come from this run's records."""
    def find(model, file):
        return next((r for r in records if r["model"].startswith(model) and r["file"].startswith(file)
                     and "bytes" in r), None)

    out = []
    auto, strip = find("LeNet", "tfprune, sparse=\"auto\""), find("LeNet", "tfprune, sparse=\"auto\", strip")
    if auto and strip:
        p = auto["parts"]
        fixed = (p["biases and other vectors"] + p["sparse indices"]) / auto["floor"]
        out.append(
            f"- LeNet-300-100: {auto['bytes'] / auto['floor']:.2f}x the floor, {strip['bytes'] / strip['floor']:.2f}x "
            f"with `strip=True` (target 1.3x: not met). The int32 biases and the CSR indices of the (16, 1) blocks, "
            f"which the runtime's format needs, are {fixed:.2f}x on their own, and the flatbuffer's tables, shapes "
            f"and alignment {p['flatbuffer tables, shapes, alignment'] / auto['floor']:.2f}x; `strip` removes the "
            "names and metadata. Its top-1 agreement with its own Keras model is low for tfmot's file as well: "
            "300 and 100 inputs are not whole numbers of 16-input blocks, and the converter drops the last partial "
            "block of every row (`to_tflite` now warns about it).")
    mlp, mlp_tfmot = find("MLP 784-2048-2048-10, 95% unstructured", "tfprune, sparse=\"auto\""), find(
        "MLP 784-2048-2048-10, 95% unstructured", "tfmot")
    if mlp and mlp_tfmot:
        out.append(
            f"- The unstructured MLP has FULLY_CONNECTED layers only, which XNNPACK refuses sparse in int8: tfprune "
            f"writes it dense ({mlp['bytes'] / mlp['floor']:.1f}x; {mlp['gzip'] / mlp['floor']:.2f}x gzipped); "
            f"tfmot's sparse file is {mlp_tfmot['bytes'] / mlp_tfmot['floor']:.2f}x and "
            + ("runs" if mlp_tfmot["works"] else "does not run") + " under the default delegate.")
    blocks, blocks_tfmot = find("MLP 784-2048-2048-10, 95% (16", "tfprune, sparse=\"auto\""), find(
        "MLP 784-2048-2048-10, 95% (16", "tfmot")
    if blocks and blocks_tfmot:
        out.append(f"- In (16, 1) blocks the MLP's file is {blocks['bytes'] / blocks['floor']:.2f}x, tfmot's "
                   f"{blocks_tfmot['bytes'] / blocks_tfmot['floor']:.2f}x ({blocks_tfmot['bytes'] - blocks['bytes']:+,} "
                   "bytes); both run sparse under the default delegate.")
    net, net_tfmot = find("MobileNetV2", "tfprune, sparse=\"auto\""), find("MobileNetV2", "tfmot")
    if net and net_tfmot:
        out.append(
            f"- MobileNetV2: {net['bytes'] / net['floor']:.2f}x (target 4x: not met), against 9.95x when "
            "`sparse=\"auto\"` wrote every weight dense (issue 21). The convolutions stay sparse; the 1280 x 1000 "
            "classifier, which XNNPACK refuses sparse, is stored dense, and its zeros are the "
            f"{net['parts']['stored zeros in kernels'] / net['floor']:.2f}x of 'stored zeros'. tfmot's all-sparse "
            f"file is {net_tfmot['bytes'] / net_tfmot['floor']:.2f}x and "
            + ("runs" if net_tfmot["works"] else "does not run") + " under the default delegate. Pruning the "
            "classifier in (16, 1) blocks, which XNNPACK runs sparse, is what issue 21 measured at 3.66x (not re-run "
            "here). Random "
            "weights and inputs: int8 top-1 rarely agrees with Keras here (as in the real-architectures section); "
            "sizes do not depend on it.")
    return out


if __name__ == "__main__":
    sys.exit(main())
