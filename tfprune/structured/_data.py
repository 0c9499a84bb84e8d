"""Calibration data in the forms users have it, checked against the model, as batches."""

import numpy as np


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def batches(model, data, batch_size=64, need_labels=False, argument="data"):
    """Returns ``(iterator of (x, y_or_None), number of batches or None)``.

    ``data`` is an array of inputs, a tuple ``(x, y)`` of arrays, a ``tf.data.Dataset``
    of batches (``x`` or ``(x, y)``), or any iterable of such batches.
    """
    if data is None:
        raise ValueError(f"`{argument}` is required for this method: pass calibration inputs x, or (x, y).")
    if _is_array(data) or (isinstance(data, (tuple, list)) and len(data) in (1, 2) and all(_is_array(d) for d in data)):
        x, y = (data, None) if _is_array(data) else (data[0], data[1] if len(data) == 2 else None)
        if y is not None and len(y) != len(x):
            raise ValueError(f"`{argument}`: x has {len(x)} samples but y has {len(y)}; they must match.")
        if len(x) == 0:
            raise ValueError(f"`{argument}` is empty: pass at least one calibration sample.")
        count = int(np.ceil(len(x) / batch_size))
        gen = ((x[i:i + batch_size], None if y is None else y[i:i + batch_size]) for i in range(0, len(x), batch_size))
        iterator, n = gen, count
    else:
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(
                f"`{argument}` must be an array x, a tuple (x, y), a tf.data.Dataset or an iterable of batches; "
                f"got {type(data).__name__}."
            ) from None
        iterator = (_split(batch) for batch in iterator)
        n = None
        cardinality = getattr(data, "cardinality", None)
        if cardinality is not None:
            n = int(cardinality())
            n = n if n > 0 else None
    return _checked(model, iterator, need_labels, argument), n


def _split(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _checked(model, iterator, need_labels, argument):
    expected = tuple(model.inputs[0].shape)
    first = True
    for x, y in iterator:
        if first:
            shape = tuple(np.shape(x))
            ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected[1:], shape[1:]))
            if not ok:
                raise ValueError(
                    f"`{argument}` batches have shape {shape}, but model '{model.name}' takes inputs of shape "
                    f"{expected}. Pass calibration inputs shaped like the model input (x, or (x, y))."
                )
            if need_labels and y is None:
                raise ValueError(f"`{argument}` has no labels, but this method needs gradients: pass (x, y).")
            first = False
        yield x, y
    if first:
        raise ValueError(f"`{argument}` yielded no batches: pass at least one calibration sample.")
