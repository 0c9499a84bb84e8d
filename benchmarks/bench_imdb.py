"""IMDB sentiment: accuracy and TFLite file size of the pruned LSTM, and the slimmed Conv1D model.

Runs tutorials/imdb_lstm.py (full IMDB: 25,000 training and 25,000 test reviews)
and writes benchmarks/results/imdb.md: test accuracy at 0/50/80/90% sparsity,
in Keras and as the .tflite file run by the LiteRT interpreter, the file sizes
(raw and gzip), Keras/TFLite agreement, and the Conv1D model before and after
removing half of its filters.

    python benchmarks/bench_imdb.py                        # about 25 minutes on 2 cores
    python benchmarks/bench_imdb.py --quick                # a smoke run: 2,000 reviews
    python benchmarks/bench_imdb.py --results out/results.json
        # only writes the section, from the results.json of an earlier
        # `python tutorials/imdb_lstm.py` run with the same defaults
"""

import argparse
import datetime
import json
import pathlib
import platform
import sys
import tempfile
import time

from _sections import load_tutorial, write_section

MAX_POINTS_LOST_AT_80 = 1.0
MIN_SIZE_RATIO = 10.0


# No "|" in these: they go into Markdown table cells.
ROW_SCORES = {"counts": "magnitude x the word's count in the training reviews", "magnitude": "magnitude alone"}


def row_scores(row):
    """How the Embedding rows were ranked: "counts", "magnitude", or None (not pruned in rows)."""
    scores = row.get("embedding_rows")
    return "magnitude" if scores is True else scores or None  # results.json before row_importance: magnitude


