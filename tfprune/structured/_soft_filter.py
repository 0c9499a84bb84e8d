"""Soft filter pruning: the weakest filters are zeroed each epoch but keep training; removed at the end.

SFP (He et al. 2018, "Soft Filter Pruning for Accelerating Deep Convolutional Neural
Networks", IJCAI): every ``frequency`` epochs, in each prunable layer, the ``ratio`` of its
filters with the smallest Lp norm (p = 2 in the paper) are set to zero. Unlike hard pruning
they stay in the model and keep receiving gradients, so a filter zeroed at one epoch can grow
back and be kept while another is zeroed in its place. After the last epoch the filters that
are zero are removed physically (``SoftFilterPruning.remove``), giving a smaller dense model.
"""

import warnings

import keras
import numpy as np

from tfprune._graph import ChannelAnalysis, family_of, rebuild_model
from tfprune.structured import _criteria, _scores, _select


def _kernel_of(layer, family):
    """The variable holding ``layer``'s filters (its family's ``kernel``), or a clear error."""
    for weight in layer.weights:
        if weight.name == getattr(family, "kernel", None):
            return weight
    raise ValueError(
        f"SoftFilterPruning: layer '{layer.name}' ({type(layer).__name__}) has no weight named "
        f"{getattr(family, 'kernel', None)!r}, the kernel its layer family cuts, so its filters cannot be zeroed."
    )


