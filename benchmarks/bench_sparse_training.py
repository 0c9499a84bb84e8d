"""Sparse networks on MNIST: where the sparsity goes, pruning at initialisation, lottery tickets, sparse training.

Each study is a module ``benchmarks/_study_<name>.py`` with ``TITLE`` (its
heading), ``MINUTES`` (the full run's expected length on 2 cores) and
``run(args) -> list of markdown lines`` (its rows, each with the paper's figure
beside tfprune's, and the plot it wrote under ``docs/images/``). This script
runs the studies asked for and writes ``results/sparse_training.md``, keeping
the sections of studies not rerun from the previous file, so one study can be
refreshed on its own:

    python benchmarks/bench_sparse_training.py                    # every study (about 30 minutes each at most)
    python benchmarks/bench_sparse_training.py --study allocation # one study
    python benchmarks/bench_sparse_training.py --quick            # a few hundred steps each: a smoke run

Seeds are fixed; MNIST comes from ``--data-dir`` or ``$TFPRUNE_DATA_DIR``.
"""

import argparse
import importlib
import pathlib
import re
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _sections import RESULTS, write_section  # noqa: E402

STUDIES = sorted(p.stem[len("_study_"):] for p in HERE.glob("_study_*.py"))
SECTION = "sparse_training"
MARK = "<!-- study: {} -->"


def previous_sections():
    """``{study: lines}`` from the last ``results/sparse_training.md``, to keep the studies not rerun."""
    path = RESULTS / f"{SECTION}.md"
    if not path.exists():
        return {}
    kept, current = {}, None
    for line in path.read_text().splitlines():
        found = re.fullmatch(MARK.format(r"(\w+)"), line)
        if found:
            current = found.group(1)
            kept[current] = []
        if current is not None:
            kept[current].append(line)
    return kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="append", choices=STUDIES,
                        help=f"run only these studies (repeatable; default: all of {', '.join(STUDIES)})")
    parser.add_argument("--quick", action="store_true", help="a short smoke run; its figures mean nothing")
    parser.add_argument("--data-dir", default=None, help="the MNIST idx files (default: $TFPRUNE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    chosen = args.study or STUDIES
    sections = previous_sections()
    for name in chosen:
        study = importlib.import_module(f"_study_{name}")
        print(f"== {name}: {study.TITLE} (full run about {study.MINUTES} min)", flush=True)
        start = time.time()
        lines = study.run(args)
        minutes = (time.time() - start) / 60
        command = f"python benchmarks/bench_sparse_training.py --study {name}" + (" --quick" if args.quick else "")
        sections[name] = [MARK.format(name), f"### {study.TITLE}", "",
                          f"`{command}` ({minutes:.1f} min on this machine).", "", *lines, ""]
    header = ["## Sparse networks on MNIST", "",
              "Full MNIST training and test sets; each study names its network and recipe, and puts the "
              "paper's figure beside tfprune's where the paper gives one. Seeds are fixed.", ""]
    body = [line for name in STUDIES if name in sections for line in sections[name]]
    write_section(SECTION, header + body)


if __name__ == "__main__":
    main()
