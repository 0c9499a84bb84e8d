# %% [markdown]
# # Pruning a text model: IMDB sentiment with an Embedding and an LSTM
#
# In a text model the embedding table and the LSTM hold nearly every weight.
# This tutorial trains tfmot's own IMDB example (Embedding(20000, 128) ->
# LSTM(128) -> Dense(1)) on the Large Movie Review Dataset, prunes it with
# PolynomialDecay to each target sparsity (Embedding, LSTM kernel and recurrent
# kernel, Dense), strips the wrappers and exports each model to TFLite with
# integer token ids as input, the vocabulary written next to it for the app.
# Every .tflite file is then run on the full test set with the LiteRT
# interpreter.
#
# TFLite stores an Embedding dense, zeros included, so one more model is pruned
# to 80% with the Embedding in whole rows (one per word), which
# `tfprune.surgery.compact_embeddings` then drops from the file. The rows are
# ranked by magnitude times how often the word occurs; a second such model,
# ranked by magnitude alone, shows why.
#
# A second model follows: a Conv1D + GlobalMaxPooling1D classifier whose
# convolution loses half its filters to `tfprune.structured.prune`, which
# makes it faster, not only smaller.
#
#     python tutorials/imdb_lstm.py            # about 25 minutes on 2 cores
#     python tutorials/imdb_lstm.py --quick    # a smoke run on 2,000 reviews
#
# The data set is read from `--data-dir`, `$TFPRUNE_DATA_DIR/imdb`, or
# downloaded. Outputs go to `outputs/imdb_lstm/`.

# %%
import argparse
import json
import os
import pathlib
import re
import string
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfprune  # noqa: E402
import tfprune.structured  # noqa: E402
from tfprune.datasets import imdb  # noqa: E402
from tfprune.export import run_tflite, to_tflite  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Pruning an IMDB sentiment LSTM, exported to TFLite.")
    parser.add_argument("--data-dir", default=None, help="the aclImdb folder or its .tar.gz (or a folder holding it)")
    parser.add_argument("--output-dir", default="outputs/imdb_lstm")
    parser.add_argument("--vocabulary", type=int, default=20000, help="tokens kept by TextVectorization")
    parser.add_argument("--length", type=int, default=200, help="tokens per review (longer ones are cut)")
    parser.add_argument("--epochs", type=int, default=2, help="baseline training epochs")
    parser.add_argument("--prune-epochs", type=int, default=2, help="epochs of pruning per target")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--embedding-rows", type=float, default=0.8,
                        help="also prune to this sparsity with the Embedding in whole rows, then compact it "
                             "(0: skip)")
    parser.add_argument("--row-scores", nargs="+", choices=("counts", "magnitude"), default=["counts", "magnitude"],
                        help="how those rows are ranked: |w| times the word's count in the training reviews, "
                             "or |w| alone; one model each")
    parser.add_argument("--model", choices=("lstm", "conv", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="2,000 reviews, one epoch each: a smoke run")
    return parser.parse_args(argv)


# %% [markdown]
# ## Text to token ids
#
# The model's input is integer token ids, so the app does the tokenising:
# lower-case, replace the `<br />` tags the reviews contain by spaces, drop
# ASCII punctuation, split on whitespace, and look each word up in
# `vocabulary.txt` (line `i` holds the word with id `i`; id 0 pads, id 1 is
# any word not in the file). Reviews are cut to their first `--length` words,
# and shorter ones padded with zeros in front, as Keras's `pad_sequences` does.

# %%
_PUNCTUATION = "[" + re.escape(string.punctuation) + "]"


def standardize(text):
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, "<br\\s*/?>", " ")
    return tf.strings.regex_replace(text, _PUNCTUATION, "")