class SoftFilterPruning(keras.callbacks.Callback):
    """A ``model.fit`` callback: zero the lowest-norm filters of each layer every few epochs; remove them at the end.

    He et al. 2018, "Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks"
    (IJCAI). At the end of every ``frequency``-th epoch, each layer that can lose output
    channels (Conv, Dense, SeparableConv, ConvTranspose; not the model's outputs) is scored
    by ``criterion`` (default the L2 norm of each filter, the paper's choice), and its
    ``round(ratio * filters)`` lowest-scoring filters get their kernel set to zero. Coupled
    layers (a residual stream) are ranked by the mean of their members' scores and zeroed
    alike. Only the kernel is zeroed, as in the paper: the filters keep their bias and the
    BatchNormalization after them, so gradients still reach them and a zeroed filter can
    recover during the next epochs (``history`` records how many did). A zeroed filter's channel
    outputs a constant (its bias, or BatchNorm's beta); where a ReLU after it sees a constant
    <= 0, no gradient flows back and that filter stays zero, as in the paper's networks.

    After training, ``remove()`` selects the lowest-scoring filters once more on the final
    weights (the zeroed ones, if the last epoch zeroed them) and returns a copy of the model
    without them. The removed channels' bias and BatchNorm beta go with them: the smaller
    model computes exactly what ``tfprune.surgery.zero_channels(model, sfp.cut)`` computes,
    and what the trained model computes when those channels have no bias (or their
    activation maps it to zero).

    Args:
        ratio: fraction in [0, 1) of each layer's filters to zero, or ``{layer_name:
            fraction}`` to prune only those layers (coupled members together).
        frequency: zero every ``frequency`` epochs (the paper: 1).
        criterion: a weight criterion's name (``"l2_norm"``, ``"l1_norm"``, ``"fpgm"``,
            ``"bn_scale"``, or one registered with ``tfprune.structured.register_criterion``).
        min_channels: every layer keeps at least this many filters.

    Attributes:
        cut: ``{layer_name: [filter indices]}`` zeroed at the last pruning epoch.
        history: one dict per pruning epoch: ``epoch``, ``zeroed`` (filters zeroed),
            ``recovered`` (filters zeroed at the previous pruning epoch that are not among
            the lowest now: they grew back).

    Raises:
        ValueError: ``ratio`` outside [0, 1) (or a ratio dict naming a layer that cannot
            lose channels), ``frequency`` not a positive integer, an unknown criterion or
            one that needs data, an unbuilt model, or a model whose channels cannot be
            analysed (subclassed).

    Example:

    ```python
    sfp = tfprune.structured.SoftFilterPruning(ratio=0.3)
    model.fit(x_train, y_train, epochs=10, callbacks=[sfp])
    smaller = sfp.remove()                 # a dense model without the zeroed filters
    print(tfprune.structured.compare(model, smaller))
    ```
    """

    def __init__(self, ratio, frequency=1, criterion="l2_norm", min_channels=1):
        super().__init__()
        if isinstance(ratio, dict):
            for name, value in ratio.items():
                _select._check_ratio(value, f"ratio['{name}']")
        else:
            _select._check_ratio(ratio, "ratio")
        if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
            raise ValueError(f"SoftFilterPruning: `frequency` must be a positive integer (epochs between pruning "
                             f"steps); got {frequency!r}.")
        if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
            raise ValueError(f"SoftFilterPruning: `min_channels` must be a positive integer; got {min_channels!r}.")
        if _criteria.get(criterion).needs_data:
            raise ValueError(f"SoftFilterPruning: criterion {criterion!r} needs calibration data; SFP ranks filters "
                             "by their weights: use 'l2_norm' (the paper's), 'l1_norm', 'fpgm' or 'bn_scale'.")
        self.ratio = dict(ratio) if isinstance(ratio, dict) else float(ratio)
        self.frequency = frequency
        self.criterion = criterion
        self.min_channels = min_channels
        self.cut = {}
        self.history = []
        self._analysis = None

    def get_config(self):
        return {"ratio": self.ratio, "frequency": self.frequency, "criterion": self.criterion,
                "min_channels": self.min_channels}

    def _analysis_of(self, model):
        if not isinstance(model, keras.Model):
            raise TypeError(f"SoftFilterPruning: expected a keras Model, got {type(model).__name__}.")
        if not model.built:
            raise ValueError(f"SoftFilterPruning: model '{model.name}' is not built; build it (keras.Input, or "
                             "model.build(input_shape)) before training with SFP.")
        if self._analysis is None or self._analysis.model is not model:
            self._analysis = ChannelAnalysis(model)
        return self._analysis

    def select(self, model=None):
        """``{layer_name: [filter indices]}``: the lowest-scoring filters of ``model`` (default: the trained one) now.

        Example:

        ```python
        print(tfprune.structured.SoftFilterPruning(ratio=0.3).select(model))   # what the next epoch zeroes
        ```
        """
        analysis = self._analysis_of(self.model if model is None else model)
        scores = _scores.scores_for(analysis, self.criterion, verbose=0)
        removed = _select.select_unions(analysis, scores, self.ratio, "layer", self.min_channels)
        return _select.unions_to_channels(analysis, removed)

    def on_train_begin(self, logs=None):
        analysis = self._analysis_of(self.model)
        if not _criteria.prunable(analysis):
            warnings.warn(f"SoftFilterPruning: model '{self.model.name}' has no layer whose filters can be zeroed "
                          "(Conv or Dense that is not an output); training goes on unpruned.", UserWarning,
                          stacklevel=2)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        cut = self.select()
        for name, indices in cut.items():
            layer = self.model.get_layer(name)
            family = family_of(layer)
            kernel = _kernel_of(layer, family)
            value = np.moveaxis(keras.ops.convert_to_numpy(kernel).copy(), family.output_axis, -1)
            value[..., indices] = 0
            kernel.assign(np.moveaxis(value, -1, family.output_axis))
        previous = self.cut
        recovered = sum(len(set(previous.get(name, ())) - set(cut.get(name, ()))) for name in previous)
        self.cut = cut
        self.history.append({"epoch": epoch, "zeroed": sum(len(v) for v in cut.values()), "recovered": recovered})
        if logs is not None:
            logs["sfp_recovered"] = float(recovered)

    def remove(self, model=None):
        """A smaller copy of ``model`` (default: the model trained) without its lowest-scoring filters.

        The filters are chosen on the current weights exactly as at each pruning epoch (after
        a pruning epoch: the zero ones) and cut with their bias, BatchNorm entries and the next
        layers' matching inputs (``tfprune.surgery.remove_channels``). ``model`` is not
        modified; the copy is compiled like it.

        Example:

        ```python
        smaller = sfp.remove()
        ```
        """
        model = self.model if model is None else model
        if model is None:
            raise ValueError("SoftFilterPruning.remove: the callback has not been used in fit yet; pass the model.")
        analysis = self._analysis_of(model)
        cut = self.select(model)
        removed = set()
        for name, indices in cut.items():
            removed.update(analysis.roots_of(name)[indices].tolist())
        self.cut = cut
        return rebuild_model(analysis, removed)
