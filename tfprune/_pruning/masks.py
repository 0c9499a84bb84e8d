"""How masks are computed: magnitude ranking, blocks, m:n and global ranking.

Everything here is numpy on host copies of the weights. Masks change only
every ``frequency`` steps, so a host round trip there costs little and keeps
the training step itself free of sorting.
"""

import numpy as np


def keep_count(size, sparsity):
    """How many of ``size`` scores survive at ``sparsity`` (as tfmot: round, at least 1)."""
    return max(int(np.round(size * (1.0 - sparsity))), 1)


def top_k_mask(scores, k):
    """A 0/1 mask keeping exactly the ``k`` largest of ``scores``, and the k-th score.

    Ties are broken deterministically, so the kept count is exact: the
    sparsity after an update equals the target to within one weight.
    """
    flat = scores.reshape(-1)
    k = min(k, flat.size)
    keep = np.argpartition(-flat, k - 1)[:k]
    mask = np.zeros(flat.size, dtype=np.float32)
    mask[keep] = 1.0
    return mask.reshape(scores.shape), float(flat[keep].min())


def block_scores(weight, block_size, pooling):
    """Pools ``|weight|`` (rank 2) over ``block_size`` tiles; edge tiles are zero-padded."""
    rows, cols = block_size
    abs_w = np.abs(weight)
    if (rows, cols) == (1, 1):
        return abs_w
    pad = ((0, -abs_w.shape[0] % rows), (0, -abs_w.shape[1] % cols))
    padded = np.pad(abs_w, pad)
    tiles = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    return tiles.max(axis=(1, 3)) if pooling == "MAX" else tiles.mean(axis=(1, 3))


def expand_blocks(block_mask, block_size, shape):
    """Expands a per-block mask back to the weight's ``shape`` (cropping the padding)."""
    rows, cols = block_size
    if (rows, cols) == (1, 1):
        return block_mask
    full = np.repeat(np.repeat(block_mask, rows, axis=0), cols, axis=1)
    return full[: shape[0], : shape[1]]


def magnitude_masks(score_list, sparsity):
    """Ranks all ``score_list`` arrays together; returns their masks and the threshold.

    With one array this is per-layer pruning; with the arrays of many layers
    it is global pruning (Han et al. 2015): one threshold for the whole group.
    """
    sizes = [s.size for s in score_list]
    flat = np.concatenate([s.reshape(-1) for s in score_list])
    mask, threshold = top_k_mask(flat, keep_count(flat.size, sparsity))
    pieces = np.split(mask, np.cumsum(sizes)[:-1])
    return [p.reshape(s.shape) for p, s in zip(pieces, score_list)], threshold


def m_by_n_mask(weight, zeros, group, axis):
    """Sets the ``zeros`` smallest of every ``group`` consecutive weights along ``axis`` to 0.

    The last group is shorter when ``group`` does not divide the axis; it
    keeps ``group - zeros`` weights too (or all of them, if it has fewer).
    Returns the mask and the largest magnitude that was pruned.
    """
    moved = np.moveaxis(np.abs(weight), axis, -1)
    length = moved.shape[-1]
    pad = -length % group
    # Padding with -1 ranks padded slots below every real weight, so they
    # are the ones "pruned" in a short last group.
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)], constant_values=-1.0)
    groups = padded.reshape(-1, group)
    order = np.argsort(groups, axis=1, kind="stable")
    mask = np.ones_like(groups, dtype=np.float32)
    np.put_along_axis(mask, order[:, :zeros], 0.0, axis=1)
    pruned = np.where(mask == 0, groups, -1.0)
    threshold = float(max(pruned.max(), 0.0))
    mask = mask.reshape(padded.shape)[..., :length]
    return np.moveaxis(mask, -1, axis), threshold
