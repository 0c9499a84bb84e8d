"""NISP: the importance of the final responses propagated backwards to every channel (Yu et al. 2018).

The walk goes over the channel graph in reverse topological order and keeps one importance
vector per tensor (one entry per position of its last axis). Each node maps the importance of
its output onto its inputs with the absolute values of its linear map; a tensor read by several
nodes (a residual fork) gets the sum of what each of them sends back.
"""

import warnings

import numpy as np

import keras

from tfprune._graph import ChannelAnalysis, family_of
from tfprune.structured._criteria import WeightCriterion, prunable, register_criterion

L = keras.layers


def _weights(layer):
    return {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}


def _kernel_matrix(kernel, input_axis, output_axis):
    """``(in, out)``: |kernel| summed over every axis but the input and output channels."""
    k = np.moveaxis(np.abs(kernel.astype(np.float64)), [input_axis, output_axis], [-2, -1])
    return k.reshape(-1, k.shape[-2], k.shape[-1]).sum(axis=0)


def _depthwise_back(kernel, out):
    """Depthwise kernel ``(..., in, multiplier)``: output ``c*m + j`` reads input ``c`` only."""
    m = _kernel_matrix(kernel, -2, -1)  # (in, multiplier)
    return (m * out.reshape(m.shape)).sum(axis=1)


def _follower_back(analysis, gnode, out):
    """A layer without weights of its own along the channels: positions matched through channel ids."""
    roots_out = analysis.root[analysis.ids[gnode.outputs[0]]]
    total = np.zeros(len(analysis.root))
    np.add.at(total, roots_out, out)
    present = np.zeros(len(analysis.root), dtype=bool)
    present[roots_out] = True
    ins = []
    for key in gnode.inputs:
        roots_in = analysis.root[analysis.ids[key]]
        if roots_in.size == 1 and not present[roots_in[0]] and out.size > 1:
            ins.append(np.array([out.sum()]))  # one channel broadcast over all of the output's
            continue
        # A root seen at several input positions (a tensor holding the same channels twice)
        # shares its importance among them, so that the sum over positions is kept.
        count = np.bincount(roots_in, minlength=len(analysis.root)).astype(np.float64)
        ins.append(np.where(present[roots_in], total[roots_in] / np.maximum(count[roots_in], 1), 0.0))
    return ins


def backward(analysis, index, gnode, out):
    """Importance of each input of node ``index`` from its output's; ``(None, reason)`` if it cannot be crossed."""
    layer = gnode.operation
    if not analysis.cuts_through(index):
        return None, analysis.opaque.get(gnode.name, f"'{gnode.name}' cannot be cut through")
    if len(gnode.outputs) != 1:
        return None, f"'{gnode.name}' has {len(gnode.outputs)} outputs"
    if isinstance(layer, L.BatchNormalization):
        w = _weights(layer)
        gamma = np.abs(w["gamma"]) if layer.scale else 1.0
        # Inference-time BN is x * gamma / sqrt(var + eps) + shift: its linear part is that scale.
        return [out * gamma / np.sqrt(w["moving_variance"] + layer.epsilon)], None
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return [_depthwise_back(_weights(layer)["kernel"], out)], None
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        w = _weights(layer)
        middle = _kernel_matrix(w["pointwise_kernel"], -2, -1) @ out
        return [_depthwise_back(w["depthwise_kernel"], middle)], None
    family = analysis.families[index]
    if family.produces:
        kernel = _weights(layer).get(family.kernel)
        if kernel is None:
            return None, f"'{gnode.name}' ({type(layer).__name__}) has no weight '{family.kernel}'"
        return [_kernel_matrix(kernel, family.input_axis, family.output_axis) @ out], None
    return _follower_back(analysis, gnode, out), None


def propagate(analysis, output_importance=None):
    """``(importance per tensor key, {node: reason} of the nodes the walk could not cross)``."""
    graph = analysis.graph
    importance = {}
    given = _output_importance(analysis, output_importance)
    for key, values in zip(graph.output_keys, given):
        importance[key] = importance.get(key, 0.0) + values
    stopped = {}
    for index in reversed(range(len(graph.nodes))):
        gnode = graph.nodes[index]
        reached = [key for key in gnode.outputs if key in importance]
        if not reached:
            continue  # nothing this node makes reaches an output through nodes the walk crossed
        ins, reason = backward(analysis, index, gnode, np.asarray(importance[reached[0]], dtype=np.float64))
        if ins is None:
            stopped[gnode.name] = reason
            continue
        for key, values in zip(gnode.inputs, ins):
            importance[key] = importance.get(key, 0.0) + values
    return importance, stopped


