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

    The k-th largest score is found by selection (``np.partition``; Hoare
    1961, "Algorithm 65: Find": move elements around a pivot and recurse into
    the side that holds position k, never sorting either side), and
    the mask is ``scores >= threshold``, written straight into the mask's
    buffer. When more than ``k`` scores reach the threshold (ties at it, or
    NaN), which of the tied scores are kept is decided exactly as it always
    was: by ``np.argpartition`` of the negated scores, so the masks never
    depend on which path computed them.
    """
    flat = scores.reshape(-1)
    mask, threshold = _ranked_mask([flat], min(k, flat.size))
    return mask.reshape(scores.shape), threshold


def _ranked_mask(pieces, k):
    """The flat 0/1 float32 mask of the ``k`` largest scores of the 1-D ``pieces`` taken together, and the k-th."""
    n = sum(p.size for p in pieces)
    if k <= 0 or n == 0:
        return _argpartition_mask(_joined(pieces), k)
    mask = np.empty(n, dtype=np.float32)
    if all(p.dtype == np.float32 for p in pieces):
        # The mask's buffer is the selection's scratch space: no other full-size array is made.
        np.concatenate(pieces, out=mask)
        mask.partition(n - k)
        threshold = mask[n - k]
    else:
        threshold = np.partition(_joined(pieces), n - k)[n - k]
    start = 0
    for piece in pieces:
        np.greater_equal(piece, threshold, out=mask[start:start + piece.size], casting="unsafe")
        start += piece.size
    if int(np.count_nonzero(mask)) == k:
        return mask, float(threshold)
    del mask
    return _argpartition_mask(_joined(pieces), k)


def _joined(pieces):
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _argpartition_mask(flat, k):
    """The tie-breaking rule of every tfprune release: the first ``k`` of ``np.argpartition(-flat, k - 1)``."""
    keep = np.argpartition(-flat, k - 1)[:k]
    mask = np.zeros(flat.size, dtype=np.float32)
    mask[keep] = 1.0
    return mask, float(flat[keep].min())


def block_scores(weight, block_size, pooling):
    """Pools ``|weight|`` (rank 2) over ``block_size`` tiles; edge tiles are zero-padded."""
    rows, cols = block_size
    abs_w = np.abs(weight)
    if (rows, cols) == (1, 1):
        return abs_w
    pad = ((0, -abs_w.shape[0] % rows), (0, -abs_w.shape[1] % cols))
    padded = np.pad(abs_w, pad) if pad[0][1] or pad[1][1] else abs_w  # no full-size copy when tiles fit
    tiles = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // cols, cols)
    return tiles.max(axis=(1, 3)) if pooling == "MAX" else tiles.mean(axis=(1, 3))


def expand_blocks(block_mask, block_size, shape):
    """Expands a per-block mask back to the weight's ``shape`` (cropping the padding)."""
    rows, cols = block_size
    if (rows, cols) == (1, 1):
        return block_mask
    blocks_r, blocks_c = block_mask.shape
    # One full-size array, each block's value broadcast over its tile (no intermediate repeats).
    full = np.empty((blocks_r, rows, blocks_c, cols), dtype=block_mask.dtype)
    full[...] = block_mask[:, None, :, None]
    full = full.reshape(blocks_r * rows, blocks_c * cols)
    return full[: shape[0], : shape[1]]


def magnitude_masks(score_list, sparsity):
    """Ranks all ``score_list`` arrays together; returns their masks and the threshold.

    With one array this is per-layer pruning; with the arrays of many layers
    it is global pruning (Han et al. 2015): one threshold for the whole group.
    """
    sizes = [s.size for s in score_list]
    flat = [s.reshape(-1) for s in score_list]
    mask, threshold = _ranked_mask(flat, min(keep_count(sum(sizes), sparsity), sum(sizes)))
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
