"""Pruning schedules: *when* masks are updated and *how sparse* they become.

A schedule maps a training step to ``(should_prune, sparsity)``. The values
and the update steps are those of ``tfmot.sparsity.keras`` (a test compares
them with tfmot's own outputs), but they are computed in plain Python so the
``UpdatePruningStep`` callback can ask every batch without touching
TensorFlow.
"""

import json
import math
import warnings

import keras
import numpy as np

from tfprune._common.text import first_line

_PACKAGE = "tfprune"


def _check_sparsity(name, value, owner):
    if not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"{owner}: `{name}` must be a number in [0, 1), the fraction of weights set to "
            f"zero. Received: {name}={value!r}."
        )


def _check_steps(begin_step, end_step, frequency, owner, allow_open_end):
    for name, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{owner}: `{name}` must be an integer. Received: {name}={value!r}.")
    if begin_step < 0:
        raise ValueError(f"{owner}: `begin_step` must be >= 0. Received: begin_step={begin_step}.")
    if frequency <= 0:
        raise ValueError(
            f"{owner}: `frequency` must be a positive number of steps between mask updates. "
            f"Received: frequency={frequency}."
        )
    if end_step == -1 and allow_open_end:
        return
    if end_step < begin_step:
        allowed = "-1 (prune until training ends) or " if allow_open_end else ""
        raise ValueError(
            f"{owner}: `end_step` must be {allowed}>= begin_step. "
            f"Received: begin_step={begin_step}, end_step={end_step}."
        )


