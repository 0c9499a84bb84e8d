"""flops_report counts what runs: attention, EinsumDense, element-wise ops, normalizations, layers inside layers."""

import keras
import numpy as np
import pytest
from keras import ops

import tfprune.structured as structured

L = keras.layers

T, D, HEADS, KEY_DIM, FF = 5, 16, 2, 8, 32


def hand_count(ff=FF, residual_adds=True):
    """MACs of one sample through the block below, written out from the shapes."""
    projections = 3 * T * D * HEADS * KEY_DIM + T * HEADS * KEY_DIM * D  # query, key, value, output
    attention = HEADS * T * T * KEY_DIM + HEADS * T * T * KEY_DIM  # scores q.k, then scores.v
    norms = 2 * T * D  # two LayerNormalization, one per output element
    adds = 2 * T * D if residual_adds else 0
    ffn = T * D * ff + T * ff * D
    return projections + attention + norms + adds + ffn


def transformer(ff=FF):
    inp = keras.Input((T, D))
    x = L.LayerNormalization(name="ln1")(inp + L.MultiHeadAttention(HEADS, KEY_DIM, name="mha")(inp, inp))
    f = L.Dense(D, name="ff2")(L.Dense(ff, activation="relu", name="ff1")(x))
    return keras.Model(inp, L.LayerNormalization(name="ln2")(x + f), name="block")


class TransformerBlock(L.Layer):
    def __init__(self, ff=FF, **kwargs):
        super().__init__(**kwargs)
        self.ff = ff
        self.attention = L.MultiHeadAttention(HEADS, KEY_DIM)
        self.ln1, self.ln2 = L.LayerNormalization(), L.LayerNormalization()
        self.ff1, self.ff2 = L.Dense(ff, activation="relu"), L.Dense(D)

    def call(self, x):
        x = self.ln1(x + self.attention(x, x))
        return self.ln2(x + self.ff2(self.ff1(x)))


def test_a_transformer_block_counts_attention_ffn_norms_and_residuals():
    report = structured.flops_report(transformer())
    assert report["mha"]["flops"] == 3 * T * D * HEADS * KEY_DIM + T * HEADS * KEY_DIM * D + 2 * HEADS * T * T * KEY_DIM
    assert report["add"]["flops"] == T * D and report["ln1"]["flops"] == T * D
    assert report.total_flops == hand_count()


def test_a_custom_block_is_counted_through_its_sublayers():
    inp = keras.Input((T, D))
    model = keras.Model(inp, TransformerBlock(name="custom")(inp))
    # the residual `+` inside call() are keras.ops calls, not layers: not seen from outside
    assert structured.flops_report(model)["custom"]["flops"] == hand_count(residual_adds=False)
    nested = keras.Model(inp, transformer()(inp))  # a nested Functional model: counted node by node
    assert structured.flops_report(nested).total_flops == hand_count()
    unknown = keras.Input((None, D))
    block = transformer()
    nested = keras.Model(unknown, block(unknown))
    assert structured.flops_report(nested).total_flops == 0  # no sequence length: nothing to count
    nested = keras.Model(inp, keras.Model(unknown, block(unknown))(inp))  # known from outside: run on zeros
    assert structured.flops_report(nested).total_flops == hand_count(residual_adds=False)


def test_halving_the_ffn_does_not_halve_the_flops():
    model = transformer()
    smaller = structured.prune(model, ratio=0.5, verbose=0)  # only ff1 is free: ff2 is tied to the residual
    assert smaller.get_layer("ff1").units == FF // 2
    comparison = structured.compare(model, smaller)
    assert comparison.flops_ratio == pytest.approx(hand_count() / hand_count(ff=FF // 2))
    assert "FLOPs / 2.00" not in str(comparison)


def test_einsum_dense_embedding_matmul_and_elementwise_ops():
    inp = keras.Input((6,), dtype="int32")
    e = L.Embedding(50, 8, name="emb")(inp)
    h = L.EinsumDense("abc,cd->abd", output_shape=(6, 12), name="ein")(e)
    h = ops.relu(h) * 2.0
    h = ops.matmul(h, ops.transpose(h, (0, 2, 1)))
    model = keras.Model(inp, L.Add(name="merge")([h, h]))
    report = structured.flops_report(model)
    assert report["emb"]["flops"] == 0 and report["emb"]["params"] == 400  # a gather: listed, 0 MACs
    assert report["ein"]["flops"] == 6 * 8 * 12
    assert report["relu"]["flops"] == report["multiply"]["flops"] == 6 * 12
    assert report["matmul"]["flops"] == 6 * 6 * 12
    assert report["merge"]["flops"] == 6 * 6
    assert report.total_flops == 6 * 8 * 12 + 2 * 6 * 12 + 6 * 6 * 12 + 6 * 6


def test_batch_normalization_counts_one_per_element():
    model = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(5, 3, name="conv"), L.BatchNormalization(name="bn")])
    report = structured.flops_report(model)
    assert report["bn"]["flops"] == 2 * 2 * 5 and report["conv"]["flops"] == 2 * 2 * 9 * 3 * 5


def test_a_keras_hub_encoder_counts_its_attention():
    keras_hub = pytest.importorskip("keras_hub")
    inp = keras.Input((T, D))
    model = keras.Model(inp, keras_hub.layers.TransformerEncoder(FF, HEADS, name="encoder")(inp))
    flops = structured.flops_report(model)["encoder"]["flops"]
    key_dim = D // HEADS  # TransformerEncoder splits the width over the heads
    projections = 4 * T * D * HEADS * key_dim
    attention = 2 * HEADS * T * T * key_dim
    assert flops == projections + attention + 2 * T * D + 2 * T * D * FF


def _profiler_counts(model, shape):
    """TensorFlow's own float-op count of one sample, per op type (the v1 profiler over the traced graph)."""
    tf = pytest.importorskip("tensorflow")
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=traced.graph, options=options)
    by_type = {}
    for node in profile.children:
        kind = traced.graph.get_operation_by_name(node.name).type
        by_type[kind] = by_type.get(kind, 0) + node.float_ops
    return by_type


def test_an_explicit_attention_block_matches_the_tensorflow_profiler():
    inp = keras.Input((T, D))
    q, k, v = (L.Dense(D, name=n)(inp) for n in "qkv")
    scores = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))))
    x = L.Dense(D, name="o")(ops.matmul(scores, v)) + inp
    model = keras.Model(inp, L.Dense(D, name="ff2")(L.Dense(FF, name="ff1")(x)) + x)
    counted = _profiler_counts(model, (1, T, D))
    matmuls = sum(n for kind, n in counted.items() if "MatMul" in kind) // 2  # a multiply-add is 2 float ops
    residuals = counted["AddV2"]  # one per element; biases are BiasAdd, not counted here
    assert matmuls > 0 and residuals == 2 * T * D
    assert structured.flops_report(model).total_flops == matmuls + residuals
