"""APPS (Hendrycks et al., 2021) from a local JSONL in the ``codeparrot/apps`` record format.

Record fields: ``problem_id``, ``question``, ``solutions`` (a JSON *string* holding a list of programs),
``input_output`` (a JSON string ``{"inputs": [...], "outputs": [...], "fn_name"?: str}``), ``difficulty``
(introductory / interview / competition), ``url``, ``starter_code``.

Tests are stdio style: each case feeds ``inputs[i]`` on stdin and compares stdout with ``outputs[i]`` (list
values are joined with newlines). With ``fn_name`` (call-based problems, LeetCode style with a ``starter_code``)
``inputs[i]`` is the argument list and ``outputs[i]`` the expected return, and the sandbox calls the function
(or ``Solution().<fn_name>``). The prompt is the question, plus the starter code when there is one, plus which
I/O convention to use. The reference is the first listed solution (APPS has none for some problems).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from study.data import read_jsonl, require_fields, require_file
from study.errors import UserError
from study.problems import Problem, TestSuite

FIELDS = ("problem_id", "question", "input_output")


def _json_field(rec: dict, key: str, default, path: Path, lineno: int):
    v = rec.get(key)
    if v in (None, ""):
        return default
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{lineno}: field {key} is not a valid JSON string") from None
    return v


def apps_prompt(question: str, starter_code: str, fn_name: str | None) -> str:
    """Question + starter code + the I/O convention (the APPS paper's prompt, in our chat form)."""
    parts = [question.strip()]
    if starter_code and starter_code.strip():
        parts.append(f"Starter code:\n{starter_code.rstrip()}")
    parts.append("Use Call-Based format." if fn_name else "Use Standard Input format: read from stdin, write to stdout.")
    return "\n\n".join(parts)


def apps_problem(rec: dict, path: Path, lineno: int) -> Problem:
    io = _json_field(rec, "input_output", None, path, lineno)
    if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list):
        raise UserError(f"{path}:{lineno}: input_output must hold lists 'inputs' and 'outputs'")
    if len(io["inputs"]) != len(io["outputs"]):
        raise UserError(f"{path}:{lineno}: input_output has {len(io['inputs'])} inputs but "
                        f"{len(io['outputs'])} outputs")
    fn_name = io.get("fn_name") or None
    solutions = _json_field(rec, "solutions", [], path, lineno)
    if not isinstance(solutions, list):
        raise UserError(f"{path}:{lineno}: solutions must be a JSON list of programs")
    cases = tuple({"input": i, "output": o} for i, o in zip(io["inputs"], io["outputs"]))
    starter = rec.get("starter_code") or ""
    return Problem(
        task_id=f"apps/{rec['problem_id']}",
        prompt=apps_prompt(rec["question"], starter, fn_name),
        tests=TestSuite("stdio", cases, fn_name=fn_name),
        entry_point=fn_name,
        reference=solutions[0] if solutions else None,
        source="apps",
        meta={"difficulty": rec.get("difficulty", ""), "url": rec.get("url", ""), "starter_code": starter},
    )


def load_apps(path: str | os.PathLike, limit: int | None = None) -> list[Problem]:
    """APPS problems of a local JSONL file (the first ``limit`` records when given)."""
    path = require_file(path, "apps")
    problems = []
    for lineno, rec in read_jsonl(path):
        if limit is not None and len(problems) >= limit:
            break
        require_fields(rec, FIELDS, path, lineno)
        problems.append(apps_problem(rec, path, lineno))
    return problems
