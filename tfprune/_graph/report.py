"""What a structured cut did: channels cut per layer, and the layers left alone with the reason."""

import numpy as np

from tfprune._common.text import format_table


class StructuredReport:
    """Which channels a structured cut removed, per layer, and which layers it left alone and why.

    Made by ``tfprune.structured.prune(..., return_report=True)``,
    ``tfprune.surgery.remove_channels(..., return_report=True)`` and each step of
    ``tfprune.structured.iterative_prune`` (``history[i]["report"]``).

    Attributes:
        model: name of the model that was cut.
        cut: ``{layer: (channels before, channels after)}`` for every producer that lost channels.
        removed: ``{layer: [channel indices]}``, indices into the original output channels.
        left_alone: ``{layer or op node: reason}`` for every producer that kept all its channels
            (its channels are blocked, ``min_channels`` was reached, it has no score, ...) and
            every layer or ``keras.ops`` node the cut cannot pass through (an opaque layer, an
            op over the channel axis, a shared layer, a nested model, ...).

    Example:

    ```python
    smaller, report = tfprune.structured.prune(model, "l1_norm", ratio=0.5, return_report=True)
    print(report)                  # one line per layer: 64 -> 32, or why it was left alone
    report.cut["conv1"]            # (64, 32)
    report.left_alone["logits"]    # "no channel can be removed: it is an output of model ..."
    ```
    """

    def __init__(self, model, cut, removed, left_alone):
        self.model = model
        self.cut = cut
        self.removed = removed
        self.left_alone = left_alone

    @property
    def channels_removed(self):
        """Total number of output channels removed, over every producer."""
        return sum(before - after for before, after in self.cut.values())

    def to_dict(self):
        return {"model": self.model, "cut": {k: list(v) for k, v in self.cut.items()},
                "removed": {k: list(v) for k, v in self.removed.items()}, "left_alone": dict(self.left_alone)}

    def __str__(self):
        rows = [[name, f"{before} -> {after}", ""] for name, (before, after) in self.cut.items()]
        rows += [[name, "kept", reason] for name, reason in self.left_alone.items()]
        lines = [f"Structured cut of model '{self.model}': {self.channels_removed} channels removed "
                 f"from {len(self.cut)} layers, {len(self.left_alone)} left alone"]
        return "\n".join(lines + format_table(["layer", "channels", "left alone because"], rows))

    __repr__ = __str__


def cut_report(analysis, removed, why=None, default="it was not asked to lose channels"):
    """The ``StructuredReport`` of removing the unions ``removed``; ``why`` gives producers' reasons."""
    why = why or {}
    gone = np.zeros(len(analysis.root), dtype=bool)
    gone[np.asarray(sorted(removed), dtype=np.int64)] = True
    cut, indices, left_alone = {}, {}, {}
    for name in analysis.producers:
        roots = analysis.roots_of(name)
        lost = np.flatnonzero(gone[roots])
        if lost.size:
            cut[name] = (int(roots.size), int(roots.size - lost.size))
            indices[name] = lost.tolist()
        elif name in why:
            left_alone[name] = why[name]
        elif analysis.blocked[roots].all():
            left_alone[name] = f"no channel can be removed: {analysis.block_reason[roots[0]]}"
        else:
            left_alone[name] = default
    for name, reason in analysis.opaque.items():
        left_alone.setdefault(name, f"the cut cannot pass through {reason}")
    return StructuredReport(analysis.model.name, cut, indices, left_alone)
