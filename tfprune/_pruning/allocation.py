"""How much of a model's sparsity each layer gets.

This module is the one owner of sparsity allocation: given the scores of the
weights pruned together (one group: the wrappers of one
``prune_low_magnitude`` call) and the schedule's overall target, an allocation
decides the masks of every weight. ``erk_densities`` is the Erdős–Rényi(-Kernel)
rule that dynamic sparse training starts from; the ``SparsityAllocation``
classes are what ``prune_low_magnitude(granularity=...)`` accepts.

Labels are ``"<layer name>/<weight>"`` (``"conv1/kernel"``), as
``tfprune.prunable_weights`` gives them; ``min_density`` and ``dense_layers``
name layers.
"""

import math
import warnings

import keras
import numpy as np

from tfprune._pruning import masks as mask_lib

_PACKAGE = "tfprune"

# A weight keeping fewer than this fraction, or fewer than NEARLY_EMPTY_COUNT weights (and under
# 10% of them), is "pruned to almost nothing": a warning and sparsity_report say so.
NEARLY_EMPTY_FRACTION = 0.01
NEARLY_EMPTY_COUNT = 8


def nearly_empty(kept, size):
    """Whether a weight keeping ``kept`` of its ``size`` entries is pruned to almost nothing."""
    if size <= 0:
        return False
    return kept < NEARLY_EMPTY_FRACTION * size or (kept < NEARLY_EMPTY_COUNT and kept < 0.1 * size)


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


def lamp_scores(scores):
    """LAMP scores of one weight's magnitudes (Lee et al. 2021, "Layer-adaptive sparsity for the magnitude-based pruning").

    With the weight's entries sorted by magnitude, ascending, entry ``u``
    scores ``w_u^2 / sum_{v >= u} w_v^2``: its squared magnitude over that of
    all entries at least as large. The largest entry scores 1, so one global
    threshold on LAMP scores never empties a layer.

    Args:
        scores: an array of magnitudes (``|w|``, or block scores).

    Returns:
        A float64 array of the same shape, each entry in [0, 1].

    Example:

    >>> lamp_scores(np.array([1.0, 2.0, 2.0])).round(3).tolist()
    [0.111, 0.5, 1.0]
    """
    flat = np.asarray(scores, dtype=np.float64).reshape(-1) ** 2
    order = np.argsort(flat, kind="stable")
    ranked = flat[order]
    suffix = np.cumsum(ranked[::-1])[::-1]
    out = np.zeros_like(flat)
    out[order] = np.divide(ranked, suffix, out=np.zeros_like(ranked), where=suffix > 0)
    return out.reshape(np.shape(scores))


def layer_of(label):
    """The layer name of a label ``"<layer>/<weight>"``."""
    return label.split("/", 1)[0]


