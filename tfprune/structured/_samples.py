"""The first ``count`` samples of calibration data, as arrays (for the search methods, AOFP and EagleEye)."""

import numbers

import numpy as np

from tfprune.structured import _data


def check_count(value, argument, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{argument}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def take(model, data, count, need_labels=False, argument="data", batch_size=256):
    """``(inputs, y)``: ``inputs`` a list with one array per model input, ``y`` the labels or None.

    ``data`` is anything ``tfprune.structured.channel_scores`` takes; reading stops after
    ``count`` samples (fewer if the data holds fewer).
    """
    iterator, _ = _data.batches(model, data, batch_size, need_labels=need_labels, argument=argument)
    parts, labels, seen = [], [], 0
    for xs, y, _ in iterator:
        parts.append([np.asarray(a) for a in xs])
        labels.append(None if y is None else np.asarray(y))
        seen += len(parts[-1][0])
        if seen >= count:
            break
    inputs = [np.concatenate([p[i] for p in parts])[:count] for i in range(len(parts[0]))]
    y = None if labels[0] is None else np.concatenate(labels)[:count]
    return inputs, y
