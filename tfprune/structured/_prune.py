"""Score, select and remove channels in one call; and the iterative recipe."""

import warnings

from tfprune.structured import _scores, _select
from tfprune.structured._flops import flops_report
from tfprune._graph import ChannelAnalysis, cut_report, rebuild_model


def _scores_of(analysis, method, data, batch_size, bins, loss, verbose):
    if isinstance(method, dict):
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"`method` must be a method name ({', '.join(_scores.METHODS)}) or a dict of scores "
            f"{{layer_name: array}}; got {type(method).__name__}."
        )
    return _scores.scores_for(analysis, method, data, batch_size, bins, loss, verbose)


def select_channels(model, scores, ratio, *, scope="layer", min_channels=1):
    """Chooses the lowest-scoring channels to remove.

    Coupled layers (e.g. the convolutions feeding one residual stream) must lose the same
    channels, so each shared channel is ranked by the **mean** of its members' scores.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        scores: ``{layer_name: array}``, higher = more important (as ``channel_scores``
            returns).
        ratio: fraction in [0, 1) of channels to remove; with ``scope="layer"`` also a dict
            ``{layer_name: fraction}`` to prune only those layers (and their coupled groups).
        scope: ``"layer"``: every group loses ``round(ratio * channels)`` channels;
            ``"global"``: one threshold across all scored channels (the network-slimming
            percentile of |gamma|), so layers lose different fractions.
        min_channels: every layer keeps at least this many channels, whatever the ratio.

    Returns:
        ``{layer_name: [channel indices]}`` for ``tfprune.surgery.remove_channels``; every
        member of a coupled group is listed.

    Example:

    ```python
    scores = tfprune.structured.bn_scale(model)
    cut = tfprune.structured.select_channels(model, scores, 0.6, scope="global", min_channels=4)
    smaller = tfprune.surgery.remove_channels(model, cut)
    ```
    """
    analysis = ChannelAnalysis(model)
    removed = _select.select_unions(analysis, scores, ratio, scope, min_channels)
    return _select.unions_to_channels(analysis, removed)


def _cut(analysis, scores, ratio, scope, min_channels, caller):
    """``(smaller model, StructuredReport, removed unions)``; warns when nothing could be cut."""
    removed, why = _select.select(analysis, scores, ratio, scope, min_channels)
    report = cut_report(analysis, removed, why)
    if not removed:
        reasons = {}
        for name, reason in report.left_alone.items():
            if name in analysis.producers:
                reasons.setdefault(reason, []).append(name)
        detail = "; ".join(f"{', '.join(repr(n) for n in names[:3])}{', ...' if len(names) > 3 else ''}: {reason}"
                           for reason, names in list(reasons.items())[:4])
        warnings.warn(
            f"{caller} cut nothing from model '{analysis.model.name}', so the model returned is a plain copy. "
            f"Why each layer kept its channels: {detail or 'the model has no Conv or Dense layer'}. "
            "Pass return_report=True for the full list.",
            UserWarning, stacklevel=3,
        )
    return rebuild_model(analysis, removed), report, removed


def prune(model, method="l1_norm", ratio=0.5, data=None, *, scope="layer", min_channels=1,
          batch_size=64, bins=100, loss=None, verbose=1, return_report=False):
    """Scores channels, removes the weakest, and returns the smaller model.

    One call for ``channel_scores`` + ``select_channels`` + ``tfprune.surgery.remove_channels``.
    Methods and papers: ``l1_norm``, ``l2_norm`` (Li et al. 2017), ``fpgm`` (He et al. 2019),
    ``bn_scale`` (network slimming, Liu et al. 2017), ``apoz`` (Hu et al. 2016), ``entropy``
    (Luo & Wu 2017), ``taylor`` (Molchanov et al. 2017): see each function. The original model
    is not modified; the new one is compiled like it if it was compiled. Fine-tune afterwards.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        method: a method name, or a dict of precomputed scores ``{layer_name: array}``.
        ratio: fraction in [0, 1) of channels to remove, or ``{layer_name: fraction}``.
        data: calibration data for ``apoz``, ``entropy`` (inputs) and ``taylor`` (``(x, y)``).
        scope: ``"layer"`` or ``"global"`` (see ``select_channels``).
        min_channels: channels every layer keeps at least.
        batch_size: calibration batch size (see ``channel_scores``).
        bins: histogram bins of ``entropy`` (see ``channel_scores``).
        loss: the loss ``taylor`` differentiates (see ``channel_scores``).
        verbose: 1 shows a progress bar while scoring.
        return_report: also return a ``StructuredReport``: the channels cut per layer and the
            layers left alone, each with the reason.

    Returns:
        A new, smaller ``keras.Model``; with ``return_report=True``, ``(model, report)``.

    Warns:
        UserWarning: nothing could be cut (every channel blocked, ``min_channels`` reached, a
            ratio too small to remove one channel, ...); the message says why, per layer.

    Example:

    ```python
    smaller = tfprune.structured.prune(model, "apoz", ratio=0.5, data=x_train[:2000])
    smaller.fit(x_train, y_train, epochs=2)       # fine-tune
    print(tfprune.structured.compare(model, smaller))

    smaller, report = tfprune.structured.prune(model, ratio=0.5, return_report=True)
    print(report)                                 # channels cut per layer; who was left alone and why
    ```
    """
    analysis = ChannelAnalysis(model)
    scores = _scores_of(analysis, method, data, batch_size, bins, loss, verbose)
    smaller, report, _ = _cut(analysis, scores, ratio, scope, min_channels, "structured.prune")
    return (smaller, report) if return_report else smaller


