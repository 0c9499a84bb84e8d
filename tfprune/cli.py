"""The ``tfprune`` command: export a Keras model to TFLite, inspect a .tflite file, report sparsity.

Errors the user can fix (a missing file, a file that is not a model, bad
data, a file that fails verification) print one line on stderr and exit
with status 2, without a traceback.
"""

import argparse
import os
import pathlib
import sys

from tfprune._common.text import first_line
from tfprune.export import MODES

# The CLI's choices come from the export's quantization modes, its one list of them.
_BY_CLI_NAME = {mode.cli_name: mode for mode in MODES.values()}
_IO_DTYPES = tuple(dict.fromkeys(dtype for mode in MODES.values() for dtype in mode.io_dtypes))

EXIT_USAGE = 2

_EPILOG = """\
examples:
  tfprune export model.keras -o model.tflite
  tfprune export model.keras -o model_int8.tflite --quantize int8 --representative x_calib.npy
  tfprune export model.keras -o model.tflite --quantize dynamic --sparse false --json
  tfprune inspect model_int8.tflite
  tfprune inspect model_int8.tflite --json --no-run
  tfprune report model.keras

A .keras file saved while pruning (with tfprune wrappers) loads as well:
tfprune registers its classes before loading. .npy arrays are prepared as
for model.predict: e.g. MNIST pixels / 255 as float32, shape (n, 28, 28).
"""


class CommandError(Exception):
    """An error to report in one line, with exit status 2."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfprune",
        description="Export pruned Keras models to sparse, quantized TFLite files, and inspect them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    export = commands.add_parser(
        "export", help="convert a .keras model to a verified .tflite file",
        description="Convert a .keras model to .tflite, load it with the LiteRT interpreter (default "
                    "XNNPACK delegate and no delegates), compare it with Keras, then write it.",
        epilog="example:\n  tfprune export model.keras -o model.tflite --quantize int8 "
               "--representative x_calib.npy --sparse auto",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("model", help="a .keras file")
    export.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    export.add_argument("--quantize", choices=tuple(_BY_CLI_NAME), default=MODES[None].cli_name,
                        help=", ".join(f"{m.cli_name} ({m.description})" for m in MODES.values())
                        + " (default: %(default)s)")
    export.add_argument("--representative", metavar="NPY",
                        help=".npy array of 100-500 typical inputs, shape (n, *input_shape), for int8")
    export.add_argument("--samples", metavar="NPY",
                        help=".npy inputs to compare Keras and TFLite on (default: --representative, else random)")
    export.add_argument("--io-dtype", choices=_IO_DTYPES, default=_IO_DTYPES[0],
                        help="with --quantize int8: the dtype of the file's input and output (default: %(default)s)")
    export.add_argument("--sparse", choices=("auto", "true", "false"), default="auto",
                        help="sparse weight encoding: auto keeps it only if the default XNNPACK delegate "
                             "loads the file (default: %(default)s)")
    export.add_argument("--per-tensor", action="store_true",
                        help="one quantization scale per tensor instead of per channel (smaller small files)")
    export.add_argument("--allow-no-delegate", action="store_true",
                        help="write a file even if only an interpreter without the default delegates loads it")
    export.add_argument("--json", action="store_true", help="print the report as JSON")

    inspect = commands.add_parser(
        "inspect", help="report on a .tflite file: tensors, sparsity, operators, latency",
        description="Read a .tflite file's tensors and operators from the flatbuffer, then load and time it.",
        epilog="example:\n  tfprune inspect model.tflite --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("model", help="a .tflite file")
    inspect.add_argument("--no-run", action="store_true", help="read the file only; do not load or time it")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")

    report = commands.add_parser(
        "report", help="sparsity per layer of a .keras model",
        description="Count weights and nonzeros per layer of a .keras model (pruned, stripped or plain).",
        epilog="example:\n  tfprune report model.keras --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("model", help="a .keras file")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv=None):
    """Runs the ``tfprune`` command line; returns the exit status.

    Example:

    ```python
    from tfprune.cli import main
    main(["inspect", "model.tflite", "--json"])
    ```
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return {"export": _export, "inspect": _inspect, "report": _report}[args.command](args)
    except CommandError as err:
        return _fail(str(err))
    except (ValueError, OSError, RuntimeError) as err:
        # tfprune's own errors already say what was wrong and what to do.
        return _fail(_one_line(err))
    except KeyboardInterrupt:
        return 130


def _export(args):
    from tfprune.export import to_tflite

    _refuse_writing_over_inputs(args.output, {"the model": args.model, "--representative": args.representative,
                                              "--samples": args.samples})
    model = _load_keras(args.model)
    representative = _load_npy(args.representative, "--representative")
    samples = _load_npy(args.samples, "--samples")
    report = to_tflite(
        model, args.output,
        quantization=_BY_CLI_NAME[args.quantize],
        representative_data=representative,
        sparse={"auto": "auto", "true": True, "false": False}[args.sparse],
        io_dtype=args.io_dtype,
        per_channel=not args.per_tensor,
        sample_data=samples,
        require_default_delegate=not args.allow_no_delegate,
    )
    print(report.to_json(indent=2) if args.json else report)
    return 0


def _inspect(args):
    path = _existing_file(args.model)
    from tfprune.export import inspect_tflite

    report = inspect_tflite(path, run=not args.no_run)
    print(report.to_json(indent=2) if args.json else report)
    return 0


def _report(args):
    model = _load_keras(args.model)
    report = sparsity_report(model)
    print(report.to_json(indent=2) if args.json else report)
    return 0


def sparsity_report(model):
    """Per-layer sparsity of ``model``; the one place the CLI asks the library for it."""
    import tfprune

    return tfprune.sparsity_report(model)


# -- helpers -------------------------------------------------------------------


def _refuse_writing_over_inputs(output, inputs):
    """The output must not be one of the command's own input files, by name or through a link."""
    target = pathlib.Path(output)
    for what, name in inputs.items():
        if name is None:
            continue
        source = pathlib.Path(name)
        same = target.resolve() == source.resolve()
        if not same and target.exists() and source.exists():
            same = os.path.samefile(target, source)
        if same:
            raise CommandError(
                f"-o '{output}' is {what} ('{name}'); writing the .tflite there would destroy it. "
                "Choose another output file."
            )


def _existing_file(name):
    path = pathlib.Path(name)
    if path.is_dir():
        raise CommandError(f"'{name}' is a directory, not a file")
    if not path.exists():
        raise CommandError(f"no such file: '{name}'")
    return path


def _load_keras(name):
    path = _existing_file(name)
    import keras

    import tfprune  # noqa: F401 - registers PruneLowMagnitude so wrapped models load

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - Keras raises many types for a file that is not a model
        raise CommandError(
            f"cannot load '{name}' as a Keras model ({_one_line(err)}); expected a .keras file written by "
            "model.save()"
        ) from None


def _load_npy(name, option):
    if name is None:
        return None
    import numpy as np

    path = _existing_file(name)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, OSError, EOFError, ...
        raise CommandError(f"{option}: cannot read '{name}' as a .npy array ({_one_line(err)})") from None


def _one_line(err):
    return first_line(err, default=type(err).__name__)


def _fail(message):
    print(f"tfprune: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
