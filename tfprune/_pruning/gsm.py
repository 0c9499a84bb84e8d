"""Global sparse momentum SGD: only the top-Q weights by |w * g| get the gradient; the cut at the end.

GSM (Ding et al. 2019, "Global Sparse Momentum SGD for Pruning Very Deep Neural Networks",
NeurIPS) sets the compression ratio directly: of the N prunable weights (the kernels
``tfprune.prunable_weights`` names), Q = N / ratio are *active* at each step, the Q with the
largest first-order saliency |w * dL/dw| ranked globally over all prunable kernels. Every
variable then takes one momentum step,

    v <- momentum * v + (weight_decay * w + mask * g)
    w <- w - learning_rate * v

where ``mask`` is 1 for the active weights and for every variable that is not pruned
(biases, normalisation), and 0 for the rest: the *passive* weights get no gradient, only
weight decay, which the accumulated momentum turns into a fast decay towards zero. A weight
can become active again whenever its saliency climbs back into the top Q, so the layers'
sparsities are found by the method. ``gsm_cut`` then sets everything outside the global top
Q by magnitude to exactly zero (the paper's final pruning, lossless once the passive weights
have decayed), in a copy.
"""

import math
import sys

import keras
import numpy as np

from tfprune._common import keras_internals
from tfprune._common.layers import copy_layer
from tfprune._common.compiling import compile_like
from tfprune._pruning.fixed_masks import prunable_weights
from tfprune._pruning.report import sparsity_report

_PACKAGE = "tfprune"
# How long the activity record remembers: an exponential average of the 0/1 active mask over about
# the last 1 / (1 - ACTIVITY_DECAY) = 100 steps.
ACTIVITY_DECAY = 0.99
CUT_BY = ("magnitude", "activity")


def _active_count(total, compression, keep, caller):
    """Q, the number of active weights, from ``compression`` (N / Q) or ``keep`` (Q itself)."""
    if (compression is None) == (keep is None):
        raise ValueError(f"{caller}: give exactly one of `compression` (e.g. 60 for 60x fewer weights) and `keep` "
                         f"(the number Q of weights kept); got compression={compression!r}, keep={keep!r}.")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= keep <= total:
            allowed = "a positive integer" if total == sys.maxsize else \
                f"an integer in [1, {total:,}] (the model's prunable weights)"
            raise ValueError(f"{caller}: `keep` must be {allowed}; got {keep!r}.")
        return int(keep)
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not math.isfinite(compression) \
            or compression < 1:
        raise ValueError(f"{caller}: `compression` must be a number >= 1 (prunable weights / weights kept, e.g. 60); "
                         f"got {compression!r}.")
    q = int(total / compression)
    if q < 1:
        raise ValueError(f"{caller}: compression={compression!r} keeps no weight of the {total:,} prunable ones; "
                         f"the largest possible is {total}.")
    return q


def _prunable_paths(model, caller):
    if not isinstance(model, keras.Model):
        raise TypeError(f"{caller}: `prunable` must be a keras Model or a list of variable paths; "
                        f"got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"{caller}: model '{model.name}' is not built, so it has no weights to rank yet. Build it "
                         "first (keras.Input in a Sequential, or call model.build(input_shape)).")
    weights = prunable_weights(model)
    if not weights:
        raise ValueError(f"{caller}: model '{model.name}' has no prunable weights (Dense, Conv or Embedding kernels).")
    # Paths relative to the model: Keras prefixes a variable's path with the model's name when it is built
    # in the model's scope, but not when a saved model is loaded, nor with the same name in a copy.
    prefix = model.name + "/"
    return [w.path[len(prefix):] if w.path.startswith(prefix) else w.path for w in weights.values()]


