"""Lottery tickets: iterative magnitude pruning with rewinding, as a resumable driver.

Frankle & Carbin 2019 ("The Lottery Ticket Hypothesis: Finding Sparse, Trainable
Neural Networks") train a dense network, prune p% of its remaining weights by
magnitude, reset the kept weights to their initial values and train again, round
after round; the sparse networks found so ("winning tickets") train to the dense
network's accuracy, and the same masks with a fresh random initialisation do not.
Frankle et al. 2020 ("Linear Mode Connectivity and the Lottery Ticket Hypothesis";
also "Stabilizing the Lottery Ticket Hypothesis", 2019) rewind to the weights of an
early iteration k instead of the initialisation, which finds tickets in deeper
networks.

``LotteryTicket`` runs the rounds; the user's own training function trains each
one (its ``fit`` with the callbacks the driver gives it). The masks are held
fixed by ``prune_with_masks``; the pruning itself is ``masks.top_k_mask`` /
``masks.magnitude_masks`` on the trained weights, the pruned ones ranked last, so
each round's mask lies inside the previous one. After every round the driver can
write its state to a directory, so a run that was stopped resumes at the last
finished round and ends as an uninterrupted one would.
"""

import hashlib
import json
import os
import pathlib
import warnings

import keras
import numpy as np

from tfprune._common.files import atomic_path
from tfprune._common.layers import copy_layer, fresh_copy
from tfprune._pruning import masks as mask_maths
from tfprune._pruning.api import check_model, pruning_wrappers, strip_pruning
from tfprune._pruning.base import NO_CALLBACK
from tfprune._pruning.callbacks import UpdatePruningStep
from tfprune._pruning.fixed_masks import prunable_weights, prune_with_masks

_FORMAT = "tfprune.lottery/1"
_STATE = "lottery.json"
_GRANULARITIES = ("layer", "global")


class LotteryHistory:
    """What each round of a ``LotteryTicket`` run kept and scored.

    ``rounds`` is a list of dicts, one per finished round (round 0 is the dense
    network): ``round``, ``remaining`` (the fraction of the prunable weights
    kept), ``layers`` (``{label: fraction kept}``), ``steps`` (training steps
    the round ran), ``metric`` (``evaluate_fn`` of the trained ticket, or
    ``None``) and ``reinit_metric`` (the same masks from a fresh random
    initialisation, with ``reinitialize=True``; ``None`` otherwise and for
    round 0).

    Args:
        rounds: the list of round dicts (default: empty).

    Example:

    ```python
    history = ticket.run(train_fn, evaluate_fn)
    for row in history.rounds:
        print(f"{100 * row['remaining']:.1f}% kept: {row['metric']:.4f} (reinit {row['reinit_metric']})")
    ```
    """

    def __init__(self, rounds=None):
        self.rounds = [dict(row) for row in (rounds or [])]

    @property
    def remaining(self):
        """The fraction of prunable weights kept, per round."""
        return [row["remaining"] for row in self.rounds]

    @property
    def metrics(self):
        """``evaluate_fn`` of each round's trained ticket (``None`` without ``evaluate_fn``)."""
        return [row["metric"] for row in self.rounds]

    @property
    def reinit_metrics(self):
        """``evaluate_fn`` of each round's random-reinitialisation control (``None`` where not run)."""
        return [row["reinit_metric"] for row in self.rounds]

    def __len__(self):
        return len(self.rounds)

    def __repr__(self):
        lines = ["round  remaining  metric  reinit_metric"]
        for row in self.rounds:
            lines.append(f"{row['round']:>5}  {100 * row['remaining']:>8.2f}%  {_shown(row['metric'])}  "
                         f"{_shown(row['reinit_metric'])}")
        return "\n".join(lines)

    def get_config(self):
        """``{"rounds": [...]}``: the history as plain JSON-ready values (what ``lottery.json`` stores).

        Example:

        ```python
        json.dumps(history.get_config())
        ```
        """
        return {"rounds": [dict(row) for row in self.rounds]}

    @classmethod
    def from_config(cls, config):
        """The history ``get_config`` described.

        Example:

        ```python
        again = LotteryHistory.from_config(history.get_config())
        ```
        """
        return cls(config["rounds"])


def _shown(value):
    return "  -   " if value is None else f"{value:.4f}"


