"""The documentation site builds with `mkdocs build --strict`: no broken links, every API docstring parses."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("prune_low_magnitude", "dynamic_surgery", "to_tflite", "remove_channels", "plot_sparsity"):
        assert name in api
    assert "Converts a Keras model to a" in api  # docstrings rendered, not just headings


def _architecture():
    return (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _listed_modules(page):
    """Paths of the modules drawn in the layer tree, e.g. 'tfprune/_graph/channels.py'."""
    tree = page.split("```", 2)[1]
    listed, stack = [], []
    for line in tree.splitlines():
        match = re.search(r"─ ([\w.]+/?)", line)
        if not match:
            continue
        depth = line.index(match.group(0)) // 4  # '   ├─ x' is depth 1, '   │   ├─ x' depth 2
        name = match.group(1)
        del stack[depth - 1:]
        if name.endswith("/"):
            stack.append(name)
        elif name.endswith(".py") and name != "__init__.py":
            listed.append("tfprune/" + "".join(stack) + name)
    return listed


def test_architecture_tree_lists_every_module_and_only_real_ones():
    listed = set(_listed_modules(_architecture()))
    real = {str(p.relative_to(ROOT)) for p in (ROOT / "tfprune").rglob("*.py") if p.name != "__init__.py"}
    assert not (real - listed), f"docs/ARCHITECTURE.md does not draw {sorted(real - listed)}"
    assert not (listed - real), f"docs/ARCHITECTURE.md draws modules that do not exist: {sorted(listed - real)}"


def test_architecture_names_one_owner_per_concept():
    page = _architecture()
    section = page.split("## Who owns what", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in row] for row in rows[2:]]  # skip the header and its rule
    assert len(rows) >= 10
    concepts = [row[0] for row in rows]
    assert len(concepts) == len(set(concepts)), "a concept is listed twice"
    for concept, owner, *_ in rows:
        owners = re.findall(r"`(tfprune/[\w/]+\.py)`", owner)
        assert len(owners) == 1, f"{concept!r} must name exactly one owner module, got {owner!r}"
        assert (ROOT / owners[0]).is_file(), f"{concept!r}: owner {owners[0]} does not exist"