class SparsityAllocation:
    """Decides how a group's overall sparsity is split among its weights.

    Pass an instance (or the name of a built-in) as
    ``tfprune.prune_low_magnitude(model, granularity=...)``: the schedule's
    sparsity is then the target over all the weights the call prunes, and at
    every mask update the allocation decides each weight's mask. Built-ins:
    ``LayerUniform`` (``"layer"``), ``GlobalMagnitude`` (``"global"``),
    ``LAMP`` (``"lamp"``) and ``ERK`` (``"erk"``).

    A subclass implements ``allocate(scores, shapes, sparsity)``, returning
    per-weight masks or per-weight sparsities, and registers itself with
    ``keras.saving.register_keras_serializable`` so pruned models load;
    ``get_config`` must return its ``__init__`` arguments (the base handles
    its own). The options below are the base's: built-ins honour them, and a
    subclass's result is checked against them.

    Args:
        min_density: a fraction in [0, 1] every pruned weight keeps at least,
            or ``{layer name: fraction}`` for some layers. ``None``: no floor.
        dense_layers: names of layers whose weights are not pruned (density
            1); they count towards the overall target.
        keep_first_last: also keep the first and the last layer of the
            group (in model order) whole: the common practice for the input
            convolution and the classifier.

    Raises:
        ValueError: ``min_density`` out of [0, 1] or not a number or dict,
            ``dense_layers`` not a list of names.

    Example:

    ```python
    @keras.saving.register_keras_serializable()
    class HalfEach(tfprune.SparsityAllocation):
        def allocate(self, scores, shapes, sparsity):
            return {label: sparsity for label in scores}   # per-weight sparsities

    pruned = tfprune.prune_low_magnitude(model, schedule, granularity=HalfEach())
    ```
    """

    name = None

    def __init__(self, min_density=None, dense_layers=(), keep_first_last=False):
        where = f"{type(self).__name__}"
        if isinstance(min_density, dict):
            checked = {}
            for layer, value in min_density.items():
                if not isinstance(layer, str):
                    raise ValueError(f"{where}: `min_density` keys must be layer names. Received: {layer!r}.")
                checked[layer] = _fraction(value, where, f"min_density[{layer!r}]")
            min_density = checked
        elif min_density is not None:
            min_density = _fraction(min_density, where, "min_density")
        if isinstance(dense_layers, str) or not all(isinstance(n, str) for n in (dense_layers or ())):
            raise ValueError(f"{where}: `dense_layers` must be a list of layer names, e.g. ('conv1', 'fc2'). "
                             f"Received: {dense_layers!r}.")
        if not isinstance(keep_first_last, (bool, np.bool_)):
            raise ValueError(f"{where}: `keep_first_last` must be True or False. Received: {keep_first_last!r}.")
        self.min_density = min_density
        self.dense_layers = tuple(dense_layers or ())
        self.keep_first_last = bool(keep_first_last)

    # -- what a subclass implements -------------------------------------------

    def allocate(self, scores, shapes, sparsity):
        """Decides the masks of one group for the overall ``sparsity``.

        Args:
            scores: ``{label: array}`` in model order, the magnitude score of
                each entry (``|w|``; with ``block_size``, one score per block).
            shapes: ``{label: shape}`` of the weights themselves.
            sparsity: the overall fraction of entries of ``scores`` to prune.

        Returns:
            ``{label: 0/1 mask of the score's shape}`` or ``{label: sparsity}``
            (each weight then keeps its largest scores), or a pair of such a
            dict and ``{label: threshold}`` to report as the thresholds.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement allocate(scores, shapes, sparsity).")

    # -- what the wrappers ask --------------------------------------------------

    def group_masks(self, scores, shapes, sparsity):
        """``({label: mask}, {label: threshold})`` for one mask update: ``allocate``, checked.

        Raises:
            ValueError: the constraints cannot reach ``sparsity``, or a
                subclass's result misses a label, has the wrong shape, or
                breaks ``min_density`` / ``dense_layers``.
        """
        self.check(list(scores), {label: np.size(s) for label, s in scores.items()}, sparsity)
        result = self.allocate(scores, shapes, sparsity)
        thresholds = {}
        if isinstance(result, tuple) and len(result) == 2:
            result, thresholds = result
        where = f"{type(self).__name__}.allocate"
        if not isinstance(result, dict) or set(result) != set(scores):
            raise ValueError(f"{where} must return one entry per label of `scores` ({list(scores)}); "
                             f"it returned {list(result) if isinstance(result, dict) else type(result).__name__}.")
        masks, out_thresholds = {}, {}
        floors = self.floor_counts({label: np.size(s) for label, s in scores.items()})
        for label, value in result.items():
            score = scores[label]
            if np.ndim(value) == 0:
                fraction = float(value)
                if not 0.0 <= fraction <= 1.0:
                    raise ValueError(f"{where} gave '{label}' sparsity {value!r}; a sparsity is in [0, 1].")
                # As the per-layer ranking: at least one entry kept, unless the sparsity is exactly 1.
                kept = 0 if fraction >= 1.0 else mask_lib.keep_count(score.size, fraction)
                kept = min(max(kept, floors[label]), score.size)
                if kept <= 0:
                    mask, threshold = np.zeros(score.shape, np.float32), float(np.max(score, initial=0.0))
                else:
                    mask, threshold = mask_lib.top_k_mask(score, kept)
            else:
                mask = np.asarray(value, dtype=np.float32)
                if mask.shape != score.shape or not np.all((mask == 0) | (mask == 1)):
                    raise ValueError(f"{where} gave '{label}' a mask of shape {mask.shape}; it must be 0/1 of "
                                     f"the score's shape {score.shape}.")
                kept_scores = score[mask == 1]
                threshold = float(kept_scores.min()) if kept_scores.size else 0.0
            masks[label] = mask
            out_thresholds[label] = float(thresholds.get(label, threshold))
        self._check_result(masks)
        return masks, out_thresholds

    def check(self, labels, sizes=None, sparsity=None, caller=None):
        """Checks the options against a group: layer names exist, and ``sparsity`` is reachable.

        Args:
            labels: the group's labels, in model order.
            sizes: ``{label: number of scores}``, or None to check names only.
            sparsity: the overall target, or None.
            caller: the function named in errors.

        Raises:
            ValueError: ``min_density`` or ``dense_layers`` name a layer the
                group does not prune, or the floors and dense layers keep more
                than ``1 - sparsity`` of the weights.
        """
        where = caller or type(self).__name__
        layers = list(dict.fromkeys(layer_of(label) for label in labels))
        for argument, names in (("min_density", self.min_density if isinstance(self.min_density, dict) else {}),
                                ("dense_layers", self.dense_layers)):
            unknown = [name for name in names if name not in layers]
            if unknown:
                raise ValueError(f"{where}: `{argument}` of {type(self).__name__} names {unknown}, which are not "
                                 f"among the pruned layers {layers}.")
        if sizes is None or sparsity is None:
            return
        total = sum(sizes.values())
        dense = self.dense_labels(labels)
        floors = self.floor_counts({label: sizes[label] for label in labels})
        needed = sum(sizes[label] for label in dense) + sum(floors[label] for label in labels if label not in dense)
        budget = mask_lib.keep_count(total, sparsity)
        if needed > budget:
            raise ValueError(
                f"{where}: the target sparsity {float(sparsity):.4g} keeps {budget:,} of {total:,} weights, but "
                f"{type(self).__name__}'s constraints (min_density={self.min_density!r}, dense layers "
                f"{sorted({layer_of(label) for label in dense})}) keep at least {needed:,}. Lower min_density, keep "
                "fewer layers dense, or lower the final sparsity."
            )

    # -- helpers for subclasses ---------------------------------------------------

    def dense_labels(self, labels):
        """The labels kept whole: ``dense_layers``, and the first and last layer with ``keep_first_last``."""
        layers = list(dict.fromkeys(layer_of(label) for label in labels))
        whole = set(self.dense_layers)
        if self.keep_first_last and layers:
            whole.update({layers[0], layers[-1]})
        return [label for label in labels if layer_of(label) in whole]

    def floor_of(self, label):
        """The ``min_density`` of ``label``'s layer (0 without one)."""
        if isinstance(self.min_density, dict):
            return self.min_density.get(layer_of(label), 0.0)
        return self.min_density or 0.0

    def floor_counts(self, sizes):
        """``{label: fewest entries kept}`` from ``min_density``, for ``{label: number of scores}``."""
        return {label: min(int(math.ceil(self.floor_of(label) * size - 1e-9)), size) for label, size in sizes.items()}

    def threshold_masks(self, scores, sparsity):
        """One threshold over all ``scores`` (dense labels kept, ``min_density`` floors kept first).

        Returns ``({label: mask}, {label: threshold})``; without constraints,
        exactly the global magnitude ranking of ``masks.magnitude_masks``.
        """
        labels = list(scores)
        dense = set(self.dense_labels(labels))
        floors = self.floor_counts({label: scores[label].size for label in labels})
        ranked = [label for label in labels if label not in dense]
        if not dense and not any(floors.values()):
            masks, threshold = mask_lib.magnitude_masks([scores[label] for label in labels], sparsity)
            return dict(zip(labels, masks)), {label: threshold for label in labels}
        total = sum(scores[label].size for label in labels)
        budget = mask_lib.keep_count(total, sparsity) - sum(scores[label].size for label in dense)
        masks = {label: np.ones(scores[label].shape, np.float32) for label in dense}
        threshold = 0.0
        if ranked:
            forced, pieces = [], []
            for label in ranked:
                score = np.asarray(scores[label], dtype=np.float64).copy()
                floor = np.zeros(score.shape, bool)
                if floors[label] > 0:
                    floor = mask_lib.top_k_mask(score, floors[label])[0] == 1
                score[floor] = np.inf  # a floor's weights rank above every other
                forced.append(floor.reshape(-1))
                pieces.append(score)
            flat = np.concatenate([p.reshape(-1) for p in pieces])
            is_forced = np.concatenate(forced)
            if budget > 0:
                mask, _ = mask_lib.top_k_mask(flat, budget)
            else:
                mask = np.zeros(flat.shape, np.float32)
            free_kept = flat[(mask == 1) & ~is_forced]
            threshold = float(free_kept.min()) if free_kept.size else 0.0
            for label, piece in zip(ranked, np.split(mask, np.cumsum([p.size for p in pieces])[:-1])):
                masks[label] = piece.reshape(scores[label].shape)
        return {label: masks[label] for label in labels}, {label: threshold for label in labels}

    def density_sparsities(self, rule, scores, shapes, sparsity):
        """``{label: sparsity}`` from a density rule, with ``dense_layers`` whole and ``min_density`` floors.

        ``rule(shapes, sparsity, dense)`` gives ``{label: density}`` for a
        subset of the labels at that subset's overall sparsity (``dense``
        labels at 1). Labels whose density falls under their floor are fixed
        at the floor, and the rule is solved again for the others.
        """
        labels = list(scores)
        sizes = {label: scores[label].size for label in labels}
        dense = set(self.dense_labels(labels))
        kept_total = (1.0 - float(sparsity)) * sum(sizes.values())
        fixed = {}
        while True:
            free = [label for label in labels if label not in fixed]
            budget = kept_total - sum(fixed[label] * sizes[label] for label in fixed)
            free_size = sum(sizes[label] for label in free)
            if not free:
                break
            sub = min(max(1.0 - budget / free_size, 0.0), 1.0 - 1e-12)
            densities = rule({label: shapes[label] for label in free}, sub, [l for l in free if l in dense])
            low = [label for label in free if label not in dense and densities[label] < self.floor_of(label)]
            if not low:
                fixed.update(densities)
                break
            fixed.update({label: self.floor_of(label) for label in low})
        return {label: 1.0 - min(max(fixed[label], self.floor_of(label)), 1.0) for label in labels}

    # -- internals ------------------------------------------------------------------

    def _check_result(self, masks):
        where = f"{type(self).__name__}.allocate"
        for label in self.dense_labels(list(masks)):
            if not np.all(masks[label] == 1):
                raise ValueError(f"{where} pruned '{label}', which its dense_layers / keep_first_last keep whole.")
        floors = self.floor_counts({label: m.size for label, m in masks.items()})
        for label, mask in masks.items():
            if mask.sum() < floors[label]:
                raise ValueError(f"{where} kept {int(mask.sum())} of '{label}' ({mask.size}), fewer than its "
                                 f"min_density {self.floor_of(label):.4g} allows.")

    def get_config(self):
        return {"min_density": self.min_density, "dense_layers": list(self.dense_layers),
                "keep_first_last": self.keep_first_last}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self).__name__)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if v not in (None, [], (), False))
        return f"{type(self).__name__}({options})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerUniform(SparsityAllocation):
    """Every weight pruned to the same sparsity (``granularity="layer"``).

    Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of
    pruning for model compression": each layer ranks its own weights. With
    ``dense_layers`` or ``min_density``, those layers keep more and the
    others share the rest of the budget uniformly, so the overall sparsity
    stays on target. Small first layers suffer most: the MNIST tutorial's
    conv1 keeps 14 of its 288 weights at 95%.

    Example:

    ```python
    pruned = tfprune.prune_low_magnitude(model, schedule, granularity=tfprune.LayerUniform(keep_first_last=True))
    ```
    """

    name = "layer"

    def allocate(self, scores, shapes, sparsity):
        sizes = {label: math.prod(shape) for label, shape in shapes.items()}

        def uniform(subset, sub_sparsity, dense):
            free = [label for label in subset if label not in dense]
            budget = (1.0 - sub_sparsity) * sum(sizes[label] for label in subset) - sum(sizes[l] for l in dense)
            share = budget / sum(sizes[label] for label in free) if free else 1.0
            return {label: 1.0 if label in dense else min(max(share, 0.0), 1.0) for label in subset}

        if not self.dense_labels(list(scores)) and not any(self.floor_of(label) for label in scores):
            return {label: float(sparsity) for label in scores}
        return self.density_sparsities(uniform, scores, shapes, sparsity)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalMagnitude(SparsityAllocation):
    """One magnitude threshold over all weights (``granularity="global"``).

    Han et al. 2015, "Learning both Weights and Connections for Efficient
    Neural Networks": the smallest ``|w|`` of the whole group go, wherever
    they are, so layers end at different sparsities. Layers with small
    weights (wide dense layers) are pruned hardest; a layer can be emptied
    at high sparsity, which ``min_density`` prevents.

    Example:

    ```python
    pruned = tfprune.prune_low_magnitude(model, schedule, granularity=tfprune.GlobalMagnitude(min_density=0.02))
    ```
    """

    name = "global"

    def allocate(self, scores, shapes, sparsity):
        return self.threshold_masks(scores, sparsity)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LAMP(SparsityAllocation):
    """Layer-adaptive magnitude pruning: one threshold on LAMP scores (``granularity="lamp"``).

    Lee et al. 2021, "Layer-adaptive sparsity for the magnitude-based
    pruning" (ICLR): within each weight, sorted by magnitude ascending, entry
    ``u`` scores ``w_u^2 / sum_{v >= u} w_v^2``; then one global threshold on
    these scores decides every mask. The score is a weight's share of the
    layer's remaining energy, so layers are compared by how much of their
    own output a cut distorts, and every layer keeps its largest weight. The
    threshold recorded in each wrapper is in LAMP-score units.

    Example:

    ```python
    pruned = tfprune.prune_low_magnitude(model, schedule, granularity="lamp")
    ```
    """

    name = "lamp"

    def allocate(self, scores, shapes, sparsity):
        return self.threshold_masks({label: lamp_scores(s) for label, s in scores.items()}, sparsity)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ERK(SparsityAllocation):
    """Erdős–Rényi-Kernel densities, each weight ranked on its own (``granularity="erk"``).

    Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners"
    (ERK), after Mocanu et al. 2018, "Scalable training of artificial neural
    networks with adaptive sparse connectivity inspired by network science"
    (ER): a weight of shape ``s`` keeps a fraction proportional to
    ``sum(s) / prod(s)``, scaled so the kept weights meet the overall target
    (``erk_densities``). Small layers (the first convolution, the
    classifier) stay dense or nearly so; wide dense layers take most of the
    sparsity. The densities depend only on the shapes.

    Args:
        kernel: ``True`` for ERK, ``False`` for ER (convolutions counted by
            their two channel dimensions).
        **kwargs: ``min_density``, ``dense_layers``, ``keep_first_last``, as
            ``SparsityAllocation``.

    Example:

    ```python
    pruned = tfprune.prune_low_magnitude(model, schedule, granularity=tfprune.ERK(dense_layers=["logits"]))
    ```
    """

    name = "erk"

    def __init__(self, kernel=True, **kwargs):
        super().__init__(**kwargs)
        self.kernel = bool(kernel)

    def allocate(self, scores, shapes, sparsity):
        def rule(subset, sub_sparsity, dense):
            return erk_densities(subset, sub_sparsity, kernel=self.kernel, dense=dense)

        return self.density_sparsities(rule, scores, shapes, sparsity)

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel}


