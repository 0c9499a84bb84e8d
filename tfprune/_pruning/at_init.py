"""Pruning at initialisation: SNIP, GraSP and SynFlow masks for a freshly initialised model.

Each function scores every weight ``prunable_weights(model)`` lists (kernels;
biases are left whole), ranks the scores of all layers together (one global
ranking, as all three papers do) and returns ``{label: 0/1 float32 array}``
keeping exactly ``round((1 - sparsity) * total)`` weights. The masks are meant
for ``prune_with_masks``, which holds them fixed while the model trains:

    masks = snip_masks(model, (x[:100], y[:100]), 0.98, loss=loss)
    sparse = prune_with_masks(model, masks)
    sparse.fit(x, y, callbacks=[UpdatePruningStep()])

The model is only read: the forward passes run through
``model.stateless_call`` on copies of the weights' values, so neither its
weights nor its BatchNormalization statistics or dropout seeds change (SynFlow
takes absolute values of a copy, never of the model's variables).
"""

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprune._common.text import first_line, list_names
from tfprune._pruning.api import check_model
from tfprune._pruning.fixed_masks import prunable_weights
from tfprune._pruning.masks import keep_count, magnitude_masks
from tfprune._pruning.schedules import _check_sparsity

_SCORE_EPS = 1e-10  # GraSP's reference code: the normaliser |sum of scores| + eps


def snip_masks(model, data, sparsity, loss=None, batches=1, training=True):
    """Masks keeping the connections of largest sensitivity ``|g * w|`` (SNIP).

    Lee, Ajanthan & Torr 2019, "SNIP: Single-shot Network Pruning based on
    Connection Sensitivity": with a mask ``c`` on every weight, the
    sensitivity of connection ``j`` is the derivative of the loss with respect
    to ``c_j`` at ``c = 1``, which is ``g_j * w_j`` (``g`` the gradient of the
    loss with respect to the weights). SNIP takes its magnitude on one
    minibatch, normalises the scores to sum to 1 over the whole network and
    keeps the top ``1 - sparsity`` of all weights (one global ranking).
    Over several ``batches``, the gradient is averaged first.

    Args:
        model: a built, freshly initialised Keras model. It is not modified.
        data: labelled data: ``(x, y)`` arrays (one minibatch, or ``batches``
            equal slices of it), or a ``tf.data.Dataset`` / iterable of
            ``(x, y)`` batches, of which the first ``batches`` are used. The
            paper uses one minibatch of the training batch size (100 on MNIST).
        sparsity: the fraction of the prunable weights to remove, in [0, 1).
        loss: a Keras loss (name, ``keras.losses.Loss`` or callable
            ``(y_true, y_pred)``). ``None`` uses the loss the model was
            compiled with.
        batches: how many minibatches the gradient is averaged over.
        training: run the model in training mode (dropout on, BatchNormalization
            on batch statistics; nothing is written back to the model).

    Returns:
        ``{label: 0/1 float32 array}`` for every label of
        ``tfprune.prunable_weights(model)``.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: an unbuilt model, ``sparsity`` out of [0, 1), no data, data
            without labels or of the wrong shape, a loss that cannot be resolved.
        RuntimeError: the gradient is zero or not finite for every weight.

    Warns:
        RuntimeWarning: a weight left with nothing kept (layer collapse).

    Example:

    ```python
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    masks = tfprune.snip_masks(model, (x_train[:100], y_train[:100]), 0.95, loss=loss)
    sparse = tfprune.prune_with_masks(model, masks)
    sparse.compile("adam", loss, metrics=["accuracy"])
    sparse.fit(x_train, y_train, epochs=5, callbacks=[tfprune.UpdatePruningStep()])
    ```
    """
    caller = "snip_masks"
    scores = _snip_scores(model, data, sparsity, loss, batches, training, caller)
    return _keep_top(scores, sparsity, caller)


