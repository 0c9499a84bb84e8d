"""Dynamic network surgery: a wrapper whose masks prune and splice.

Guo, Yao & Chen 2016, "Dynamic Network Surgery for Efficient DNNs". Unlike
magnitude pruning, a cut connection is not lost: the wrapper keeps every
weight ``W`` dense, computes the forward pass with ``W * T`` (``T`` the 0/1
mask), and lets the optimizer update all of ``W`` with the gradient taken
with respect to ``W * T``. A pruned weight that keeps growing crosses the
splicing threshold and comes back.

The mask rule, per layer, follows the authors' Caffe code
(``compress_conv_layer.cpp``):

* at the first training step, ``mu`` and ``sigma`` are the mean and standard
  deviation of ``|W|`` over the layer's nonzero weights;
* ``a = 0.9 * max(mu + c * sigma, 0)`` and ``b = 1.1 * max(mu + c * sigma, 0)``;
* at step ``iter`` the mask is updated with probability
  ``(1 + gamma * iter) ** -power``, and only while ``iter < iter_stop``:
  ``T`` goes 1 -> 0 where ``|w| <= a`` and 0 -> 1 where ``|w| > b``.

The update runs inside the compiled train step; the random draw is
``tf.random.stateless_uniform`` keyed by ``(seed, iter)``, so a run is
deterministic given its seed and a resumed run draws what an uninterrupted
one would.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprune._pruning import registry
from tfprune._pruning.base import _PACKAGE, PruningWrapper, _positional

# The authors' own defaults: the example in their README (LeNet-5's ip1) sets
# gamma 0.0001, power 1, c_rate 4, iter_stop 14000.
DEFAULT_C = 4.0
DEFAULT_GAMMA = 1e-4
DEFAULT_POWER = 1.0
DEFAULT_ITER_STOP = 14000
# Widen the band between pruning and splicing: 0.9 and 1.1 times mu + c * sigma.
_LOWER, _UPPER = 0.9, 1.1


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DynamicSurgery(PruningWrapper):
    """Wraps a layer for dynamic network surgery (pruning with splicing).

    Created by ``tfprune.dynamic_surgery``; use that function rather than this
    class. Trained with ``tfprune.UpdatePruningStep`` like any tfprune
    wrapper, and ``tfprune.strip_pruning`` replaces it by the plain layer
    with ``W * T`` as its weights.

    Args:
        layer: the Keras layer (Dense, Conv, Embedding, recurrent, ...).
        c: how aggressive the pruning is: the thresholds are
            ``0.9 / 1.1 * max(mu + c * sigma, 0)`` of the layer's ``|W|``.
        gamma: decay of the probability of a mask update,
            ``(1 + gamma * iter) ** -power``.
        power: exponent of that probability.
        iter_stop: no mask update from this training step on.
        seed: seed of the random draws deciding when masks are updated.
        prune_bias: also mask the layer's bias, as the authors' code does.

    Example:

    ```python
    layer = tfprune.DynamicSurgery(keras.layers.Dense(300), c=2.0)
    model = keras.Sequential([keras.Input((784,)), layer, keras.layers.Dense(10)])
    model.compile("sgd", "mse")
    model.fit(x, y, callbacks=[tfprune.UpdatePruningStep()])
    ```
    """

    def __init__(self, layer, c=DEFAULT_C, gamma=DEFAULT_GAMMA, power=DEFAULT_POWER,
                 iter_stop=DEFAULT_ITER_STOP, seed=0, prune_bias=True, **kwargs):
        kwargs.setdefault("name", f"dynamic_surgery_{layer.name}")
        validate_surgery_arguments(layer.name, c, gamma, power, iter_stop, seed)
        self.c = float(c)
        self.gamma = float(gamma)
        self.power = float(power)
        self.iter_stop = int(iter_stop)
        self.seed = int(seed)
        self.prune_bias = bool(prune_bias)
        self.statistics = None
        self.pruned_count = None
        self.spliced_count = None
        self.mask_updates = None
        super().__init__(layer, **kwargs)
        if layer.built:
            self._build_pruning_state()

    # -- building ---------------------------------------------------------

    def _create_state(self):
        weights = surgery_weights(self.layer, self.prune_bias)
        if not weights:
            raise ValueError(
                f"dynamic_surgery: layer '{self.layer.name}' ({type(self.layer).__name__}) has no weights "
                f"tfprune can prune. Supported: {registry.SUPPORTED_LAYERS}."
            )
        self.pruned_weights = weights
        for i, weight in enumerate(weights):
            # Masks only: unlike PruneLowMagnitude, no constraint zeroes the
            # stored weights, so pruned weights keep learning.
            self._add_mask(i, weight)
        self.statistics = self._state("statistics", (2,), "float32", "zeros")  # mu, sigma of |W|
        self.pruned_count = self._state("pruned_count", (), "int64", "zeros")
        self.spliced_count = self._state("spliced_count", (), "int64", "zeros")
        self.mask_updates = self._state("mask_updates", (), "int64", "zeros")

    def surgery_counts(self):
        return int(self.pruned_count.numpy()), int(self.spliced_count.numpy())

    def bookkeeping_variables(self):
        return super().bookkeeping_variables() + [
            self.statistics, self.pruned_count, self.spliced_count, self.mask_updates]

    # -- the surgery ------------------------------------------------------

    def start_training(self):
        """At the first training step, measures ``|W|`` and sets the thresholds."""
        if int(self.pruning_step.numpy()) > 0:
            return  # resumed: the statistics were saved with the model
        values = list(self.masked_values().values())
        magnitudes = np.abs(np.concatenate([v.ravel() for v in values])).astype(np.float64)
        magnitudes = magnitudes[magnitudes != 0]
        mu = float(magnitudes.mean()) if magnitudes.size else 0.0
        sigma = float(magnitudes.std()) if magnitudes.size else 0.0
        self.statistics.assign(np.array([mu, sigma], np.float32))
        lower, _ = self.bounds()
        for threshold in self.thresholds:
            threshold.assign(lower)
        total = sum(v.size for v in values)
        cut = sum(int(np.count_nonzero(np.abs(v) <= lower)) for v in values)
        if total and cut / total > 0.999:
            warnings.warn(
                f"dynamic_surgery (layer '{self.layer.name}'): c={self.c:g} puts the pruning threshold at "
                f"{lower:.4g} (mu {mu:.4g}, sigma {sigma:.4g} of |W|), so the first mask update prunes "
                f"{cut / total:.2%} of the layer ({total - cut:,} of {total:,} weights left). Lower c for "
                "this layer (the paper starts from a trained model, whose |W| has a longer tail than an "
                "initialisation's).",
                RuntimeWarning, stacklevel=3,
            )

    def bounds(self):
        """``(a, b)``: weights at or below ``a`` are pruned, weights above ``b`` spliced back."""
        mu, sigma = (float(v) for v in keras.ops.convert_to_numpy(self.statistics))
        level = max(mu + self.c * sigma, 0.0)
        return _LOWER * level, _UPPER * level

    def update_probability(self, iteration):
        """The probability that the masks are updated at training step ``iteration``."""
        if iteration >= self.iter_stop:
            return 0.0
        return float((1.0 + self.gamma * iteration) ** -self.power)

    def _surgery_step(self):
        step = self.pruning_step.value
        iteration = tf.cast(step, tf.float32)
        probability = tf.pow(1.0 + self.gamma * iteration, -self.power)
        draw = tf.random.stateless_uniform((), seed=tf.stack([tf.constant(self.seed, tf.int64), step]))
        due = tf.logical_and(draw < probability, step < self.iter_stop)
        mu_sigma = self.statistics.value
        level = tf.maximum(mu_sigma[0] + self.c * mu_sigma[1], 0.0)
        lower, upper = _LOWER * level, _UPPER * level
        pruned = tf.constant(0, tf.int64)
        spliced = tf.constant(0, tf.int64)
        for weight, mask in zip(self.pruned_weights, self.masks):
            magnitude = tf.abs(tf.cast(weight.value, tf.float32))
            kept = mask.value > 0.5
            cut = tf.logical_and(kept, magnitude <= lower)
            back = tf.logical_and(tf.logical_not(kept), magnitude > upper)
            cut = tf.logical_and(cut, due)
            back = tf.logical_and(back, due)
            new_mask = tf.where(cut, tf.zeros_like(mask.value), tf.where(back, tf.ones_like(mask.value), mask.value))
            mask.assign(new_mask)
            pruned += tf.math.count_nonzero(cut, dtype=tf.int64)
            spliced += tf.math.count_nonzero(back, dtype=tf.int64)
        self.pruned_count.assign_add(pruned)
        self.spliced_count.assign_add(spliced)
        self.mask_updates.assign_add(tf.cast(due, tf.int64))

    def call(self, inputs=None, *args, training=None, **kwargs):
        if training:
            self._require_callback()
            self._surgery_step()
            self.pruning_step.assign_add(1)
        mapping = []
        for weight, mask in zip(self.pruned_weights, self.masks):
            value = weight.value
            masked = value * tf.cast(mask.value, value.dtype)
            # Forward with W * T; the gradient reaches every entry of W
            # unmasked (the straight-through update of the paper).
            mapping.append((weight, value + tf.stop_gradient(masked - value) if training else masked))
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(*_positional(inputs, args), **kwargs)

    # -- serialization ----------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({
            "c": self.c, "gamma": self.gamma, "power": self.power, "iter_stop": self.iter_stop,
            "seed": self.seed, "prune_bias": self.prune_bias,
        })
        return config


def surgery_weights(layer, prune_bias):
    """The layer's prunable weights, and its bias when ``prune_bias``."""
    weights = list(registry.prunable_weights(layer, explicit=True) or [])
    if weights and prune_bias:
        owner = getattr(layer, "cell", layer)
        bias = getattr(owner, "bias", None)
        if bias is not None and all(bias is not w for w in weights):
            weights.append(bias)
    return weights


