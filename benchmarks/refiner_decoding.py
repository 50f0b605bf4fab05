"""The refiner's decoding on one step's refine prompts: batched greedy (ours) vs one row at a time vs transformers'
prompt-lookup decoding (drafts from n-grams of the prompt, i.e. of the candidate the refiner mostly copies).

    python benchmarks/refiner_decoding.py                  # mini:mini, 4 problems x 8 samples, 3 repeats
    python benchmarks/refiner_decoding.py --smoke --repeats 1

Same as ``python -m study bench refiner-decoding ...``; the logic lives in ``study.bench.refiner_decoding``.
"""

from __future__ import annotations

import sys

from study.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "refiner-decoding", *sys.argv[1:]]))
