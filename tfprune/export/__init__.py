"""Export to sparse, quantized TFLite (LiteRT) files that are checked before they are written.

``to_tflite`` converts a Keras 3 model (pruned, stripped or plain), loads
the result with the LiteRT interpreter as a phone would, compares it with
the Keras model, and only then moves it into place. ``inspect_tflite``
reports on any ``.tflite`` file from the file alone.

Converter path: Keras's own, ``keras.export.ExportArchive`` to a
SavedModel, then ``tf.lite.TFLiteConverter.from_saved_model``, the route
``model.export(format="litert")`` takes in Keras 3. It is not
``model.export`` itself because that enables ``SELECT_TF_OPS`` (TensorFlow
kernels a phone's LiteRT runtime does not have, so conversion "succeeds" and
the app fails) and writes straight to the final path. It is not
``from_concrete_functions`` either: on a Keras 3 model that leaves the
weights as resource variables (READ_VARIABLE ops), and int8 calibration
fails on them. Sparse storage comes from the converter's
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``.

Which sparse files work where (ai-edge-litert 2.3.0, measured by
``benchmarks/bench_export_size.py`` and the tests):

* full-integer int8 with weights pruned in blocks of 16 (Keras
  ``block_size=(16, 1)``: 16 consecutive inputs of one output): stored
  sparse, and the default XNNPACK delegate runs it. The smallest files that
  run everywhere. ``(4, 1)`` blocks work too, but the file is about twice
  as large.
* int8 with unstructured or ``(1, n)`` sparsity: stored sparse (expanded by
  DENSIFY operators at load time); XNNPACK runs the sparse convolutions but
  refuses a sparse FULLY_CONNECTED ("failed to delegate FULLY_CONNECTED
  node"), so ``sparse="auto"`` keeps the convolutions sparse and stores the
  fully connected weights dense, in one file.
* dynamic-range int8 with ``(16, 1)`` or ``(4, 1)`` blocks: XNNPACK loads
  the sparse file but computes NaN and garbage; without delegates it is
  right.
* float32: sparse files work everywhere. float16: unstructured sparse works
  everywhere; with ``(16, 1)`` blocks both configurations compute NaN.

Verification catches each of these, so ``sparse="auto"`` keeps the sparse
encoding only for the weights whose operator the default delegate runs
sparse with the Keras model's outputs (found by probing, per operator kind,
dtype and block shape), and stores the others dense, in one file. Recommended for small int8 files
that run: ``prune_low_magnitude(..., block_size=(16, 1))``, then
``to_tflite(..., quantization="int8", representative_data=...)``.

Example:

```python
import tfprune
from tfprune.export import to_tflite

pruned = tfprune.prune_low_magnitude(model, block_size=(16, 1), pruning_schedule=...)
# ... fit with tfprune.UpdatePruningStep() ...
report = to_tflite(pruned, "mnist.tflite", quantization="int8", representative_data=x_train[:300])
print(report)
```
"""

from tfprune.export import _pipeline
from tfprune.export._flatbuffer import FlatbufferError
from tfprune.export._pipeline import ExportError
from tfprune.export._quantization import MODES, QuantizationMode
from tfprune.export._report import ExportReport
from tfprune.export._runtime import TFLiteRun, run_tflite

__all__ = [
    "MODES",
    "ExportError",
    "ExportReport",
    "FlatbufferError",
    "QuantizationMode",
    "TFLiteRun",
    "inspect_tflite",
    "run_tflite",
    "to_tflite",
]