def iterative_prune(model, method="l1_norm", ratio_per_step=0.2, steps=3, *, fine_tune=None, data=None,
                    scope="layer", min_channels=1, verbose=1, **score_kwargs):
    """The iterative recipe: score, remove a fraction, fine-tune, repeat.

    Li et al. 2017 and Molchanov et al. 2017 both prune a little at a time and let the
    network recover in between; after ``steps`` steps a layer keeps about
    ``(1 - ratio_per_step) ** steps`` of its channels. Scores are recomputed on the
    fine-tuned model at every step.

    Args:
        model: a built Sequential or Functional Keras 3 model (compile it when ``fine_tune``
            is a dict; each smaller model is compiled like it, with a fresh optimizer).
        method: a method name (see ``prune``).
        ratio_per_step: fraction in [0, 1) of the *current* channels removed at each step.
        steps: number of score-remove-fine-tune rounds (>= 1).
        fine_tune: ``None`` (no fine-tuning), a dict of ``model.fit`` keyword arguments, or a
            callable ``fine_tune(model) -> model or None`` that trains the model in place or
            returns a new one.
        data: calibration data for data-based methods.
        scope: ``"layer"`` or ``"global"`` (see ``select_channels``).
        min_channels: channels every layer keeps at least (see ``select_channels``).
        verbose: 1 prints one line per step.
        **score_kwargs: ``batch_size``, ``bins``, ``loss`` for the scoring.

    Returns:
        ``(model, history)``: the final model and one dict per step with ``params``, ``flops``,
        ``removed`` (channel unions removed at that step) and ``report`` (that step's
        ``StructuredReport``: channels cut per layer, layers left alone and why).

    Example:

    ```python
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    small, history = tfprune.structured.iterative_prune(
        model, "l1_norm", ratio_per_step=0.3, steps=3,
        fine_tune=dict(x=x_train, y=y_train, epochs=1, batch_size=128))
    print(history[-1]["report"])   # what the last step cut
    ```
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}.")
    _select._check_ratio(ratio_per_step, "ratio_per_step")
    if not (fine_tune is None or isinstance(fine_tune, dict) or callable(fine_tune)):
        raise TypeError("`fine_tune` must be None, a dict of model.fit arguments, or a callable(model).")
    if isinstance(fine_tune, dict) and not getattr(model, "compiled", False):
        raise ValueError("`fine_tune` is a dict of fit arguments but the model is not compiled: compile it first.")
    history = []
    for step in range(steps):
        analysis = ChannelAnalysis(model)
        scores = _scores_of(analysis, method, data, score_kwargs.get("batch_size", 64),
                            score_kwargs.get("bins", 100), score_kwargs.get("loss"), verbose)
        model, cut, removed = _cut(analysis, scores, ratio_per_step, scope, min_channels,
                                   f"structured.iterative_prune (step {step + 1})")
        removed = len(removed)
        if isinstance(fine_tune, dict):
            model.fit(**{"verbose": verbose, **fine_tune})
        elif fine_tune is not None:
            model = fine_tune(model) or model
        report = flops_report(model)
        history.append({"step": step + 1, "removed": removed, "params": report.total_params,
                        "flops": report.total_flops, "report": cut})
        if verbose:
            print(f"step {step + 1}/{steps}: removed {removed} channels; "
                  f"{report.total_params:,} params, {report.total_flops:,} FLOPs")
    return model, history
