"""Public view of the channel analysis: which producers are tied, and what can be removed."""

import dataclasses

from tfprune._graph import ChannelAnalysis


@dataclasses.dataclass(frozen=True)
class CoupledGroup:
    """Producers that must lose the same channels.

    Attributes:
        layers: names of the producers (Conv, Dense, ...) in the group, in graph order. A
            plain convolution is a group of one; the convolutions feeding one residual
            stream of a ResNet stage form one group.
        channels: number of distinct channels the group controls.
        removable: how many of them can be removed.
        blocked_by: why the others cannot (first reason found), or None.

    Example:

    ```python
    for group in tfprune.surgery.coupled_groups(model):
        print(group.layers, group.removable, "of", group.channels)
    ```
    """

    layers: tuple
    channels: int
    removable: int
    blocked_by: str = None


def coupled_groups(model):
    """Lists the coupled groups of producers in ``model``.

    Args:
        model: a built Sequential or Functional Keras 3 model.

    Returns:
        A list of ``CoupledGroup``, in graph order.

    Example:

    ```python
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
    groups = tfprune.surgery.coupled_groups(model)
    print([g.layers for g in groups if len(g.layers) > 1])  # the residual streams
    ```
    """
    analysis = ChannelAnalysis(model)
    groups = []
    for group in analysis.coupled_groups():
        blocked = group.unions[group.blocked].tolist()
        groups.append(
            CoupledGroup(
                layers=tuple(group.layers), channels=len(group.unions), removable=int((~group.blocked).sum()),
                blocked_by=analysis.block_reason[blocked[0]] if blocked else None,
            )
        )
    return groups