class PruningSchedule:
    """Base class of pruning schedules.

    A schedule is called with the current training step (an ``int``) and
    returns ``(should_prune, sparsity)``: whether masks are recomputed before
    this step, and the fraction of weights that the new masks set to zero.
    Subclasses implement ``__call__`` and ``get_config``; register them with
    ``keras.saving.register_keras_serializable`` so saved models load.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="my_project")
    class EveryEpoch(tfprune.PruningSchedule):
        def __init__(self, sparsity, steps_per_epoch):
            self.sparsity = sparsity
            self.steps_per_epoch = steps_per_epoch

        def __call__(self, step):
            return step % self.steps_per_epoch == 0, self.sparsity

        def get_config(self):
            return {"sparsity": self.sparsity, "steps_per_epoch": self.steps_per_epoch}
    ```
    """

    def __call__(self, step):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step).")

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _should_prune_in_step(step, begin_step, end_step, frequency):
        in_range = step >= begin_step and (end_step < 0 or step <= end_step)
        return in_range and (step - begin_step) % frequency == 0


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstantSparsity(PruningSchedule):
    """Prunes to one sparsity, every ``frequency`` steps from ``begin_step``.

    The same schedule as ``tfmot.sparsity.keras.ConstantSparsity``. Useful to
    fine-tune an already trained model at a fixed sparsity.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step at which masks are computed.
        end_step: last step at which masks may be updated; -1 (the default)
            keeps updating until training ends.
        frequency: number of steps between mask updates.

    Example:

    ```python
    schedule = tfprune.ConstantSparsity(0.8, begin_step=0, frequency=100)
    schedule(0)    # (True, 0.8)
    schedule(50)   # (False, 0.8)
    ```
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        _check_sparsity("target_sparsity", target_sparsity, "ConstantSparsity")
        _check_steps(begin_step, end_step, frequency, "ConstantSparsity", allow_open_end=True)
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step):
        step = int(step)
        should = self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)
        return should, self.target_sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PolynomialDecay(PruningSchedule):
    """Gradual pruning with a polynomial sparsity ramp (Zhu & Gupta, 2017).

    From "To prune, or not to prune: exploring the efficacy of pruning for
    model compression" (arXiv:1710.01878), eq. 1: sparsity rises from
    ``initial_sparsity`` to ``final_sparsity`` between ``begin_step`` and
    ``end_step`` as

        s(t) = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_n - t_0)) ** power

    pruning quickly while many redundant weights remain and slowly near the
    end. ``power=3`` is the paper's choice. Masks are updated every
    ``frequency`` steps within ``[begin_step, end_step]``; the values and
    steps equal ``tfmot.sparsity.keras.PolynomialDecay`` (float32 arithmetic).

    Args:
        initial_sparsity: sparsity at ``begin_step``, in [0, 1).
        final_sparsity: sparsity from ``end_step`` on, in [0, 1).
        begin_step: step at which pruning starts.
        end_step: step at which ``final_sparsity`` is reached.
        power: exponent of the ramp.
        frequency: number of steps between mask updates.

    Example:

    ```python
    schedule = tfprune.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=1000
    )
    schedule(0)     # (True, 0.0)
    schedule(500)   # (True, 0.7875)
    schedule(1000)  # (True, 0.9)
    ```
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        _check_sparsity("initial_sparsity", initial_sparsity, "PolynomialDecay")
        _check_sparsity("final_sparsity", final_sparsity, "PolynomialDecay")
        _check_steps(begin_step, end_step, frequency, "PolynomialDecay", allow_open_end=False)
        if not isinstance(power, (int, float)) or not math.isfinite(power) or power <= 0:
            raise ValueError(f"PolynomialDecay: `power` must be a positive number. Received: power={power!r}.")
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.power = power
        self.frequency = int(frequency)
        if self.frequency > self.end_step - self.begin_step and self.final_sparsity != self.initial_sparsity:
            warnings.warn(
                f"PolynomialDecay: frequency={self.frequency} is larger than the {self.end_step - self.begin_step} "
                f"steps from begin_step={self.begin_step} to end_step={self.end_step}, so the masks are updated "
                f"once, at step {self.begin_step}, to initial_sparsity={self.initial_sparsity}, and "
                f"final_sparsity={self.final_sparsity} is never reached. Pass a frequency of at most "
                f"{max(self.end_step - self.begin_step, 1)} (e.g. frequency=1 for a short run).",
                UserWarning, stacklevel=2,
            )

    def __call__(self, step):
        step = int(step)
        should = self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)
        return should, self.sparsity_at(step)

    def sparsity_at(self, step):
        """The target sparsity at ``step`` (float32 arithmetic, as tfmot)."""
        f32 = np.float32
        span = self.end_step - self.begin_step
        # end_step == begin_step: a single jump to the final sparsity.
        progress = f32(1.0) if span == 0 else f32(step - self.begin_step) / f32(span)
        progress = min(f32(1.0), max(f32(0.0), progress))
        ramp = np.power(f32(1.0) - progress, f32(self.power))
        return float(f32(self.initial_sparsity - self.final_sparsity) * ramp + f32(self.final_sparsity))

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def check_saveable(schedule, where):
    """Raises ``ValueError`` now if ``schedule`` could not be saved with the model; warns if it would not load.

    Keras opens the ``.keras`` file before it serializes the model, so a schedule that fails
    there would leave the user's checkpoint as an empty file: find it out at prune time instead.
    A schedule that saves but does not load back (not registered) only warns: many pruned
    models are stripped and exported without ever being saved.
    """
    fix = ("Give it a get_config() that returns its __init__ arguments as plain numbers, strings and lists, "
           "and register it so that load_model finds it: "
           "@keras.saving.register_keras_serializable(package='my_project').")
    name = type(schedule).__name__
    try:
        config = keras.saving.serialize_keras_object(schedule)
        json.dumps(config)
    except Exception as err:  # whatever user code raises, the user must hear it here, not in model.save
        raise ValueError(f"{where}: the pruning schedule {name} cannot be saved with the model "
                         f"({type(err).__name__}: {first_line(err)}). {fix}") from None
    try:
        restored = keras.saving.deserialize_keras_object(config)
        problem = None if type(restored) is type(schedule) else f"it loads back as {type(restored).__name__}"
    except Exception as err:
        problem = f"{type(err).__name__}: {first_line(err)}"
    if problem:
        warnings.warn(f"{where}: a model pruned with the schedule {name} can be saved, but "
                      f"keras.saving.load_model will not load it ({problem[:200]}). {fix}", RuntimeWarning,
                      stacklevel=4)
