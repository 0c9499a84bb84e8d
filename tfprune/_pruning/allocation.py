"""How much of a model's sparsity each layer gets.

This module is the one owner of sparsity allocation. ``erk_densities`` is the
Erdős–Rényi(-Kernel) rule that dynamic sparse training starts from.
"""

import math


def erk_densities(shapes, sparsity, kernel=True, dense=()):
    """``{name: density}`` of the Erdős–Rényi(-Kernel) allocation for an overall ``sparsity``.

    Erdős–Rényi (Mocanu et al. 2018, "Scalable training of artificial neural
    networks with adaptive sparse connectivity inspired by network science")
    gives a layer with ``n_in`` inputs and ``n_out`` outputs a density
    proportional to ``(n_in + n_out) / (n_in * n_out)``; ERK (Evci et al. 2020,
    "Rigging the Lottery: Making All Tickets Winners") counts every dimension
    of a kernel, ``sum(shape) / prod(shape)``, so a 3x3 convolution keeps more
    than a dense layer of the same width. One scale ``eps`` makes the kept
    weights add up to ``(1 - sparsity)`` of the total; a layer whose density
    would exceed 1 is kept dense and ``eps`` is solved again for the rest, as in
    the paper's reference code.

    Args:
        shapes: ``{name: weight shape}`` in model order.
        sparsity: the overall fraction of the weights in ``shapes`` to remove,
            in [0, 1).
        kernel: ``True`` for ERK (all dimensions), ``False`` for ER (a
            convolution counted by its last two dimensions only).
        dense: names kept whole (density 1); they count towards the total.

    Returns:
        ``{name: density}`` with each density in (0, 1].

    Raises:
        ValueError: ``sparsity`` out of range, an empty or invalid shape, or a
            target the layers outside ``dense`` cannot reach.

    Example:

    >>> d = erk_densities({"conv": (3, 3, 16, 32), "fc": (512, 10)}, 0.9)
    >>> round(d["conv"] * 4608 + d["fc"] * 5120)
    973
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"erk_densities: `sparsity` must be in [0, 1). Received: {sparsity!r}.")
    if not shapes:
        raise ValueError("erk_densities: `shapes` is empty: there is no weight to allocate sparsity to.")
    sizes, raw = {}, {}
    for name, shape in shapes.items():
        shape = tuple(int(d) for d in shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"erk_densities: the weight '{name}' has shape {shape}; every dimension must be >= 1.")
        counted = shape if kernel or len(shape) <= 2 else shape[-2:]
        sizes[name] = math.prod(shape)
        raw[name] = sum(counted) / math.prod(counted)
    unknown = [name for name in dense if name not in shapes]
    if unknown:
        raise ValueError(f"erk_densities: `dense` names {unknown}, which are not in `shapes` ({list(shapes)}).")
    kept_total = (1.0 - float(sparsity)) * sum(sizes.values())
    whole = set(dense)
    while True:
        free = [name for name in shapes if name not in whole]
        budget = kept_total - sum(sizes[name] for name in whole)
        if not free or budget <= 0:
            raise ValueError(
                f"erk_densities: keeping {sorted(whole)} whole already keeps more than {1 - float(sparsity):.4g} "
                f"of the weights; lower the sparsity or keep fewer layers dense."
            )
        eps = budget / sum(raw[name] * sizes[name] for name in free)
        over = [name for name in free if eps * raw[name] > 1.0]
        if not over:
            break
        whole.update(over)
    return {name: 1.0 if name in whole else eps * raw[name] for name in shapes}
