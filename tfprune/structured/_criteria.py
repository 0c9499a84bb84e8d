"""Channel-importance criteria as plug-ins: one interface, one registry.

A criterion scores every output channel of every layer that can lose channels; higher =
more important. Weight criteria implement ``score(analysis)``; data criteria accumulate
statistics of each layer's observed post-activation tensor over one batched calibration
pass (``start``, ``update(activation, gradient_or_None)``, ``result()``).
"""

import numpy as np

from tfprune._common import text
from tfprune._graph import output_filters

_REGISTRY = {}


def prunable(analysis):
    """Producers with at least one output channel that can be removed, in graph order."""
    return [name for name in analysis.producers if not analysis.blocked[analysis.roots_of(name)].all()]


class Criterion:
    """Base of every channel-importance criterion (use ``WeightCriterion`` or ``DataCriterion``).

    Attributes:
        name: the unique method name given to ``channel_scores`` and ``prune``.
        needs_data: whether calibration data is needed.
        needs_gradients: whether ``update`` receives ``dL/d activation`` (then the data must
            carry labels and a loss is needed).
    """

    name = None
    needs_data = False
    needs_gradients = False

    @property
    def needs_labels(self):
        return self.needs_gradients


class WeightCriterion(Criterion):
    """A criterion computed from the weights alone: implement ``score(analysis)``.

    ``score`` returns ``{layer_name: array (output_channels,)}``; ``prunable_layers`` and
    ``filters`` help.

    Example:

    ```python
    class NegativeL1(tfprune.structured.WeightCriterion):
        name = "negative_l1"

        def score(self, analysis):
            return {name: -np.abs(self.filters(layer)).sum(axis=1)
                    for name, layer in self.prunable_layers(analysis)}
    ```
    """

    def score(self, analysis):
        raise NotImplementedError

    @staticmethod
    def prunable_layers(analysis):
        """``[(name, layer)]`` of the layers that can lose output channels, in graph order."""
        return [(n, analysis.graph.nodes_by_name[n].operation) for n in prunable(analysis)]

    @staticmethod
    def filters(layer):
        """The weights making each output channel of ``layer``, as an array ``(channels, -1)``."""
        return output_filters(layer)


class DataCriterion(Criterion):
    """A criterion accumulated over calibration batches from each layer's observed tensor.

    One copy of the registered criterion is made per observed tensor; ``start(channels,
    **options)`` resets it (``options`` holds ``bins``), ``update(activation, gradient)``
    is called once per batch with numpy arrays ``(batch, ..., channels)`` (``gradient`` is
    ``None`` unless ``needs_gradients``), and ``result()`` returns one importance per channel.

    Example:

    ```python
    class MeanActivation(tfprune.structured.DataCriterion):
        name = "mean_activation"

        def start(self, channels, **options):
            self.total, self.count = np.zeros(channels), 0

        def update(self, activation, gradient):
            a = np.asarray(activation).reshape(-1, activation.shape[-1])
            self.total += a.sum(axis=0)
            self.count += len(a)

        def result(self):
            return self.total / max(self.count, 1)
    ```
    """

    needs_data = True

    def start(self, channels, **options):
        """Resets the running state for a tensor with ``channels`` channels."""

    def update(self, activation, gradient):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError


def _instance(criterion):
    kinds = (WeightCriterion, DataCriterion)
    if isinstance(criterion, type) and issubclass(criterion, kinds):
        criterion = criterion()
    if not isinstance(criterion, kinds):
        got = criterion.__name__ if isinstance(criterion, type) else type(criterion).__name__
        raise TypeError(
            "register_criterion takes a subclass or instance of tfprune.structured.WeightCriterion or "
            f"DataCriterion; got {got}."
        )
    needed = ("score",) if isinstance(criterion, WeightCriterion) else ("update", "result")
    base = WeightCriterion if isinstance(criterion, WeightCriterion) else DataCriterion
    missing = [m for m in needed if getattr(type(criterion), m) is getattr(base, m)]
    if missing:
        raise TypeError(f"{type(criterion).__name__} must implement {', '.join(missing)}.")
    return criterion


def register_criterion(criterion):
    """Makes a channel-importance criterion available by its name to ``channel_scores`` and ``prune``.

    Args:
        criterion: a subclass (instantiated with no arguments) or an instance of
            ``WeightCriterion`` or ``DataCriterion`` with a unique, non-empty ``name``.

    Returns:
        ``criterion`` unchanged, so this also works as a class decorator.

    Raises:
        TypeError: not such a subclass or instance, or its methods are not implemented.
        ValueError: the name is empty or already registered.

    Example:

    ```python
    @tfprune.structured.register_criterion
    class NegativeL1(tfprune.structured.WeightCriterion):
        name = "negative_l1"

        def score(self, analysis):
            return {name: -np.abs(self.filters(layer)).sum(axis=1)
                    for name, layer in self.prunable_layers(analysis)}

    smaller = tfprune.structured.prune(model, "negative_l1", ratio=0.5)
    ```
    """
    instance = _instance(criterion)
    name = instance.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"A criterion needs a non-empty string `name`; {type(instance).__name__} has {name!r}.")
    if name in _REGISTRY:
        raise ValueError(
            f"A criterion named {name!r} is already registered ({text.list_names(_REGISTRY, 50)}); choose another name."
        )
    _REGISTRY[name] = instance
    return criterion


def criteria():
    """Names of every registered channel-importance criterion, built-in ones first.

    Example:

    ```python
    print(tfprune.structured.criteria())  # ('l1_norm', 'l2_norm', 'fpgm', 'bn_scale', 'apoz', ...)
    ```
    """
    return tuple(_REGISTRY)


def get(method):
    """The registered criterion called ``method``; a clear error listing the names otherwise."""
    if not isinstance(method, str) or method not in _REGISTRY:
        raise ValueError(f"Unknown scoring method {method!r}. Choose one of {text.list_names(_REGISTRY, 50)}.")
    return _REGISTRY[method]


def unregister(name):
    """Removes a registered criterion (private: for tests)."""
    _REGISTRY.pop(name, None)


def check_scores(analysis, name, scores):
    """Checks that a criterion returned ``{prunable layer: array (channels,)}``."""
    if not isinstance(scores, dict):
        raise TypeError(f"Criterion {name!r} returned {type(scores).__name__}; expected {{layer_name: array}}.")
    for layer, values in scores.items():
        if layer not in analysis.producers:
            raise ValueError(f"Criterion {name!r} scored {layer!r}, which is not a layer that can lose channels.")
        channels = len(analysis.producers[layer])
        if np.shape(values) != (channels,):
            raise ValueError(
                f"Criterion {name!r} gave {layer!r} scores of shape {np.shape(values)}; expected ({channels},)."
            )
    return scores
