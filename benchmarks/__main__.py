"""Run the benchmarks and print each figure as a ratio against its same-run baseline."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import benchmarks
from benchmarks._common import Figure

ORDER = [
    "tiling",
    "pixels",
    "embedding",
    "grid",
    "training",
    "search",
    "quality",
    "provenance",
    "batch",
    "serve",
]


def stages() -> list[str]:
    found = [
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_")
    ]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or 0.01 <= abs(x) < 1e5:
        return f"{x:,.3g}" if abs(x) < 10 else f"{x:,.1f}"
    return f"{x:.3e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("stage", nargs="*", help=f"stages to run (default: all of {stages()})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    chosen = args.stage or stages()
    unknown = sorted(set(chosen) - set(stages()))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {stages()}")
    figures: list[Figure] = []
    for stage in chosen:
        module = importlib.import_module(f"benchmarks.{stage}")
        t0 = time.perf_counter()
        print(f"== {stage}", flush=True)
        results = module.run(quick=args.quick)
        for f in results:
            ratio = f"x{fmt(f.ratio)}" if f.ratio is not None else ""
            base = f"vs {f.baseline_name} {fmt(f.baseline)}" if f.baseline_name else ""
            goal = f"(goal {f.goal})" if f.goal else ""
            print(f"  {f.name:<44} {fmt(f.value):>12} {f.unit:<10} {base:<40} {ratio:>8} {goal}")
            if f.note:
                print(f"      {f.note}")
        figures.extend(results)
        print(f"   [{stage}: {time.perf_counter() - t0:.1f} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps([f.as_dict() for f in figures], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
