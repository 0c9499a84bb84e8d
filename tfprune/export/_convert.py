"""From a Keras 3 model to ``.tflite`` bytes: inputs, data checks, converter settings.

The path is Keras's own (``keras.export.ExportArchive`` writes a SavedModel,
``tf.lite.TFLiteConverter.from_saved_model`` converts it), the one
``model.export(format="litert")`` takes, but with the converter configured
here: ``from_concrete_functions`` on a Keras 3 model leaves its variables as
resource reads (READ_VARIABLE ops), which breaks int8 calibration, and
``model.export`` adds ``SELECT_TF_OPS`` (TensorFlow kernels that a phone's
LiteRT runtime does not have) and writes straight to the final path.
"""

import re
import warnings

import keras
import numpy as np

from tfprune._common import keras_internals
from tfprune._common.files import scratch_directory
from tfprune._common.layers import walk_layers
from tfprune._common.text import first_line
from tfprune._pruning import PruningWrapper, strip_pruning
from tfprune.export import _tf_keras_lstm
from tfprune.export._quantization import DYNAMIC, FLOAT16

MAX_CALIBRATION_SAMPLES = 500


class InputSpec:
    """One model input as the exported file will have it: name, fixed shape, dtype."""

    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype

    def describe(self):
        return f"'{self.name}' of shape (n, {', '.join(map(str, self.shape[1:]))}) and dtype {self.dtype}"


def strip_wrappers(model):
    """The model without pruning wrappers (a copy if it had any; the model itself otherwise)."""
    wrapped = isinstance(model, PruningWrapper) or any(
        isinstance(layer, PruningWrapper) for layer in walk_layers(model)
    )
    return strip_pruning(model) if wrapped else model