def lstm_lines(rows):
    dense = rows[0]
    dense_float = dense["float32"]["bytes"]
    lines = [
        "| target sparsity | measured sparsity | Keras accuracy | points lost | TFLite float32 accuracy "
        "| TFLite int8 accuracy | int8 agrees with Keras | float32 bytes | float32 gzip | int8 bytes | int8 gzip "
        "| dense float / int8 | dense float / int8 gzip | fused LSTM op |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        f32, i8 = row["float32"], row["int8"]
        target = f"{row['sparsity_target']:.0%}"
        if row_scores(row):
            target += (f", Embedding in whole rows ranked by {ROW_SCORES[row_scores(row)]} "
                       f"({row['embedding_rows_kept']:,} kept), compacted")
        lines.append(
            f"| {target} | {row['sparsity']:.1%} | {row['accuracy']:.4f} "
            f"| {100 * (dense['accuracy'] - row['accuracy']):+.2f} | {f32['tflite_accuracy']:.4f} "
            f"| {i8['tflite_accuracy']:.4f} | {i8['agreement']:.2%} | {f32['bytes']:,} | {f32['gzip_bytes']:,} "
            f"| {i8['bytes']:,} | {i8['gzip_bytes']:,} | {dense_float / i8['bytes']:.1f}x "
            f"| {dense_float / i8['gzip_bytes']:.1f}x | {'yes' if f32['fused_lstm'] and i8['fused_lstm'] else 'no'} |"
        )
    return lines


def verdicts(rows, vocabulary):
    dense = rows[0]
    unstructured = [r for r in rows if not row_scores(r)]
    at80 = next((r for r in unstructured if abs(r["sparsity_target"] - 0.8) < 1e-6), None)
    sparsest = unstructured[-1]
    ratio_raw = dense["float32"]["bytes"] / sparsest["int8"]["bytes"]
    ratio_gzip = dense["float32"]["bytes"] / sparsest["int8"]["gzip_bytes"]
    agreement = min(min(r["float32"]["agreement"], r["int8"]["agreement"]) for r in rows)
    lines = []
    if at80 is not None:
        lost = 100 * (dense["accuracy"] - at80["accuracy"])
        lines.append(f"- At most {MAX_POINTS_LOST_AT_80:g} point lost at 80%: measured {lost:+.2f} points: "
                     f"**{'met' if lost <= MAX_POINTS_LOST_AT_80 else 'not met'}**.")
    lines += [
        f"- The int8 file at least {MIN_SIZE_RATIO:g}x smaller than the dense float one. Unstructured, "
        f"{sparsest['sparsity_target']:.0%} sparse: {ratio_raw:.1f}x as stored "
        f"(**{'met' if ratio_raw >= MIN_SIZE_RATIO else 'not met'}**), {ratio_gzip:.1f}x gzipped, as downloaded "
        f"(**{'met' if ratio_gzip >= MIN_SIZE_RATIO else 'not met'}**). TFLite's sparse encoding covers "
        "FULLY_CONNECTED and CONV weights only: the Embedding (read by GATHER) and the fused LSTM's weights are "
        "stored dense, zeros included, so unstructured zeros there shrink the file only once it is compressed.",
    ]
    for by_rows in (r for r in rows if row_scores(r)):
        ratio_rows = dense["float32"]["bytes"] / by_rows["int8"]["bytes"]
        lost = 100 * (dense["accuracy"] - by_rows["accuracy"])
        both = ratio_rows >= MIN_SIZE_RATIO and lost <= MAX_POINTS_LOST_AT_80
        frequent = by_rows.get("frequent_words_kept")
        lines.append(
            f"- The Embedding pruned in whole rows to {by_rows['sparsity_target']:.0%}, ranked by "
            f"{ROW_SCORES[row_scores(by_rows)]} (the LSTM and Dense unstructured, to the same sparsity), and its "
            f"zero rows dropped by `tfprune.surgery.compact_embeddings`: {by_rows['embedding_rows_kept']:,} of "
            f"{vocabulary:,} rows stored"
            + (f", {frequent:,} of the 1,000 most frequent words among them" if frequent is not None else "")
            + f". {ratio_rows:.1f}x as stored; {lost:+.2f} points lost against the dense model (negative: more "
            "accurate): "
            f"**{'both targets met by this one model' if both else 'not both targets'}**."
        )
    lines += [
        f"- Keras and TFLite agree on at least {agreement:.2%} of the test predictions in every file "
        "(target: 99%).",
    ]
    return lines


def conv_lines(rows):
    base = rows[0]
    lines = [
        "| Conv1D model | conv filters | params | test accuracy | points lost | float32 .tflite bytes "
        "| TFLite ms per review | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['conv_filters']} | {row['params']:,} | {row['accuracy']:.4f} "
            f"| {100 * (base['accuracy'] - row['accuracy']):+.2f} | {row['bytes']:,} | {row['latency_ms']:.3f} "
            f"| {base['latency_ms'] / row['latency_ms']:.2f}x |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=pathlib.Path, help="results.json of an earlier tutorial run")
    args, rest = parser.parse_known_args(argv)
    if args.results:
        results = json.loads(args.results.read_text())
        minutes = results.get("seconds", 0) / 60 or None
        quick = results["settings"].get("quick", False)
    else:
        start = time.time()
        with tempfile.TemporaryDirectory() as out:
            argv = rest + ["--output-dir", out] + (["--quick"] if args.quick else [])
            results = load_tutorial("imdb_lstm").main(argv)
        minutes, quick = (time.time() - start) / 60, args.quick
    settings = results["settings"]
    took = f"{minutes:.0f} min on this 2-core machine, " if minutes else ""
    lines = [
        "## IMDB: pruned LSTM in TFLite, slimmed Conv1D" + (" (QUICK SMOKE RUN)" if quick else ""),
        "",
        f"Command: `python benchmarks/bench_imdb.py{' --quick' if quick else ''}`, which runs "
        f"`tutorials/imdb_lstm.py` ({datetime.date.today()}; {took}Python {platform.python_version()}). "
        f"TextVectorization to {settings['vocabulary']:,} tokens, {settings['length']} tokens per review "
        f"(padded in front); Embedding({settings['vocabulary']:,}, 128) -> LSTM(128) -> Dense(1). Baseline: "
        f"{settings['epochs']} epochs of Adam(1e-3), batch 128. Each pruned model starts from the baseline: "
        f"{settings['prune_epochs']} epochs of Adam(5e-4), PolynomialDecay from 0 to the target over the first "
        "70% of the steps, on the Embedding, the LSTM's kernel and recurrent kernel and the Dense. Files written "
        "by `tfprune.export.to_tflite` (float32, and dynamic-range int8); accuracy of each file measured by "
        "running it in the LiteRT interpreter on every test review, one per call, state reset in between.",
        "",
    ]
    if "lstm" in results:
        lines += lstm_lines(results["lstm"]) + [""] + verdicts(results["lstm"], settings["vocabulary"]) + [""]
    if "conv" in results:
        lines += [
            "Conv1D text model: Embedding(64) -> Conv1D(256, 5) -> GlobalMaxPooling1D -> Dense(64) -> Dense(1), "
            f"{settings['epochs']} epochs; then half of the Conv1D filters and half of the Dense(64) units "
            "removed by L1 norm (`tfprune.structured.prune`) and one epoch of fine-tuning. Latency: float32 "
            "TFLite, default delegate, one thread, median of 200 single-review calls. The smaller model has "
            "had that one epoch more of training than the baseline, so its accuracy can be the higher.",
            "",
        ] + conv_lines(results["conv"])
    write_section("imdb", lines)
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
