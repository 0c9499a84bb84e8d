"""The README's quick start runs exactly as written, and `import tfprune` stays free of tfmot."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _quick_start():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_quick_start_runs_verbatim(tmp_path, data_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFPRUNE_DATA_DIR=str(data_dir))
    proc = subprocess.run([sys.executable, "-c", _quick_start()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all parameters" in proc.stdout
    # LAMP splits 80% of the two kernels' weights between them: the big one pruned harder.
    kernel_rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("dense")]
    assert len(kernel_rows) == 2
    params = [int(row[4].replace(",", "")) for row in kernel_rows]
    nonzero = [int(row[5].replace(",", "")) for row in kernel_rows]
    assert abs(sum(nonzero) - 0.2 * sum(params)) <= 2
    assert nonzero[1] / params[1] > nonzero[0] / params[0]
    assert (tmp_path / "mnist_pruned.keras").exists()


def test_stripped_model_loads_without_tfprune(tmp_path):
    import keras
    import numpy as np

    import tfprune

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("sgd", "mse")
    pruned.fit(np.ones((4, 6)), np.ones((4, 4)), verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    tfprune.strip_pruning(pruned).save(tmp_path / "plain.keras")
    code = (
        "import sys, keras\n"
        "sys.modules['tfprune'] = None  # make any import of tfprune fail\n"
        f"m = keras.saving.load_model({str(tmp_path / 'plain.keras')!r})\n"
        "k = m.layers[0].kernel.numpy()\n"
        "print(type(m.layers[0]).__name__, int((k == 0).sum()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["Dense", "12"]


def test_import_does_not_import_tfmot_or_switch_keras():
    code = (
        "import os, sys, tfprune\n"
        "print('tensorflow_model_optimization' in sys.modules, 'tf_keras' in sys.modules,"
        " os.environ.get('TF_USE_LEGACY_KERAS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False", "None"]
