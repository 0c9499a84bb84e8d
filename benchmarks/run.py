"""Runs the benchmarks and assembles benchmarks/RESULTS.md from their sections.

Each benchmark writes its own section to benchmarks/results/<name>.md, naming
the command that produced it. This runner only orders and joins them, so a
section can be refreshed on its own:

    python benchmarks/run.py                  # run every benchmark, then assemble
    python benchmarks/run.py step_time        # run one, then assemble
    python benchmarks/run.py --assemble-only  # just rebuild RESULTS.md
"""

import argparse
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def assemble():
    sections = sorted((HERE / "results").glob("*.md"))
    header = [
        "# Benchmark results",
        "",
        "Every section below was written by the command it names; `python benchmarks/run.py` reruns",
        "them all and rebuilds this file. Speed figures are ratios measured side by side in one run,",
        "because these machines are noisy.",
        "",
    ]
    body = [s.read_text().rstrip() + "\n" for s in sections]
    (HERE / "RESULTS.md").write_text("\n".join(header) + "\n" + "\n".join(body))
    print(f"wrote {HERE / 'RESULTS.md'} from {len(sections)} sections")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run benchmarks and assemble RESULTS.md.")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--assemble-only", action="store_true")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not args.assemble_only:
        for name in args.names or BENCHMARKS:
            command = [sys.executable, str(HERE / f"bench_{name}.py")] + (["--quick"] if args.quick else [])
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=True)
    assemble()


if __name__ == "__main__":
    main()
