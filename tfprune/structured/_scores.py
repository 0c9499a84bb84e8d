"""Public channel-scoring functions.

Convention: every score is an importance, **higher = more important = kept**. A score
dict maps the name of each layer that can lose output channels (Conv, Dense, SeparableConv,
ConvTranspose, not model outputs) to a float32 numpy array with one entry per output
channel of that layer. Scores that the papers rank the other way are converted: APoZ is
returned as ``1 - APoZ``. Entropy is already "low = prune".
"""

from tfprune._graph import ChannelAnalysis
from tfprune.structured import _activation_scores, _criteria, _weight_scores

BUILT_IN = (
    _weight_scores.L1Norm, _weight_scores.L2Norm, _weight_scores.FPGM, _weight_scores.BNScale,
    _activation_scores.APoZ, _activation_scores.Entropy, _activation_scores.Taylor,
)
for _criterion in BUILT_IN:
    _criteria.register_criterion(_criterion)
METHODS = tuple(c.name for c in BUILT_IN)  # the built-in names; ``criteria()`` lists all


def scores_for(analysis, method, data=None, batch_size=64, bins=100, loss=None, verbose=1):
    criterion = _criteria.get(method)
    if not criterion.needs_data:
        return _criteria.check_scores(analysis, method, criterion.score(analysis))
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"`bins` must be an integer >= 2, got {bins!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    scores = _activation_scores.activation_scores(
        analysis, [criterion], data, batch_size=batch_size, bins=bins, loss=loss, verbose=verbose
    )[method]
    return _criteria.check_scores(analysis, method, scores)


def channel_scores(model, method, data=None, *, batch_size=64, bins=100, loss=None, verbose=1):
    """Scores every output channel of every layer that can lose channels.

    Higher = more important, for every method. See the function of the same name as
    ``method`` (``l1_norm``, ``l2_norm``, ``fpgm``, ``bn_scale``, ``apoz``, ``entropy``,
    ``taylor``) for its definition and paper.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        method: one of the names above, or the name of a criterion added with
            ``register_criterion`` (``criteria()`` lists them all).
        data: calibration data for ``apoz``, ``entropy`` and ``taylor``, in any form
            ``model.fit`` takes: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``, where ``x`` is an
            array, a list of arrays (one per model input, in the order of ``model.inputs``) or a
            dict keyed by input name; or a ``tf.data.Dataset`` or any iterable of such batches.
            A list or tuple is read as Keras reads it, by comparing it with the model's inputs:
            for a model with ``n > 1`` inputs, ``n`` arrays are ``x`` (so ``[x1, x2]`` is the two
            inputs, never ``(x, y)``); otherwise 1 to 3 items are ``(x, y, sample_weight)``. A
            list is one in-memory structure, never a list of batches (pass a dataset or a
            generator for batches). Labels are needed for ``taylor`` only; sample weights scale
            each image's loss in ``taylor`` and are ignored by ``apoz`` and ``entropy``. Every
            batch of every input is checked against the model's input shapes. Ignored by the
            weight-based methods.
        batch_size: batch size when ``data`` is given as arrays.
        bins: histogram bins for ``entropy``.
        loss: loss for ``taylor`` (default: the compiled loss).
        verbose: 1 shows a ``keras.utils.Progbar`` over the calibration batches, 0 is silent.

    Returns:
        ``{layer_name: np.ndarray of shape (output_channels,)}``. ``{}`` when no layer of the
        model can lose channels; the data-based methods then also warn (after checking the
        data's first batch) instead of running the calibration pass.

    Raises:
        ValueError: ``data`` is missing, empty, or does not match the model's inputs (the
            message names the input); ``taylor`` without labels or a loss.
        TypeError: ``data`` is none of the forms above.

    Example:

    ```python
    scores = tfprune.structured.channel_scores(model, "apoz", data=x_train[:1000])
    two_inputs = tfprune.structured.channel_scores(
        model2, "apoz", data={"image": images[:500], "meta": meta[:500]})
    weakest = {name: np.argsort(s)[:4] for name, s in scores.items()}
    ```
    """
    return scores_for(ChannelAnalysis(model), method, data, batch_size, bins, loss, verbose)


def l1_norm(model):
    """L1 norm of each filter: the sum of |weights| that make an output channel.

    Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient ConvNets",
    ICLR 2017. The filter of output channel ``o`` is ``kernel[..., o]`` (all input
    channels and kernel positions); for SeparableConv the pointwise kernel, for
    Conv*Transpose ``kernel[..., o, :]``. Higher = more important.

    Args:
        model: a built Sequential or Functional Keras 3 model.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}``.

    Example:

    ```python
    scores = tfprune.structured.l1_norm(model)
    ```
    """
    return channel_scores(model, "l1_norm")


def l2_norm(model):
    """L2 norm of each filter (the L2 variant in Li et al. 2017, "Pruning Filters for Efficient ConvNets").

    Filters as in ``l1_norm``. Higher = more important.

    Args:
        model: a built Sequential or Functional Keras 3 model.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}``.

    Example:

    ```python
    scores = tfprune.structured.l2_norm(model)
    ```
    """
    return channel_scores(model, "l2_norm")


def fpgm(model):
    """Filter Pruning via Geometric Median: each filter's summed distance to the layer's others.

    He, Liu, Wang, Hu and Yang, "Filter Pruning via Geometric Median for Deep Convolutional
    Neural Networks Acceleration", CVPR 2019. A filter close to the geometric median of its
    layer is the one best represented by the others; the score is
    ``sum_j ||F_i - F_j||_2`` (the paper's relaxation, eq. 6), so small = near the median =
    pruned first. Higher = more important.

    Args:
        model: a built Sequential or Functional Keras 3 model.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}``.

    Example:

    ```python
    scores = tfprune.structured.fpgm(model)
    ```
    """
    return channel_scores(model, "fpgm")


