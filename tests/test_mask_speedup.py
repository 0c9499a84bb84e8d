"""The selection-based mask maths gives exactly the masks of the argpartition-based code it replaced.

``_frozen_*`` below are verbatim copies of tfprune/_pruning/masks.py before the change (the
release every saved model was pruned with); the new functions must agree with them bit for bit,
kept indices and thresholds included, on ties, all-equal arrays, blocks and extreme sparsities.
"""

import numpy as np
import pytest

from tfprune._pruning import masks

# -- frozen copy of the previous implementation -----------------------------------------------


def _frozen_keep_count(size, sparsity):
    return max(int(np.round(size * (1.0 - sparsity))), 1)


def _frozen_top_k_mask(scores, k):
    flat = scores.reshape(-1)
    k = min(k, flat.size)
    keep = np.argpartition(-flat, k - 1)[:k]
    mask = np.zeros(flat.size, dtype=np.float32)
    mask[keep] = 1.0
    return mask.reshape(scores.shape), float(flat[keep].min())


def _frozen_block_scores(weight, block_size, pooling):
    rows, cols = block_size
    abs_w = np.abs(weight)
    if (rows, cols) == (1, 1):
        return abs_w
    pad = ((0, -abs_w.shape[0] % rows), (0, -abs_w.shape[1] % cols))
    padded = np.pad(abs_w, pad)
    tiles = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    return tiles.max(axis=(1, 3)) if pooling == "MAX" else tiles.mean(axis=(1, 3))


def _frozen_expand_blocks(block_mask, block_size, shape):
    rows, cols = block_size
    if (rows, cols) == (1, 1):
        return block_mask
    full = np.repeat(np.repeat(block_mask, rows, axis=0), cols, axis=1)
    return full[: shape[0], : shape[1]]


def _frozen_magnitude_masks(score_list, sparsity):
    sizes = [s.size for s in score_list]
    flat = np.concatenate([s.reshape(-1) for s in score_list])
    mask, threshold = _frozen_top_k_mask(flat, _frozen_keep_count(flat.size, sparsity))
    pieces = np.split(mask, np.cumsum(sizes)[:-1])
    return [p.reshape(s.shape) for p, s in zip(pieces, score_list)], threshold


# -- the arrays ---------------------------------------------------------------------------------

SPARSITIES = (0.0, 0.3, 0.5, 0.9, 0.999, 1 - 1e-7)


def _arrays():
    rng = np.random.default_rng(7)
    yield "normal", np.abs(rng.standard_normal(20_000).astype(np.float32))
    # Few distinct values: the k-th score is tied with thousands of others.
    yield "ties", rng.integers(0, 7, 30_011).astype(np.float32)
    yield "all_equal", np.full(5_000, 0.25, dtype=np.float32)
    yield "zeros", np.zeros(1_000, dtype=np.float32)
    # Half already pruned to 0, the rest float32 uniform on a coarse grid (the ties of real weights).
    grid = (rng.integers(0, 1 << 10, 40_000) / (1 << 10)).astype(np.float32)
    grid[rng.random(40_000) < 0.5] = 0.0
    yield "pruned_grid", grid
    yield "float64", np.abs(rng.standard_normal(3_001))
    yield "tiny", np.array([3.0], dtype=np.float32)
    yield "two_tied", np.array([1.0, 2.0, 2.0, 0.5], dtype=np.float32)


def _same(new, old):
    (new_masks, new_thr), (old_masks, old_thr) = new, old
    assert new_thr == old_thr
    assert len(new_masks) == len(old_masks)
    for a, b in zip(new_masks, old_masks):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,scores", list(_arrays()), ids=[n for n, _ in _arrays()])
def test_magnitude_masks_are_those_of_the_frozen_code(name, scores):
    for sparsity in SPARSITIES:
        _same(masks.magnitude_masks([scores], sparsity), _frozen_magnitude_masks([scores], sparsity))
        shaped = scores.reshape(-1, 1) if scores.size % 2 else scores.reshape(2, -1)
        _same(masks.magnitude_masks([shaped], sparsity), _frozen_magnitude_masks([shaped], sparsity))


