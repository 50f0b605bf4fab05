"""From a model's chat answer to the program the sandbox runs.

    program = build_program(problem, completion)   # fenced code extracted, HumanEval imports prepended if missing
    code = extract_code("Here you go:\\n```python\\ndef f(): ...\\n```", entry_point="f")
"""

from __future__ import annotations

import re

from study.problems import Problem

# An opening fence (```python, ```py, ```Python3, ``` ...) at the start of a line, then the body up to a closing
# fence at the start of a line or the end of the text (an unterminated last block, e.g. a truncated rollout).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.M | re.S)
_PY_TAGS = {"", "python", "py", "python3", "py3"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks as (language tag lowercased, body)."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", code, re.M) is not None


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """The program in ``completion``: the fenced Python block (the first one defining ``entry_point`` when there
    are several, else the longest Python block); an unterminated last fence counts; no fence -> the raw text."""
    blocks = code_blocks(completion)
    if not blocks:
        return completion.strip("\n")
    py = [body for tag, body in blocks if tag in _PY_TAGS] or [body for _, body in blocks]
    if entry_point:
        for body in py:
            if _defines(body, entry_point):
                return body.strip("\n")
    return max(py, key=len).strip("\n")


def _top_level_imports(code: str) -> list[str]:
    return [ln for ln in code.splitlines() if re.match(r"(?:import|from)\s+\w", ln)]


def build_program(problem: Problem, completion: str) -> str:
    """The program to score: the extracted code, with ``problem.code_prefix`` lines (e.g. HumanEval's imports)
    that the code does not already contain prepended."""
    code = extract_code(completion, problem.entry_point)
    return with_prefix(code, problem.code_prefix)


def with_prefix(code: str, code_prefix: str | None) -> str:
    """Prepend the lines of ``code_prefix`` missing from ``code`` (all of it if it is not just imports)."""
    if not code_prefix or not code_prefix.strip():
        return code
    prefix_lines = [ln for ln in code_prefix.strip("\n").splitlines() if ln.strip()]
    if all(re.match(r"(?:import|from)\s+\w", ln) for ln in prefix_lines):
        have = {ln.strip() for ln in _top_level_imports(code)}
        missing = [ln for ln in prefix_lines if ln.strip() not in have]
        return "\n".join(missing + [code]) if missing else code
    if code_prefix.strip() in code:
        return code
    return code_prefix.rstrip("\n") + "\n" + code
