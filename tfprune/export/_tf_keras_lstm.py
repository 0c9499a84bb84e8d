"""LSTMs as TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM op, by way of ``tf_keras``.

TensorFlow's converter fuses an LSTM into one builtin op only when it
recognises the function Keras 2 wraps the layer in (``api_implements``
"lstm_..."). Keras 3 traces its LSTM as a generic WHILE loop, so every
Keras 3 LSTM converts to a loop of FULLY_CONNECTED ops: slower, not
quantizable to full int8, and unknown to accelerators (TensorFlow issues
#73254 and #126061). ``tf_keras`` is Keras 2, still published with
TensorFlow; rebuilding the same architecture there, with the same weights,
gives the converter what it recognises. The result is checked against the
Keras 3 model like any export.
"""

import inspect

import keras

from tfprune._common import keras_internals

# Keras 3 layer class -> its tf_keras name; the architecture must be one of these.
_SUPPORTED = {
    "InputLayer", "Embedding", "LSTM", "Dense", "Dropout", "SpatialDropout1D", "Flatten", "Reshape",
    "Activation", "Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D",
    "GlobalAveragePooling1D", "Bidirectional", "CompactEmbedding",
}
# Weights are copied afterwards, so none of these matter, and their Keras 3 configs do not load in Keras 2.
_SKIPPED = ("initializer", "regularizer", "constraint")


class NotRebuildable(ValueError):
    """The model cannot be rebuilt in tf_keras; the message says why."""


def has_lstm(layers):
    return any(type(layer).__name__ == "LSTM" for layer in layers)


def rebuild(model, specs):
    """The same network in ``tf_keras``, batch fixed as in ``specs``, with the model's weights.

    Raises:
        NotRebuildable: tf_keras is missing, the model is not a chain of
            layers, or a layer has no tf_keras counterpart here.
    """
    try:
        import tf_keras
    except ImportError:
        raise NotRebuildable(
            "the tf-keras package is not installed (pip install tf-keras, or tfprune[tflite])"
        ) from None
    layers = _chain(model)
    if len(specs) != 1:
        raise NotRebuildable(f"model '{model.name}' has {len(specs)} inputs; only single-input chains are rebuilt")
    spec = specs[0]
    inputs = tf_keras.Input(batch_size=spec.shape[0], shape=spec.shape[1:], dtype=spec.dtype, name=spec.name)
    x = inputs
    pairs = []
    for layer in layers:
        counterpart = _tf_keras_layer(tf_keras, layer)
        x = counterpart(x)
        pairs.append((layer, counterpart))
    rebuilt = tf_keras.Model(inputs, x, name=model.name)
    for layer, counterpart in pairs:
        counterpart.set_weights(layer.get_weights())
    return rebuilt


def _chain(model):
    """The model's layers in order, if each feeds the next and nothing else (Sequential or a linear graph)."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if isinstance(model, keras.Sequential):
        return layers
    for previous, layer in zip(layers, layers[1:]):
        inbound = keras_internals.inbound_nodes(layer)
        if len(inbound) != 1 or [t._keras_history[0] for t in inbound[0].input_tensors] != [previous]:
            raise NotRebuildable(f"model '{model.name}' is not a single chain of layers (at layer '{layer.name}')")
    return layers


def _tf_keras_layer(tf_keras, layer):
    name = type(layer).__name__
    if name not in _SUPPORTED or isinstance(layer, keras.Model):
        raise NotRebuildable(f"layer '{layer.name}' ({name}) has no tf_keras counterpart in tfprune's rebuild")
    if name == "CompactEmbedding":
        return _tf_keras_compact_embedding(tf_keras, layer)
    cls = getattr(tf_keras.layers, name)
    if name == "Bidirectional":
        inner = _tf_keras_layer(tf_keras, layer.forward_layer)
        return cls(inner, merge_mode=layer.merge_mode, name=layer.name)
    config = layer.get_config()
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    kwargs = {key: value for key, value in config.items()
              if key in allowed and not any(part in key for part in _SKIPPED)}
    if isinstance(kwargs.get("activation"), dict) or isinstance(kwargs.get("recurrent_activation"), dict):
        raise NotRebuildable(f"layer '{layer.name}' ({name}) uses a custom activation")
    return cls(name=layer.name, **kwargs)


def _tf_keras_compact_embedding(tf_keras, layer):
    """tfprune.surgery.CompactEmbedding in tf_keras: the same two lookups, the same weights in order."""
    import tensorflow as tf

    class CompactEmbedding(tf_keras.layers.Layer):
        def build(self, input_shape):
            self.token_rows = self.add_weight("token_rows", shape=(layer.input_dim,), dtype="int32",
                                              initializer="zeros", trainable=False)
            self.embeddings = self.add_weight("embeddings", shape=(layer.rows, layer.output_dim),
                                              initializer="zeros")

        def call(self, inputs):
            return tf.gather(self.embeddings, tf.gather(self.token_rows, tf.cast(inputs, tf.int32)))

        def compute_mask(self, inputs, mask=None):
            return tf.not_equal(inputs, 0) if layer.mask_zero else None

    return CompactEmbedding(name=layer.name)