@pytest.mark.parametrize("k", [1, 2, 3, 500, 2_999, 3_000])
def test_top_k_mask_is_that_of_the_frozen_code(k):
    rng = np.random.default_rng(k)
    for scores in (rng.integers(0, 4, 3_000).astype(np.float32), rng.random(3_000).astype(np.float32),
                   rng.integers(0, 4, (60, 50)).astype(np.float64)):
        new_mask, new_thr = masks.top_k_mask(scores, k)
        old_mask, old_thr = _frozen_top_k_mask(scores, k)
        np.testing.assert_array_equal(new_mask, old_mask)
        assert new_thr == old_thr and new_mask.dtype == old_mask.dtype and int(new_mask.sum()) == k


def test_global_ranking_is_that_of_the_frozen_code():
    rng = np.random.default_rng(3)
    groups = [
        [np.abs(rng.standard_normal((40, 30))).astype(np.float32), rng.integers(0, 3, 700).astype(np.float32),
         np.full((5, 5, 4), 1.0, dtype=np.float32)],
        [rng.integers(0, 3, (20, 20)).astype(np.float32), np.abs(rng.standard_normal(50))],  # mixed dtypes
    ]
    for scores in groups:
        for sparsity in SPARSITIES:
            _same(masks.magnitude_masks(scores, sparsity), _frozen_magnitude_masks(scores, sparsity))


@pytest.mark.parametrize("block_size", [(1, 1), (4, 1), (16, 1), (2, 3), (1, 128)])
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_masks_are_those_of_the_frozen_code(block_size, pooling):
    rng = np.random.default_rng(11)
    weights = [rng.standard_normal((67, 45)).astype(np.float32),
               np.round(rng.standard_normal((64, 128)) * 4).astype(np.float32) / 4]  # ties between blocks
    for weight in weights:
        new_scores = masks.block_scores(weight, block_size, pooling)
        old_scores = _frozen_block_scores(weight, block_size, pooling)
        np.testing.assert_array_equal(new_scores, old_scores)
        for sparsity in SPARSITIES:
            (new_block,), new_thr = masks.magnitude_masks([new_scores], sparsity)
            (old_block,), old_thr = _frozen_magnitude_masks([old_scores], sparsity)
            new_full = masks.expand_blocks(new_block, block_size, weight.shape)
            old_full = _frozen_expand_blocks(old_block, block_size, weight.shape)
            assert new_thr == old_thr and new_full.shape == old_full.shape == weight.shape
            np.testing.assert_array_equal(new_full, old_full)


def test_nan_scores_are_ranked_as_before():
    scores = np.array([np.nan, 1.0, 2.0, 3.0, np.nan, 0.5], dtype=np.float32)
    for k in range(1, scores.size + 1):
        new_mask, new_thr = masks.top_k_mask(scores, k)
        old_mask, old_thr = _frozen_top_k_mask(scores, k)
        np.testing.assert_array_equal(new_mask, old_mask)
        assert new_thr == old_thr or (np.isnan(new_thr) and np.isnan(old_thr))


def test_a_weight_pruned_through_the_wrapper_keeps_the_frozen_mask():
    """End to end: PruneLowMagnitude's update (scores in place, TF assign) gives the frozen code's mask."""
    import keras

    import tfprune

    rng = np.random.default_rng(5)
    layer = keras.layers.Dense(24)
    layer.build((40,))
    kernel = (rng.integers(-3, 4, (40, 24)) / 8).astype(np.float32)  # many ties
    layer.set_weights([kernel, np.zeros(24, np.float32)])
    for block_size in [(1, 1), (4, 1)]:
        wrapper = tfprune.prune_low_magnitude(layer, tfprune.ConstantSparsity(0.6, 0), block_size=block_size)
        wrapper.update_masks(0.6)
        (block,), threshold = _frozen_magnitude_masks([_frozen_block_scores(kernel, block_size, "AVG")], 0.6)
        expected = _frozen_expand_blocks(block, block_size, kernel.shape)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper.masks[0]), expected)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper.layer.kernel), kernel * expected)
        assert float(wrapper.thresholds[0]) == np.float32(threshold)
        np.testing.assert_array_equal(layer.get_weights()[0], kernel)  # the user's layer is untouched
