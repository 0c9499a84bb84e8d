"""``PruningWrapper``: what every tfprune wrapper shares.

A pruning wrapper wraps one Keras layer and owns, per pruned weight, a 0/1
mask and a threshold, plus the layer's pruning step (-1 until
``UpdatePruningStep`` starts training, then incremented inside the train
step). ``PruneLowMagnitude`` (magnitude pruning on a schedule) and
``DynamicSurgery`` (pruning and splicing inside the train step) are its two
kinds; code that accepts any wrapper tests ``isinstance(x, PruningWrapper)``.
"""

import keras

from tfprune._common.layers import build_sublayers

_PACKAGE = "tfprune"

NO_CALLBACK = (
    "A pruned layer is being trained without the tfprune.UpdatePruningStep callback. "
    "Add it to fit: model.fit(..., callbacks=[tfprune.UpdatePruningStep()]). In a custom "
    "training loop, call callback.set_model(model) and on_train_begin() once, then "
    "on_train_batch_begin(step) before every step."
)


def _positional(inputs, args):
    """The wrapped layer's positional arguments: ``inputs`` is None when it is called with keywords only."""
    # Attention layers are often called as mha(query=x, value=x): no positional input at all.
    return args if inputs is None else (inputs,) + tuple(args)


def masked_value(weight, mask):
    """A host copy of ``weight * mask``: the weight as the forward pass uses it."""
    return keras.ops.convert_to_numpy(weight) * keras.ops.convert_to_numpy(mask)


def masked_tensor(weight, mask):
    """``weight * mask`` as a new tensor (no host copy): the weight as the forward pass uses it."""
    return keras.ops.multiply(weight, keras.ops.cast(mask, weight.dtype))


class PruningWrapper(keras.layers.Wrapper):
    """Base class of the tfprune wrappers: pruned weights, their masks and the pruning step.

    Subclasses implement ``_create_state()``, which sets ``pruned_weights``
    and creates ``masks`` and ``thresholds`` (see ``_state``), and their own
    ``call``. The base creates the step variable, builds the wrapped layer
    and saves its build config.

    Example:

    ```python
    wrappers = [layer for layer in walk_layers(model) if isinstance(layer, PruningWrapper)]
    ```
    """

    # No schedule: kept for code written when this was the way to tell
    # dynamic surgery apart; ask the wrapper (due_sparsity, surgery_counts) instead.
    pruning_schedule = None

    def __init__(self, layer, **kwargs):
        if isinstance(layer, PruningWrapper):
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped for pruning; pruning twice is not "
                "supported. Call tfprune.strip_pruning first to start again."
            )
        super().__init__(layer, **kwargs)
        self.pruned_weights = []
        self.masks = []
        self.thresholds = []
        self.pruning_step = None
        # Set by UpdatePruningStep.on_train_begin; not saved, so a loaded
        # model must be trained with the callback too.
        self.driven_by_callback = False

    # -- building ---------------------------------------------------------

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._build_pruning_state()

    def get_build_config(self):
        return {"layer": self.layer.get_build_config()}

    def build_from_config(self, config):
        if not self.built and config and config.get("layer"):
            self.layer.build_from_config(config["layer"])
            self._build_pruning_state()

    def _build_pruning_state(self):
        if self.pruning_step is not None:
            return
        build_sublayers(self.layer)
        self._create_state()
        # -1: never trained. A wrapper built inside a train step already driven by the callback
        # (an unbuilt Sequential builds there) has begun its first step.
        start = 0 if self.driven_by_callback else -1
        self.pruning_step = self._state("pruning_step", (), "int64", keras.initializers.Constant(start))
        self.built = True

    def _create_state(self):
        raise NotImplementedError(f"{type(self).__name__} must implement _create_state().")

    def _state(self, name, shape, dtype, initializer):
        """A non-trainable bookkeeping variable, the same on every replica."""
        return self.add_weight(name=name, shape=shape, dtype=dtype, initializer=initializer, trainable=False,
                               autocast=False, aggregation="only_first_replica")

    def _add_mask(self, index, weight):
        """Creates and records the mask and threshold of pruned weight number ``index``."""
        mask = self._state(f"mask_{index}", weight.shape, weight.dtype, "ones")
        self.masks.append(mask)
        self.thresholds.append(self._state(f"threshold_{index}", (), "float32", "zeros"))
        return mask

    # -- state the rest of tfprune reads ------------------------------------

    def bookkeeping_variables(self):
        """The wrapper's own state (masks, thresholds, step): not parameters of the network."""
        return self.masks + self.thresholds + [self.pruning_step]

    def masked_values(self):
        """``{id(weight): weight * mask}`` (host copies) for every pruned weight."""
        return {id(w): masked_value(w, m) for w, m in zip(self.pruned_weights, self.masks)}

    def masked_tensors(self):
        """``{id(weight): weight * mask}`` (new tensors, computed where the weights live) for every pruned weight."""
        return {id(w): masked_tensor(w, m) for w, m in zip(self.pruned_weights, self.masks)}

    def start_training(self):
        """Called by ``UpdatePruningStep`` when ``fit`` starts; nothing to do by default."""

    def due_sparsity(self, step):
        """The sparsity the callback must prune to before training step ``step``, or None.

        None by default: a wrapper whose masks change inside the train step (dynamic surgery)
        is never due; ``PruneLowMagnitude`` asks its schedule.
        """
        return None

    def target_sparsity(self, step):
        """The sparsity the wrapper aims at after step ``step``, or None if it sets none."""
        return None

    def surgery_counts(self):
        """``(pruned, spliced)`` connections so far, for wrappers that splice; None otherwise."""
        return None

    def step_scalars(self, step):
        """``{name: value}`` the wrapper reports at ``step`` (TensorBoard, history), besides per-weight sparsity."""
        target = self.target_sparsity(step)
        counts = self.surgery_counts()
        scalars = {} if target is None else {"target_sparsity": target}
        if counts is not None:
            scalars.update(pruned_total=counts[0], spliced_total=counts[1])
        return scalars

    def _require_callback(self):
        """Inside a training call: refuse to run without ``UpdatePruningStep``."""
        # Checked while the train step is traced, not with a graph assert:
        # XLA (jit_compile=True) drops asserts.
        if not self.driven_by_callback:
            raise RuntimeError(NO_CALLBACK)
