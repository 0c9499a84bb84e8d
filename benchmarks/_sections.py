"""Shared by the benchmarks: where each writes its section of RESULTS.md, and how they load a tutorial."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def write_section(name, lines):
    """Writes ``lines`` as ``results/<name>.md`` and says where."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def load_tutorial(name):
    """Imports ``tutorials/<name>.py`` (a script, not a package) so a benchmark runs exactly what users run."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tutorials" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
