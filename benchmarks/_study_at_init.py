"""Pruning at initialisation on MNIST: SNIP's table (Lee et al. 2019, Table 2), with GraSP, SynFlow and random.

LeNet-300-100 at 95% and 98% sparsity, LeNet-5-Caffe at 98% and 99%. Each
network starts from one initialisation (seeded); every method prunes that same
initialisation, then the masked network trains with the masks fixed
(``prune_with_masks`` + ``UpdatePruningStep``), the same recipe for every row:

- SNIP (``snip_masks``): one minibatch of 100 training images, as in the paper;
- GraSP (``grasp_masks``): 10 training images per class, temperature 200, as in
  the authors' code;
- SynFlow (``synflow_masks``): no data, 100 rounds of the exponential schedule;
- random: random scores ranked over the whole network (the "Rand" baseline of
  the SynFlow authors' code), i.e. each layer about equally sparse.

The paper's recipe (SGD, momentum 0.9, batch 100, weight decay 5e-4, learning
rate 0.1 decayed by 0.1 every 25k iterations, 250k iterations: about 400 epochs)
is far longer than this study's budget. Here: SGD with Nesterov momentum 0.9,
batch 100, decoupled weight decay 5e-4, learning rate 0.1 warmed up over the
first epoch then cosine-decayed to 0, ``EPOCHS`` epochs on all 60,000 training
images; the same for the dense reference and every method. The recipe was chosen
on a validation split (SNIP masks, trained on the first 50,000 training images,
error on the last 10,000; the test set was not looked at), by
``python benchmarks/_study_at_init.py --tune``. Validation errors measured
(LeNet-300-100 at 95%, epochs in brackets): Adam 1e-3 6.19 (5), Adam 3e-3 3.62
(5), SGD 0.1 3.01 (5), SGD 0.2 2.76 (5), SGD 0.1 2.58 (20), SGD 0.1 + weight
decay 2.51 (15) and 2.52 (20), SGD 0.3 2.71 (20); LeNet-5-Caffe at 98%: SGD 0.1
+ weight decay 1.44 (5), SGD 0.05 + weight decay 1.75 (5), SGD 0.2 diverged.
The earlier recipe (Adam 1e-3, 4 and 2 epochs) gave SNIP 6.56 / 9.11 / 5.70 /
10.05% test error: the sparse networks were far from trained.

Run it with ``python benchmarks/bench_sparse_training.py --study at_init [--quick]``.
"""

import math
import pathlib
import sys
import time
import warnings

import keras
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import tfprune  # noqa: E402
from _lenet import error_percent, lenet5_caffe, lenet_300_100, load_mnist  # noqa: E402
from tfprune import grasp_masks, prunable_weights, prune_with_masks, snip_masks, synflow_masks  # noqa: E402
from tfprune._pruning.masks import magnitude_masks  # noqa: E402

TITLE = "Pruning at initialisation: SNIP, GraSP, SynFlow and random on LeNet-300-100 and LeNet-5-Caffe"
MINUTES = 15  # estimate on 2 quiet cores; the measured full run took 41.9 min on the shared, loaded machine
IMAGE = ROOT / "docs" / "images" / "at_init.png"
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = 100
EPOCHS = {"lenet_300_100": 15, "lenet5_caffe": 6}
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
# SNIP, Lee et al. 2019, Table 2: test error (%) of the dense reference and of SNIP.
PAPER = {
    "lenet_300_100": {"dense": 1.7, 0.95: 1.6, 0.98: 2.4},
    "lenet5_caffe": {"dense": 0.9, 0.98: 0.8, 0.99: 1.1},
}
NETWORKS = {"lenet_300_100": (lenet_300_100, True, "LeNet-300-100"),
            "lenet5_caffe": (lenet5_caffe, False, "LeNet-5-Caffe")}
METHODS = ["SNIP", "GraSP", "SynFlow", "random"]


def balanced(x, y, per_class, seed):
    """``per_class`` training examples of each class (GraSP's sampling)."""
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)])
    return x[index], y[index]


def masks_for(method, model, x, y, sparsity, seed, quick):
    rng = np.random.default_rng(seed)
    if method == "SNIP":
        batch = rng.choice(len(x), BATCH, replace=False)
        return snip_masks(model, (x[batch], y[batch]), sparsity, loss=LOSS)
    if method == "GraSP":
        return grasp_masks(model, balanced(x, y, 10, seed), sparsity, loss=LOSS, temperature=200)
    if method == "SynFlow":
        return synflow_masks(model, sparsity, iterations=10 if quick else 100)
    weights = prunable_weights(model)
    kept, _ = magnitude_masks([rng.random(tuple(w.shape)) for w in weights.values()], sparsity)
    return dict(zip(weights, kept))


