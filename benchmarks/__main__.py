"""Run the benchmark suite: ``python -m benchmarks [--quick] [--suffix S] [names...]``."""

from __future__ import annotations

import argparse
import importlib
import time

NAMES = ["forward", "training", "memory", "gradients", "scaling"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=NAMES, help=f"subset of {NAMES}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (<2 min)")
    args = parser.parse_args()
    for name in args.names:
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        module.run(quick=args.quick)
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)\n")


if __name__ == "__main__":
    main()
