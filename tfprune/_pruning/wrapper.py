"""The pruning wrapper: what is masked, and how the mask stays applied.

``PruneLowMagnitude`` wraps one Keras layer and owns, per pruned weight, a
0/1 mask and the last threshold, plus the layer's pruning step. The mask is
applied in two places, so pruned weights are exactly zero at all times:

* when a mask changes, the weight is multiplied by it at once;
* after every optimizer update, through the variable's ``constraint``, which
  Keras optimizers apply inside the compiled train step. This is what keeps
  momentum (SGD, Adam) from reviving a pruned weight, and it lets
  ``predict``/``evaluate`` read the stored weights with no extra work.

The forward pass therefore runs the wrapped layer unchanged; the only work
added to a training step is the constraint's multiply.
"""

import collections

import keras
import numpy as np

from tfprune._pruning import allocation as allocation_lib
from tfprune._pruning import masks as mask_lib
from tfprune._pruning import registry
from tfprune._pruning.base import _PACKAGE, PruningWrapper, _positional, masked_tensor
from tfprune._pruning.schedules import ConstantSparsity, PruningSchedule, check_saveable

GRANULARITIES = tuple(allocation_lib.ALLOCATIONS)  # "layer", "global", "lamp", "erk"
POOLING_TYPES = ("AVG", "MAX")


