"""The mini world: generated Python problems and a from-scratch reference model (solves and refines).

    from study.mini import ensure_reference, load_split
    path = ensure_reference("mini")          # models/mini/mini/ (committed), else artifacts/mini/mini/ (trained once)
    test = load_split("test", profile="mini")
"""

from study.mini.problems import generate_problems, load_split
from study.mini.train_reference import ensure_reference, find_reference

__all__ = ["ensure_reference", "find_reference", "generate_problems", "load_split"]