def validate_surgery_arguments(layer_name, c, gamma, power, iter_stop, seed):
    """Errors name the layer, the argument and what is allowed."""
    where = f"dynamic_surgery (layer '{layer_name}')"
    if isinstance(c, bool) or not isinstance(c, (int, float, np.number)) or not np.isfinite(c):
        raise ValueError(f"{where}: `c` must be a finite number (the paper uses about -1 to 5). Received: c={c!r}.")
    for name, value in (("gamma", gamma), ("power", power)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
            raise ValueError(
                f"{where}: `{name}` must be a number >= 0: the mask is updated with probability "
                f"(1 + gamma * iter) ** -power. Received: {name}={value!r}."
            )
    if isinstance(iter_stop, bool) or not isinstance(iter_stop, (int, np.integer)) or iter_stop < 0:
        raise ValueError(
            f"{where}: `iter_stop` must be an integer >= 0, the training step after which masks stay fixed. "
            f"Received: iter_stop={iter_stop!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{where}: `seed` must be an integer. Received: seed={seed!r}.")


def c_for_sparsity(weights, sparsity, prune_bias=True):
    """The ``c`` whose first mask update prunes ``sparsity`` of a layer's weights.

    The paper tunes ``c`` by hand, layer by layer; this inverts the rule
    instead: with ``q`` the ``sparsity`` quantile of the nonzero ``|W|``,
    ``0.9 * (mu + c * sigma) = q``. Training then moves the weights, so the
    final sparsity differs somewhat (splicing brings some back, and weights
    that shrink are cut).

    Args:
        weights: the layer's weight arrays (kernel, and bias when ``prune_bias``).
        sparsity: the fraction in [0, 1) to prune at the first update.
        prune_bias: whether the last array is a bias pruned with the rest.

    Returns:
        ``c`` as a float.

    Example:

    ```python
    c = c_for_sparsity([kernel, bias], 0.98)
    ```
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"c_for_sparsity: `sparsity` must be in [0, 1). Received: {sparsity!r}.")
    magnitudes = np.abs(np.concatenate([np.ravel(w) for w in weights])).astype(np.float64)
    magnitudes = magnitudes[magnitudes != 0]
    mu, sigma = magnitudes.mean(), magnitudes.std()
    quantile = np.quantile(magnitudes, sparsity)
    return float((quantile / _LOWER - mu) / sigma) if sigma > 0 else 0.0
