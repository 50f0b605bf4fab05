"""From a model's chat answer to the program the sandbox runs.

    program = build_program(problem, completion)   # fenced code extracted, HumanEval imports prepended if missing
    code = extract_code("Here you go:\\n```python\\ndef f(): ...\\n```", entry_point="f")
"""

from __future__ import annotations

import re

from study.problems import Problem

_FENCE_LINE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)")
_PY_TAGS = {"", "python", "py", "python3", "py3"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks as (language tag lowercased, body), read line by line.

    A fence line with a language tag always opens a block (so an empty ```` ``` ```` pair followed by
    ```` ```python ```` pairs up the way a reader sees it); a bare fence closes the open block; an unterminated
    last block (e.g. a truncated rollout) runs to the end. When the text has no opening fence but has a bare
    closing one after code (``code\n```\nprose``), the text before it is the block."""
    blocks: list[tuple[str, str]] = []
    lines = text.split("\n")
    tag: str | None = None
    body: list[str] = []
    first_fence = None
    for i, line in enumerate(lines):
        m = _FENCE_LINE.match(line)
        if not m:
            if tag is not None:
                body.append(line)
            continue
        if first_fence is None:
            first_fence = (i, m.group(1))
        new_tag = m.group(1).lower()
        if tag is not None and not new_tag:  # bare fence closes the open block
            blocks.append((tag, "\n".join(body) + "\n"))
            tag, body = None, []
        else:  # opens a block (a tagged fence inside an open block closes it first)
            if tag is not None and any(b.strip() for b in body):
                blocks.append((tag, "\n".join(body) + "\n"))
            tag, body = new_tag, []
    if tag is not None and any(b.strip() for b in body):
        blocks.append((tag, "\n".join(body) + "\n"))
    blocks = [(t, b) for t, b in blocks if b.strip()]
    if first_fence is not None and first_fence[1] == "" and first_fence[0] > 0:
        before = "\n".join(lines[: first_fence[0]])
        if re.search(r"^\s*(?:def|class|import|from)\s", before, re.M) and not any(
            _FENCE_LINE.match(l) and _FENCE_LINE.match(l).group(1) for l in lines[: first_fence[0]]
        ):
            # code, then a closing fence with no opening one: the code before the fence is the answer
            blocks.insert(0, ("", before))
    return blocks


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