def grasp_masks(model, data, sparsity, loss=None, batches=1, temperature=200.0, training=True):
    """Masks that preserve the gradient flow at initialisation (GraSP).

    Wang, Zhang & Grosse 2020, "Picking Winning Tickets Before Training by
    Preserving Gradient Flow": removing weight ``j`` changes the gradient norm
    ``g^T g`` by about ``-w_j (H g)_j`` (``H`` the Hessian of the loss, ``g``
    its gradient), so the score is ``S = -w * (H g)`` and the weights with the
    HIGHEST scores are removed: those whose removal reduces the gradient flow
    least (or increases it). As in the authors' code (``pruner/GraSP.py`` of
    alecwangcq/GraSP), the logits are divided by ``temperature`` before the
    loss, ``g`` is computed first and held constant, ``H g`` comes from a
    second backward pass through ``g_const . grad(loss)`` (a Hessian-vector
    product by double backpropagation), the scores are divided by
    ``|sum(S)| + 1e-10`` and ranked over the whole network. Over several
    ``batches``, ``g`` and ``H g`` are averaged.

    Args:
        model: a built, freshly initialised Keras model that outputs logits
            (the temperature divides them). It is not modified.
        data: labelled data, as for ``snip_masks``. The authors sample 10 or
            25 examples of each class.
        sparsity: the fraction of the prunable weights to remove, in [0, 1).
        loss: a Keras loss on the (scaled) logits; ``None`` uses the model's
            compiled loss.
        batches: how many minibatches ``g`` and ``H g`` are averaged over.
        temperature: the logits are divided by it (the paper's ``T = 200``);
            a number > 0.
        training: run the model in training mode, as the reference code does
            (nothing is written back to the model).

    Returns:
        ``{label: 0/1 float32 array}`` for every label of
        ``tfprune.prunable_weights(model)``.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: as ``snip_masks``, or ``temperature`` not a positive number.
        RuntimeError: the scores are zero or not finite for every weight.

    Warns:
        RuntimeWarning: a weight left with nothing kept (layer collapse).

    Example:

    ```python
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    masks = tfprune.grasp_masks(model, (x_train[:100], y_train[:100]), 0.95, loss=loss)
    sparse = tfprune.prune_with_masks(model, masks)
    ```
    """
    caller = "grasp_masks"
    scores = _grasp_scores(model, data, sparsity, loss, batches, temperature, training, caller)
    # Remove the highest scores: keep the top (1 - sparsity) of -S.
    return _keep_top({label: -s for label, s in scores.items()}, sparsity, caller)


