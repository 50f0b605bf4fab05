"""Loaders: real HumanEval / MBPP files and small fixtures in the HumanEval+/MBPP+/APPS/Prompt-Collection formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.code import with_prefix
from study.data import default_mbpp_dir, load_problems
from study.data.evalplus import mbpp_deserialize
from study.data.mbpp import entry_point_of, load_mbpp
from study.errors import UserError
from study.sandbox import run_batch

FIX = Path(__file__).parent / "fixtures"
HAVE_MBPP = (default_mbpp_dir() / "mbpp.jsonl").is_file()
needs_mbpp = pytest.mark.skipif(not HAVE_MBPP, reason="MBPP data folder not present")


def _run(problems, programs):
    return run_batch(programs, [p.tests for p in problems], workers=2)


def _references(problems):
    return _run(problems, [with_prefix(p.reference, p.code_prefix) for p in problems])


# ------------------------------------------------------------------------------------------ HumanEval
def test_humaneval_real_file_layout():
    ps = load_problems("humaneval")
    assert len(ps) == 164 and len({p.task_id for p in ps}) == 164
    p0 = ps[0]
    assert p0.task_id == "HumanEval/0" and p0.entry_point == "has_close_elements" and p0.source == "humaneval"
    assert p0.code_prefix == "from typing import List"
    assert p0.tests.style == "asserts" and p0.tests.cases == ("check(has_close_elements)",)
    assert "def check(candidate)" in p0.tests.setup
    assert p0.prompt.endswith('"""') and p0.reference.startswith(p0.prompt)
    # helpers the tests call (poly for find_zero) are in the setup; the entry point's own stub is not
    p32 = ps[32]
    assert "def poly(" in p32.tests.setup and "def find_zero" not in p32.tests.setup
    assert load_problems("humaneval", limit=3)[2].task_id == "HumanEval/2"


def test_humaneval_chat_answer_without_imports_is_scored():
    p = load_problems("humaneval", limit=1)[0]
    from study.code import build_program

    answer = ("Sure:\n```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
              "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    wrong = answer.replace("< threshold", "> threshold")
    v_ok, v_bad = _run([p, p], [build_program(p, answer), build_program(p, wrong)])
    assert v_ok.status == "passed" and v_bad.status == "failed"


# ------------------------------------------------------------------------------------------ MBPP
@needs_mbpp
def test_mbpp_real_splits_and_prompt():
    sizes = {s: len(load_problems("mbpp", split=s)) for s in ("test", "train", "validation", "prompt")}
    assert sizes == {"test": 500, "train": 374, "validation": 90, "prompt": 10}
    p = load_problems("mbpp", split="test", limit=1)[0]
    assert p.task_id == "mbpp/11" and p.entry_point == "remove_Occ"
    assert p.prompt.startswith('"""\nWrite a python function') and p.tests.cases[0] in p.prompt
    assert len(p.tests.cases) == 3 and "\r" not in p.reference
    san = load_mbpp(default_mbpp_dir() / "sanitized-mbpp.json", split="all")
    assert len(san) == 427 and len(load_mbpp(default_mbpp_dir() / "sanitized-mbpp.json")) == 257


@needs_mbpp
def test_mbpp_references_pass_and_env_dir(monkeypatch, tmp_path):
    ps = load_problems("mbpp", split="test", limit=20)
    assert all(v.status == "passed" for v in _references(ps))
    (tmp_path / "mbpp.jsonl").write_text((default_mbpp_dir() / "mbpp.jsonl").read_text().splitlines()[20] + "\n")
    monkeypatch.setenv("STUDY_MBPP_DIR", str(tmp_path))
    assert [p.task_id for p in load_problems("mbpp", split="test")] == ["mbpp/21"]


def test_mbpp_entry_point_parsing():
    assert entry_point_of("def helper(x):\n  pass\ndef f(a):\n  pass", "assert f(helper(1)) == 2") == "f"
    assert entry_point_of("def g(a):\n  pass", "assert math.isclose(g(1), 2)") == "g"
    assert entry_point_of("", "assert set(similar(1)) == set()") == "similar"


def test_mbpp_malformed_record_names_file_and_line(tmp_path):
    good = {"text": "t", "code": "def f():\n  return 1", "task_id": 11, "test_setup_code": "",
            "test_list": ["assert f() == 1"], "challenge_test_list": []}
    f = tmp_path / "mbpp.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({"task_id": 12, "text": "x"}) + "\n")
    with pytest.raises(UserError, match=r"mbpp.jsonl:2: .*missing field"):
        load_problems("mbpp", path=tmp_path)
    f.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(UserError, match=r"mbpp.jsonl:2: not valid JSON"):
        load_problems("mbpp", path=f)
    with pytest.raises(UserError, match="not found"):
        load_problems("mbpp", path=tmp_path / "nope")


# ------------------------------------------------------------------------------------------ EvalPlus
def test_humaneval_plus_fixture_differential_tests():
    ps = load_problems("humaneval_plus", path=FIX / "HumanEvalPlus-mini.jsonl")
    assert [p.task_id for p in ps] == ["HumanEval/0", "HumanEval/2", "HumanEval/32"]
    assert [p.tests.total for p in ps] == [6, 5, 5] and ps[0].source == "humaneval_plus"
    assert ps[0].code_prefix == "from typing import List"
    assert all(v.status == "passed" for v in _references(ps))
    trunc = ps[1]
    programs = [
        "def truncate_number(number):\n    return number % 1.0 + 1e-9\n",   # within EvalPlus's forced 1e-6
        "def truncate_number(number):\n    return number % 1.0 + 1e-3\n",   # not
        "def truncate_number(number):\n    return 0.5\n",
    ]
    ok, off, const = _run([trunc] * 3, programs)
    assert ok.status == "passed" and off.status == "failed" and const.status == "failed"
    assert 0 < const.passed < const.total  # per-input cases: 0.5 is right for 3.5 only
    # find_zero: any root is accepted (oracle |poly(xs, x)| <= atol), a non-root is not
    fz = ps[2]
    newton = ("def find_zero(xs):\n    x = 0.0\n    for _ in range(200):\n"
              "        f = sum(c * x**i for i, c in enumerate(xs))\n"
              "        d = sum(i * c * x**(i - 1) for i, c in enumerate(xs) if i)\n"
              "        x = x - f / d if d else x + 1.0\n    return x\n")
    good, bad = _run([fz, fz], [newton, "def find_zero(xs):\n    return 12345.0\n"])
    assert good.status == "passed" and bad.status == "failed"


def test_mbpp_plus_fixture_and_input_types():
    ps = load_problems("mbpp_plus", path=FIX / "MbppPlus-mini.jsonl")
    assert [p.task_id for p in ps] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"] and ps[0].source == "mbpp_plus"
    assert ps[0].prompt.startswith('"""') and "assert" in ps[0].prompt
    assert all(v.status == "passed" for v in _references(ps))
    # Mbpp/2 takes tuples: a candidate relying on tuple-only behaviour works because the types were restored
    v = _run(ps[:1], ["def similar_elements(a, b):\n    assert type(a) is tuple\n"
                      "    return tuple(set(a) & set(b))\n"])[0]
    assert v.status == "passed"
    assert mbpp_deserialize(2, [[[1, 2], [3]]]) == [[(1, 2), (3,)]]
    assert mbpp_deserialize(999, [[[1, 2]]]) == [[[1, 2]]]
    wrong = _run(ps[1:2], ["def is_not_prime(n):\n    return False\n"])[0]
    assert wrong.status == "failed" and 0 < wrong.passed < wrong.total


def test_evalplus_malformed(tmp_path):
    rec = json.loads((FIX / "MbppPlus-mini.jsonl").read_text().splitlines()[1])
    f = tmp_path / "plus.jsonl"
    f.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "base_input": 5}) + "\n")
    with pytest.raises(UserError, match=r"plus.jsonl:2: base_input"):
        load_problems("mbpp_plus", path=f)
    broken = {**rec, "canonical_solution": "def is_not_prime(n):\n    raise ValueError('boom')\n"}
    f.write_text(json.dumps(broken) + "\n")
    with pytest.raises(UserError, match=r"plus.jsonl:1: canonical solution of Mbpp/3 fails"):
        load_problems("mbpp_plus", path=f)
    with pytest.raises(UserError, match="no data file"):
        load_problems("humaneval_plus")