def vectorize(args, x_train, x_test):
    vectorizer = keras.layers.TextVectorization(
        max_tokens=args.vocabulary, output_sequence_length=args.length, standardize=standardize)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(x_train).batch(1024))

    def ids(texts):
        batches = np.concatenate([vectorizer(texts[i:i + 1024]).numpy() for i in range(0, len(texts), 1024)])
        return np.stack([pad_front(row) for row in batches])

    return ids(x_train).astype("int32"), ids(x_test).astype("int32"), vectorizer.get_vocabulary()


def pad_front(row):
    """Moves the padding zeros to the front: the LSTM's last steps then read words, not padding."""
    words = row[row != 0]
    return np.concatenate([np.zeros(len(row) - len(words), row.dtype), words])


def load(args):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(args.data_dir)
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    ids_train, ids_test, vocabulary = vectorize(args, x_train, x_test)
    return ids_train, y_train.astype("float32"), ids_test, y_test.astype("float32"), vocabulary


# %% [markdown]
# ## The LSTM model, and pruning it
#
# `prune_low_magnitude` wraps the Embedding, the LSTM (its kernel and its
# recurrent kernel) and the Dense layer. The sparsity rises from 0 to the
# target over the first 70% of the pruning steps, then the model recovers.
# For one more model the Embedding is pruned in blocks of one row
# (`block_size=(1, 128)`): a word's whole embedding goes, or stays. Ranked by
# magnitude alone, the rows that go are mostly the frequent words' (the table
# printed at the end counts how many of the 1,000 most frequent words each
# model keeps), though words such as "not", "bad" and "great" carry much of a
# review's sentiment. `row_importance=counts` ranks each row by its mean |w|
# times the word's count in the training reviews: the magnitude the row adds
# to the Embedding's outputs over the data.

# %%
def lstm_model(args):
    return keras.Sequential([
        keras.Input((args.length,), dtype="int32", name="tokens"),
        keras.layers.Embedding(args.vocabulary, 128, name="embedding"),
        keras.layers.LSTM(128, name="lstm"),
        keras.layers.Dense(1, name="logit"),
    ], name="imdb_lstm")


def compile_model(model, learning_rate=1e-3):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])
    return model