def synflow_masks(model, sparsity, iterations=100, input_shape=None, dtype=None):
    """Masks found without data by iteratively conserving synaptic flow (SynFlow).

    Tanaka, Kunin, Yamins & Ganguli 2020, "Pruning neural networks without
    any data by iteratively conserving synaptic flow": the network is
    linearised by taking the absolute value of every parameter (a copy; the
    model keeps its signs), it runs in inference mode (BatchNormalization on
    its moving statistics, dropout off) on an all-ones input, ``R`` is the
    sum of its outputs and a weight's score is ``|dR/dw * w|``. Pruning is
    iterative: in round ``k`` of ``iterations`` the scores are recomputed on
    the masked network and the top ``(1 - sparsity) ** (k / iterations)`` of
    all weights are kept (the paper's exponential schedule, 100 rounds), so
    no data is needed and, unlike one-shot global ranking, no layer collapses
    before the target is reached. As in the authors' code
    (ganguli-lab/Synaptic-Flow), every float variable is made positive,
    biases and normalisation statistics included; only the prunable weights
    are masked. With ReLU networks the all-positive pass is linear.

    Args:
        model: a built Keras model with real-valued inputs. It is not modified.
        sparsity: the fraction of the prunable weights to remove, in [0, 1).
        iterations: the number of pruning rounds, an integer >= 1.
        input_shape: the shape of one input example (without the batch
            dimension), needed only for a subclassed model without
            ``model.inputs``; a list of shapes for several inputs.
        dtype: ``None`` computes in the model's own precision; ``"float64"``
            runs a float64 copy (Sequential and Functional models), for deep
            networks whose ``R`` overflows or underflows float32.

    Returns:
        ``{label: 0/1 float32 array}`` for every label of
        ``tfprune.prunable_weights(model)``.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: an unbuilt model, ``sparsity`` out of [0, 1), a bad
            ``iterations``, ``input_shape`` or ``dtype``, integer (token)
            inputs, which an all-ones input does not describe.
        RuntimeError: ``R`` or the scores are not finite, or all zero
            (precision: try ``dtype="float64"``).

    Warns:
        RuntimeWarning: a weight left with nothing kept (layer collapse).

    Example:

    ```python
    masks = tfprune.synflow_masks(model, 0.98)          # no data
    sparse = tfprune.prune_with_masks(model, masks)
    ```
    """
    caller = "synflow_masks"
    _check_model(model, caller)
    _check_sparsity("sparsity", sparsity, caller)
    if not isinstance(iterations, (int, np.integer)) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"{caller}: `iterations` must be an integer >= 1. Received: iterations={iterations!r}.")
    if dtype not in (None, "float64"):
        raise ValueError(f"{caller}: `dtype` must be None (the model's precision) or 'float64'. "
                         f"Received: dtype={dtype!r}.")
    ones = _ones_input(model, input_shape, caller)
    source = _float64_copy(model, caller) if dtype == "float64" else model
    if dtype == "float64":
        ones = keras.tree.map_structure(lambda t: tf.cast(t, "float64"), ones)
    net = _Stateless(source, caller)
    values = [tf.abs(v) if v.dtype.is_floating else v for v in net.values()]
    labels = list(net.slots)
    masks = {label: np.ones(tuple(net.slot_value(values, label).shape), np.float32) for label in labels}
    density = 1.0 - float(sparsity)
    total = sum(m.size for m in masks.values())
    for k in range(1, iterations + 1):
        scores = _synflow_scores(net, values, masks, ones, caller)
        for label in labels:
            scores[label][masks[label] == 0] = -1.0  # pruned weights stay pruned (scores are >= 0)
        keep = keep_count(total, 1.0 - density ** (k / iterations))
        kept, _ = magnitude_masks([scores[label] for label in labels], 1.0 - keep / total)
        masks = dict(zip(labels, kept))
    _warn_collapse(masks, caller)
    return masks


# ----------------------------------------------------------------------------------------------------------- scores


def _snip_scores(model, data, sparsity, loss, batches, training, caller):
    """``{label: |g * w| / sum}`` (float64 arrays)."""
    _check_model(model, caller)
    _check_sparsity("sparsity", sparsity, caller)
    loss_fn = _resolve_loss(model, loss, caller)
    pieces = _batches(data, batches, caller)
    net = _Stateless(model, caller)
    values = net.values()
    grads = None
    for x, y in pieces:
        g = net.gradient(values, x, y, loss_fn, 1.0, training)
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    scores = {label: np.abs(g.numpy().astype(np.float64) * net.slot_value(values, label).numpy())
              for label, g in zip(net.slots, grads)}
    return _normalised(scores, lambda total: total, caller, "the gradient of the loss is zero for every weight")


def _grasp_scores(model, data, sparsity, loss, batches, temperature, training, caller):
    """``{label: -w * (H g) / (|sum| + eps)}`` (float64 arrays); GraSP removes the highest."""
    _check_model(model, caller)
    _check_sparsity("sparsity", sparsity, caller)
    if (not isinstance(temperature, (int, float, np.integer, np.floating)) or isinstance(temperature, bool)
            or not np.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"{caller}: `temperature` must be a number > 0 (the paper uses 200). "
                         f"Received: temperature={temperature!r}.")
    loss_fn = _resolve_loss(model, loss, caller)
    pieces = _batches(data, batches, caller)
    net = _Stateless(model, caller)
    values = net.values()
    grads = None
    for x, y in pieces:  # g, held constant (the reference code's first pass)
        g = net.gradient(values, x, y, loss_fn, float(temperature), training)
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    grads = [g / len(pieces) for g in grads]
    hg = None
    for x, y in pieces:
        h = net.hessian_vector(values, x, y, loss_fn, float(temperature), training, grads)
        hg = h if hg is None else [a + b for a, b in zip(hg, h)]
    scores = {label: -(net.slot_value(values, label).numpy().astype(np.float64) * h.numpy() / len(pieces))
              for label, h in zip(net.slots, hg)}
    return _normalised(scores, lambda total: abs(total) + _SCORE_EPS, caller,
                       "the Hessian-gradient product is zero for every weight")


