"""Dropping the all-zero rows of Embedding tables: a pruned vocabulary, made physical.

TFLite stores an Embedding (read by GATHER) dense, so zeros in it shrink a file only once the
file is compressed. Pruning whole rows (``block_size=(1, output_dim)``, weighted by token counts
with ``row_importance``) zeroes the rows of the words that add least to the outputs over the
data; ``compact_embeddings`` then stores only the rows that remain, and one
shared zero row for every dropped token. Token ids, and so the app's vocabulary file, do not
change.
"""

import keras
import numpy as np

from tfprune._pruning import check_model, pruning_wrappers
from tfprune._common.text import list_names
from tfprune._common.compiling import compile_like
from tfprune._common.layers import copy_layer


@keras.saving.register_keras_serializable(package="tfprune")
class CompactEmbedding(keras.layers.Layer):
    """An Embedding that stores only its nonzero rows.

    Token ``i`` reads row ``token_rows[i]`` of ``embeddings``; the tokens whose row was all
    zero in the original table all read the last row, which starts at zero. The output is the
    original Embedding's, exactly. Made by ``tfprune.surgery.compact_embeddings``; in TFLite it
    is two GATHER ops, an int32 index of ``input_dim`` entries and a table of ``rows`` rows.

    Args:
        input_dim: size of the vocabulary (token ids are in ``[0, input_dim)``).
        output_dim: width of each embedding.
        rows: rows stored, the shared zero row included.
        mask_zero: as in ``keras.layers.Embedding``: token 0 is padding and is masked.

    Example:

    ```python
    layer = tfprune.surgery.CompactEmbedding(input_dim=20000, output_dim=128, rows=2001)
    ```
    """

    def __init__(self, input_dim, output_dim, rows, mask_zero=False, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.rows = int(rows)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero

    def build(self, input_shape=None):
        self.token_rows = self.add_weight(shape=(self.input_dim,), initializer="zeros", dtype="int32",
                                          trainable=False, name="token_rows")
        self.embeddings = self.add_weight(shape=(self.rows, self.output_dim), initializer="zeros",
                                          name="embeddings")
        self.built = True

    def call(self, inputs):
        rows = keras.ops.take(self.token_rows, keras.ops.cast(inputs, "int32"), axis=0)
        return keras.ops.take(self.embeddings, rows, axis=0)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "rows": self.rows, "mask_zero": self.mask_zero}


def compact_embeddings(model, layers=None):
    """Returns a copy of ``model`` whose Embedding tables keep only their nonzero rows.

    Each chosen ``keras.layers.Embedding`` becomes a ``CompactEmbedding`` of the same name:
    the nonzero rows, in their order, plus one zero row shared by every token whose row was
    all zero. Outputs are exactly the original model's; the original is not modified. The
    new table is ``kept + 1`` rows, and an int32 index of one entry per token is added, so a
    table gets smaller only when more than ``input_dim / output_dim + 1`` of its rows are
    zero: prune whole rows to get there (``prune_low_magnitude(embedding, ...,
    block_size=(1, output_dim), row_importance=token_counts)`` drops the rows that add least
    to the outputs over the data).

    Args:
        model: a built Sequential or Functional Keras model, pruning wrappers stripped.
        layers: names of the Embedding layers to compact. ``None``: every Embedding whose table
            the compaction makes smaller (others are copied unchanged).

    Returns:
        A new ``keras.Model`` (a ``keras.Sequential`` for a Sequential input), compiled like the
        original when the original was compiled.

    Raises:
        ValueError: a name that is not a layer of the model, or not an Embedding; a model that
            still has pruning wrappers; a subclassed or unbuilt model.

    Example:

    ```python
    final = tfprune.strip_pruning(pruned)
    small = tfprune.surgery.compact_embeddings(final)
    tfprune.export.to_tflite(small, "imdb.tflite", quantization="dynamic")
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"compact_embeddings: `model` must be a built keras Model. Received: {type(model).__name__}.")
    if layers is not None and (not isinstance(layers, (list, tuple, set)) or not all(isinstance(n, str) for n in layers)):
        raise TypeError(f"compact_embeddings: `layers` must be a list of layer names, e.g. ['embedding'], or None. "
                        f"Received: {layers!r}.")
    check_model(model, "compact_embeddings")
    wrapped = [wrapper.layer.name for wrapper in pruning_wrappers(model)]
    if wrapped:
        raise ValueError(f"compact_embeddings: layers {list_names(wrapped)} still have pruning wrappers. "
                         "Call tfprune.strip_pruning(model) first.")
    return _clone(model, _tables(model, layers))


def _tables(model, layers):
    """{name: (token_rows, compact table)} for the Embedding layers to compact."""
    embeddings = {layer.name: layer for layer in model.layers if type(layer) is keras.layers.Embedding}
    if layers is not None:
        names = {layer.name: layer for layer in model.layers}
        for name in layers:
            if name not in names:
                raise ValueError(f"compact_embeddings: the model has no layer '{name}'. "
                                 f"Its Embedding layers: {list_names(embeddings) or 'none'}.")
            if name not in embeddings:
                raise ValueError(f"compact_embeddings: layer '{name}' is a {type(names[name]).__name__}; "
                                 f"`layers` may name Embedding layers only ({list_names(embeddings) or 'none'}).")
    tables = {}
    for name, layer in embeddings.items():
        if layers is not None and name not in layers:
            continue
        table = keras.ops.convert_to_numpy(layer.embeddings)
        kept = np.flatnonzero(np.any(table != 0, axis=1))
        token_rows = np.full(table.shape[0], len(kept), np.int32)
        token_rows[kept] = np.arange(len(kept), dtype=np.int32)
        compact = np.concatenate([table[kept], np.zeros((1, table.shape[1]), table.dtype)])
        smaller = compact.size + token_rows.size < table.size
        if layers is not None or smaller:
            tables[name] = (token_rows, compact)
    return tables


def _clone(model, tables):
    def clone(layer):
        if getattr(layer, "name", None) not in tables:
            return copy_layer(layer)  # its weights too; a keras.ops node is shared as it is
        token_rows, table = tables[layer.name]
        compact = CompactEmbedding(layer.input_dim, layer.output_dim, rows=len(table), mask_zero=layer.mask_zero,
                                   name=layer.name, dtype=layer.dtype_policy)
        compact.build()
        compact.token_rows.assign(token_rows)
        compact.embeddings.assign(table)
        return compact

    new = keras.models.clone_model(model, clone_function=clone)
    compile_like(model, new, "compact_embeddings")
    return new
