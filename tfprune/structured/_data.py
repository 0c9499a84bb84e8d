"""Calibration data in the forms ``model.fit`` and ``model.predict`` take, checked against the model, as batches.

How a list or tuple is read, as Keras reads it, by comparing it with the model's inputs:

* an array, or a dict keyed by input name, is ``x``;
* for a model with ``n > 1`` inputs, a list or tuple of exactly ``n`` arrays is ``x`` (one array
  per input, in the order of ``model.inputs``): a single array cannot be the ``x`` of such a
  model, so ``[x1, x2]`` is never read as ``(x, y)``;
* any other list or tuple of 1 to 3 items is ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``,
  where ``x`` is an array (one input), a list/tuple of ``n`` arrays or a dict.

Each batch of a ``tf.data.Dataset`` or other iterable is read by the same rule. A list or tuple is
always one in-memory structure, never a list of batches: pass batches as a dataset or a generator.
"""

import numpy as np

import keras

from tfprune._common import keras_internals, text


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def input_spec(model):
    """``[(keys, shape)]`` per model input, in the order of ``model.inputs``.

    ``keys`` are the names a dict of inputs may use for that input: the key in the model's
    dict of inputs (if it was built from one) and the input tensor's name, as Keras accepts both.
    """
    struct = keras_internals.inputs_struct(model)
    by_id = {id(t): k for k, t in struct.items()} if isinstance(struct, dict) else {}
    spec = []
    for tensor in model.inputs:
        keys = tuple(dict.fromkeys(k for k in (by_id.get(id(tensor)), tensor.name) if k is not None))
        spec.append((keys, tuple(tensor.shape)))
    return spec


def batches(model, data, batch_size=64, need_labels=False, argument="data"):
    """Returns ``(iterator of (inputs, y_or_None, sample_weight_or_None), number of batches or None)``.

    ``inputs`` is a list with one batch array per model input, in the order of ``model.inputs``.
    ``data`` is ``x``, ``(x, y)`` or ``(x, y, sample_weight)`` in memory, where ``x`` is an array,
    a list/tuple of arrays (one per input) or a dict keyed by input name; or a ``tf.data.Dataset``
    or any other iterable of such batches. See the module docstring for how lists are read.
    """
    if data is None:
        raise ValueError(f"`{argument}` is required for this method: pass calibration inputs x, or (x, y).")
    spec = input_spec(model)
    if _is_array(data) or isinstance(data, (dict, list, tuple)):
        x, y, w = _split(model, spec, data, argument)
        xs = _as_inputs(model, spec, x, argument)
        count = len(xs[0])
        for what, value in (("x", xs), ("y", y), ("sample_weight", w)):
            lengths = {len(leaf) for leaf in keras.tree.flatten(value)} if value is not None else set()
            if lengths - {count}:
                raise ValueError(
                    f"`{argument}`: the first input has {count} samples but {what} has {sorted(lengths)}; "
                    "every array must have the same number of samples."
                )
        if count == 0:
            raise ValueError(f"`{argument}` is empty: pass at least one calibration sample.")
        cut = lambda value, i: None if value is None else keras.tree.map_structure(lambda a: a[i:i + batch_size], value)
        iterator = ((cut(xs, i), cut(y, i), cut(w, i)) for i in range(0, count, batch_size))
        n = int(np.ceil(count / batch_size))
    else:
        try:
            raw = iter(data)
        except TypeError:
            raise TypeError(
                f"`{argument}` must be an array x, a list or dict of input arrays, a tuple (x, y) or "
                f"(x, y, sample_weight), a tf.data.Dataset or an iterable of batches; got {type(data).__name__}."
            ) from None
        iterator = _read(model, spec, raw, argument)
        n = None
        cardinality = getattr(data, "cardinality", None)
        if cardinality is not None:
            n = int(cardinality())
            n = n if n > 0 else None
    return _checked(model, spec, iterator, need_labels, argument), n


def _names(spec):
    return text.list_names(keys[0] for keys, _ in spec)


def _split(model, spec, data, argument):
    """``(x, y, sample_weight)`` of one in-memory structure or one batch (the rule in the module docstring)."""
    n = len(spec)
    if _is_array(data) or isinstance(data, dict):
        return data, None, None
    if isinstance(data, (list, tuple)):
        if n > 1 and len(data) == n and all(_is_array(d) for d in data):
            return list(data), None, None
        if 1 <= len(data) <= 3:
            return data[0], (data[1] if len(data) > 1 else None), (data[2] if len(data) > 2 else None)
    got = f"a {type(data).__name__} of {len(data)} items" if isinstance(data, (list, tuple)) else type(data).__name__
    raise ValueError(
        f"`{argument}` is {got}, which is neither the inputs of model '{model.name}' ({n} input(s): "
        f"{_names(spec)}) nor (x, y) or (x, y, sample_weight). Pass batches as a tf.data.Dataset or a generator."
    )


def _as_inputs(model, spec, x, argument):
    """``x`` as a list with one array per model input, in the order of ``model.inputs``."""
    n = len(spec)
    if isinstance(x, dict):
        xs = []
        for keys, _ in spec:
            found = [k for k in keys if k in x]
            if not found:
                raise ValueError(
                    f"`{argument}` is a dict with keys {text.list_names(x)}, but model '{model.name}' has no value "
                    f"for its input {keys[0]!r}; its inputs are {_names(spec)}."
                )
            xs.append(x[found[0]])
        return xs
    if _is_array(x):
        if n != 1:
            raise ValueError(
                f"`{argument}` gives one input array, but model '{model.name}' takes {n} inputs ({_names(spec)}): "
                "pass a list of arrays in that order or a dict keyed by input name."
            )
        return [x]
    if isinstance(x, (list, tuple)) and len(x) == n and all(_is_array(v) for v in x):
        return list(x)
    got = f"a {type(x).__name__} of {len(x)} items" if isinstance(x, (list, tuple)) else type(x).__name__
    raise ValueError(
        f"`{argument}` inputs are {got}, but model '{model.name}' takes {n} input(s) ({_names(spec)}): pass "
        + ("an array" if n == 1 else f"a list of {n} arrays in that order or a dict keyed by input name") + "."
    )


def _read(model, spec, raw, argument):
    for batch in raw:
        x, y, w = _split(model, spec, batch, argument)
        yield _as_inputs(model, spec, x, argument), y, w


def _checked(model, spec, iterator, need_labels, argument):
    first = True
    for xs, y, w in iterator:
        if first:
            if need_labels and y is None:
                raise ValueError(f"`{argument}` has no labels, but this method needs gradients: pass (x, y).")
            first = False
        # Every batch and every input: a ragged last batch of a generator may still be wrong.
        for (keys, expected), a in zip(spec, xs):
            shape = tuple(a.shape)
            ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected[1:], shape[1:]))
            if not ok:
                raise ValueError(
                    f"`{argument}` batches have shape {shape} for input {keys[0]!r}, but model '{model.name}' takes "
                    f"input {keys[0]!r} of shape {expected}. Pass calibration inputs shaped like the model inputs "
                    "(x, or (x, y))."
                )
        yield xs, y, w
    if first:
        raise ValueError(f"`{argument}` yielded no batches: pass at least one calibration sample.")