class LotteryTicket:
    """Iterative magnitude pruning with rewinding: finds lottery tickets by training round after round.

    Round 0 trains the dense network (a copy of ``model``, wrapped with masks of
    ones). Each following round prunes ``prune_fraction`` of the weights that
    are still kept, by magnitude of the last round's trained weights (per layer,
    or with one ranking over all layers), rewinds every weight of the network to
    its value at training iteration ``rewind_step`` (0: the initialisation, as
    Frankle & Carbin 2019; k > 0: weight rewinding, Frankle et al. 2020), zeroes
    the pruned ones and trains again with the masks held fixed
    (``prune_with_masks``). With ``reinitialize=True`` every round also trains
    the random-reinitialisation control of the paper: the same masks on a fresh
    random initialisation of the network.

    ``run`` calls ``train_fn(model, callbacks)`` for each training: the
    function compiles ``model`` (a new copy each time, so the optimizer starts
    fresh, as in the papers) and trains it with ``model.fit(..., callbacks=
    callbacks + its own)``. Before each training the driver seeds Keras
    (``keras.utils.set_random_seed``) from ``seed`` and the round, so that a
    resumed run repeats the rounds it did not finish exactly. With rewinding,
    Frankle et al. train the rounds after the first for the remaining
    ``T - k`` iterations; ``train_fn`` can read ``current_round`` to do so.

    Which weights take part is what ``tfprune.prunable_weights(model)`` lists
    (kernels; biases and normalisation parameters are rewound but not pruned).

    Args:
        model: a built Keras model, at the initialisation the tickets start
            from. It is never modified: each round trains a copy.
        prune_fraction: the fraction of the remaining weights pruned per
            round, in (0, 1). The paper uses 0.2 for LeNet-300-100.
        rounds: the number of pruning rounds after the dense round 0, >= 1;
            after ``r`` rounds a layer keeps ``(1 - prune_fraction) ** r``.
        rewind_step: the training iteration whose weights the kept weights
            are rewound to: 0 for the initialisation, ``k > 0`` for weight
            rewinding (must not exceed the steps round 0 trains).
        granularity: ``"layer"`` prunes each weight by the fraction on its
            own (Frankle & Carbin's LeNet); ``"global"`` ranks all weights
            together (their deeper networks).
        output_fraction: the fraction pruned per round from the output
            layer's weights (the last layer with prunable weights), in
            (0, 1); the paper prunes LeNet's output layer at half the rate.
            ``None``: ``prune_fraction``, and with ``"global"`` the output
            layer is ranked with the others.
        reinitialize: also train each round's masks from a fresh random
            initialisation (the control of the paper), recorded as
            ``reinit_metric``.
        directory: where each finished round is written (``lottery.json``
            and ``.npz`` files), so a stopped run resumes there; ``None``
            keeps everything in memory. A directory holding another run's
            files (other settings or another initialisation) is refused.
        seed: the integer the per-round seeds are derived from.

    Raises:
        ValueError: an argument out of range, an unbuilt model or one with
            no prunable weights, a ``directory`` holding another run.
        TypeError: ``model`` is not a Keras model.

    Example:

    ```python
    def train_fn(model, callbacks):
        model.compile(keras.optimizers.Adam(1.2e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=60, epochs=2, callbacks=callbacks, verbose=0)

    def evaluate_fn(model):
        return model.evaluate(x_test, y_test, verbose=0)[1]

    ticket = tfprune.LotteryTicket(model, prune_fraction=0.2, rounds=5, output_fraction=0.1,
                                   reinitialize=True, directory="lottery_run")
    history = ticket.run(train_fn, evaluate_fn)
    winning = ticket.ticket()           # the last round's masks on the rewound weights, untrained
    ```
    """

    def __init__(self, model, prune_fraction=0.2, rounds=5, rewind_step=0, granularity="layer",
                 output_fraction=None, reinitialize=False, directory=None, seed=0):
        if not isinstance(model, keras.Model):
            raise TypeError(f"LotteryTicket: `model` must be a keras Model. Received: {type(model).__name__}.")
        check_model(model, "LotteryTicket")
        self.prune_fraction = _fraction("prune_fraction", prune_fraction)
        self.output_fraction = None if output_fraction is None else _fraction("output_fraction", output_fraction)
        self.rounds = _count("rounds", rounds, minimum=1)
        self.rewind_step = _count("rewind_step", rewind_step, minimum=0)
        if granularity not in _GRANULARITIES:
            raise ValueError(f"LotteryTicket: `granularity` must be one of {_GRANULARITIES}. "
                             f"Received: granularity={granularity!r}.")
        self.granularity = granularity
        if not isinstance(reinitialize, bool):
            raise ValueError(f"LotteryTicket: `reinitialize` must be True or False. Received: {reinitialize!r}.")
        self.reinitialize = reinitialize
        self.seed = _count("seed", seed, minimum=0)
        self.directory = None if directory is None else pathlib.Path(os.fspath(directory))
        weights = prunable_weights(model)
        if not weights:
            raise ValueError(f"LotteryTicket: model '{model.name}' has no weight tfprune can prune.")
        self._model = model
        self._labels = list(weights)
        self._shapes = {label: tuple(int(d) for d in w.shape) for label, w in weights.items()}
        self._output_layer = self._labels[-1].split("/", 1)[0]
        self._initial = [np.array(w) for w in model.get_weights()]
        self._rewind = None if self.rewind_step else self._initial
        self._masks = {}     # round -> {label: mask}
        self._trained = None  # the last finished round's trained prunable weights
        self.history = LotteryHistory()
        self.current_round = None
        if self.directory is not None:
            self._load()

    # -- the settings a run is identified by ---------------------------------

    def get_config(self):
        """The driver's settings (the model is not part of them), as saved in ``lottery.json``.

        Example:

        ```python
        print(ticket.get_config()["prune_fraction"])
        ```
        """
        return {"prune_fraction": self.prune_fraction, "rounds": self.rounds, "rewind_step": self.rewind_step,
                "granularity": self.granularity, "output_fraction": self.output_fraction,
                "reinitialize": self.reinitialize, "seed": self.seed,
                "directory": None if self.directory is None else str(self.directory)}

    def _fingerprint(self):
        # `rounds` is left out so that a finished run can be continued with more rounds.
        config = {k: v for k, v in self.get_config().items() if k not in ("rounds", "directory")}
        digest = hashlib.sha256()
        for value in self._initial:
            digest.update(str(value.shape).encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return {"config": config, "weights": {label: list(shape) for label, shape in self._shapes.items()},
                "initial_sha256": digest.hexdigest()}

    # -- running ----------------------------------------------------------

    def run(self, train_fn, evaluate_fn=None):
        """Runs (or resumes) the rounds and returns their ``LotteryHistory``.

        Args:
            train_fn: ``train_fn(model, callbacks)``: compiles ``model`` and
                trains it with ``model.fit(..., callbacks=callbacks)`` (the
                list holds ``tfprune.UpdatePruningStep`` and the driver's step
                watch; add your own after them). Its return value is ignored.
            evaluate_fn: ``evaluate_fn(model) -> number`` for a trained
                ticket (e.g. its test accuracy), or ``None``.

        Returns:
            The ``LotteryHistory`` of every finished round (also ``self.history``).

        Raises:
            ValueError: ``train_fn`` or ``evaluate_fn`` not callable, a
                ``train_fn`` that trained no step or did not pass the
                callbacks on, a ``rewind_step`` beyond the end of round 0's
                training, an ``evaluate_fn`` that returns no number.

        Example:

        ```python
        history = tfprune.LotteryTicket(model, rounds=3).run(train_fn, evaluate_fn)
        ```
        """
        if not callable(train_fn):
            raise ValueError(f"LotteryTicket.run: `train_fn` must be callable as train_fn(model, callbacks). "
                             f"Received: {type(train_fn).__name__}.")
        if evaluate_fn is not None and not callable(evaluate_fn):
            raise ValueError(f"LotteryTicket.run: `evaluate_fn` must be callable as evaluate_fn(model) or None. "
                             f"Received: {type(evaluate_fn).__name__}.")
        for round_ in range(len(self.history), self.rounds + 1):
            self.current_round = round_
            masks = self._ones() if round_ == 0 else self._pruned(self._masks[round_ - 1], self._trained)
            self._seed(round_, 0)
            model = prune_with_masks(copy_layer(self._model, self._rewind or self._initial), masks)
            steps = self._train(train_fn, model, capture=(round_ == 0 and self.rewind_step > 0))
            row = {"round": round_, "remaining": _remaining(masks), "steps": steps,
                   "layers": {label: float(m.mean()) for label, m in masks.items()},
                   "metric": _evaluate(evaluate_fn, model), "reinit_metric": None}
            trained = {label: np.array(w) * masks[label] for label, w in prunable_weights(model).items()}
            if self.reinitialize and round_ > 0:
                self._seed(round_, 1)
                control = prune_with_masks(self._fresh(), masks)
                self._train(train_fn, control, capture=False)
                row["reinit_metric"] = _evaluate(evaluate_fn, control)
            self._masks[round_], self._trained = masks, trained
            self.history.rounds.append(row)
            if self.directory is not None:
                self._save(round_)
        self.current_round = None
        return self.history

    def masks(self, round=-1):
        """``{label: 0/1 array}``: the masks of a finished round (default: the last; round 0 keeps all).

        Raises:
            ValueError: no such finished round.

        Example:

        ```python
        masks = ticket.masks(3)
        ```
        """
        finished = len(self.history)
        index = round + finished if round < 0 else round
        if not 0 <= index < finished:
            raise ValueError(f"LotteryTicket.masks: `round` must name a finished round (0 to {finished - 1}, "
                             f"or negative from the end). Received: round={round}.")
        if index not in self._masks:
            self._masks[index] = self._read_round(index)[0]
        return {label: m.copy() for label, m in self._masks[index].items()}

    def ticket(self, round=-1):
        """The untrained ticket of a finished round: its masks on the rewound weights, wrapped for ``fit``.

        Train it with ``tfprune.UpdatePruningStep`` like any ``prune_with_masks`` model.

        Raises:
            ValueError: no such finished round, or the rewind point was not reached yet.

        Example:

        ```python
        winning = ticket.ticket()
        winning.compile("adam", "sparse_categorical_crossentropy")
        winning.fit(x, y, callbacks=[tfprune.UpdatePruningStep()])
        ```
        """
        masks = self.masks(round)
        if self._rewind is None:
            raise ValueError("LotteryTicket.ticket: the weights of iteration `rewind_step` are not known yet: "
                             "run round 0 first.")
        return prune_with_masks(copy_layer(self._model, self._rewind), masks)

    # -- one round ------------------------------------------------------------

    def _train(self, train_fn, model, capture):
        watch = _StepWatch(self.rewind_step if capture else None)
        try:
            train_fn(model, [UpdatePruningStep(), watch])
        except RuntimeError as err:
            if NO_CALLBACK in str(err):
                raise ValueError(
                    "LotteryTicket.run: `train_fn` trained without the callbacks it was given. Pass them to fit: "
                    "model.fit(..., callbacks=callbacks)."
                ) from err
            raise
        steps = int(pruning_wrappers(model)[0].pruning_step.numpy())
        if steps <= 0:
            raise ValueError("LotteryTicket.run: `train_fn` trained no step of the model it was given (its step "
                             "counter did not move). It must train that model: model.fit(..., callbacks=callbacks).")
        if watch.batches == 0:
            raise ValueError("LotteryTicket.run: `train_fn` trained the model without the driver's callbacks. "
                             "Pass the list it receives to fit: model.fit(..., callbacks=callbacks).")
        if capture:
            if watch.weights is None:
                raise ValueError(
                    f"LotteryTicket: `rewind_step` is {self.rewind_step}, but round 0 trained only {steps} steps, "
                    "so there are no weights to rewind to. Choose a rewind_step within the training, or train longer."
                )
            self._rewind = watch.weights
        return steps

    def _ones(self):
        return {label: np.ones(shape, np.float32) for label, shape in self._shapes.items()}

    def _pruned(self, masks, trained):
        """The next round's masks: ``prune_fraction`` of the kept weights of each group removed by magnitude."""
        # Pruned weights score -1, below every kept |w|, so the new masks lie inside the old ones.
        scores = {label: np.where(masks[label] > 0, np.abs(trained[label]), -1.0) for label in self._labels}
        output = [label for label in self._labels if label.split("/", 1)[0] == self._output_layer]
        if self.granularity == "layer":
            groups = [([label], self._fraction_of(label)) for label in self._labels]
        elif self.output_fraction is None:
            groups = [(self._labels, self.prune_fraction)]
        else:
            rest = [label for label in self._labels if label not in output]
            groups = ([(rest, self.prune_fraction)] if rest else []) + [(output, self.output_fraction)]
        new = {}
        for labels, fraction in groups:
            kept = int(sum(masks[label].sum() for label in labels))
            keep = mask_maths.keep_count(kept, fraction)
            total = sum(scores[label].size for label in labels)
            # magnitude_masks keeps keep_count(total, sparsity) = keep of the group's scores.
            found, _ = mask_maths.magnitude_masks([scores[label] for label in labels], 1.0 - keep / total)
            new.update({label: m.astype(np.float32) for label, m in zip(labels, found)})
        return new

    def _fraction_of(self, label):
        if self.output_fraction is not None and label.split("/", 1)[0] == self._output_layer:
            return self.output_fraction
        return self.prune_fraction

    def _seed(self, round_, control):
        keras.utils.set_random_seed((self.seed * 100_003 + 2 * round_ + control) % (2**31 - 1))

    def _fresh(self):
        """A copy of ``model`` with freshly initialised weights, for the random-reinitialisation control."""
        copy = fresh_copy(self._model)
        same = [label for label, w in prunable_weights(copy).items()
                if np.array_equal(np.array(w), np.array(prunable_weights(self._model)[label]))]
        if same:
            warnings.warn(f"LotteryTicket: the random reinitialisation of {same} equals the model's own "
                          "initialisation (its initializer has a fixed seed), so the control is not random there.",
                          UserWarning, stacklevel=3)
        return copy

    # -- files ----------------------------------------------------------------

    def _load(self):
        state_path = self.directory / _STATE
        if not state_path.exists():
            return
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"LotteryTicket: {state_path} is not a lottery run's state file ({err}). "
                             "Choose another directory.") from err
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"LotteryTicket: {state_path} was not written by LotteryTicket. Choose another "
                             "directory.")
        mine = self._fingerprint()
        theirs = state.get("fingerprint", {})
        if theirs != json.loads(json.dumps(mine)):
            differ = [k for k in mine["config"] if theirs.get("config", {}).get(k) != mine["config"][k]]
            if theirs.get("weights") != json.loads(json.dumps(mine["weights"])):
                differ.append("the model's prunable weights")
            elif theirs.get("initial_sha256") != mine["initial_sha256"]:
                differ.append("the model's initial weights")
            raise ValueError(
                f"LotteryTicket: the directory {self.directory} holds another run's files (it differs in: "
                f"{', '.join(differ) or 'its settings'}). Choose another directory, or remove it to start again."
            )
        history = LotteryHistory.from_config(state["history"])
        if history.rounds:
            last = len(history) - 1
            self._masks[last], self._trained = self._read_round(last)
        if self.rewind_step and state.get("rewind"):
            with np.load(self.directory / state["rewind"], allow_pickle=False) as data:
                self._rewind = [data[f"w{i}"] for i in range(len(data.files))]
        self.history = history

    def _read_round(self, round_):
        if self.directory is None:
            raise ValueError(f"LotteryTicket: the masks of round {round_} were not kept.")
        path = self.directory / f"round_{round_:03d}.npz"
        with np.load(path, allow_pickle=False) as data:
            masks = {label: data[f"mask{i}"] for i, label in enumerate(self._labels)}
            trained = {label: data[f"trained{i}"] for i, label in enumerate(self._labels)}
        return masks, trained

    def _save(self, round_):
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for i, label in enumerate(self._labels):
            arrays[f"mask{i}"] = self._masks[round_][label]
            arrays[f"trained{i}"] = self._trained[label]
        _write_npz(self.directory / f"round_{round_:03d}.npz", arrays)
        rewind = None
        if self.rewind_step:
            rewind = "rewind.npz"
            if round_ == 0:
                _write_npz(self.directory / rewind, {f"w{i}": w for i, w in enumerate(self._rewind)})
        state = {"format": _FORMAT, "fingerprint": self._fingerprint(), "rewind": rewind,
                 "history": self.history.get_config()}
        # Written last: a round counts as finished only once the state file names it.
        with atomic_path(self.directory / _STATE) as tmp:
            tmp.write_text(json.dumps(state, indent=1))