class _MaskConstraint(keras.constraints.Constraint):
    """Multiplies a weight by its mask after the user's own constraint, if any."""

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * keras.ops.cast(self.mask, w.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PruneLowMagnitude(PruningWrapper):
    """Wraps a layer so that its prunable weights are masked by magnitude.

    Created by ``tfprune.prune_low_magnitude``; use that function rather than
    this class. The wrapper keeps one mask per pruned weight. The
    ``tfprune.UpdatePruningStep`` callback recomputes the masks whenever the
    schedule says so: the smallest-magnitude weights (or blocks, or the
    smallest ``m`` of every ``n``) are set to zero and stay zero.

    Args:
        layer: the Keras layer to prune.
        pruning_schedule: a ``tfprune.PruningSchedule``.
        block_size: ``(rows, cols)`` of the blocks pruned together in a
            rank-2 weight (Keras layout: rows run along the input).
        block_pooling_type: ``"AVG"`` or ``"MAX"``, how a block is scored.
        sparsity_m_by_n: ``(m, n)``: ``m`` zeros in every ``n`` consecutive
            weights along the input dimension, or ``None``.
        granularity: ``"layer"`` (each weight ranked alone), or how the
            group's sparsity is allocated: ``"global"``, ``"lamp"``,
            ``"erk"`` or a ``tfprune.SparsityAllocation`` (saved with the
            wrapper).
        global_group: name shared by the wrappers whose masks are decided
            together (one ``prune_low_magnitude`` call), for any
            granularity but ``"layer"``.
        row_importance: one number >= 0 per row of the layer's pruned
            rank-2 weight (an Embedding's tokens, a Dense kernel's inputs),
            or ``None``. A weight is scored ``|w| * row_importance[row]``.

    Example:

    ```python
    layer = tfprune.prune_low_magnitude(keras.layers.Dense(10))
    model = keras.Sequential([keras.Input((784,)), layer])
    model.compile("adam", "mse")
    model.fit(x, y, callbacks=[tfprune.UpdatePruningStep()])
    ```
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
        granularity="layer",
        global_group=None,
        row_importance=None,
        **kwargs,
    ):
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        if pruning_schedule is None:
            pruning_schedule = ConstantSparsity(0.5, 0)
        elif isinstance(pruning_schedule, dict):
            pruning_schedule = keras.saving.deserialize_keras_object(pruning_schedule)
        self.pruning_schedule = pruning_schedule
        self.block_size, self.sparsity_m_by_n = validate_arguments(
            layer.name, pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n, granularity)
        self.block_pooling_type = block_pooling_type
        self.granularity = granularity
        # None: each weight ranked alone (today's "layer"); otherwise the group's allocation.
        self.allocation = None if _is_layer(granularity) else allocation_lib.resolve(granularity, "PruneLowMagnitude")
        if self.allocation is not None and not isinstance(granularity, str):
            self.granularity = self.allocation
        self.global_group = global_group
        self._warned_nearly_empty = set()
        self.row_importance = validate_row_importance(layer.name, row_importance, self.sparsity_m_by_n, granularity)
        if layer.built:
            self._build_pruning_state()

    # -- what the callbacks ask -----------------------------------------------

    def due_sparsity(self, step):
        should, sparsity = self.pruning_schedule(step)
        return self._checked(sparsity, step) if should else None

    def target_sparsity(self, step):
        return self._checked(self.pruning_schedule(max(step, 0))[1], max(step, 0))

    def _checked(self, sparsity, step):
        # A user's schedule is obeyed only within range: 1.5 or NaN would prune nonsense.
        try:
            value = float(sparsity)
        except (TypeError, ValueError):
            value = float("nan")
        if not (np.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError(
                f"The pruning schedule {type(self.pruning_schedule).__name__} of layer '{self.layer.name}' returned "
                f"sparsity {sparsity!r} at step {step}; a schedule must return a fraction in [0, 1)."
            )
        return value

    # -- building ---------------------------------------------------------

    def _create_state(self):
        weights = registry.prunable_weights(self.layer, explicit=True)
        if not weights:
            raise ValueError(
                f"Layer '{self.layer.name}' ({type(self.layer).__name__}) has no weights tfprune can "
                f"prune. Supported: {registry.SUPPORTED_LAYERS}."
            )
        for weight in weights:
            validate_weight(self.layer, weight, self.block_size, self.sparsity_m_by_n)
        if self.row_importance is not None:
            validate_rows(self.layer, weights, self.row_importance)
        self.pruned_weights = weights
        for i, weight in enumerate(weights):
            mask = self._add_mask(i, weight)
            weight.constraint = _MaskConstraint(mask, weight.constraint)

    # -- forward pass -----------------------------------------------------

    def call(self, inputs=None, *args, training=None, **kwargs):
        if training:
            self._require_callback()
            self.pruning_step.assign_add(1)
        return self.layer(*_positional(inputs, args), **kwargs)

    # -- masks ------------------------------------------------------------

    def weight_scores(self):
        """Host copies of the magnitude scores ranked by a mask update, one per weight."""
        scores = []
        for weight in self.pruned_weights:
            # convert_to_numpy returns a new array (np.array copies), so it is scored in place.
            value = keras.ops.convert_to_numpy(weight).astype(np.float32, copy=False)
            if self.row_importance is not None:
                value = np.multiply(np.abs(value, out=value), self.row_importance[:, None], out=value)
            if len(value.shape) != 2:
                scores.append(np.abs(value, out=value))
            elif tuple(self.block_size) == (1, 1):
                scores.append(np.abs(value, out=value))  # block_scores would return |value|: the same, in place
            else:
                scores.append(mask_lib.block_scores(value, self.block_size, self.block_pooling_type))
        return scores

    def expand(self, weight, score_mask):
        """The full-shape mask of ``weight`` from a mask over its scores (blocks)."""
        if len(weight.shape) != 2:
            return score_mask
        return mask_lib.expand_blocks(score_mask, self.block_size, weight.shape)

    def assign_masks(self, full_masks, thresholds):
        """Stores new masks and thresholds, and zeroes the newly pruned weights."""
        for mask_var, thr_var, mask, thr in zip(self.masks, self.thresholds, full_masks, thresholds):
            mask_var.assign(np.asarray(mask).astype(mask_var.dtype, copy=False))
            thr_var.assign(thr)
        # Multiplied where the weights live: no host copy of the weights and back.
        for weight, mask_var in zip(self.pruned_weights, self.masks):
            weight.assign(masked_tensor(weight, mask_var))

    def update_masks(self, sparsity):
        """Recomputes this layer's masks for ``sparsity`` (per-layer or m:n ranking)."""
        if self.sparsity_m_by_n is not None:
            zeros, group = self.sparsity_m_by_n
            results = [
                mask_lib.m_by_n_mask(
                    keras.ops.convert_to_numpy(w), zeros, group, registry.input_axes(self.layer, w)
                )
                for w in self.pruned_weights
            ]
        else:
            results = []
            for weight, scores in zip(self.pruned_weights, self.weight_scores()):
                (score_mask,), threshold = mask_lib.magnitude_masks([scores], sparsity)
                results.append((self.expand(weight, score_mask), threshold))
        self.assign_masks([r[0] for r in results], [r[1] for r in results])

    # -- serialization ----------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({
            "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "sparsity_m_by_n": None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n),
            "granularity": (self.granularity if isinstance(self.granularity, str)
                            else keras.saving.serialize_keras_object(self.granularity)),
            "global_group": self.global_group,
            "row_importance": None if self.row_importance is None else self.row_importance.tolist(),
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


def _int_pair(value):
    """``value`` as a tuple of two Python ints, or None if it is not two integers (2.5 and "ab" are not)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        return None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return None
    return tuple(int(v) for v in value)


def validate_arguments(layer_name, schedule, block_size, pooling, m_by_n, granularity):
    """Checks the wrapper's arguments; errors name the layer, the argument and what is allowed.

    Returns ``(block_size, sparsity_m_by_n)`` as tuples of ints (``sparsity_m_by_n`` may be None).
    """
    where = f"prune_low_magnitude (layer '{layer_name}')"
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(
            f"{where}: `pruning_schedule` must be a tfprune.PruningSchedule such as "
            f"tfprune.PolynomialDecay(...). Received: {schedule!r}."
        )
    check_saveable(schedule, where)
    pair = _int_pair(block_size)
    if pair is None or any(b < 1 for b in pair):
        raise ValueError(
            f"{where}: `block_size` must be two positive integers (rows, cols), e.g. (4, 1). "
            f"Received: block_size={block_size!r}."
        )
    if pooling not in POOLING_TYPES:
        raise ValueError(f"{where}: `block_pooling_type` must be one of {POOLING_TYPES}. Received: {pooling!r}.")
    if not _is_layer(granularity):
        allocation_lib.resolve(granularity, where)  # an unknown name or object: the error lists the allowed
    block_size = pair
    if m_by_n is not None:
        m_n = _int_pair(m_by_n)
        if m_n is None or not 0 < m_n[0] < m_n[1]:
            raise ValueError(
                f"{where}: `sparsity_m_by_n` must be two integers (m, n) with 0 < m < n: m zeros in every n "
                f"consecutive weights, e.g. (2, 4). Received: sparsity_m_by_n={m_by_n!r}."
            )
        m_by_n = m_n
        if tuple(block_size) != (1, 1):
            raise ValueError(f"{where}: use either `block_size` or `sparsity_m_by_n`, not both.")
        if not _is_layer(granularity):
            raise ValueError(f"{where}: `sparsity_m_by_n` fixes the sparsity of every group of n weights, so it "
                             f"cannot be allocated across layers: use granularity='layer' with it, not "
                             f"granularity={granularity!r}.")
    return block_size, m_by_n


def validate_row_importance(layer_name, row_importance, m_by_n, granularity):
    """Checks ``row_importance`` on its own; returns it as a float32 vector (or ``None``)."""
    if row_importance is None:
        return None
    where = f"prune_low_magnitude (layer '{layer_name}')"
    values = np.asarray(row_importance, dtype=np.float32)
    if values.ndim != 1 or values.size == 0:
        problem = f"an array of shape {values.shape}"
    elif not np.all(np.isfinite(values)) or np.any(values < 0):
        problem = "negative, NaN or infinite entries"
    else:
        problem = None
    if problem:
        raise ValueError(
            f"{where}: `row_importance` must be a non-empty 1-D array of finite numbers >= 0, one per row of "
            "the pruned weight (for an Embedding, one per token: e.g. np.bincount(token_ids.ravel(), "
            f"minlength=input_dim)). Received: {problem}."
        )
    if m_by_n is not None:
        raise ValueError(f"{where}: `row_importance` scales magnitude ranking; it cannot be combined with "
                         "`sparsity_m_by_n`, which ranks within each group of n weights.")
    if not _is_layer(granularity):
        raise ValueError(f"{where}: `row_importance` changes the scale of this layer's scores, so they cannot "
                         f"be ranked against other layers (granularity={granularity!r}): use granularity='layer'.")
    return values


def validate_rows(layer, weights, row_importance):
    """Checks that ``layer`` prunes exactly one rank-2 weight with one row per ``row_importance`` entry."""
    where = f"prune_low_magnitude (layer '{layer.name}', {type(layer).__name__})"
    if len(weights) != 1 or len(weights[0].shape) != 2:
        shapes = ", ".join(f"'{w.name}' {tuple(w.shape)}" for w in weights)
        raise ValueError(
            f"{where}: `row_importance` needs a layer whose only pruned weight is rank 2 (Embedding, Dense); "
            f"this one prunes {shapes}. Leave `row_importance` out for this layer."
        )
    rows = weights[0].shape[0]
    if row_importance.size != rows:
        raise ValueError(
            f"{where}: `row_importance` has {row_importance.size} entries, but weight '{weights[0].name}' "
            f"{tuple(weights[0].shape)} has {rows} rows: pass one number per row."
        )


def validate_weight(layer, weight, block_size, m_by_n):
    """Checks that a weight's shape admits the block or m:n pattern."""
    if tuple(block_size) != (1, 1) and len(weight.shape) != 2:
        raise ValueError(
            f"prune_low_magnitude (layer '{layer.name}', {type(layer).__name__}): `block_size` "
            f"{tuple(block_size)} needs rank-2 weights, but weight '{weight.name}' has shape "
            f"{tuple(weight.shape)}. Use block_size=(1, 1) for this layer (prune layers separately, "
            "e.g. with keras.models.clone_model and a clone_function)."
        )
    if m_by_n is not None and registry.input_axes(layer, weight) is None:
        raise ValueError(
            f"prune_low_magnitude (layer '{layer.name}', {type(layer).__name__}): `sparsity_m_by_n` "
            f"needs a weight with one input axis, but weight '{weight.name}' of shape "
            f"{tuple(weight.shape)} has none. Leave this layer out or prune it without m:n."
        )


def _is_layer(granularity):
    return isinstance(granularity, str) and granularity == "layer"


def _labels(wrapper):
    return [f"{wrapper.layer.name}/{registry.weight_label(w, wrapper.layer)}" for w in wrapper.pruned_weights]


def warn_nearly_empty(wrapper, masks):
    """Warns, once per weight, when a mask update leaves a weight almost nothing (``allocation.nearly_empty``)."""
    for label, mask in zip(_labels(wrapper), masks):
        kept, size = int(np.count_nonzero(mask)), int(np.size(mask))
        if label not in wrapper._warned_nearly_empty and allocation_lib.nearly_empty(kept, size):
            wrapper._warned_nearly_empty.add(label)
            allocation_lib.warn_nearly_empty(label, kept, size, wrapper.allocation or "granularity='layer'")


def update_due_masks(due):
    """Recomputes masks for ``[(wrapper, sparsity), ...]``: each layer alone, or its group allocated together.

    Wrappers sharing a ``global_group`` (any granularity but ``"layer"``) get their masks from
    the group's ``SparsityAllocation``, which splits the overall sparsity among them: one
    threshold over all scores for ``"global"`` and ``"lamp"``, per-layer densities for ``"erk"``.
    """
    groups = collections.defaultdict(list)
    for wrapper, sparsity in due:
        group = wrapper.global_group
        if group is None and wrapper.allocation is not None and wrapper.granularity != "global":
            group = f"own_{id(wrapper)}"  # a wrapper made by hand: its own weights allocated together
        if group is None:
            wrapper.update_masks(sparsity)
            warn_nearly_empty(wrapper, [keras.ops.convert_to_numpy(m) for m in wrapper.masks])
        else:
            groups[group].append((wrapper, sparsity))
    for members in groups.values():
        wrappers = [w for w, _ in members]
        sparsity = members[0][1]
        allocation = wrappers[0].allocation or allocation_lib.GlobalMagnitude()
        scores, shapes, owners = {}, {}, []
        for wrapper in wrappers:
            labels = []
            for label, weight, score in zip(_labels(wrapper), wrapper.pruned_weights, wrapper.weight_scores()):
                unique, n = label, 1
                while unique in scores:  # two nested models may both hold a 'dense/kernel'
                    unique, n = f"{label}#{n}", n + 1
                scores[unique], shapes[unique] = score, tuple(weight.shape)
                labels.append(unique)
            owners.append(labels)
        masks, thresholds = allocation.group_masks(scores, shapes, sparsity)
        for wrapper, labels in zip(wrappers, owners):
            full = [wrapper.expand(w, masks[label]) for w, label in zip(wrapper.pruned_weights, labels)]
            wrapper.assign_masks(full, [thresholds[label] for label in labels])
            warn_nearly_empty(wrapper, full)