def optimizer(epochs, examples):
    """The study's recipe: SGD + Nesterov, one epoch of warm-up, then cosine decay to 0."""
    per_epoch = math.ceil(examples / BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, (epochs - 1) * per_epoch, warmup_target=LEARNING_RATE, warmup_steps=per_epoch)
    return keras.optimizers.SGD(schedule, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)


def train(model, x, y, epochs, seed, masks=None):
    """Trains (a masked copy of) ``model`` with the study's recipe; returns the plain trained model."""
    keras.utils.set_random_seed(seed)
    net = prune_with_masks(model, masks) if masks is not None else model
    net.compile(optimizer(epochs, len(x)), LOSS)
    callbacks = [tfprune.UpdatePruningStep()] if masks is not None else []
    net.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True, callbacks=callbacks)
    return tfprune.strip_pruning(net) if masks is not None else net


def measured_sparsity(model):
    values = [w.numpy() for w in prunable_weights(model).values()]
    return 1.0 - sum(np.count_nonzero(v) for v in values) / sum(v.size for v in values)


def run(args):
    quick = bool(getattr(args, "quick", False))
    seed = int(getattr(args, "seed", 0) or 0)
    data_dir = getattr(args, "data_dir", None)  # None: the loader reads $TFPRUNE_DATA_DIR
    results, notes = {}, []
    for key, (build, flat, _) in NETWORKS.items():
        (x, y), (x_test, y_test) = load_mnist(flat, data_dir)
        if quick:
            x, y, x_test, y_test = x[:2000], y[:2000], x_test[:2000], y_test[:2000]
        epochs = 2 if quick else EPOCHS[key]
        start = time.time()
        dense = train(build(seed), x, y, epochs, seed)
        results[(key, "dense")] = error_percent(dense, x_test, y_test)
        print(f"  {key} dense: {results[(key, 'dense')]:.2f}% ({time.time() - start:.0f} s)", flush=True)
        for sparsity in sorted(s for s in PAPER[key] if s != "dense"):
            for method in METHODS:
                start = time.time()
                model = build(seed)  # the same initialisation for every method
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    masks = masks_for(method, model, x, y, sparsity, seed, quick)
                for warning in caught:
                    if issubclass(warning.category, RuntimeWarning):
                        notes.append(f"{NETWORKS[key][2]} at {sparsity:.0%}, {method}: {warning.message}")
                scored = time.time() - start
                trained = train(model, x, y, epochs, seed, masks)
                error = error_percent(trained, x_test, y_test)
                results[(key, sparsity, method)] = (error, measured_sparsity(trained))
                print(f"  {key} {sparsity:.0%} {method}: {error:.2f}% (masks {scored:.1f} s, "
                      f"total {time.time() - start:.0f} s)", flush=True)
    plot(results)
    return table(results, quick) + notes_lines(notes) + [
        "", "![test error against sparsity, per method](../docs/images/at_init.png)"]


