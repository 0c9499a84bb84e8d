"""The quantization modes of ``to_tflite``: one object per mode, read by every part of the export.

Each ``QuantizationMode`` says, in one place, how it sets up the TFLite
converter, whether it needs representative data, which input/output dtypes
the file may have, how far from Keras its outputs may be, and how it is
named (the ``quantization=`` argument, the CLI's ``--quantize`` choice, the
report's label). Nothing else in ``tfprune.export`` compares mode strings.
"""

import dataclasses

IO_DTYPES = ("float32", "int8", "uint8")
FLOAT_IO = "float32"


@dataclasses.dataclass(frozen=True)
class QuantizationMode:
    """One value of ``to_tflite(quantization=...)``.

    Attributes:
        name: the ``quantization`` argument (``None`` for float32).
        cli_name: the ``tfprune export --quantize`` choice.
        label: the name in reports and messages.
        description: a few words for help texts.
        optimize: the converter gets ``tf.lite.Optimize.DEFAULT``.
        supported_types: ``target_spec.supported_types`` (TensorFlow dtype names).
        full_integer: int8 weights and activations: builtin int8 kernels only,
            calibrated on representative data, integer inputs/outputs allowed.
        io_dtypes: the ``io_dtype`` values this mode allows.
        per_channel_applies: ``per_channel`` changes the file.
        wrong_relative_error: above this error (relative to the largest Keras
            output) a file computes something else, not the same thing rounded.
        rounding_relative_error: above this error the report warns that it is
            more than rounding (``None``: no such warning).

    Example:

    ```python
    mode = resolve("int8")
    mode.needs_representative_data, mode.io_dtypes  # (True, ('float32', 'int8', 'uint8'))
    ```
    """

    name: str | None
    cli_name: str
    label: str
    description: str
    optimize: bool
    supported_types: tuple = ()
    full_integer: bool = False
    io_dtypes: tuple = (FLOAT_IO,)
    per_channel_applies: bool = False
    wrong_relative_error: float = 1.0
    rounding_relative_error: float | None = None

    @property
    def needs_representative_data(self):
        """Calibration of activation ranges needs typical inputs."""
        return self.full_integer

    @property
    def argument(self):
        """How the mode is passed: ``quantization='int8'``."""
        return f"quantization={self.name!r}"

    def configure(self, converter, representative_dataset=None, io_dtype=FLOAT_IO):
        """Sets ``converter`` (a ``tf.lite.TFLiteConverter``) up for this mode.

        Leaves ``converter.optimizations`` to the caller's list with
        ``tf.lite.Optimize.DEFAULT`` first when ``optimize``; returns that list.
        """
        import tensorflow as tf

        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if self.full_integer else tf.lite.OpsSet.TFLITE_BUILTINS
        ]
        if self.supported_types:
            converter.target_spec.supported_types = [tf.as_dtype(t) for t in self.supported_types]
        if self.full_integer:
            converter.representative_dataset = representative_dataset
            converter.inference_input_type = tf.as_dtype(io_dtype)
            converter.inference_output_type = tf.as_dtype(io_dtype)
        return [tf.lite.Optimize.DEFAULT] if self.optimize else []


# float32 agrees with Keras to about 1e-6, float16 weights to about 1e-3; int8 can be far off on a
# badly calibrated model yet still useful, so only garbage (beyond the largest output) fails there.
FLOAT32 = QuantizationMode(
    None, "none", "float32", "float32 weights and activations", optimize=False,
    wrong_relative_error=1e-3, rounding_relative_error=1e-4,
)
DYNAMIC = QuantizationMode(
    "dynamic", "dynamic", "dynamic", "int8 weights, float activations; no data needed", optimize=True,
    per_channel_applies=True,
)
INT8 = QuantizationMode(
    "int8", "int8", "int8", "int8 weights and activations; needs representative data", optimize=True,
    full_integer=True, io_dtypes=IO_DTYPES, per_channel_applies=True,
)
FLOAT16 = QuantizationMode(
    "float16", "float16", "float16", "float16 weights", optimize=True, supported_types=("float16",),
    wrong_relative_error=5e-2,
)

MODES = {mode.name: mode for mode in (FLOAT32, DYNAMIC, INT8, FLOAT16)}


def resolve(name, argument="quantization", caller="to_tflite"):
    """The ``QuantizationMode`` called ``name`` (a mode passes through); ``ValueError`` naming the allowed values.

    Example:

    ```python
    resolve(None).label  # 'float32'
    resolve("int4")      # ValueError: to_tflite: `quantization` must be one of (None, 'dynamic', ...
    ```
    """
    if isinstance(name, QuantizationMode):
        return name
    if isinstance(name, str) or name is None:
        mode = MODES.get(name)
        if mode is not None:
            return mode
    raise ValueError(f"{caller}: `{argument}` must be one of {tuple(MODES)}. Received: {name!r}.")


def check_io_dtype(mode, io_dtype, caller="to_tflite"):
    """Raises ``ValueError`` unless ``mode`` allows ``io_dtype``."""
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"{caller}: `io_dtype` must be one of {IO_DTYPES}. Received: {io_dtype!r}.")
    if io_dtype not in mode.io_dtypes:
        allowing = [m.argument for m in MODES.values() if io_dtype in m.io_dtypes]
        raise ValueError(
            f"{caller}: io_dtype={io_dtype!r} needs {' or '.join(allowing)} (integer inputs and outputs exist "
            f"only in full-integer models). Received: {mode.argument}."
        )
