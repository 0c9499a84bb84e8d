"""Dynamic sparse training from scratch: SET and RigL inside ``model.fit``.

A sparse network is trained from its initialisation without ever being dense:
``random_masks`` draws a random mask per layer (uniform or ERK allocation),
``prune_with_masks`` holds it (the masked weights stay exactly zero through the
weight's constraint), and a callback moves the masks every ``update_every``
steps while the model trains, keeping each layer's count of active weights
constant:

* drop the fraction ``drop_fraction`` of the layer's active weights with the
  smallest magnitude;
* grow the same number among the inactive positions (the ones just dropped
  included, as in the reference code): at random (SET, Mocanu et al. 2018) or
  where the dense gradient is largest (RigL, Evci et al. 2020);
* a grown weight starts at exactly zero, and its optimizer moments are reset
  (the reference code's ``grow_init='zeros'`` and ``reset_momentum``); a
  weight dropped and grown again in the same update keeps its value.

The callbacks subclass ``UpdatePruningStep``, so they drive the wrappers too
and the step count is the wrappers' own (saved with the model): every random
draw is keyed by ``(seed, step, weight)``, and a model saved mid-training and
reloaded makes the same future decisions as an uninterrupted run. What this
shares with dynamic network surgery (``dynamic_surgery.py``) is that machinery
(the wrapper's in-graph step, the callback, draws keyed by the step); the mask
rule differs: surgery thresholds each weight inside the train step, while SET
and RigL rank a layer's weights (an exact top-k count), which runs on the host
like magnitude pruning's updates, only every ``update_every`` steps.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprune._common import keras_internals
from tfprune._pruning import masks as mask_lib
from tfprune._pruning import registry
from tfprune._pruning.allocation import erk_densities
from tfprune._pruning.api import pruning_wrappers
from tfprune._pruning.callbacks import UpdatePruningStep
from tfprune._pruning.fixed_masks import KeepMasks, prunable_weights, set_masks
from tfprune._pruning.schedules import _check_sparsity
from tfprune._pruning.wrapper import PruneLowMagnitude

DISTRIBUTIONS = ("erk", "uniform")
DECAYS = ("constant", "cosine")
# Streams of the keyed random draws, so that the initial masks and SET's growth never share numbers.
_INIT, _GROW, _BATCH = 0, 1, 2
# How many batches of a tf.data.Dataset RigL reads once and cycles through.
MAX_DATASET_BATCHES = 64


def random_masks(model, sparsity, distribution="erk", seed=0):
    """``{label: 0/1 mask}``: a random sparse mask per prunable weight, the start of SET and RigL.

    Each weight keeps exactly ``round(size * density)`` (at least one) positions
    chosen at random, its density given by ``distribution``:

    * ``"erk"``: Erdős–Rényi-Kernel (Evci et al. 2020, "Rigging the Lottery:
      Making All Tickets Winners"; Erdős–Rényi from Mocanu et al. 2018,
      "Scalable training of artificial neural networks with adaptive sparse
      connectivity inspired by network science"): a layer's density is
      proportional to ``sum(shape) / prod(shape)``, so small layers keep more,
      computed by ``tfprune``'s one ERK rule (``allocation.erk_densities``);
    * ``"uniform"``: every weight at ``sparsity``.

    The draws are keyed by ``(seed, weight index)``, not by a global random
    state. The model is only read.

    Args:
        model: a built Keras model.
        sparsity: the overall fraction of the prunable weights to remove, in [0, 1).
        distribution: ``"erk"`` or ``"uniform"``.
        seed: an integer; the same seed gives the same masks.

    Returns:
        ``{label: float32 array}``, labels as ``prunable_weights(model)`` gives
        them; pass it to ``prune_with_masks``.

    Raises:
        ValueError: a sparsity out of range, an unknown distribution, an unbuilt
            model or one without prunable weights.

    Example:

    ```python
    masks = tfprune.random_masks(model, 0.9, distribution="erk", seed=0)
    sparse = tfprune.prune_with_masks(model, masks)
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"random_masks: `model` must be a keras Model. Received: {type(model).__name__}.")
    _check_sparsity("sparsity", sparsity, "random_masks")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"random_masks: `distribution` must be one of {DISTRIBUTIONS}. "
                         f"Received: distribution={distribution!r}.")
    _check_seed(seed, "random_masks")
    if not model.built:
        raise ValueError(f"random_masks: model '{model.name}' is not built; build it (keras.Input, or "
                         "model.build(input_shape)) so that its weights exist.")
    weights = prunable_weights(model)
    if not weights:
        raise ValueError(f"random_masks: model '{model.name}' has no weights tfprune can prune. "
                         f"Supported: {registry.SUPPORTED_LAYERS}.")
    shapes = {label: tuple(w.shape) for label, w in weights.items()}
    if distribution == "erk":
        densities = erk_densities(shapes, float(sparsity))
    else:
        densities = {label: 1.0 - float(sparsity) for label in shapes}
    masks = {}
    for index, (label, shape) in enumerate(shapes.items()):
        size = math.prod(shape)
        keep = mask_lib.keep_count(size, 1.0 - densities[label])
        chosen = _rng(seed, _INIT, 0, index).permutation(size)[:keep]
        mask = np.zeros(size, np.float32)
        mask[chosen] = 1.0
        masks[label] = mask.reshape(shape)
    return masks


class DynamicSparseTraining(UpdatePruningStep):
    """Base of SET and RigL: drop by magnitude, grow by ``grow_scores``, every ``update_every`` steps.

    Use it in place of ``tfprune.UpdatePruningStep`` (it is one) to train a
    model made by ``prune_with_masks(model, random_masks(model, ...))``. After
    ``t`` training steps, for ``t`` a multiple of ``update_every`` below
    ``end_step``, each pruned weight with ``n`` active positions drops the
    ``floor(n * f(t))`` of smallest magnitude and grows as many where
    ``grow_scores`` is largest among the inactive positions, so its count stays
    ``n``. ``f(t)`` is ``drop_fraction`` (``decay="constant"``) or
    ``drop_fraction / 2 * (1 + cos(pi * t / end_step))`` (``"cosine"``).
    Grown weights start at zero with their optimizer moments reset. A subclass
    implements ``grow_scores``.

    Args:
        drop_fraction: the fraction of each weight's active positions moved per
            update (at ``t = 0`` for the cosine decay), in (0, 1).
        update_every: steps between updates (the papers' ``delta T``), >= 1.
        end_step: no update from this training step on; ``None`` (constant
            decay only) updates until training ends.
        decay: ``"constant"`` or ``"cosine"``.
        seed: an integer keying every random draw, with the step.

    Attributes:
        updates: how many mask updates this callback has made (counted per
            callback, not saved with the model).

    Raises:
        ValueError: an argument out of range; when training starts, a model not
            made by ``random_masks`` and ``prune_with_masks``, or
            ``steps_per_execution`` other than 1.

    Example:

    ```python
    class GrowFirstFree(tfprune.DynamicSparseTraining):
        def grow_scores(self, step, weights):  # the first free positions, in memory order
            return [-np.arange(np.prod(w.shape), dtype=float).reshape(w.shape) for w in weights]

    sparse.fit(x, y, callbacks=[GrowFirstFree(drop_fraction=0.2, update_every=50)])
    ```
    """

    _title = "DynamicSparseTraining"

    def __init__(self, drop_fraction=0.3, update_every=100, end_step=None, decay="constant", seed=0):
        super().__init__()
        where = type(self)._title
        if isinstance(drop_fraction, bool) or not isinstance(drop_fraction, (int, float, np.number)) \
                or not 0.0 < float(drop_fraction) < 1.0:
            raise ValueError(f"{where}: `drop_fraction` must be a number in (0, 1), the fraction of each layer's "
                             f"active weights moved per update. Received: drop_fraction={drop_fraction!r}.")
        if not _is_int(update_every) or update_every < 1:
            raise ValueError(f"{where}: `update_every` must be an integer >= 1, the steps between mask updates. "
                             f"Received: update_every={update_every!r}.")
        if decay not in DECAYS:
            raise ValueError(f"{where}: `decay` must be one of {DECAYS}. Received: decay={decay!r}.")
        if end_step is None:
            if decay == "cosine":
                raise ValueError(f"{where}: the cosine decay needs `end_step`, the step at which the drop fraction "
                                 "reaches 0 and updates stop (RigL: 75% of the training steps).")
        elif not _is_int(end_step) or end_step < update_every:
            raise ValueError(f"{where}: `end_step` must be an integer >= update_every ({update_every!r}), or None "
                             f"to update until training ends. Received: end_step={end_step!r}.")
        _check_seed(seed, where)
        self.drop_fraction = float(drop_fraction)
        self.update_every = int(update_every)
        self.end_step = None if end_step is None else int(end_step)
        self.decay = decay
        self.seed = int(seed)
        self._last_update = None
        self.updates = 0

    # -- the schedule ------------------------------------------------------

    def is_update_step(self, step):
        """Whether the masks move after ``step`` training steps (before step ``step + 1``)."""
        step = int(step)
        return step > 0 and step % self.update_every == 0 and (self.end_step is None or step < self.end_step)

    def drop_fraction_at(self, step):
        """The fraction of each weight's active positions dropped (and grown) by an update after ``step`` steps."""
        if self.decay == "constant":
            return self.drop_fraction
        t = min(max(int(step), 0), self.end_step)
        return self.drop_fraction / 2.0 * (1.0 + math.cos(math.pi * t / self.end_step))

    # -- what a subclass decides ---------------------------------------------

    def grow_scores(self, step, weights):
        """One array per weight in ``weights`` (the pruned variables, in model order): where to grow.

        The inactive positions with the largest scores are grown. Called only
        at update steps, with the weights as they are after ``step`` steps.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement grow_scores(step, weights).")

    # -- fit ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._check_model()
        super().on_train_begin(logs)
        self._last_update = None

    def _check_model(self):
        where = type(self)._title
        wrappers = pruning_wrappers(self.model)
        recipe = "make it with tfprune.prune_with_masks(model, tfprune.random_masks(model, sparsity))"
        if not wrappers:
            raise ValueError(f"{where}: model '{self.model.name}' has no pruning wrappers; {recipe}.")
        others = [w.name for w in wrappers
                  if not isinstance(w, PruneLowMagnitude) or not isinstance(w.pruning_schedule, KeepMasks)]
        if others:
            raise ValueError(
                f"{where}: the layers {others[:5]} are not held by fixed masks (prune_low_magnitude with a schedule, "
                f"or dynamic surgery); {where} moves masks itself and needs a model whose masks nothing else "
                f"changes: {recipe}."
            )
        span = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if span != 1:
            raise ValueError(f"{where}: the model is compiled with steps_per_execution={span}; mask updates run "
                             "between steps, so compile it with steps_per_execution=1.")

    def on_train_batch_begin(self, batch=None, logs=None):
        super().on_train_batch_begin(batch, logs)
        steps = [s for s in self._steps if s is not None]
        if not steps:
            return
        step = steps[0]
        if step != self._last_update and self.is_update_step(step):
            self.update_masks(step)
            self._last_update = step

    def update_masks(self, step):
        """Drops and grows every pruned weight of the model once, as the update after ``step`` steps does."""
        fraction = self.drop_fraction_at(step)
        wrappers = pruning_wrappers(self.model)
        entries = [(wrapper, weight, mask) for wrapper in wrappers
                   for weight, mask in zip(wrapper.pruned_weights, wrapper.masks)]
        scores = self.grow_scores(step, [weight for _, weight, _ in entries])
        optimizer = getattr(self.model, "optimizer", None)
        new_masks, grown = {}, []
        for (wrapper, weight, mask), score in zip(entries, scores):
            label = f"{wrapper.layer.name}/{registry.weight_label(weight, wrapper.layer)}"
            old = keras.ops.convert_to_numpy(mask).astype(np.float32)
            value = keras.ops.convert_to_numpy(weight)
            new_masks[label], new = drop_and_grow(value, old, np.asarray(score), fraction)
            grown.append((weight, new))
        set_masks(self.model, new_masks)
        for weight, new in grown:
            if not new.any():
                continue
            value = keras.ops.convert_to_numpy(weight)
            weight.assign(np.where(new, np.zeros((), value.dtype), value))
            if optimizer is not None:
                for slot in keras_internals.optimizer_slots(optimizer, weight):
                    current = keras.ops.convert_to_numpy(slot)
                    slot.assign(np.where(new, np.zeros((), current.dtype), current))
        self.updates += 1

    def get_config(self):
        return {"drop_fraction": self.drop_fraction, "update_every": self.update_every, "end_step": self.end_step,
                "decay": self.decay, "seed": self.seed}


class SET(DynamicSparseTraining):
    """Sparse Evolutionary Training: drop the smallest weights, regrow at random, inside ``fit``.

    Mocanu et al. 2018, "Scalable training of artificial neural networks with
    adaptive sparse connectivity inspired by network science". Every
    ``update_every`` steps each layer drops the fraction ``drop_fraction``
    (the paper's zeta, 0.3) of its active weights closest to zero and grows as
    many at random inactive positions, keeping its sparsity. The draws are keyed
    by ``(seed, step, weight)``. As in RigL's reference implementation of SET,
    grown weights start at zero (Mocanu et al. drew them at random) and their
    optimizer moments are reset. Use it instead of ``tfprune.UpdatePruningStep``.

    Args:
        drop_fraction: zeta, in (0, 1).
        update_every: steps between updates, >= 1 (the paper updates once per
            epoch: pass the steps per epoch).
        end_step: no update from this step on; ``None`` updates until training ends.
        decay: ``"constant"`` (the paper) or ``"cosine"`` (needs ``end_step``).
        seed: an integer keying the random growth.

    Raises:
        ValueError: as ``DynamicSparseTraining``.

    Example:

    ```python
    sparse = tfprune.prune_with_masks(model, tfprune.random_masks(model, 0.9, "erk"))
    sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sparse.fit(x, y, epochs=5, callbacks=[tfprune.SET(drop_fraction=0.3, update_every=100)])
    final = tfprune.strip_pruning(sparse)
    ```
    """

    _title = "SET"

    def grow_scores(self, step, weights):
        return [_rng(self.seed, _GROW, step, index).random(tuple(w.shape)) for index, w in enumerate(weights)]


class RigL(DynamicSparseTraining):
    """Rigging the Lottery: drop the smallest weights, regrow where the dense gradient is largest.

    Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners". Every
    ``update_every`` steps (delta T, 100 in the paper) each layer drops the
    ``f(t)`` fraction of its active weights of smallest magnitude and grows as
    many inactive connections with the largest ``|dL/dw|``, the gradient of the
    loss with respect to the dense weight (zeros included) on one batch of
    ``data``; ``f(t) = alpha / 2 * (1 + cos(pi * t / end_step))`` with
    ``alpha = drop_fraction`` (0.3), and updates stop at ``end_step`` (the paper:
    75% of training). Start from ``random_masks(model, s, "erk")``. Grown weights
    start at zero and their optimizer moments are reset. Use it instead of
    ``tfprune.UpdatePruningStep``.

    The gradient is that of the compiled loss (with the model's added losses),
    the model called with ``training=False`` (dropout off, BatchNormalization
    in inference mode), so that the gradient pass does not count as a training
    step.

    Args:
        data: ``(x, y)`` arrays (a batch of ``batch_size`` examples drawn at each
            update, keyed by ``(seed, step)``), or a ``tf.data.Dataset`` of
            ``(x, y)`` batches (its first ``MAX_DATASET_BATCHES`` batches are read
            once and update ``k`` uses batch ``k`` modulo their number; keep the
            dataset deterministic for an exact resume).
        drop_fraction: alpha, in (0, 1).
        update_every: delta T, >= 1.
        end_step: T_end, >= update_every; required for the cosine decay.
        decay: ``"cosine"`` (the paper) or ``"constant"``.
        seed: an integer keying the batches drawn from ``data``.
        batch_size: examples per gradient batch when ``data`` is arrays (all of
            them if fewer).

    Raises:
        ValueError: no data, ``x`` and ``y`` of different lengths, a batch the
            model cannot take, or an argument out of range (as
            ``DynamicSparseTraining``).

    Example:

    ```python
    sparse = tfprune.prune_with_masks(model, tfprune.random_masks(model, 0.9, "erk"))
    sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rigl = tfprune.RigL(data=(x[:1000], y[:1000]), update_every=100, end_step=int(0.75 * total_steps))
    sparse.fit(x, y, epochs=5, callbacks=[rigl])
    ```
    """

    _title = "RigL"

    def __init__(self, data=None, drop_fraction=0.3, update_every=100, end_step=None, decay="cosine", seed=0,
                 batch_size=100):
        super().__init__(drop_fraction=drop_fraction, update_every=update_every, end_step=end_step, decay=decay,
                         seed=seed)
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise ValueError(f"RigL: `batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}.")
        self.batch_size = None if batch_size is None else int(batch_size)
        self._arrays, self._batches = _checked_data(data)

    def _check_model(self):
        super()._check_model()
        if getattr(self.model, "loss", None) is None and not self.model.losses:
            raise ValueError("RigL: the model has no compiled loss; compile it with a loss, whose gradient "
                             "chooses where to grow.")
        x, y = self.batch(0)
        try:
            self._gradients(x[:2] if self._arrays is not None else x, y[:2] if self._arrays is not None else y)
        except Exception as error:  # a shape or dtype the model cannot take
            raise ValueError(
                f"RigL: a batch of `data` (x of shape {_shape(x)}, y of shape {_shape(y)}) does not fit model "
                f"'{self.model.name}' and its loss: {type(error).__name__}: {error}"
            ) from error

    def batch(self, step):
        """``(x, y)``: the batch whose gradient chooses the growth after ``step`` steps."""
        if self._arrays is not None:
            x, y = self._arrays
            n = len(x)
            if self.batch_size is None or self.batch_size >= n:
                return x, y
            index = np.sort(_rng(self.seed, _BATCH, step, 0).choice(n, self.batch_size, replace=False))
            return x[index], y[index]
        return self._batches[(int(step) // self.update_every) % len(self._batches)]

    def _gradients(self, x, y):
        weights = [w for wrapper in pruning_wrappers(self.model) for w in wrapper.pruned_weights]
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=False)
            loss = self.model.compute_loss(x=x, y=y, y_pred=predictions, training=False)
        gradients = tape.gradient(loss, weights)
        return weights, gradients

    def grow_scores(self, step, weights):
        x, y = self.batch(step)
        pruned, gradients = self._gradients(x, y)
        by_id = {id(w): g for w, g in zip(pruned, gradients)}
        scores = []
        for weight in weights:
            gradient = by_id.get(id(weight))
            if gradient is None:
                warnings.warn(f"RigL: the loss has no gradient with respect to '{weight.path}'; its growth is "
                              "chosen among equal scores.", RuntimeWarning, stacklevel=2)
                scores.append(np.zeros(tuple(weight.shape), np.float32))
            else:
                scores.append(np.abs(keras.ops.convert_to_numpy(gradient)))
        return scores

    def get_config(self):
        config = super().get_config()
        config["batch_size"] = self.batch_size
        return config


def drop_and_grow(value, mask, grow_score, fraction):
    """One SET/RigL update of one weight: ``(new mask, grown)``, both of ``mask``'s shape.

    Keeps the ``n - floor(n * fraction)`` active positions of largest ``|value|``
    (``n`` the active count), then grows ``floor(n * fraction)`` positions with
    the largest ``grow_score`` among the rest (the ones just dropped included),
    so the active count stays ``n``. ``grown`` marks the positions active now
    that were not before (a weight dropped and grown again is not grown).
    Ties are broken deterministically.
    """
    active = int(mask.sum())
    moved = int(active * fraction)
    if moved == 0:
        return mask.copy(), np.zeros(mask.shape, bool)
    magnitude = np.where(mask > 0, np.abs(value).astype(np.float64), -1.0)
    kept, _ = mask_lib.top_k_mask(magnitude, active - moved)
    candidates = np.where(kept > 0, -np.inf, grow_score.astype(np.float64))
    added, _ = mask_lib.top_k_mask(candidates, moved)
    new_mask = kept + added
    return new_mask.astype(np.float32), (new_mask > 0) & (mask == 0)


# -- helpers -------------------------------------------------------------


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_seed(seed, where):
    if not _is_int(seed):
        raise ValueError(f"{where}: `seed` must be an integer. Received: seed={seed!r}.")


def _rng(seed, stream, step, index):
    """A numpy generator keyed by ``(seed, stream, step, index)``: no global random state is read."""
    return np.random.default_rng([int(seed) % 2**63, stream, int(step), int(index)])


def _shape(value):
    return tuple(getattr(value, "shape", ())) or type(value).__name__


def _checked_data(data):
    """``(arrays, batches)``: ``(x, y)`` arrays, or the cached batches of a dataset; one of them None."""
    if data is None:
        raise ValueError("RigL: `data` is required: RigL grows connections where the gradient of the loss is "
                         "largest, on a batch of training data. Pass data=(x, y) or a tf.data.Dataset of (x, y) "
                         "batches (SET needs no data).")
    if isinstance(data, tf.data.Dataset):
        batches = [_pair(item) for item in data.take(MAX_DATASET_BATCHES)]
        if not batches:
            raise ValueError("RigL: the `data` dataset is empty.")
        return None, batches
    x, y = _pair(data)
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"RigL: `data` holds no examples (x of shape {x.shape}).")
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(f"RigL: `data` has {len(x)} inputs but y of shape {y.shape}; give one label per example.")
    return (x, y), None


def _pair(item):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ValueError(f"RigL: `data` must be (x, y) arrays or a tf.data.Dataset of (x, y) batches. "
                         f"Received: {type(item).__name__}"
                         f"{'' if not isinstance(item, (tuple, list)) else f' of length {len(item)}'}.")
    return item[0], item[1]
