"""Compiling a copy of a model like the original, with a fresh optimizer."""

import warnings

import keras


def compile_like(source, target, caller):
    """Compiles ``target`` with ``source``'s optimizer settings, loss and metrics, if ``source`` is compiled.

    The optimizer is a new one from the same config and is not built, so ``target`` carries no
    optimizer state (moments, iteration count) and its saved file holds only its weights.
    ``keras.Model.compile_from_config`` would build the optimizer's variables at once.

    Args:
        source: the model whose compile settings are copied.
        target: the model to compile.
        caller: the public function's name, for the warning if the settings do not deserialize.

    Example:

    ```python
    compile_like(pruned, stripped, "strip_pruning")
    ```
    """
    config = source.get_compile_config() if getattr(source, "compiled", False) else None
    if not config:
        return
    try:
        target.compile(**keras.saving.deserialize_keras_object(config))
    except Exception as err:  # custom losses or metrics that do not deserialize
        warnings.warn(
            f"{caller}: the new model could not be compiled like '{source.name}' ({type(err).__name__}: {err}); "
            "compile it yourself.", UserWarning, stacklevel=3,
        )