# ------------------------------------------------------------------------------------------ APPS
def test_apps_fixture_stdio_and_call_based():
    ps = load_problems("apps", path=FIX / "apps-mini.jsonl")
    assert [p.task_id for p in ps] == ["apps/4001", "apps/4002", "apps/4003"]
    assert [p.tests.style for p in ps] == ["stdio"] * 3
    assert ps[0].tests.fn_name is None and ps[2].tests.fn_name == "maxOf" and ps[2].entry_point == "maxOf"
    assert "Standard Input" in ps[0].prompt and "Call-Based" in ps[2].prompt and "class Solution" in ps[2].prompt
    assert ps[1].meta["difficulty"] == "interview"
    assert all(v.status == "passed" for v in _references(ps))
    bad = _run(ps, ["print(0)", "print(1)", "class Solution:\n    def maxOf(self, nums):\n        return min(nums)\n"])
    assert [v.status for v in bad] == ["failed"] * 3
    assert load_problems("apps", path=FIX / "apps-mini.jsonl", limit=1)[0].task_id == "apps/4001"


def test_apps_malformed(tmp_path):
    f = tmp_path / "apps.jsonl"
    f.write_text(json.dumps({"problem_id": 1, "question": "q", "input_output": "{bad"}) + "\n")
    with pytest.raises(UserError, match=r"apps.jsonl:1: field input_output"):
        load_problems("apps", path=f)
    f.write_text(json.dumps({"problem_id": 1, "question": "q",
                             "input_output": json.dumps({"inputs": ["1"], "outputs": []})}) + "\n")
    with pytest.raises(UserError, match=r"apps.jsonl:1: .*1 inputs but 0 outputs"):
        load_problems("apps", path=f)


# ------------------------------------------------------------------------------------------ Prompt-Collection
def test_prompt_collection_fixture(tmp_path):
    ps = load_problems("prompt_collection", path=FIX / "prompt-collection-mini.jsonl")
    assert [p.task_id for p in ps] == ["prompt_collection/uf-1", "prompt_collection/hs-7", "prompt_collection/cap-3"]
    assert ps[1].prompt == "Make it about snow instead." and len(ps[1].meta["messages"]) == 3
    assert all(p.tests.total == 0 and p.tests.style == "asserts" and p.source == "prompt_collection" for p in ps)
    assert ps[0].meta["dataset"] == "ultrafeedback"
    f = tmp_path / "pc.jsonl"
    f.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "context_messages": [{"role": "user"}]}\n')
    with pytest.raises(UserError, match=r"pc.jsonl:2: each context message"):
        load_problems("prompt_collection", path=f)


def test_unknown_source():
    with pytest.raises(UserError, match="unknown source"):
        load_problems("gsm8k")


def test_mini_dispatch():
    mini = pytest.importorskip("study.mini")
    if not hasattr(mini, "load_split"):
        pytest.skip("study.mini.load_split not there yet")
    ps = load_problems("mini", split="test", limit=3)
    assert len(ps) == 3 and all(p.source == "mini" for p in ps)