def _output_importance(analysis, given):
    graph = analysis.graph
    widths = [analysis.width(key) for key in graph.output_keys]
    if given is None:
        return [np.ones(w) for w in widths]
    values = [given] if len(widths) == 1 and np.ndim(given) == 1 else list(given)
    if len(values) != len(widths):
        raise ValueError(
            f"`output_importance` gives {len(values)} arrays; model '{analysis.model.name}' has {len(widths)} "
            "outputs: give one array per output."
        )
    checked = []
    for i, (v, w) in enumerate(zip(values, widths)):
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (w,) or not np.isfinite(v).all() or (v < 0).any():
            raise ValueError(
                f"`output_importance[{i}]` must be {w} finite, non-negative numbers (one per unit of output {i}); "
                f"got shape {v.shape}."
            )
        checked.append(v)
    return checked


def nisp_scores(analysis, output_importance=None, stacklevel=3):
    """``{prunable layer: importance of its output channels}``; warns about what the walk could not cross."""
    importance, stopped = propagate(analysis, output_importance)
    scores, unscored = {}, []
    for name in prunable(analysis):
        key = analysis.graph.nodes_by_name[name].outputs[0]
        if key in importance:
            scores[name] = np.asarray(importance[key], dtype=np.float32)
        else:
            unscored.append(name)
    if stopped:
        detail = "; ".join(f"{reason}" for reason in list(stopped.values())[:4])
        warnings.warn(
            f"nisp: the importance could not be propagated back through {len(stopped)} node(s) of model "
            f"'{analysis.model.name}' ({detail}). Channels reaching the outputs only through them get no score "
            f"and are kept{': ' + ', '.join(repr(n) for n in unscored) if unscored else ''}; channels with "
            "other paths to the outputs are scored from those paths only.",
            UserWarning, stacklevel=stacklevel,
        )
    return scores


class NISP(WeightCriterion):
    """Neuron Importance Score Propagation (Yu, Li, Chen, Lai, Morariu, Han, Gao, Lin and Davis,
    "NISP: Pruning Networks using Neuron Importance Score Propagation", CVPR 2018): the
    importance of the final responses propagated back, ``s_in = |W|^T s_out``. The final
    responses here are the model's outputs, each unit counting 1 (see ``tfprune.structured.nisp``).
    Higher = more important."""

    name = "nisp"

    def score(self, analysis):
        return nisp_scores(analysis, stacklevel=6)


def nisp(model, output_importance=None):
    """NISP: every channel's importance, propagated back from the final responses.

    Yu, Li, Chen, Lai, Morariu, Han, Gao, Lin and Davis, "NISP: Pruning Networks using Neuron
    Importance Score Propagation", CVPR 2018. The importance of a neuron is how much the
    final responses depend on it through the absolute values of the weights: for a layer
    ``y = W x``, ``s_x = |W|^T s_y`` (eq. 6 of the paper, applied layer by layer). Here:

    * Dense: ``s_in[i] = sum_o |W[i, o]| s_out[o]``; Conv: the same with ``|W|`` summed over the
      kernel's spatial positions; Conv*Transpose alike; DepthwiseConv: input channel ``c`` gets
      ``sum_j sum_positions |K[..., c, j]| s_out[c*m + j]``; SeparableConv: pointwise then depthwise;
    * BatchNormalization: its inference-time scale, ``|gamma| / sqrt(moving_variance + eps)``;
    * activations (ReLU, ...), dropout, pooling, padding, ``keras.ops`` element-wise and
      reduction nodes over other axes: passed through channel by channel (a nonlinearity's slope
      is taken as 1, as the paper does for ReLU; a Multiply's other factor is ignored);
    * Flatten / flattening Reshape: channel ``c`` gets the sum over its spatial positions;
    * a tensor read by several layers (a residual fork, Add's inputs): the importances sent
      back by each reader are added; Concatenate splits its output's importance among its inputs.

    The paper ranks the final response layer (the penultimate one) with Inf-FS feature
    selection on data; this data-free version starts from the model outputs with every unit
    counting 1 (or ``output_importance``), so the penultimate layer's neuron ``i`` gets
    ``sum_o |W_out[i, o]|``, the L1 norm of its outgoing weights. Biases are not used. Scores
    are comparable within a layer (each layer's scale differs), so prune with ``scope="layer"``.

    Layers the walk cannot cross (those ``tfprune.surgery`` cannot cut through: LayerNormalization,
    a nested model, ``ops.matmul``, ...) stop it, with a warning: channels whose only paths to
    the outputs go through them get no score, and ``prune`` keeps them.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        output_importance: importance of each output unit: an array ``(units,)`` for a model
            with one output, or a list of one array per output; default all ones.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}`` for every layer that can lose channels.

    Raises:
        ValueError: ``output_importance`` does not match the model's outputs, or the model is
            not built.

    Warns:
        UserWarning: the walk stopped at layers it cannot cross; the message names them and the
            layers left without a score.

    Example:

    ```python
    scores = tfprune.structured.nisp(model)
    smaller = tfprune.structured.prune(model, "nisp", ratio=0.5)   # the same scores, by name
    ```
    """
    return nisp_scores(ChannelAnalysis(model), output_importance)


register_criterion(NISP)
