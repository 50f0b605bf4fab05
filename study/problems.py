"""The one problem record every loader returns and every consumer (sandbox, rewards, eval, trainers) reads.

A problem is a prompt plus hidden tests. Tests come in the two styles the benchmarks use:

* ``asserts`` (HumanEval, MBPP, the mini world): ``setup`` code run first (imports, helpers, HumanEval's
  ``check`` function), then each entry of ``cases`` is one test: a statement or block, usually an ``assert``.
  HumanEval's single ``check(candidate)`` is one case ``check(<entry_point>)``.
* ``stdio`` (APPS): each case is ``{"input": str, "output": str}``; the program reads stdin and its stdout is
  compared to ``output``. With ``fn_name`` set (APPS call-based problems) the case input/output are JSON lists
  of arguments / the expected return and the function is called instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TestStyle = Literal["asserts", "stdio"]


@dataclass(frozen=True)
class TestSuite:
    """Hidden tests of one problem."""

    __test__ = False  # not a pytest class

    style: TestStyle
    """``asserts`` or ``stdio`` (see module docstring)."""
    cases: tuple = ()
    """asserts: tuple of code strings; stdio: tuple of ``{"input": ..., "output": ...}`` dicts."""
    setup: str = ""
    """asserts only: code executed after the program and before the cases (imports, helpers)."""
    fn_name: str | None = None
    """stdio only: APPS call-based variant, the function to call with each case's inputs."""

    @property
    def total(self) -> int:
        return len(self.cases)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | dict) -> "TestSuite":
        d = json.loads(text) if isinstance(text, str) else dict(text)
        d["cases"] = tuple(d.get("cases", ()))
        return cls(**d)


@dataclass(frozen=True)
class Problem:
    """One benchmark or training problem."""

    task_id: str
    """Unique id, e.g. ``HumanEval/0``, ``mbpp/11``, ``mini/train/arith-00042``."""
    prompt: str
    """What the model is asked: the natural-language statement (and, for HumanEval, the signature+docstring)."""
    tests: TestSuite
    """Hidden tests."""
    entry_point: str | None = None
    """Function the tests call, when there is one."""
    reference: str | None = None
    """A complete reference solution (program text) when the dataset has one."""
    code_prefix: str = ""
    """Code the scored program starts with when the completion omits it (HumanEval: the prompt's imports)."""
    source: str = ""
    """Benchmark name: ``humaneval``, ``mbpp``, ``mini``, ..."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (difficulty, family, split)."""

    def to_row(self) -> dict[str, Any]:
        """A flat dict for a ``datasets.Dataset`` row (TRL passes extra columns to reward functions)."""
        return {
            "task_id": self.task_id,
            "problem": self.prompt,
            "tests": self.tests.to_json(),
            "entry_point": self.entry_point or "",
            "reference": self.reference or "",
            "code_prefix": self.code_prefix,
        }