def to_tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    sparse="auto",
    *,
    io_dtype="float32",
    per_channel=True,
    fuse_lstm="auto",
    sample_data=None,
    batch_size=1,
    require_default_delegate=True,
    verify_samples=200,
    latency_runs=100,
    strip=False,
):
    """Converts a Keras model to a ``.tflite`` file, verifies it, and reports on it.

    The model may be pruned (``PruneLowMagnitude`` wrappers are stripped on a
    copy), stripped, or plain; it is never modified. The file is written to
    a temporary file next to ``path``, loaded with the LiteRT interpreter
    under the default XNNPACK delegate and without delegates, run on sample
    inputs and compared with the Keras model, and only then renamed to
    ``path``. A configuration *works* when the file loads, runs, and gives
    finite outputs no further from Keras than the largest output. If
    anything fails, nothing is left at ``path``.

    Sparse encoding (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``) stores only
    the nonzero blocks of pruned weights. With int8 weights the default
    XNNPACK delegate runs such a file only for full-integer models pruned in
    blocks along the input (``block_size=(16, 1)`` or ``(4, 1)``):

    * ``sparse="auto"`` (default) chooses per weight: it tries the sparse
      encoding and keeps it if the file works under the default delegate;
      otherwise it groups the sparse weights by the operator that reads
      them (with their dtype and block shape), runs a copy of the file
      keeping only one group sparse per group, and writes one file with
      the groups that ran kept sparse and the others stored dense (the
      converted flatbuffer rewritten: sparse values expanded, their
      DENSIFY operators dropped), verified like any export. With int8,
      convolutions stay sparse and an unstructured FULLY_CONNECTED goes
      dense. If no group runs sparse it converts again with dense weights.
      ``report.encodings`` says, per weight, which encoding it got and
      why; ``report.alternatives`` what the all-sparse file weighed.
    * ``sparse=True`` writes the sparse encoding or raises ``ExportError``
      if the default delegate refuses it. With
      ``require_default_delegate=False`` it writes the file anyway, with a
      ``RuntimeWarning``, if it works without delegates: it then runs only
      on an interpreter created without the default delegates.
    * ``sparse=False`` stores every weight dense.

    Args:
        model: a built Sequential or Functional ``keras.Model`` with fixed
            input shapes (the batch dimension aside).
        path: where to write the ``.tflite`` file. Its folder must exist.
            The file gets the permissions a normal write gives (an existing
            file keeps its mode); a symbolic link is written through (its
            target is replaced, the link stays).
        quantization: ``None`` (float32), ``"dynamic"`` (int8 weights,
            float activations; no data needed), ``"int8"`` (int8 weights and
            activations; needs ``representative_data``) or ``"float16"``
            (float16 weights); or a ``QuantizationMode`` from ``MODES``,
            which describes each mode.
        representative_data: inputs prepared exactly as for
            ``model.predict``: an array of shape ``(n, *input_shape)`` (one
            array per input, as a list or a dict keyed by input name, for
            several inputs). ``"int8"`` calibrates activation ranges on the
            first 500 samples; 100 to 500 typical inputs are enough. Also
            used as ``sample_data`` when that is not given.
        sparse: ``"auto"``, ``True`` or ``False`` (see above).
        io_dtype: with ``"int8"`` only: ``"float32"`` (the file quantizes
            its input and dequantizes its output itself), ``"int8"`` or
            ``"uint8"`` (the app quantizes with the input tensor's scale and
            zero point; see ``export/android/README.md``).
        per_channel: with ``"int8"`` or ``"dynamic"``: one scale per output
            channel (the converter's default, most accurate). ``False`` uses
            one scale per tensor, which on small sparse models saves 12
            bytes per output channel (an int8 LeNet-300-100 at 95% sparsity
            shrinks by a third).
        fuse_lstm: ``"auto"`` (default), ``True`` or ``False``. Keras 3
            traces an LSTM as a WHILE loop; with ``"auto"`` a model with
            LSTM layers that is a chain of common layers is rebuilt in
            ``tf_keras`` (Keras 2, installed with ``tfprune[tflite]``) with
            the same weights, so the converter emits the fused
            ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op; otherwise the report notes
            why not. ``True`` raises if that is impossible; ``False`` keeps
            the loop.
        sample_data: inputs to compare Keras and TFLite on (default:
            ``representative_data``, else random values in [0, 1)).
        batch_size: the batch dimension of the file's inputs; phones run 1.
        require_default_delegate: raise ``ExportError`` when the file does
            not work under the default XNNPACK delegate (default). ``False``
            writes such a file with a warning if it works without delegates.
        verify_samples: how many samples of ``sample_data`` to compare.
        latency_runs: how many invokes to time per configuration (0: none).
        strip: drop what the runtime never reads (the converter's metadata,
            the model description, the names of inner tensors; inputs and
            outputs keep theirs), about 1 KB on a small model. The
            stripped file is verified too, and kept only if it runs exactly
            as the unstripped one. Default ``False``: names help debugging.

    Returns:
        An ``ExportReport`` of the written file.

    Raises:
        ValueError: an argument, the data or a layer is not supported; the
            message names it and says what to do.
        ExportError: the converted file failed verification; nothing is
            written.
        OSError: ``path`` cannot be written (missing folder, a directory,
            no permission).

    Example:

    ```python
    from tfprune.export import to_tflite

    report = to_tflite(
        pruned_model, "mnist_int8.tflite", quantization="int8",
        representative_data=x_train[:300],  # pixels / 255, float32
    )
    print(report)  # sizes, per-tensor storage, latency with and without XNNPACK
    assert report.works_by_default
    ```
    """
    return _pipeline.export(
        model, path, quantization, representative_data, sparse, io_dtype=io_dtype, per_channel=per_channel,
        fuse_lstm=fuse_lstm, sample_data=sample_data, batch_size=batch_size,
        require_default_delegate=require_default_delegate, verify_samples=verify_samples,
        latency_runs=latency_runs, strip=strip,
    )


def inspect_tflite(path, run=True, latency_runs=100):
    """Reports on a ``.tflite`` file from the file alone.

    Reads tensors (shape, dtype, quantization, dense or sparse storage,
    nonzero count) and operators from the flatbuffer, then, with
    ``run=True``, loads the file under the default XNNPACK delegate and
    without delegates, runs it on random inputs and times it. The file may
    come from anywhere: it is loaded and run in a child process under a
    memory limit and a timeout, so an interpreter that crashes or hangs on
    it becomes that configuration's error in the report.

    Args:
        path: a ``.tflite`` file.
        run: also load and run the file (``False``: read it only).
        latency_runs: invokes to time per configuration.

    Returns:
        An ``ExportReport`` (``agreement`` is empty: there is no Keras model
        to compare with).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FlatbufferError: (a ``ValueError``) the file is not a TFLite
            flatbuffer, is truncated or corrupt, or declares a tensor of
            more than ``MAX_TENSOR_BYTES`` (2 GiB); the message names the
            file and the part that is wrong.

    Example:

    ```python
    report = tfprune.export.inspect_tflite("mnist_int8.tflite")
    print(report)
    [t["name"] for t in report.tensors if t["storage"] == "sparse"]
    ```
    """
    return _pipeline.inspect(path, run=run, latency_runs=latency_runs)