def table(results, quick):
    lines = [
        ("Quick smoke run (2,000 training and 2,000 test images, 2 epochs): the figures mean nothing."
         if quick else
         f"Recipe (same for every row, chosen on a validation split: see the module's docstring): SGD, Nesterov "
         f"momentum {MOMENTUM}, batch {BATCH}, weight decay {WEIGHT_DECAY}, learning rate {LEARNING_RATE} after one "
         f"epoch of warm-up, cosine-decayed to 0, {EPOCHS['lenet_300_100']} epochs (LeNet-300-100) / "
         f"{EPOCHS['lenet5_caffe']} epochs (LeNet-5-Caffe) on all 60,000 training images; the paper trains about "
         "400 epochs (250k iterations, learning rate decayed by 0.1 every 25k). Test error (%) on "
         "all 10,000 test images; every method prunes the same seeded initialisation; sparsity counts the "
         "kernels (biases kept), measured on the stripped model."),
        "",
        "| network | sparsity | paper: dense / SNIP | tfprune dense | SNIP | GraSP | SynFlow | random | "
        "SNIP no worse than the paper? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (_, _, name) in NETWORKS.items():
        for sparsity in sorted(s for s in PAPER[key] if s != "dense"):
            cells = []
            for method in METHODS:
                error, measured = results[(key, sparsity, method)]
                mark = "" if abs(measured - sparsity) < 1e-5 else f" (sparsity {measured:.4%})"
                cells.append(f"{error:.2f}{mark}")
            snip = results[(key, sparsity, "SNIP")][0]
            paper = PAPER[key][sparsity]
            verdict = (f"yes ({snip:.2f} <= {paper})" if snip <= paper else f"no ({snip:.2f} > {paper})")
            lines.append(f"| {name} | {sparsity:.0%} | {PAPER[key]['dense']} / {paper} | "
                         f"{results[(key, 'dense')]:.2f} | " + " | ".join(cells) + f" | {verdict} |")
    return lines


def notes_lines(notes):
    if not notes:
        return ["", "No method left a layer empty (no layer-collapse warning)."]
    return ["", "Warnings while choosing masks:", ""] + [f"- {note}" for note in notes]


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (key, (_, _, name)) in zip(axes, NETWORKS.items()):
        sparsities = sorted(s for s in PAPER[key] if s != "dense")
        for method, marker in zip(METHODS, "osD^"):
            axis.plot([100 * s for s in sparsities], [results[(key, s, method)][0] for s in sparsities],
                      marker=marker, label=f"tfprune {method}")
        axis.plot([100 * s for s in sparsities], [PAPER[key][s] for s in sparsities], "k*--", markersize=10,
                  label="paper: SNIP")
        axis.axhline(results[(key, "dense")], color="grey", linestyle=":", label="tfprune dense")
        axis.axhline(PAPER[key]["dense"], color="black", linestyle=":", linewidth=0.8, label="paper: dense")
        axis.set_title(name)
        axis.set_xlabel("sparsity of the kernels (%)")
        axis.set_ylabel("test error (%)")
        axis.set_xticks([100 * s for s in sparsities])
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    IMAGE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(IMAGE, dpi=110)
    plt.close(figure)


TUNING = [  # (network, sparsity, optimizer, learning rate, weight decay, epochs)
    ("lenet_300_100", 0.95, "adam", 1e-3, 0.0, 5), ("lenet_300_100", 0.95, "adam", 3e-3, 0.0, 5),
    ("lenet_300_100", 0.95, "sgd", 0.1, 0.0, 5), ("lenet_300_100", 0.95, "sgd", 0.2, 0.0, 5),
    ("lenet_300_100", 0.95, "sgd", 0.1, 0.0, 20), ("lenet_300_100", 0.95, "sgd", 0.1, 5e-4, 15),
    ("lenet_300_100", 0.95, "sgd", 0.1, 5e-4, 20), ("lenet_300_100", 0.95, "sgd", 0.3, 0.0, 20),
    ("lenet5_caffe", 0.98, "sgd", 0.1, 5e-4, 5), ("lenet5_caffe", 0.98, "sgd", 0.05, 5e-4, 5),
    ("lenet5_caffe", 0.98, "sgd", 0.2, 5e-4, 5),
]


def tune(data_dir=None, seed=0):
    """Validation error of SNIP masks under each candidate recipe (no warm-up; the test set is not used)."""
    for key, sparsity, kind, rate, decay, epochs in TUNING:
        build, flat, name = NETWORKS[key]
        (x, y), _ = load_mnist(flat, data_dir)
        x_val, y_val, x, y = x[50000:], y[50000:], x[:50000], y[:50000]
        model = build(seed)
        batch = np.random.default_rng(seed).choice(len(x), BATCH, replace=False)
        net = prune_with_masks(model, snip_masks(model, (x[batch], y[batch]), sparsity, loss=LOSS))
        keras.utils.set_random_seed(seed)
        schedule = keras.optimizers.schedules.CosineDecay(rate, epochs * math.ceil(len(x) / BATCH))
        net.compile(keras.optimizers.Adam(schedule) if kind == "adam" else
                    keras.optimizers.SGD(schedule, momentum=MOMENTUM, nesterov=True, weight_decay=decay or None), LOSS)
        net.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
        error = error_percent(tfprune.strip_pruning(net), x_val, y_val)
        print(f"{name} {sparsity:.0%} {kind} lr {rate} weight decay {decay} {epochs} epochs: "
              f"validation error {error:.2f}%", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--tune"]:
        sys.exit("usage: python benchmarks/_study_at_init.py --tune   (the study itself runs from bench_sparse_training.py)")
    tune()