class _StepWatch(keras.callbacks.Callback):
    """Counts the batches ``fit`` runs and keeps the network's weights after step ``capture_at``."""

    def __init__(self, capture_at=None):
        super().__init__()
        self.capture_at = capture_at
        self.batches = 0
        self.weights = None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.capture_at is None or self.weights is not None:
            return
        step = int(pruning_wrappers(self.model)[0].pruning_step.numpy())
        if step == self.capture_at:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.weights = [np.array(w) for w in strip_pruning(self.model).get_weights()]
        elif step > self.capture_at:
            raise ValueError(f"LotteryTicket: training ran past step {self.capture_at} (`rewind_step`) between two "
                             "batch callbacks (steps_per_execution > 1?); choose a rewind_step that is a multiple "
                             "of steps_per_execution.")


def _write_npz(path, arrays):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _remaining(masks):
    return float(sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values()))


def _evaluate(evaluate_fn, model):
    if evaluate_fn is None:
        return None
    value = evaluate_fn(model)
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"LotteryTicket.run: `evaluate_fn` must return a number. Received: {value!r}.") from err


def _fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(value) < 1.0:
        raise ValueError(f"LotteryTicket: `{name}` must be a fraction strictly between 0 and 1. "
                         f"Received: {name}={value!r}.")
    return float(value)


def _count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"LotteryTicket: `{name}` must be an integer >= {minimum}. Received: {name}={value!r}.")
    return int(value)