def prune(baseline, target, x, y, args, batch_size, embedding_rows=False, row_counts=None):
    """With ``embedding_rows`` the Embedding is pruned in whole rows, ranked by |w| times ``row_counts``
    (by |w| alone if ``None``)."""
    steps = int(np.ceil(len(x) / batch_size)) * args.prune_epochs
    schedule = tfprune.PolynomialDecay(0.0, target, begin_step=0, end_step=max(int(steps * 0.7), 1),
                                       frequency=max(steps // 20, 1))
    if embedding_rows:
        model = keras.models.clone_model(baseline,
                                         clone_function=lambda layer: prune_rows(layer, schedule, row_counts))
        for source, wrapper in zip(baseline.layers, model.layers):
            wrapper.layer.set_weights(source.get_weights())
    else:
        model = tfprune.prune_low_magnitude(baseline, pruning_schedule=schedule)
    pruned = compile_model(model, 5e-4)
    how = "" if not embedding_rows else ", the Embedding in whole rows" + (
        " by magnitude alone" if row_counts is None else " by magnitude times count")
    print(f"\nPruning to {target:.0%} over {steps} steps{how}")
    pruned.fit(x, y, batch_size=batch_size, epochs=args.prune_epochs, verbose=2,
               callbacks=[tfprune.UpdatePruningStep()])
    return tfprune.strip_pruning(pruned)


def prune_rows(layer, schedule, counts):
    """Wraps a copy of ``layer``; an Embedding is pruned in whole rows, one per token, weighted by ``counts``."""
    clone = layer.__class__.from_config(layer.get_config())
    if not isinstance(layer, keras.layers.Embedding):
        return tfprune.prune_low_magnitude(clone, pruning_schedule=schedule)
    return tfprune.prune_low_magnitude(clone, pruning_schedule=schedule, block_size=(1, layer.output_dim),
                                       row_importance=counts)


# %% [markdown]
# ## TFLite, run as the app runs it
#
# `to_tflite` rebuilds the LSTM so the converter emits TFLite's fused
# UNIDIRECTIONAL_SEQUENCE_LSTM op (Keras 3 alone would give a WHILE loop), checks
# the file against Keras, and reports what is stored in it. Below, the file is
# run on every test review with the LiteRT interpreter, one review per call, the LSTM state reset before each.

# %%
def export(model, name, quantization, data, out, vocabulary):
    _, _, ids_test, y_test = data
    path = out / f"{name}.tflite"
    report = to_tflite(model, path, quantization=quantization, sample_data=ids_test[:200], latency_runs=50)
    (out / "vocabulary.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    # run_tflite resets the fused LSTM's state (variable tensors) before each review.
    tflite_logits = run_tflite(path, ids_test, repeats=0).outputs[0].reshape(-1)
    keras_logits = model.predict(ids_test, batch_size=512, verbose=0).reshape(-1)
    return {
        "file": str(path),
        "quantization": quantization or "float32",
        "bytes": report.size_bytes,
        "gzip_bytes": report.gzip_bytes,
        "fused_lstm": "UNIDIRECTIONAL_SEQUENCE_LSTM" in report.operators,
        "tflite_accuracy": float(np.mean((tflite_logits > 0) == (y_test > 0.5))),
        "agreement": float(np.mean((tflite_logits > 0) == (keras_logits > 0))),
        "latency_ms": report.runtime["default"]["latency_ms"],
    }


def run_lstm(args, data, vocabulary, out, batch_size=128):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(0)
    baseline = compile_model(lstm_model(args))
    print(f"Training the LSTM baseline on {len(x_train):,} reviews")
    start = time.time()
    baseline.fit(x_train, y_train, batch_size=batch_size, epochs=args.epochs, verbose=2)
    print(f"({time.time() - start:.0f} s)")
    models = [(0.0, None, baseline)] + [
        (t, None, prune(baseline, t, x_train, y_train, args, batch_size)) for t in args.targets]
    # TFLite stores the Embedding dense, so its zeros shrink the file only once compressed. Pruned in
    # whole rows, words leave the table, and compact_embeddings drops their rows. Counts include the
    # padding id 0: the LSTM reads it too.
    counts = np.bincount(x_train.ravel(), minlength=args.vocabulary)
    frequent = np.argsort(-counts, kind="stable")[:1000]
    for scores in args.row_scores if args.embedding_rows else ():
        row_counts = counts if scores == "counts" else None
        models.append((args.embedding_rows, scores, prune(baseline, args.embedding_rows, x_train, y_train, args,
                                                          batch_size, embedding_rows=True, row_counts=row_counts)))
    rows = []
    for target, row_scores, model in models:
        compile_model(model)
        name = f"imdb_lstm_{round(target * 100)}" + {None: "", "counts": "_rows", "magnitude": "_rows_magnitude"}[
            row_scores]
        row = {"sparsity_target": target, "embedding_rows": row_scores,
               "accuracy": model.evaluate(x_test, y_test, verbose=0, batch_size=512)[1],
               "sparsity": tfprune.sparsity_report(model).total_sparsity}
        if row_scores:
            table = keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings)
            row["frequent_words_kept"] = int(np.count_nonzero(np.any(table[frequent] != 0, axis=1)))
            model = tfprune.surgery.compact_embeddings(model, ["embedding"])
            row["embedding_rows_kept"] = model.get_layer("embedding").rows - 1
        row["float32"] = export(model, name + "_float32", None, data, out, vocabulary)
        row["int8"] = export(model, name + "_int8", "dynamic", data, out, vocabulary)
        rows.append(row)
    print("\nLSTM on the IMDB test set (TFLite: the file run by the LiteRT interpreter)")
    print(f"{'target':>7}{'Keras acc':>11}{'TFLite int8':>13}{'agree':>8}{'float32 file':>14}{'int8 file':>12}"
          f"{'int8 gzip':>12}{'top 1,000 words kept':>22}")
    for r in rows:
        target = f"{r['sparsity_target']:.0%}" + {None: "", "counts": "r", "magnitude": "rm"}[r["embedding_rows"]]
        print(f"{target:>8}{r['accuracy']:>10.4f}{r['int8']['tflite_accuracy']:>13.4f}"
              f"{r['int8']['agreement']:>8.2%}{r['float32']['bytes']:>14,}{r['int8']['bytes']:>12,}"
              f"{r['int8']['gzip_bytes']:>12,}{r.get('frequent_words_kept', ''):>22}")
    print("(r: the Embedding pruned in whole rows and compacted; rm: its rows ranked by magnitude alone)")
    print(f"\n{tfprune.sparsity_report(models[len(args.targets)][2])}")
    return rows


# %% [markdown]
# ## A convolutional text model, pruned structurally
#
# Sparse weights shrink a file, but the phone still multiplies by the zeros.
# Removing whole filters of the Conv1D (and the matching inputs of the Dense
# after the pooling) gives a smaller dense model that runs faster.

# %%
def conv_model(args):
    return keras.Sequential([
        keras.Input((args.length,), dtype="int32", name="tokens"),
        keras.layers.Embedding(args.vocabulary, 64, name="embedding"),
        keras.layers.Conv1D(256, 5, activation="relu", name="conv"),
        keras.layers.GlobalMaxPooling1D(name="pool"),
        keras.layers.Dense(64, activation="relu", name="fc"),
        keras.layers.Dense(1, name="logit"),
    ], name="imdb_conv")


def run_conv(args, data, out, batch_size=128):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(0)
    baseline = compile_model(conv_model(args))
    print(f"\nTraining the Conv1D model on {len(x_train):,} reviews")
    baseline.fit(x_train, y_train, batch_size=batch_size, epochs=args.epochs, verbose=2)
    slim = tfprune.structured.prune(baseline, "l1_norm", ratio={"conv": 0.5, "fc": 0.5}, verbose=0)
    compile_model(slim, 5e-4).fit(x_train, y_train, batch_size=batch_size, epochs=1, verbose=2)
    rows = []
    for name, model in (("baseline", baseline), ("half the filters", slim)):
        compile_model(model)
        path = out / f"imdb_conv_{'baseline' if model is baseline else 'slim'}.tflite"
        report = to_tflite(model, path, sample_data=x_test[:200], latency_runs=200)
        rows.append({"model": name, "accuracy": model.evaluate(x_test, y_test, verbose=0, batch_size=512)[1],
                     "params": model.count_params(), "conv_filters": model.get_layer("conv").filters,
                     "bytes": report.size_bytes, "latency_ms": report.runtime["default"]["latency_ms"]})
    print("\nConv1D model, before and after removing filters")
    for r in rows:
        print(f"{r['model']:<18}accuracy {r['accuracy']:.4f}  filters {r['conv_filters']:>4}  "
              f"params {r['params']:>9,}  TFLite {r['latency_ms']:.3f} ms per review")
    return rows


# %% [markdown]
# ## Run everything

# %%
def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.prune_epochs, args.length, args.vocabulary = 1, 1, 100, 5000
        args.targets = args.targets[-1:]
        args.row_scores = args.row_scores[:1]
    out = pathlib.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    *data, vocabulary = load(args)
    results = {"settings": vars(args)}
    if args.model in ("lstm", "both"):
        results["lstm"] = run_lstm(args, data, vocabulary, out)
    if args.model in ("conv", "both"):
        results["conv"] = run_conv(args, data, out)
    results["seconds"] = time.time() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nWrote the .tflite files, vocabulary.txt and results.json to {out}")
    return results


if __name__ == "__main__":
    main()
