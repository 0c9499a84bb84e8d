"""Where each benchmark writes its section of RESULTS.md (run.py assembles them)."""

import pathlib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def write_section(name, lines):
    """Writes ``lines`` as ``results/<name>.md`` and says where."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
