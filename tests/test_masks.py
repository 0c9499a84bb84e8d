"""Mask arithmetic: exact counts, blocks with edge padding, m:n groups, global ranking."""

import numpy as np
import pytest

from tfprune._pruning import masks


@pytest.mark.parametrize("size,sparsity", [(1000, 0.9), (37, 0.5), (10, 0.95), (7, 0.0), (1, 0.99)])
def test_magnitude_mask_keeps_exactly_the_largest(size, sparsity):
    rng = np.random.default_rng(size)
    scores = np.abs(rng.normal(size=size)).astype(np.float32)
    (mask,), threshold = masks.magnitude_masks([scores], sparsity)
    kept = int(mask.sum())
    assert kept == max(round(size * (1 - sparsity)), 1)
    assert abs((1 - kept / size) - sparsity) <= 1 / size
    assert scores[mask == 1].min() >= scores[mask == 0].max(initial=0)
    assert threshold == scores[mask == 1].min()


def test_ties_do_not_change_the_count():
    scores = np.ones(100, dtype=np.float32)
    (mask,), _ = masks.magnitude_masks([scores], 0.3)
    assert mask.sum() == 70


def test_block_scores_pad_the_edge_and_pool():
    w = np.arange(1, 1 + 5 * 3, dtype=np.float32).reshape(5, 3)
    avg = masks.block_scores(w, (2, 2), "AVG")
    mx = masks.block_scores(w, (2, 2), "MAX")
    assert avg.shape == mx.shape == (3, 2)
    assert avg[0, 0] == np.mean([1, 2, 4, 5]) and mx[0, 0] == 5
    # Last row block holds one real row and one padded row of zeros.
    assert avg[2, 1] == np.mean([15, 0, 0, 0]) and mx[2, 1] == 15


def test_expand_blocks_crops_to_the_weight():
    block_mask = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    full = masks.expand_blocks(block_mask, (2, 2), (5, 3))
    assert full.shape == (5, 3)
    assert full[:2, :2].all() and not full[:2, 2].any() and full[4, :].all()


def test_global_ranking_shares_one_threshold():
    small = np.full(100, 0.1, dtype=np.float32)
    large = np.full(100, 10.0, dtype=np.float32)
    (m_small, m_large), threshold = masks.magnitude_masks([small, large], 0.5)
    assert m_small.sum() == 0 and m_large.sum() == 100 and threshold == 10.0


@pytest.mark.parametrize("zeros,group,length", [(2, 4, 16), (1, 4, 10), (3, 8, 20), (2, 4, 3)])
def test_m_by_n_keeps_the_largest_in_each_group(zeros, group, length):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(length, 5)).astype(np.float32)
    mask, _ = masks.m_by_n_mask(w, zeros, group, axis=0)
    assert mask.shape == w.shape
    for col in range(5):
        for start in range(0, length, group):
            g = slice(start, start + group)
            real = min(group, length - start)
            kept = mask[g, col]
            assert kept.sum() == min(group - zeros, real)
            if kept.sum() < real:
                assert np.abs(w[g, col])[kept == 1].min() >= np.abs(w[g, col])[kept == 0].max()


def test_m_by_n_along_conv_input_axis():
    w = np.random.default_rng(1).normal(size=(3, 3, 8, 4)).astype(np.float32)
    mask, _ = masks.m_by_n_mask(w, 2, 4, axis=2)
    groups = mask.reshape(3, 3, 2, 4, 4).sum(axis=3)
    assert (groups == 2).all()