def input_specs(model, batch_size, example=None):
    """The exported inputs, in ``model.inputs`` order, with the batch fixed to ``batch_size``.

    A subclassed model has no ``model.inputs``: its one input has the shape it was built with,
    and the dtype of ``example`` (the user's sample or representative array) or its input dtype.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"to_tflite: expected a keras Model. Received: {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"to_tflite: model '{model.name}' was never built, so its inputs are unknown. Call it on a batch "
            "or build it with fixed input shapes first."
        )
    inputs = getattr(model, "inputs", None) or _built_input(model, example)
    specs, seen = [], set()
    for tensor in inputs:
        shape = tuple(tensor.shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"to_tflite: input '{tensor.name}' of model '{model.name}' has shape {shape} with unknown "
                "dimensions. A phone model needs fixed shapes: build the model with e.g. "
                "keras.Input(shape=(12, 8)) instead of keras.Input(shape=(None, 8))."
            )
        name = re.sub(r"\W", "_", tensor.name) or "input"
        while name in seen:
            name += "_"
        seen.add(name)
        specs.append(InputSpec(name, (batch_size,) + shape[1:], keras.backend.standardize_dtype(tensor.dtype)))
    return specs


def as_input_list(data, specs, argument):
    """``data`` as one array per input, checked against ``specs``; raises ``ValueError`` naming both.

    Accepts an array (one input), a list/tuple of arrays in ``model.inputs``
    order, or a dict keyed by input name.
    """
    if isinstance(data, dict):
        missing = [s.name for s in specs if s.name not in data]
        if missing:
            raise ValueError(
                f"to_tflite: `{argument}` is a dict without the input(s) {missing}; its keys must be the "
                f"model's input names {[s.name for s in specs]}."
            )
        arrays = [data[s.name] for s in specs]
    elif isinstance(data, (list, tuple)) and len(specs) > 1:
        arrays = list(data)
    else:
        arrays = [data]
    if len(arrays) != len(specs):
        raise ValueError(
            f"to_tflite: `{argument}` has {len(arrays)} array(s), but the model has {len(specs)} input(s): "
            + "; ".join(s.describe() for s in specs) + ". Pass one array per input, in model.inputs order."
        )
    checked = [_check_array(a, s, argument) for a, s in zip(arrays, specs)]
    counts = {len(a) for a in checked}
    if len(counts) > 1:
        raise ValueError(f"to_tflite: the arrays of `{argument}` hold different numbers of samples: {sorted(counts)}.")
    return checked


def _built_input(model, example):
    """The one input of a subclassed model, from the shape it was built with (no ``model.inputs``)."""
    shape = (model.get_build_config() or {}).get("input_shape")
    if shape is None or not all(d is None or isinstance(d, int) for d in shape):
        raise ValueError(
            f"to_tflite: the subclassed model '{model.name}' was built with inputs {shape!r}, not one tensor, so "
            "its exported inputs are unknown. Wrap it in a Functional model with fixed input shapes, e.g. "
            "`x = keras.Input((28, 28)); model = keras.Model(x, model(x))`, and export that."
        )
    dtype = getattr(example, "dtype", None)
    dtype = keras.backend.standardize_dtype(dtype) if dtype is not None else model.input_dtype
    return [keras.KerasTensor(tuple(shape), dtype=dtype, name="input")]


def _check_array(values, spec, argument):
    try:
        array = np.asarray(values)
    except Exception as err:  # noqa: BLE001 - anything numpy cannot make an array of
        raise ValueError(f"to_tflite: `{argument}` for input {spec.describe()} is not an array: {err}") from None
    expected = spec.shape[1:]
    if array.ndim != len(spec.shape) or tuple(array.shape[1:]) != expected or len(array) == 0:
        hint = ""
        if array.shape == expected:
            hint = " It looks like one sample: add the batch axis with x[None]."
        raise ValueError(
            f"to_tflite: `{argument}` for input {spec.describe()} has shape {array.shape}; expected "
            f"(n, {', '.join(map(str, expected))}) with n >= 1 samples.{hint}"
        )
    float_input = np.issubdtype(np.dtype(spec.dtype), np.floating)
    if float_input:
        if not np.issubdtype(array.dtype, np.floating):
            hint = " Pixels stored as uint8? Scale them as in training, e.g. x.astype('float32') / 255." \
                if array.dtype == np.uint8 else ""
            raise ValueError(
                f"to_tflite: `{argument}` for input {spec.describe()} has dtype {array.dtype}; expected "
                f"floating point values prepared exactly as for model.predict.{hint}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"to_tflite: `{argument}` for input {spec.describe()} contains NaN or infinity.")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(
            f"to_tflite: `{argument}` for input {spec.describe()} has dtype {array.dtype}; expected "
            f"integers ({spec.dtype})."
        )
    return array.astype(spec.dtype)


def check_full_integer_layers(model, mode):
    """Rejects layers the full-integer converter cannot take, before it gets to crash on them."""
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.RNN) or type(layer).__name__ in ("LSTM", "GRU", "SimpleRNN"):
            raise ValueError(
                f"to_tflite: {mode.argument} cannot convert layer '{layer.name}' ({type(layer).__name__}): "
                "Keras exports recurrent layers as a WHILE loop, which the full-integer converter does not "
                f"support (TensorFlow 2.21's converter crashes the process on it). Use {_FLOAT_ALTERNATIVES} "
                "for this model."
            )


def lstm_route(model, specs, fuse_lstm):
    """``(tf_keras model or None, note or None)``: how LSTM layers will be converted (see ``_tf_keras_lstm``)."""
    if fuse_lstm is False or not _tf_keras_lstm.has_lstm(walk_layers(model)):
        return None, None
    try:
        return _tf_keras_lstm.rebuild(model, specs), None
    except _tf_keras_lstm.NotRebuildable as err:
        if fuse_lstm is True:
            raise ValueError(f"to_tflite: fuse_lstm=True, but {err}. Pass fuse_lstm='auto' or False.") from None
        return None, (f"LSTM layers were converted to a WHILE loop of FULLY_CONNECTED ops, not the fused "
                      f"UNIDIRECTIONAL_SEQUENCE_LSTM op: {err}.")


def convert(model, specs, mode, representative, io_dtype, sparse, per_channel, tf_keras_model=None):
    """Returns the ``.tflite`` bytes of ``model``; converter errors become ``ValueError`` naming the layer.

    ``mode``: a ``QuantizationMode``, which sets the converter up. ``tf_keras_model``: the model
    rebuilt in tf_keras (``lstm_route``), converted instead so LSTMs fuse.
    """
    import tensorflow as tf

    with scratch_directory("tfprune_savedmodel_") as saved_model:
        if tf_keras_model is not None:
            converter = tf.lite.TFLiteConverter.from_keras_model(tf_keras_model)
        else:
            _write_saved_model(model, specs, saved_model)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        # Builtin kernels only (set by the mode): a phone's LiteRT has no TensorFlow (Flex) kernels.
        calibration = _calibration(representative, specs) if mode.needs_representative_data else None
        optimizations = mode.configure(converter, calibration, io_dtype)
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        if not per_channel:
            _disable_per_channel(converter, tf)
        try:
            with warnings.catch_warnings():
                # Calibration runs tf.lite.Interpreter internally, which warns that it is deprecated.
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
                return converter.convert()
        except Exception as err:  # noqa: BLE001 - ConverterError and friends, all explained below
            raise ValueError(explain_conversion_error(err, model, mode)) from None


def _disable_per_channel(converter, tf):
    if not hasattr(converter, "_experimental_disable_per_channel"):
        raise ValueError(
            f"to_tflite: per_channel=False needs a TFLiteConverter with per-tensor quantization "
            f"support; TensorFlow {tf.__version__} has none. Use per_channel=True."
        )
    converter._experimental_disable_per_channel = True


def _write_saved_model(model, specs, directory):
    import tensorflow as tf

    signature = [tf.TensorSpec(s.shape, s.dtype, name=s.name) for s in specs]
    structure = keras_internals.inputs_struct(model)

    def serve(*args):
        if len(args) == 1:
            inputs = args[0]
        elif structure is not None:
            inputs = keras.tree.pack_sequence_as(structure, list(args))
        else:
            inputs = list(args)
        outputs = keras.tree.flatten(model(inputs, training=False))
        # Named outputs: the interpreter's signature maps them back to Keras order.
        return {f"output_{i}": y for i, y in enumerate(outputs)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=signature)
    archive.write_out(directory, verbose=False)


def _calibration(representative, specs):
    count = min(len(representative[0]), MAX_CALIBRATION_SAMPLES)

    def samples():
        for i in range(count):
            yield {s.name: a[i : i + 1] for s, a in zip(specs, representative)}

    return samples


def explain_conversion_error(err, model, mode):
    """A one-paragraph message: which layer, which op, what to do."""
    text = str(err)
    layer = layer_in_text(text, model)
    where = f"layer '{layer.name}' ({type(layer).__name__})" if layer is not None else "the model"
    flex = re.search(r"'(tf\.\w+)' op is neither a custom op nor a flex op", text)
    if flex:
        return (
            f"to_tflite: {where} uses the TensorFlow op {flex.group(1)}, which has no TFLite builtin kernel, "
            "so the LiteRT runtime on a phone cannot run it. Replace it with ops TFLite supports "
            "(keras.ops arithmetic, activations, Dense/Conv layers), or keep it out of the exported model."
        )
    detail = _first_error_line(text)
    if mode.full_integer:
        return (
            f"to_tflite: the full-integer ({mode.label}) converter failed on {where}: {detail}. Export with "
            f"{_FLOAT_ALTERNATIVES}, which keep such layers in float."
        )
    return f"to_tflite: the TFLite converter failed on {where}: {detail}."


def layer_in_text(text, model):
    """The layer whose name appears in a TensorFlow op path of ``text``, preferring the longest name."""
    names = {}
    for layer in walk_layers(model):
        names.setdefault(layer.name, layer)
    for name in sorted(names, key=len, reverse=True):
        # Graph scopes append _1, _2 to layer names: "model_1/dense_3_1/MatMul".
        if re.search(rf"(^|[/\"';]){re.escape(name)}(_\d+)?/", text):
            return names[name]
    return None


def _first_error_line(text):
    """The converter's own message (``error: loc(...): message``), else the first line of ``text``."""
    for line in text.splitlines():
        match = re.search(r"error: (?:loc\(.*?\)\): )?(.*)", line)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return first_line(text)


_FLOAT_ALTERNATIVES = f"{DYNAMIC.argument} (int8 weights, float activations) or {FLOAT16.name!r}"
