"""Run the benchmark suite: ``python -m benchmarks [--device cpu|cuda] [--quick] [--out FILE]
[names...]``.

Results go to ``benchmarks/results/<device>.json`` (``<device>-quick.json`` for ``--quick``),
one file per device holding every benchmark, with the machine that produced them; ``--out``
writes them elsewhere (a trial run that must not touch the committed file).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

NAMES = [
    "forward",
    "training",
    "floor",
    "memory",
    "gradients",
    "scaling",
    "equal_residual",
    "inexact",
    "compiled",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=NAMES, help=f"subset of {NAMES}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", help="result file (default: benchmarks/results/<device>.json)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {NAMES}")
    from .common import set_device, set_out

    set_device(args.device)
    set_out(args.out)
    from irn.experiments import meta

    info = meta(0.0)  # the commit that runs (irn's own checkout), clean or not, the machine
    begin, begin_cpu = time.perf_counter(), time.process_time()
    for name in args.names:
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        module.run(quick=args.quick)
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)\n")
    from .common import write_meta

    info.update(wall_time=round(time.perf_counter() - begin, 3),
                cpu_time=round(time.process_time() - begin_cpu, 3),
                benchmarks=list(args.names), quick=args.quick,
                command="python -m benchmarks " + " ".join(sys.argv[1:]))  # fmt: skip
    write_meta(info, quick=args.quick)


if __name__ == "__main__":
    main()