def _match(paths, variables):
    """``{path: variable}``: each stored path matched to the one variable whose path ends with it."""
    found, missing, ambiguous = {}, [], []
    for path in paths:
        hits = [v for v in variables if v.path == path or v.path.endswith("/" + path)]
        if len(hits) == 1:
            found[path] = hits[0]
        else:
            (ambiguous if hits else missing).append(path)
    names = ", ".join(v.path for v in variables[:6]) + (", ..." if len(variables) > 6 else "")
    if missing:
        raise ValueError(
            f"GlobalSparseMomentum was made for weights {missing[:3]}{' ...' if len(missing) > 3 else ''}, which are "
            f"not among the variables it is asked to train ({names}). Make the optimizer from the model you compile: "
            "GlobalSparseMomentum(model, ...)."
        )
    if ambiguous:
        raise ValueError(f"GlobalSparseMomentum: the weight paths {ambiguous[:3]} each match several variables "
                         f"({names}); pass the full variable paths as `prunable`.")
    return found


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalSparseMomentum(keras.optimizers.Optimizer):
    """Momentum SGD in which only the Q most salient prunable weights get the gradient (GSM).

    Ding et al. 2019, "Global Sparse Momentum SGD for Pruning Very Deep Neural Networks"
    (NeurIPS). At every step the prunable weights (the kernels ``tfprune.prunable_weights``
    names, N of them) are ranked together by the first-order saliency |w * g|; the top
    Q = N / ``compression`` are active. Every variable is then updated with

        v <- momentum * v + (weight_decay * w + mask * g);   w <- w - learning_rate * v,

    ``mask`` being 1 for active weights and for variables that are not pruned, 0 for the
    passive weights, which therefore receive only weight decay and, through the momentum,
    decay geometrically towards zero. Weight decay here is L2 inside the momentum (the
    paper's and PyTorch's SGD), not Keras's decoupled ``weight_decay``. Ties at the Q-th
    saliency are all kept active, as in the reference code; a saliency of exactly zero never
    is. After training, ``tfprune.gsm_cut`` zeroes every weight outside the top Q. The
    optimizer also keeps, per prunable weight, how often it was active over the last ~100
    steps (``activity()``), for ``gsm_cut(by="activity")``.

    The paper's MNIST setting: momentum 0.99, learning rate 1e-2, weight decay 5e-4, batch
    256, starting from a trained model.

    Args:
        prunable: the model whose prunable weights are ranked (usually the one being
            compiled), or the list of their variable paths (``variable.path``; what
            ``get_config`` stores).
        compression: N / Q, e.g. 60 for one weight in 60 kept. Give this or ``keep``.
        keep: Q itself, the number of prunable weights kept active.
        learning_rate: float or a ``keras.optimizers.schedules`` schedule.
        momentum: in (0, 1); GSM needs momentum (it is what makes the passive weights
            decay fast), so 0 is refused.
        weight_decay: L2 strength >= 0, applied to every variable inside the momentum.
        **kwargs: the other ``keras.optimizers.Optimizer`` arguments (clipnorm, name, ...).

    Raises:
        ValueError: ``compression`` below 1 or keeping no weight, ``keep`` outside
            [1, N], both or neither given, ``momentum`` outside (0, 1), a negative
            ``weight_decay``, an unbuilt model, or (when the optimizer is built) variables
            that do not include the prunable paths.

    Example:

    ```python
    gsm = tfprune.GlobalSparseMomentum(model, compression=60, learning_rate=1e-2, momentum=0.99)
    model.compile(gsm, "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=256, epochs=10)
    pruned = tfprune.gsm_cut(model, compression=60)    # exact zeros, in a copy
    print(tfprune.sparsity_report(pruned))
    ```
    """

    def __init__(self, prunable, compression=None, keep=None, learning_rate=0.01, momentum=0.99,
                 weight_decay=5e-4, name="global_sparse_momentum", **kwargs):
        caller = "GlobalSparseMomentum"
        if isinstance(prunable, keras.Model):
            model, paths = prunable, _prunable_paths(prunable, caller)
            total = sum(int(np.prod(w.shape)) for w in prunable_weights(model).values())
        elif isinstance(prunable, (list, tuple)) and prunable and all(isinstance(p, str) for p in prunable):
            paths, total = list(prunable), None
        else:
            raise TypeError(f"{caller}: `prunable` must be a keras Model or a non-empty list of variable paths; got "
                            f"{prunable!r:.80}.")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 < momentum < 1:
            raise ValueError(f"{caller}: `momentum` must be in (0, 1) (the paper uses 0.99); got {momentum!r}. GSM "
                             "needs momentum: it is what drives the passive weights to zero.")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"{caller}: `weight_decay` must be a number >= 0; got {weight_decay!r}.")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.prunable_paths = paths
        # Checked now against the model's N, or (paths only) against any N until build knows it.
        count = _active_count(total if total is not None else sys.maxsize, compression, keep, caller)
        self.active_count = count if total is not None else None
        self.compression = None if compression is None else float(compression)
        self.keep = None if keep is None else int(keep)
        self.momentum = float(momentum)
        self.decay = float(weight_decay)  # not `weight_decay`: the base class would apply it decoupled
        self._total = total

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        by_path = _match(self.prunable_paths, list(variables))
        self._prunable_ids = {id(by_path[p]) for p in self.prunable_paths}
        total = sum(int(np.prod(by_path[p].shape)) for p in self.prunable_paths)
        self._total = total
        self.active_count = _active_count(total, self.compression, self.keep, "GlobalSparseMomentum")
        self.velocities = self.add_optimizer_variables(variables, "velocity")
        # How often each prunable weight was active lately: what gsm_cut(by="activity") keeps.
        self.activities = [self.add_variable_from_reference(by_path[p], "activity") for p in self.prunable_paths]
        self._activity_of = {id(by_path[p]): a for p, a in zip(self.prunable_paths, self.activities)}
        self._built_on = list(variables)

    def apply(self, grads, trainable_variables=None):
        """Masks the gradients of the passive weights, then takes the momentum step (``update_step``)."""
        if trainable_variables is None:
            if not self.built:
                raise ValueError("GlobalSparseMomentum.apply: pass `trainable_variables` on the first call (the "
                                 "optimizer is not built yet).")
            trainable_variables = self._built_on
        trainable_variables = list(trainable_variables)
        if not self.built:
            # Built here rather than in the base class, so the mask below already knows the prunable weights.
            with keras.name_scope(self.name):
                self.build(trainable_variables)
            self.built = True
        return super().apply(self.masked_gradients(list(grads), trainable_variables), trainable_variables)

    def masked_gradients(self, grads, variables):
        """``grads`` with the gradient of every prunable weight outside the global top Q of |w * g| set to zero.

        Also updates the activity record (``activity``). ``apply`` calls it; call it yourself in
        a custom training loop that applies gradients some other way.

        Example:

        ```python
        masked = gsm.masked_gradients(grads, model.trainable_variables)   # gsm already built
        ```
        """
        chosen = [i for i, (g, v) in enumerate(zip(grads, variables)) if g is not None and id(v) in self._prunable_ids]
        if not chosen:
            return grads
        grads = list(grads)
        for i in chosen:  # an Embedding's sparse gradient, made dense so that it can be ranked and masked
            grads[i] = keras.ops.cast(keras.ops.convert_to_tensor(grads[i]), variables[i].dtype)
        saliency = [keras.ops.abs(keras.ops.multiply(grads[i], variables[i])) for i in chosen]
        flat = keras.ops.concatenate([keras.ops.reshape(s, (-1,)) for s in saliency], axis=0)
        q = min(self.active_count, int(flat.shape[0]))
        threshold = keras.ops.top_k(flat, q, sorted=True)[0][q - 1]
        out = list(grads)
        for i, s in zip(chosen, saliency):
            active = keras.ops.logical_and(keras.ops.greater_equal(s, threshold), keras.ops.greater(s, 0))
            out[i] = keras.ops.where(active, grads[i], keras.ops.zeros_like(grads[i]))
            activity = self._activity_of[id(variables[i])]
            self.assign(activity, keras.ops.add(keras.ops.multiply(activity, ACTIVITY_DECAY),
                                                keras.ops.multiply(keras.ops.cast(active, activity.dtype),
                                                                   1 - ACTIVITY_DECAY)))
        return out

    def activity(self):
        """``{path: array}``: each prunable weight's recent share of steps in the top Q (an average over ~100 steps).

        Example:

        ```python
        share = model.optimizer.activity()["fc1/kernel"]   # 1.0: active at every recent step
        ```
        """
        if not self.built:
            raise ValueError("GlobalSparseMomentum.activity: the optimizer has not taken a step yet.")
        return {p: keras.ops.convert_to_numpy(a) for p, a in zip(self.prunable_paths, self.activities)}

    def update_step(self, gradient, variable, learning_rate):
        """``v <- momentum * v + (weight_decay * w + g)``; ``w <- w - learning_rate * v`` (g already masked)."""
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        velocity = self.velocities[keras_internals.optimizer_variable_index(self, variable)]
        step = keras.ops.add(keras.ops.multiply(variable, keras.ops.cast(self.decay, variable.dtype)), gradient)
        self.assign(velocity, keras.ops.add(keras.ops.multiply(velocity, keras.ops.cast(self.momentum, variable.dtype)),
                                            step))
        self.assign_sub(variable, keras.ops.multiply(velocity, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update({
            "prunable": list(self.prunable_paths),
            "compression": self.compression,
            "keep": self.keep,
            "momentum": self.momentum,
            "weight_decay": self.decay,
        })
        return config


def gsm_cut(model, compression=None, keep=None, by="magnitude"):
    """A copy of ``model`` in which only the Q largest prunable weights (globally) are nonzero: GSM's final cut.

    Ding et al. 2019 ("Global Sparse Momentum SGD for Pruning Very Deep Neural Networks"):
    after GSM training the passive weights have decayed close to zero, so setting every
    prunable weight outside the global top Q by magnitude to exactly zero loses (almost)
    nothing. Q = N / ``compression`` (N: the prunable weights ``tfprune.prunable_weights``
    names), or ``keep``; exactly Q weights stay nonzero (ties broken by position), so the
    achieved ratio, ``tfprune.sparsity_report``'s kernels' params / nonzero, is N / Q. Works
    on any model (GSM-trained or not); the copy is compiled like ``model`` (fresh optimizer).

    ``by="activity"`` keeps instead the Q weights that were most often active over the last
    ~100 steps (``GlobalSparseMomentum.activity``, magnitude breaking ties): the set GSM was
    training at the end. It needs ``model.optimizer`` to be the ``GlobalSparseMomentum`` that
    trained it, and is the better cut when training was too short for the passive weights to
    decay (the paper trains for hundreds of epochs; the magnitude cut assumes they have).

    Args:
        model: a built Keras model; never modified.
        compression: N / Q (e.g. 60). Give this or ``keep``.
        keep: Q, the number of prunable weights left nonzero.
        by: ``"magnitude"`` (the paper's) or ``"activity"`` (see above).

    Returns:
        The pruned copy, with exact zeros (``tfprune.export.to_tflite`` stores them as such).

    Raises:
        ValueError: as ``GlobalSparseMomentum`` for ``compression`` / ``keep``; an unbuilt
            model or one without prunable weights; an unknown ``by``, or ``by="activity"``
            without a trained ``GlobalSparseMomentum`` as the model's optimizer.

    Example:

    ```python
    pruned = tfprune.gsm_cut(model, compression=60)
    print(tfprune.gsm_compression(pruned))        # 60.0 (up to rounding of N / 60)
    tfprune.export.to_tflite(pruned, "lenet300.tflite")
    ```
    """
    _prunable_paths(model, "gsm_cut")
    if by not in CUT_BY:
        raise ValueError(f"gsm_cut: `by` must be one of {', '.join(map(repr, CUT_BY))}; got {by!r}.")
    originals = list(prunable_weights(model).values())
    total = sum(int(np.prod(w.shape)) for w in originals)
    q = _active_count(total, compression, keep, "gsm_cut")
    if by == "activity":
        activity = _activity_by_weight(model, originals)
    copy = copy_layer(model)
    weights = list(prunable_weights(copy).values())
    values = [np.abs(keras.ops.convert_to_numpy(w)).ravel() for w in weights]
    flat = np.concatenate(values)
    order = np.argsort(-flat, kind="stable")
    if by == "activity":
        order = order[np.argsort(-np.concatenate(activity)[order], kind="stable")]  # magnitude breaks ties
    kept = np.zeros(flat.size, dtype=bool)
    kept[order[:q]] = True
    start = 0
    for weight, value in zip(weights, values):
        mask = kept[start:start + value.size].reshape(weight.shape)
        start += value.size
        weight.assign(np.where(mask, keras.ops.convert_to_numpy(weight), 0).astype(weight.dtype))
    compile_like(model, copy, "gsm_cut")
    return copy


def _activity_by_weight(model, weights):
    """The optimizer's activity of each of ``weights`` (the model's prunable weights), flattened, in order."""
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, GlobalSparseMomentum) or not optimizer.built:
        raise ValueError(f"gsm_cut(by='activity'): model '{model.name}' must be compiled with the "
                         "GlobalSparseMomentum that trained it (its optimizer is "
                         f"{type(optimizer).__name__ if optimizer is not None else 'None'}"
                         f"{'' if optimizer is None or optimizer.built else ', not built yet'}).")
    by_path = _match(optimizer.prunable_paths, weights)
    activity = dict(zip(optimizer.prunable_paths, optimizer.activities))
    of_weight = {id(v): activity[p] for p, v in by_path.items()}
    unranked = [w.path for w in weights if id(w) not in of_weight]
    if unranked:
        raise ValueError(f"gsm_cut(by='activity'): the optimizer did not rank {unranked[:3]}; cut by='magnitude'.")
    return [keras.ops.convert_to_numpy(of_weight[id(w)]).ravel() for w in weights]


def gsm_compression(model):
    """The achieved compression ratio of the prunable weights: their count / their nonzeros (from ``sparsity_report``).

    The ratio GSM's ``compression`` targets (Ding et al. 2019 count the kernels, not the
    biases). Returns ``inf`` when every prunable weight is zero.

    Example:

    ```python
    print(f"{tfprune.gsm_compression(tfprune.gsm_cut(model, compression=60)):.1f}x")
    ```
    """
    rows = sparsity_report(model).rows
    params = sum(r["params"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    return params / nonzero if nonzero else math.inf
