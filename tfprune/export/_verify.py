"""Compares a converted file with its Keras model, and finds what int8 left in float."""

import keras
import numpy as np

from tfprune._common import keras_internals
from tfprune.export._convert import layer_in_text

# Ops that are the float boundary of an int8 model, not computation in float.
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}


def keras_outputs(model, specs, samples):
    """The Keras model's outputs on ``samples`` (one array per input), flattened to a list."""
    structure = keras_internals.inputs_struct(model)
    batches = []
    # Direct calls, not model.predict: predict retraces (and warns) for every new sample count.
    for start in range(0, len(samples[0]), 256):
        chunk = [s[start : start + 256] for s in samples]
        if len(chunk) == 1:
            inputs = chunk[0]
        elif structure is not None:
            inputs = keras.tree.pack_sequence_as(structure, chunk)
        else:
            inputs = chunk
        outputs = keras.tree.flatten(model(inputs, training=False))
        batches.append([keras.ops.convert_to_numpy(y).astype(np.float32) for y in outputs])
    return [np.concatenate(parts, axis=0) for parts in zip(*batches)]


def agreement(expected, actual):
    """``samples``, ``max_abs_error`` (and relative to the largest output), top-1 agreement of output 0."""
    error = max(float(np.max(np.abs(e - a.reshape(e.shape)))) for e, a in zip(expected, actual))
    largest = max(float(np.max(np.abs(e))) for e in expected)
    first, got = expected[0], actual[0].reshape(expected[0].shape)
    top1 = None
    if first.ndim >= 2 and first.shape[-1] > 1:
        top1 = float(np.mean(np.argmax(first, axis=-1) == np.argmax(got, axis=-1)))
    return {
        "samples": int(len(first)),
        "max_abs_error": error,
        "relative_error": error / largest if largest > 0 else error,
        "top1_agreement": top1,
    }


def check_run(run, expected, mode):
    """Marks ``run`` wrong when its outputs are non-finite or far from ``expected``; returns its agreement.

    ``mode``: the file's ``QuantizationMode``; its ``wrong_relative_error`` is the limit.
    """
    if not run.loads or not run.outputs:
        return None
    result = agreement(expected, run.outputs)
    limit = mode.wrong_relative_error
    if run.correct is not False and not np.isfinite(result["max_abs_error"]):
        run.mark_wrong("NaN or infinity")
    elif run.correct is not False and result["relative_error"] > limit:
        run.mark_wrong(f"differs from Keras by {result['max_abs_error']:.3g} ({result['relative_error']:.2g} of "
                       f"the largest output; more than {limit:g} is no rounding error)")
    return result


def float_operators(graph, model):
    """Operators of an int8 file that compute in float, as ``(op, layer name or None)``."""
    found = []
    for op in graph.operators:
        if op.op in _BOUNDARY_OPS:
            continue
        activations = [graph.tensors[i] for i in op.inputs + op.outputs if i >= 0]
        if any(t.dtype in _FLOAT_TYPES and not t.is_constant for t in activations):
            layer = None
            for t in (graph.tensors[i] for i in op.outputs if i >= 0):
                layer = layer_in_text(t.name, model)
                if layer is not None:
                    break
            found.append((op.op, layer.name if layer is not None else None))
    return found
