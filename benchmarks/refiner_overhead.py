"""The online refiner's overhead: DAPO vs DAPO+dynamic, same config and seed, interleaved A B A B in one process.

    python benchmarks/refiner_overhead.py                          # mini:mini, 3 repeats x 5 steps
    python benchmarks/refiner_overhead.py --repeats 5 --steps 10 --trl
    python benchmarks/refiner_overhead.py --smoke --repeats 1 --steps 1

Same as ``python -m study bench refiner-overhead ...``; the logic lives in ``study.bench``. Prints per-phase
times (median over repeats), the dynamic/DAPO step-time ratio (min/median/max) and, last, ``ratio <dynamic/dapo>``.
"""

from __future__ import annotations

import sys

from study.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "refiner-overhead", *sys.argv[1:]]))
