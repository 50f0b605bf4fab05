"""The mini world: generated Python problems and a from-scratch reference model (solves and refines).

    from study.mini import ensure_reference, load_split
    path = ensure_reference("mini")          # artifacts/mini/mini/ (trained on first use, ~10 min on 2 cores)
    test = load_split("test", profile="mini")
"""

from study.mini.problems import generate_problems, load_split
from study.mini.train_reference import ensure_reference

__all__ = ["ensure_reference", "generate_problems", "load_split"]
