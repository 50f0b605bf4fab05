"""Sandbox verdicts for both test styles and both mechanisms, isolation between programs, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from study.errors import UserError
from study.problems import TestSuite
from study.sandbox import Limits, Verdict, probe, run_batch, run_program

MODES = ["fork", "subprocess"]
F = "def f(x):\n    return x * 2\n"


def asserts(*cases, setup=""):
    return TestSuite("asserts", tuple(cases), setup=setup)


@pytest.fixture(params=MODES)
def lim(request):
    return Limits(timeout=2, mode=request.param)


def test_asserts_verdicts(lim):
    v = run_program(F, asserts("assert f(1) == 2", "assert f(2) == 4"), lim)
    assert (v.status, v.passed, v.total) == ("passed", 2, 2) and isinstance(v, Verdict)
    v = run_program(F, asserts("assert f(1) == 2", "assert f(2) == 5", "assert f(3) == 7"), lim)
    assert (v.status, v.passed, v.total) == ("failed", 1, 3) and "f(2) == 5" in v.stderr
    v = run_program("def f(x) return x", asserts("assert f(1) == 2"), lim)
    assert (v.status, v.passed) == ("compile_error", 0) and "SyntaxError" in v.stderr
    v = run_program("raise ValueError('boom')\n", asserts("assert True"), lim)
    assert (v.status, v.passed) == ("runtime_error", 0) and "boom" in v.stderr
    v = run_program("import sys\nsys.exit(0)\n", asserts("assert True"), lim)  # exiting early is no pass
    assert v.status == "runtime_error"
    v = run_program("while True:\n    pass\n", asserts("assert True"), Limits(timeout=1, mode=lim.mode))
    assert (v.status, v.passed) == ("timeout", 0)


def test_case_exception_counts_as_runtime_error_but_keeps_passes(lim):
    v = run_program(F, asserts("assert f(1) == 2", "assert f(None) == 0"), lim)
    assert (v.status, v.passed, v.total) == ("runtime_error", 1, 2) and "TypeError" in v.stderr


def test_setup_runs_between_program_and_cases(lim):
    suite = asserts("check(f)", setup="def check(c):\n    assert c(3) == 6\n")
    assert run_program(F, suite, lim).status == "passed"


def test_humaneval_style_with_prefix_imports(lim):
    prog = "from typing import List\n\ndef s(xs: List[int]) -> int:\n    return sum(xs)\n"
    assert run_program(prog, asserts("assert s([1, 2]) == 3"), lim).status == "passed"


def test_stdio_verdicts(lim):
    prog = "n = int(input())\nprint(n * 2)\n"
    cases = ({"input": "3\n", "output": "6\n"}, {"input": "5", "output": "10"}, {"input": "1", "output": "3"})
    v = run_program(prog, TestSuite("stdio", cases), lim)
    assert (v.status, v.passed, v.total) == ("failed", 2, 3)
    v = run_program(prog, TestSuite("stdio", cases[:2]), lim)
    assert v.status == "passed"
    v = run_program("print(1/0)\n", TestSuite("stdio", cases[:1]), lim)
    assert v.status == "runtime_error" and "ZeroDivisionError" in v.stderr
    v = run_program("print(\n", TestSuite("stdio", cases[:1]), lim)
    assert v.status == "compile_error"


def test_stdio_tolerant_comparison(lim):
    prog = "import sys\ndata = sys.stdin.read().split()\nprint('  '.join(data), ' ')\nprint(0.1 + 0.2)\nprint()\n"
    v = run_program(prog, TestSuite("stdio", ({"input": "a b\n", "output": "a b\n0.3"},)), lim)
    assert v.status == "passed", v
    v = run_program("print('0.31')", TestSuite("stdio", ({"input": "", "output": "0.3"},)), lim)
    assert v.status == "failed"


def test_stdio_each_case_is_a_fresh_run_and_exit_zero_is_fine(lim):
    prog = "import sys\nseen = []\nseen.append(input())\nprint(len(seen), seen[-1])\nsys.exit(0)\n"
    cases = ({"input": "a", "output": "1 a"}, {"input": "b", "output": "1 b"})
    assert run_program(prog, TestSuite("stdio", cases), lim).status == "passed"


def test_fn_name_call_based(lim):
    prog = "def add(a, b):\n    return a + b\n"
    cases = ({"input": "[1, 2]", "output": "[3]"}, {"input": "[[1], [2]]", "output": "[[1, 2]]"},
             {"input": "[1, 1]", "output": "[3]"})
    v = run_program(prog, TestSuite("stdio", cases, fn_name="add"), lim)
    assert (v.status, v.passed, v.total) == ("failed", 2, 3)
    leet = "class Solution:\n    def add(self, a, b):\n        return (a + b,)\n"  # tuple vs list, class form
    v = run_program(leet, TestSuite("stdio", ({"input": "[1, 2]", "output": "[[3]]"},), fn_name="add"), lim)
    assert v.status == "passed", v
    v = run_program("x = 1\n", TestSuite("stdio", cases, fn_name="add"), lim)
    assert v.status == "runtime_error" and "add" in v.stderr


def test_no_leaks_between_programs(lim):
    """Each program starts from the clean server: patched builtins/stdlib, sys.modules edits, globals, threads,
    children and files of an earlier program are gone."""
    hostile = (
        "import builtins, math, sys, os, threading, time, json\n"
        "builtins.len = lambda x: 42\nbuiltins.LEAK = 1\nmath.sqrt = lambda x: -1\n"
        "sys.modules['json'] = None\nsys.setrecursionlimit(50)\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "if os.fork() == 0:\n    time.sleep(30)\n"
        "open('leftover.txt', 'w').write('x')\nopen('/tmp/leftover2.txt', 'w').write('x')\n"
    )
    check = (
        "import builtins, math, sys, os, threading, json\n"
        "def r(n):\n    return 0 if n == 0 else 1 + r(n - 1)\n"
        "def ok():\n    return (len([1]) == 1 and not hasattr(builtins, 'LEAK') and math.sqrt(4) == 2 and\n"
        "            json.dumps(1) == '1' and r(500) == 500 and threading.active_count() == 1 and\n"
        "            not os.path.exists('leftover.txt') and not os.path.exists('/tmp/leftover2.txt'))\n"
    )
    suites = [asserts("assert True"), asserts("assert ok()")] * 2
    vs = run_batch([hostile, check] * 2, suites, lim, workers=1)
    assert [v.status for v in vs[1::2]] == ["passed", "passed"]


def test_no_secrets_and_isolated_identity(lim, monkeypatch):
    monkeypatch.setenv("STUDY_SANDBOX_SECRET", "hunter2")
    prog = "import os\nENV = dict(os.environ)\nUID = os.getuid()\n"
    v = run_program(prog, asserts("assert 'STUDY_SANDBOX_SECRET' not in ENV", "assert UID != 0"), lim)
    assert v.status == "passed", v


def test_batch_keeps_order_and_handles_empty(lim):
    progs = [f"def f():\n    return {i}\n" for i in range(6)]
    suites = [asserts(f"assert f() == {i if i % 2 else -1}") for i in range(6)]
    vs = run_batch(progs, suites, lim, workers=2)
    assert [v.status for v in vs] == ["failed", "passed"] * 3
    assert run_batch([], [], lim) == []
    with pytest.raises(ValueError):
        run_batch(["x"], [], lim)


def test_probe_reports_isolation(lim):
    applied = probe(lim)
    assert "rlimits" in applied  # namespaces depend on the kernel; rlimits always hold


def test_fork_and_subprocess_agree():
    progs = [F, "def f(x): return x", "def f(x) return", "raise KeyError(1)"]
    suite = asserts("assert f(2) == 4")
    a = [v.status for v in run_batch(progs, [suite] * 4, Limits(timeout=2, mode="fork"))]
    b = [v.status for v in run_batch(progs, [suite] * 4, Limits(timeout=2, mode="subprocess"))]
    assert a == b == ["passed", "failed", "compile_error", "runtime_error"]


# ------------------------------------------------------------------------------------------------ CLI
def cli(*args):
    return subprocess.run([sys.executable, "-m", "study", "sandbox", *args], capture_output=True, text=True,
                          timeout=60)


def test_cli_asserts_and_stdio(tmp_path):
    (tmp_path / "p.py").write_text(F)
    (tmp_path / "t.json").write_text(json.dumps({"setup": "Y = 3", "asserts": ["assert f(1) == 2", "assert f(Y) == 7"]}))
    r = cli("--program", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.json"), "--style", "asserts")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and (out["status"], out["passed"], out["total"]) == ("failed", 1, 2)
    assert out["reward"] == pytest.approx(-0.3 + 1.3 / 2)
    (tmp_path / "s.py").write_text("print(int(input()) + 1)\n")
    (tmp_path / "c.json").write_text(json.dumps([{"input": "1", "output": "2"}]))
    r = cli("--program", str(tmp_path / "s.py"), "--tests", str(tmp_path / "c.json"), "--style", "stdio")
    out = json.loads(r.stdout)
    assert (out["status"], out["reward"]) == ("passed", 1.0)


def test_cli_bad_input(tmp_path):
    (tmp_path / "p.py").write_text(F)
    (tmp_path / "bad.json").write_text("{not json")
    r = cli("--program", str(tmp_path / "p.py"), "--tests", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = cli("--program", str(tmp_path / "missing.py"), "--tests", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_load_tests_shapes(tmp_path):
    from study.sandbox_cli import load_tests

    (tmp_path / "a.json").write_text(json.dumps(["assert 1"]))
    assert load_tests(tmp_path / "a.json", "asserts").cases == ("assert 1",)
    (tmp_path / "b.json").write_text(json.dumps([{"input": [1, 2], "output": 3}]))
    assert load_tests(tmp_path / "b.json", "stdio", "add").cases == ({"input": "[1, 2]", "output": "3"},)
    with pytest.raises(UserError):
        load_tests(tmp_path / "a.json", "stdio")
    with pytest.raises(UserError):
        load_tests(tmp_path / "b.json", "asserts")