def bn_scale(model):
    """|gamma| of the BatchNormalization after each channel (network slimming).

    Liu, Li, Shen, Huang, Yan and Zhang, "Learning Efficient Convolutional Networks through
    Network Slimming", ICCV 2017. Train with ``set_slimming_penalty`` first so that
    unimportant gammas go to zero. When a channel passes through several BatchNormalization
    layers (e.g. DenseNet's concatenations, or BN before and after a depthwise conv), the
    mean |gamma| over them is used; layers none of whose channels pass through a
    BatchNormalization are left out. Higher = more important.

    Args:
        model: a built Sequential or Functional Keras 3 model.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}``.

    Example:

    ```python
    scores = tfprune.structured.bn_scale(model)
    ```
    """
    return channel_scores(model, "bn_scale")


def apoz(model, data, *, batch_size=64, verbose=1):
    """One minus the Average Percentage of Zeros of each channel's post-activation output.

    Hu, Peng, Tai and Tang, "Network Trimming: A Data-Driven Neuron Pruning Approach towards
    Efficient Deep Architectures", arXiv:1607.03250, 2016.
    ``APoZ_c = sum_k sum_j 1[O_c,j(k) = 0] / (N * M)`` over N calibration images and M
    spatial positions. High APoZ means prune, so the returned importance is ``1 - APoZ``.

    The observed tensor is the layer's output if the layer has its own activation;
    otherwise the output of the BatchNormalization that follows it and of the activation
    layer after that (e.g. Conv -> BN -> ReLU: the ReLU's output). Where the chain stops
    before an activation (e.g. the BN before a residual Add), the tensor where it stops.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        data: calibration inputs in any form ``model.fit`` takes (``x``, ``(x, y)``,
            ``(x, y, sample_weight)`` with ``x`` an array, a list per input or a dict by input
            name, a dataset or an iterable of batches); see ``channel_scores``.
        batch_size: batch size for array data.
        verbose: 1 shows a progress bar.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}`` of ``1 - APoZ``.

    Example:

    ```python
    scores = tfprune.structured.apoz(model, x_train[:2000])
    ```
    """
    return channel_scores(model, "apoz", data, batch_size=batch_size, verbose=verbose)


def entropy(model, data, *, bins=100, batch_size=64, verbose=1):
    """Entropy of each channel's globally average-pooled post-activation output.

    Luo and Wu, "An Entropy-based Pruning Method for CNN Compression", arXiv:1706.05791,
    2017. Each image's output of a channel is average-pooled to one number; the N numbers
    are histogrammed into ``bins`` bins (m = 100 by default, as in the paper) and
    ``H = -sum p log p``. A channel whose output hardly changes from image to image carries
    little information: low entropy = prune, so the entropy is already an importance.

    Bin range: one range per layer (shared by its channels, so a near-constant channel
    really gets a low entropy), fixed from the first calibration batch as
    ``[min - span/2, max + span/2]`` with ``span = max - min``; later values outside fall
    into the edge bins. The observed tensor is chosen as for ``apoz``.

    Args:
        model: a built Sequential or Functional Keras 3 model.
        data: calibration inputs in any form ``model.fit`` takes (``x``, ``(x, y)``,
            ``(x, y, sample_weight)`` with ``x`` an array, a list per input or a dict by input
            name, a dataset or an iterable of batches); see ``channel_scores``.
        bins: number of histogram bins m.
        batch_size: batch size for array data.
        verbose: 1 shows a progress bar.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}`` of entropies in nats.

    Example:

    ```python
    scores = tfprune.structured.entropy(model, x_train[:2000], bins=100)
    ```
    """
    return channel_scores(model, "entropy", data, batch_size=batch_size, bins=bins, verbose=verbose)


def taylor(model, data, *, loss=None, batch_size=64, verbose=1):
    """First-order Taylor estimate of the loss change when a channel is removed.

    Molchanov, Tyree, Karras, Aila and Kautz, "Pruning Convolutional Neural Networks for
    Resource Efficient Inference", ICLR 2017. Per image, ``|mean over positions of
    a * dL/da|`` for the channel's post-activation output ``a`` (chosen as for ``apoz``),
    averaged over the images. Not normalised per layer (the paper l2-normalises each
    layer before ranking globally). Higher = more important.

    Args:
        model: a built Sequential or Functional Keras 3 model with one output.
        data: ``(x, y)`` or ``(x, y, sample_weight)`` with ``x`` an array, a list per input
            or a dict by input name, or a dataset / iterable of such batches; see
            ``channel_scores``. Sample weights scale each image's loss.
        loss: a Keras loss (name, function or ``keras.losses.Loss``); default: the compiled loss.
        batch_size: batch size for array data.
        verbose: 1 shows a progress bar.

    Returns:
        ``{layer_name: np.ndarray (output_channels,)}``. A model none of whose layers can lose
        channels (no Conv/Dense producer whose channels the graph can cut) gets ``{}`` and a
        warning naming the model, not an error, as the weight-based methods return ``{}``.

    Example:

    ```python
    scores = tfprune.structured.taylor(
        model, (x_train[:1000], y_train[:1000]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """
    return channel_scores(model, "taylor", data, batch_size=batch_size, loss=loss, verbose=verbose)
