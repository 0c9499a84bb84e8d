"""``SparsityHistory``: what the schedule asked for and what the masks hold, step by step."""

import keras
import numpy as np

from tfprune._pruning.api import pruning_wrappers


class SparsityHistory(keras.callbacks.Callback):
    """Records target and measured sparsity while a pruned model trains.

    Use it next to ``tfprune.UpdatePruningStep`` (it reads, it does not
    prune). At the end of every epoch, and every ``every_n_steps`` batches if
    given, it appends to ``history``: the last training ``step`` run (batch k of training is step k, as in tfmot), the schedule's
    ``target_sparsity`` there (of the first magnitude-pruned layer; ``None``
    for dynamic surgery, which has no schedule), and the measured
    ``sparsity``: the fraction of zeros over all masks. For dynamic network
    surgery it also records the connections ``pruned`` and ``spliced`` back
    so far. ``tfprune.plots.plot_schedule`` and ``plot_surgery_history`` draw
    it.

    Args:
        every_n_steps: also record every this many batches (``None``: epochs only).

    Example:

    ```python
    history = tfprune.SparsityHistory(every_n_steps=50)
    pruned.fit(x, y, epochs=3, callbacks=[tfprune.UpdatePruningStep(), history])
    tfprune.plots.plot_schedule(schedule, steps, history=history, path="schedule.png")
    ```
    """

    def __init__(self, every_n_steps=None):
        super().__init__()
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps <= 0):
            raise ValueError(
                f"SparsityHistory: `every_n_steps` must be a positive integer or None. Received: {every_n_steps!r}."
            )
        self.every_n_steps = every_n_steps
        self.history = {"step": [], "target_sparsity": [], "sparsity": [], "pruned": [], "spliced": []}
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.every_n_steps and self._batches % self.every_n_steps == 0:
            self.record()

    def on_epoch_end(self, epoch, logs=None):
        self.record()

    def record(self):
        """Appends one row for the model's current state."""
        wrappers = pruning_wrappers(self.model)
        if not wrappers:
            return
        # The last step trained (batch k runs step k): its masks are the ones recorded.
        step = int(wrappers[0].pruning_step.numpy())
        targets = [t for t in (w.target_sparsity(step) for w in wrappers) if t is not None]
        target = targets[0] if targets else None
        masks = [keras.ops.convert_to_numpy(m) for w in wrappers for m in w.masks]
        zeros = sum(int(np.sum(m == 0)) for m in masks)
        total = sum(m.size for m in masks)
        counts = [c for c in (w.surgery_counts() for w in wrappers) if c is not None]
        self.history["step"].append(step)
        self.history["target_sparsity"].append(target)
        self.history["sparsity"].append(zeros / total if total else 0.0)
        self.history["pruned"].append(sum(c[0] for c in counts) if counts else None)
        self.history["spliced"].append(sum(c[1] for c in counts) if counts else None)

    def get_config(self):
        return {"every_n_steps": self.every_n_steps}
