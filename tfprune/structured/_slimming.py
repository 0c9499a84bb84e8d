"""Network slimming's sparsity penalty on BatchNormalization scales."""

import numbers

import keras

from tfprune._common.compiling import compile_like


def set_slimming_penalty(model, l1=1e-4):
    """Returns a copy of ``model`` with an L1 penalty ``l1 * sum|gamma|`` on every BatchNormalization.

    Liu, Li, Shen, Huang, Yan and Zhang, "Learning Efficient Convolutional Networks through
    Network Slimming", ICCV 2017: training with this penalty drives the scale factors of
    unimportant channels toward zero, then channels are pruned by |gamma| (``bn_scale``,
    with ``scope="global"`` for the paper's global percentile) and the network fine-tuned.
    The paper uses lambda = 1e-4 (1e-5 for some networks).

    Implementation: ``gamma_regularizer=keras.regularizers.L1(l1)`` on every
    BatchNormalization with ``scale=True``. The paper's code adds ``lambda * sign(gamma)`` to
    gamma's gradient before the optimizer step; the gradient of this penalty is exactly that,
    so any optimizer sees the same update, and the penalty is a built-in, serializable
    regularizer (it shows in ``model.losses`` and survives ``model.save``) rather than a
    callback one might forget. Weights are copied; the copy is compiled like the original
    when the original was compiled.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        l1: lambda, >= 0. ``0`` or ``None`` returns a copy without the penalty (for
            fine-tuning after pruning).

    Returns:
        A new model.

    Example:

    ```python
    sparse = tfprune.structured.set_slimming_penalty(model, l1=1e-4)
    sparse.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    sparse.fit(x_train, y_train, epochs=5)
    slim = tfprune.structured.prune(sparse, "bn_scale", ratio=0.6, scope="global")
    slim = tfprune.structured.set_slimming_penalty(slim, l1=0)   # fine-tune without it
    ```
    """
    if l1 is None:
        l1 = 0.0
    if isinstance(l1, bool) or not isinstance(l1, numbers.Real) or l1 < 0:
        raise ValueError(f"`l1` must be a number >= 0 (the paper uses 1e-4), got {l1!r}.")
    found = []

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            config["gamma_regularizer"] = keras.regularizers.L1(float(l1)) if l1 > 0 else None
            found.append(layer.name)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    if l1 > 0 and not found:
        raise ValueError(
            f"Model '{model.name}' has no BatchNormalization layer with scale=True, so there is no gamma to "
            "penalize. Network slimming needs BatchNormalization after the layers to prune."
        )
    copy.set_weights(model.get_weights())
    compile_like(model, copy, "set_slimming_penalty")
    return copy