ALLOCATIONS = {cls.name: cls for cls in (LayerUniform, GlobalMagnitude, LAMP, ERK)}


def resolve(granularity, where):
    """The ``SparsityAllocation`` for ``granularity`` (a name, an instance or its saved config).

    Raises:
        ValueError: an unknown name or another kind of object; the message lists the allowed.
    """
    if isinstance(granularity, dict):
        granularity = keras.saving.deserialize_keras_object(granularity)
    if isinstance(granularity, SparsityAllocation):
        return granularity
    if isinstance(granularity, str) and granularity in ALLOCATIONS:
        return ALLOCATIONS[granularity]()
    raise ValueError(
        f"{where}: `granularity` must be one of {tuple(ALLOCATIONS)} or a tfprune.SparsityAllocation instance "
        f"(LayerUniform, GlobalMagnitude, LAMP, ERK, or a subclass). Received: {granularity!r}."
    )


def warn_nearly_empty(label, kept, size, allocation):
    """The RuntimeWarning for a weight pruned to almost nothing, with what to do about it."""
    warnings.warn(
        f"prune_low_magnitude: '{label}' keeps {kept} of its {size:,} weights ({kept / size:.2%}) after this "
        f"mask update ({allocation}): the layer is pruned to almost nothing and may stop passing signal. Keep "
        "it denser: granularity=tfprune.LAMP(min_density=0.05) or ERK(dense_layers=[...]) / "
        "keep_first_last=True, or a lower final sparsity.", RuntimeWarning, stacklevel=4,
    )


def _fraction(value, where, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: `{argument}` must be a fraction in [0, 1], the least part of a layer's weights "
                         f"kept. Received: {value!r}.")
    return float(value)
