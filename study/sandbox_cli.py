"""``study sandbox``: run one untrusted program against tests in the sandbox and print a JSON verdict.

    study sandbox --program sol.py --tests tests.json --style asserts
    study sandbox --program sol.py --tests cases.json --style stdio [--fn-name solve] [--timeout 4]

Tests files: ``asserts`` -- a JSON list of assert statements, or ``{"setup": "...", "asserts": [...]}``;
``stdio`` -- a JSON list of ``{"input": ..., "output": ...}`` (with ``--fn-name``: JSON argument lists / returns).
Prints ``{"status", "passed", "total", "reward", "binary_reward", "stderr", "duration"}``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from study.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--program", required=True, help="Python file to run")
    p.add_argument("--tests", required=True, help="JSON tests file (see `study sandbox -h`)")
    p.add_argument("--style", choices=["asserts", "stdio"], default="asserts", help="test style (default: asserts)")
    p.add_argument("--fn-name", help="stdio only: call this function with each case's JSON inputs (APPS call-based)")
    p.add_argument("--timeout", type=float, default=4.0, help="wall seconds for program + all tests (default: 4)")
    p.add_argument("--memory-mb", type=int, default=1024, help="address-space limit (default: 1024)")
    p.add_argument("--mode", choices=["fork", "subprocess"], default="fork", help="sandbox mechanism (default: fork)")


def load_tests(path: str | Path, style: str, fn_name: str | None = None):
    """A ``TestSuite`` from a CLI tests file; ``UserError`` on a missing file or bad JSON/shape."""
    from study.problems import TestSuite

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--tests: file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"--tests: {path} is not valid JSON ({exc})") from exc
    if style == "asserts":
        setup = ""
        if isinstance(data, dict):
            setup, data = data.get("setup", ""), data.get("asserts")
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data) or not isinstance(setup, str):
            raise UserError(f"--tests: {path} must be a list of assert strings or {{\"setup\": str, \"asserts\": [...]}}")
        return TestSuite("asserts", tuple(data), setup=setup)
    if not isinstance(data, list) or not all(isinstance(c, dict) and {"input", "output"} <= set(c) for c in data):
        raise UserError(f"--tests: {path} must be a list of {{\"input\": ..., \"output\": ...}} objects")
    def field(v):  # call-based cases may hold JSON values directly; the sandbox takes JSON text
        return v if isinstance(v, str) or not fn_name else json.dumps(v)

    cases = tuple({"input": field(c["input"]), "output": field(c["output"])} for c in data)
    return TestSuite("stdio", cases, fn_name=fn_name)


def run(args: argparse.Namespace) -> int:
    from study.rewards import binary_reward, coderl_reward
    from study.sandbox import Limits, run_program

    prog = Path(args.program)
    if not prog.is_file():
        raise UserError(f"--program: file not found: {prog}")
    if args.fn_name and args.style != "stdio":
        raise UserError("--fn-name needs --style stdio")
    if args.timeout <= 0:
        raise UserError("--timeout must be positive")
    tests = load_tests(args.tests, args.style, args.fn_name)
    program = prog.read_text(errors="replace")
    v = run_program(program, tests, Limits(timeout=args.timeout, memory_mb=args.memory_mb, mode=args.mode))
    out = asdict(v)
    out["reward"] = coderl_reward(v)
    out["binary_reward"] = binary_reward(v)
    print(json.dumps(out))
    return 0
