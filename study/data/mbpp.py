"""MBPP (Austin et al., 2021) from a local copy: ``mbpp.jsonl`` (974) or ``sanitized-mbpp.json`` (427).

Prompt (a choice, the bigcode harness's and EvalPlus's MBPP+ one): the problem statement followed by the first
test assert, in a docstring block, so the model learns the function name and argument order::

    \"\"\"
    Write a function to find the shared elements from the given two lists.
    assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)
    \"\"\"

Tests (asserts style): ``setup`` = ``test_setup_code`` (full set) or the ``test_imports`` lines (sanitized set);
``cases`` = every assert of ``test_list`` (the shown one included, as upstream), plus ``challenge_test_list`` when
``challenge=True``. ``reference`` = the dataset's ``code`` (``\\r\\n`` normalised to ``\\n``). ``entry_point`` is the
first function of the reference that the first test calls.

Splits of the full set by ``task_id`` (paper and bigcode harness): prompt 1-10, test 11-510, validation 511-600,
train 601-974; the sanitized file uses the same ranges (257 of its problems fall in test).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from study.data import default_mbpp_dir, read_jsonl, require_fields
from study.errors import UserError
from study.problems import Problem, TestSuite

SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
"""Inclusive task-id ranges of the standard MBPP splits."""
FULL_FILE, SANITIZED_FILE = "mbpp.jsonl", "sanitized-mbpp.json"


def mbpp_prompt(text: str, first_test: str) -> str:
    """The statement plus the first test, as a docstring block (see module docstring)."""
    return f'"""\n{text.strip()}\n{first_test.strip()}\n"""'


def entry_point_of(code: str, first_test: str) -> str:
    """The function the tests call: the first ``def`` of ``code`` that ``first_test`` calls, else the first name
    called in the test after ``assert`` that is not a builtin wrapper (``set``, ``math.isclose``, ...)."""
    defined = re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, re.M)
    called = re.findall(r"([A-Za-z_][\w.]*)\s*\(", first_test)
    for name in called:
        if name in defined:
            return name
    skip = {"set", "sorted", "list", "tuple", "str", "int", "float", "abs", "round", "len", "math.isclose",
            "isclose", "frozenset", "dict", "bool", "type", "all", "any", "sum", "max", "min"}
    for name in called:
        if name not in skip:
            return name.split(".")[-1]
    raise ValueError("no function call in the first test")


def _in_split(task_id: int, split: str) -> bool:
    lo, hi = SPLITS[split]
    return lo <= task_id <= hi


def mbpp_problem(rec: dict, *, sanitized: bool, challenge: bool = False, split: str = "") -> Problem:
    text = rec["prompt"] if sanitized else rec["text"]
    tests = list(rec["test_list"])
    if challenge and not sanitized:
        tests += list(rec.get("challenge_test_list") or [])
    setup = "\n".join(rec.get("test_imports") or []) if sanitized else rec.get("test_setup_code", "")
    code = rec["code"].replace("\r\n", "\n")
    return Problem(
        task_id=f"mbpp/{rec['task_id']}",
        prompt=mbpp_prompt(text, tests[0]),
        tests=TestSuite("asserts", tuple(t.replace("\r\n", "\n") for t in tests), setup=setup.replace("\r\n", "\n")),
        entry_point=entry_point_of(code, tests[0]),
        reference=code,
        source="mbpp",
        meta={"split": split, "sanitized": sanitized},
    )


def _records(path: Path) -> list[tuple[int, dict]]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise UserError(f"{path}:1: expected a JSON list of records")
        return [(i + 1, r) for i, r in enumerate(data)]  # "line" = record index for a JSON list
    return list(read_jsonl(path))


def load_mbpp(path: str | os.PathLike | None = None, split: str = "test", challenge: bool = False) -> list[Problem]:
    """MBPP problems of ``split`` (``test``/``train``/``validation``/``prompt``/``all``).

    ``path``: a folder holding ``mbpp.jsonl``, or a file (``mbpp.jsonl`` or ``sanitized-mbpp.json``); default
    :func:`study.data.default_mbpp_dir`."""
    if split not in SPLITS and split != "all":
        raise UserError(f"mbpp: unknown split {split!r}; choose one of {', '.join(SPLITS)}, all")
    p = Path(path) if path else default_mbpp_dir()
    if p.is_dir():
        p = p / FULL_FILE
    if not p.is_file():
        raise UserError(f"mbpp: data file not found: {p} (set STUDY_MBPP_DIR or pass --data)")
    sanitized = p.suffix == ".json"
    fields = ("task_id", "prompt" if sanitized else "text", "code", "test_list")
    problems = []
    for lineno, rec in _records(p):
        if not isinstance(rec, dict):
            raise UserError(f"{p}:{lineno}: expected a JSON object")
        require_fields(rec, fields, p, lineno)
        if not isinstance(rec["test_list"], list) or not rec["test_list"]:
            raise UserError(f"{p}:{lineno}: test_list must be a non-empty list")
        try:
            tid = int(rec["task_id"])
        except (TypeError, ValueError):
            raise UserError(f"{p}:{lineno}: task_id {rec['task_id']!r} is not an integer") from None
        if split != "all" and not _in_split(tid, split):
            continue
        try:
            problems.append(mbpp_problem(rec, sanitized=sanitized, challenge=challenge, split=split))
        except ValueError as exc:
            raise UserError(f"{p}:{lineno}: {exc}") from None
    return problems