def _synflow_scores(net, values, masks, ones, caller):
    """``{label: |dR/dw * w|}`` on the absolute, masked weights (float64 arrays)."""
    masked = list(values)
    for label, slot in net.slots.items():
        masked[slot] = values[slot] * tf.cast(masks[label], values[slot].dtype)
    watched = [masked[slot] for slot in net.slots.values()]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        for slot, tensor in zip(net.slots.values(), watched):
            masked[slot] = tensor
        outputs = net.call(masked, ones, training=False)
        flow = tf.add_n([tf.reduce_sum(tf.cast(o, "float64")) for o in keras.tree.flatten(outputs)])
    grads = tape.gradient(flow, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    value = float(flow.numpy())
    scores = {label: np.abs(g.numpy().astype(np.float64) * w.numpy())
              for label, g, w in zip(net.slots, grads, watched)}
    if not np.isfinite(value) or not all(np.all(np.isfinite(s)) for s in scores.values()):
        raise RuntimeError(f"{caller}: the synaptic flow R = {value:.4g} (or its gradient) is not finite in "
                           f"{watched[0].dtype.name}: the network is too deep for this precision. Pass "
                           "dtype='float64'.")
    if value == 0.0 or not any(np.any(s > 0) for s in scores.values()):
        raise RuntimeError(f"{caller}: the synaptic flow R is zero in {watched[0].dtype.name} (the product of the "
                           "layers underflowed, or no kept path joins input and output). Pass dtype='float64', "
                           "or lower the sparsity.")
    return scores


def _normalised(scores, normaliser, caller, zero_message):
    total = float(sum(s.sum() for s in scores.values()))
    if not np.isfinite(total):
        raise RuntimeError(f"{caller}: the scores are not finite (the loss or its gradient overflowed).")
    if all(not np.any(s) for s in scores.values()):
        raise RuntimeError(f"{caller}: {zero_message}, so there is nothing to rank. Check the labels and the "
                           "loss (does the model output what the loss expects?).")
    scale = normaliser(total)
    return {label: s / scale for label, s in scores.items()}


def _keep_top(scores, sparsity, caller):
    """Masks keeping the globally largest ``1 - sparsity`` of ``scores``."""
    labels = list(scores)
    kept, _ = magnitude_masks([scores[label] for label in labels], float(sparsity))
    masks = {label: m.astype(np.float32) for label, m in zip(labels, kept)}
    _warn_collapse(masks, caller)
    return masks


def _warn_collapse(masks, caller):
    empty = [label for label, m in masks.items() if not m.any()]
    if empty:
        warnings.warn(
            f"{caller}: layer collapse: nothing is kept of {list_names(empty)}, so no signal passes through "
            "it and the network cannot learn. Lower the sparsity, or use synflow_masks, which avoids collapse.",
            RuntimeWarning, stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------- the forward pass


class _Stateless:
    """The model run through ``stateless_call`` on given values of its variables (the model is never written)."""

    def __init__(self, model, caller):
        self.model = model
        self.caller = caller
        self.trainable = list(model.trainable_variables)
        self.variables = self.trainable + list(model.non_trainable_variables)
        index = {id(v): i for i, v in enumerate(self.variables)}
        weights = prunable_weights(model)
        if not weights:
            raise ValueError(f"{caller}: model '{model.name}' has no weights tfprune prunes (kernels of Dense, "
                             "Conv, ... layers).")
        missing = [label for label, w in weights.items() if id(w) not in index]
        if missing:
            raise ValueError(f"{caller}: the weights {list_names(missing)} are not variables of model "
                             f"'{model.name}' itself, so they cannot be scored.")
        self.slots = {label: index[id(w)] for label, w in weights.items()}
        parameters = inspect.signature(model.call).parameters.values()
        self.takes_training = any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in parameters)

    def values(self):
        return [tf.identity(tf.convert_to_tensor(v.value)) for v in self.variables]

    def slot_value(self, values, label):
        return values[self.slots[label]]

    def call(self, values, x, training):
        n = len(self.trainable)
        kwargs = {"training": training} if self.takes_training else {}
        outputs, _ = self.model.stateless_call(values[:n], values[n:], x, **kwargs)
        return outputs

    def _loss(self, values, x, y, loss_fn, temperature, training):
        try:
            outputs = self.call(values, x, training)
        except Exception as error:
            raise ValueError(f"{self.caller}: `data` does not fit model '{self.model.name}': calling it on x of "
                             f"shape {_shapes(x)} failed: {first_line(error)}") from error
        if temperature != 1.0:
            outputs = keras.tree.map_structure(lambda o: o / temperature, outputs)
        try:
            value = tf.reduce_mean(loss_fn(y, outputs))
        except Exception as error:
            raise ValueError(f"{self.caller}: the loss cannot compare the labels y of shape {_shapes(y)} with the "
                             f"model's output of shape {_shapes(outputs)}: {first_line(error)}. Check `data` "
                             "and `loss`.") from error
        return value

    def gradient(self, values, x, y, loss_fn, temperature, training):
        """The gradient of the loss with respect to the prunable weights, in ``self.slots`` order."""
        watched = [values[slot] for slot in self.slots.values()]
        with tf.GradientTape() as tape:
            tape.watch(watched)
            value = self._loss(values, x, y, loss_fn, temperature, training)
        return tape.gradient(value, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def hessian_vector(self, values, x, y, loss_fn, temperature, training, vector):
        """``H v`` for the prunable weights: the gradient of ``v . grad(loss)`` (``v`` held constant)."""
        watched = [values[slot] for slot in self.slots.values()]
        with tf.GradientTape() as outer:
            outer.watch(watched)
            with tf.GradientTape() as inner:
                inner.watch(watched)
                value = self._loss(values, x, y, loss_fn, temperature, training)
            grads = inner.gradient(value, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            dot = tf.add_n([tf.reduce_sum(tf.stop_gradient(v) * g) for v, g in zip(vector, grads)])
        return outer.gradient(dot, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _shapes(structure):
    shapes = [tuple(getattr(t, "shape", ())) for t in keras.tree.flatten(structure)]
    return shapes[0] if len(shapes) == 1 else shapes


# ------------------------------------------------------------------------------------------------------ arguments


def _check_model(model, caller):
    if not isinstance(model, keras.Model):
        raise TypeError(f"{caller}: `model` must be a keras Model. Received: {type(model).__name__}.")
    check_model(model, caller)


def _resolve_loss(model, loss, caller):
    """``loss`` (or the model's compiled loss) as a callable ``(y_true, y_pred)``."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                f"{caller}: `loss` is None and model '{model.name}' is not compiled with a loss. Pass one, e.g. "
                "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True) for a model that outputs logits."
            )
        where = "the model's compiled loss"
    else:
        where = "`loss`"
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(f"{caller}: {where} is {type(loss).__name__}: one loss per output is not supported; pass "
                         "a single loss callable on (y_true, y_pred).")
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{caller}: {where} {loss!r} is not a Keras loss name: {first_line(error)}") from error
    if callable(loss):
        return loss
    raise ValueError(f"{caller}: {where} must be a Keras loss name, a keras.losses.Loss or a callable "
                     f"(y_true, y_pred). Received: {loss!r}.")


def _batches(data, batches, caller):
    """``[(x, y)]``: the minibatches scores are computed on, as tensors."""
    if not isinstance(batches, (int, np.integer)) or isinstance(batches, bool) or batches < 1:
        raise ValueError(f"{caller}: `batches` must be an integer >= 1. Received: batches={batches!r}.")
    if data is None:
        raise ValueError(
            f"{caller}: `data` is required: the scores are gradients of the loss on labelled data, so pass (x, y) "
            "or a dataset of (x, y) batches. synflow_masks needs no data."
        )
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tuple):
        x, y = data
        sizes = {len(leaf) for leaf in keras.tree.flatten((x, y)) if hasattr(leaf, "__len__")}
        if len(sizes) != 1:
            raise ValueError(f"{caller}: the x and y of `data` have different numbers of examples: "
                             f"{sorted(sizes)}.")
        (count,) = sizes
        if count < batches:
            raise ValueError(f"{caller}: `data` has {count} examples, fewer than batches={batches}.")
        slices = np.array_split(np.arange(count), batches)
        pieces = [keras.tree.map_structure(lambda a, s=s: np.asarray(a)[s], (x, y)) for s in slices]
    elif isinstance(data, (np.ndarray, tf.Tensor, dict)) or not hasattr(data, "__iter__"):
        raise ValueError(
            f"{caller}: `data` must be labelled: (x, y), or a dataset / iterable of (x, y) batches. Received "
            f"{type(data).__name__}{' without labels' if isinstance(data, (np.ndarray, tf.Tensor, dict)) else ''}."
        )
    else:
        pieces = []
        for element in data:
            if len(pieces) == batches:
                break
            if not isinstance(element, (tuple, list)) or len(element) != 2:
                parts = f" with {len(element)} parts" if isinstance(element, (tuple, list)) else ""
                raise ValueError(f"{caller}: each batch of `data` must be (x, y). Received an element of type "
                                 f"{type(element).__name__}{parts}.")
            pieces.append(tuple(element))
        if len(pieces) < batches:
            raise ValueError(f"{caller}: `data` gave {len(pieces)} batches; batches={batches} were asked for.")
    return [keras.tree.map_structure(tf.convert_to_tensor, piece) for piece in pieces]


def _ones_input(model, input_shape, caller):
    """SynFlow's all-ones input: one example per model input."""
    if input_shape is None:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ValueError(f"{caller}: model '{model.name}' has no `inputs` (a subclassed model); pass "
                             "input_shape=, the shape of one example without the batch dimension.")
        integer = [t.name for t in inputs if not keras.backend.is_float_dtype(t.dtype)]
        if integer:
            raise ValueError(f"{caller}: model '{model.name}' takes integer inputs {integer} (token ids); SynFlow's "
                             "all-ones input describes real-valued inputs only.")
        if any(d is None for t in inputs for d in t.shape[1:]):
            raise ValueError(f"{caller}: model '{model.name}' has inputs of unknown size "
                             f"{[tuple(t.shape) for t in inputs]}; pass input_shape=, the shape of one example "
                             "without the batch dimension.")
        ones = [tf.ones((1,) + tuple(t.shape[1:]), t.dtype) for t in inputs]
        return ones[0] if len(ones) == 1 else ones
    several = isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (tuple, list))
    shapes = input_shape if several else [input_shape]
    try:
        ones = [tf.ones((1,) + tuple(int(d) for d in shape)) for shape in shapes]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{caller}: `input_shape` must be a tuple of positive integers (one example, without the "
                         f"batch dimension), or a list of them. Received: {input_shape!r}.") from error
    return ones[0] if len(ones) == 1 else ones


def _float64_copy(model, caller):
    """A float64 copy of a Sequential or Functional ``model`` with its weights (the model is only read)."""

    def in_float64(layer):
        config = layer.get_config()
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=in_float64)
        copy.set_weights([np.asarray(w, np.float64) if np.asarray(w).dtype.kind == "f" else w
                          for w in model.get_weights()])
    except Exception as error:
        raise ValueError(f"{caller}: dtype='float64' needs a Sequential or Functional model of Keras layers that "
                         f"keras.models.clone_model can copy; copying '{model.name}' failed: "
                         f"{first_line(error)}") from error
    if list(prunable_weights(copy)) != list(prunable_weights(model)):
        raise ValueError(f"{caller}: the float64 copy of '{model.name}' does not have the same prunable weights; "
                         "use dtype=None.")
    return copy
