"""CodeRL tiers + adaptive term, binary reward, TRL reward callables (text and conversational), build_reward."""

from __future__ import annotations

import pytest

from study.problems import TestSuite
from study.rewards import (CodeReward, RewardModelReward, binary_reward, build_reward, code_reward,
                           coderl_reward, completion_text, score_completions)
from study.sandbox import Verdict


@pytest.mark.parametrize("status,passed,total,expected", [
    ("passed", 3, 3, 1.0),
    ("compile_error", 0, 3, -1.0),
    ("runtime_error", 1, 3, -0.6),
    ("timeout", 0, 3, -0.6),
    ("failed", 0, 4, -0.3),
    ("failed", 1, 4, -0.3 + 1.3 / 4),
    ("failed", 3, 4, -0.3 + 1.3 * 3 / 4),
])
def test_coderl_tiers_and_adaptive_term(status, passed, total, expected):
    assert coderl_reward(Verdict(status, passed, total)) == pytest.approx(expected)
    assert binary_reward(Verdict(status, passed, total)) == (1.0 if status == "passed" else 0.0)


def test_adaptive_term_is_monotone_and_meets_the_pass_tier():
    rs = [coderl_reward(Verdict("failed", k, 10)) for k in range(10)]
    assert rs == sorted(rs) and rs[0] == pytest.approx(-0.3)
    assert -0.3 + 1.3 * 10 / 10 == pytest.approx(coderl_reward(Verdict("passed", 10, 10)))
    with pytest.raises(ValueError):
        coderl_reward(Verdict("weird", 0, 1))


def suite(*cases):
    return TestSuite("asserts", tuple(cases)).to_json()


def test_code_reward_trl_style_text_and_chat():
    tests = [suite("assert f(1) == 2", "assert f(2) == 4")] * 4
    completions = [
        "```python\ndef f(x):\n    return 2 * x\n```",           # passes
        "Here:\n```python\ndef f(x):\n    return x + 1\n```",    # 1 of 2
        "```python\ndef f(x) return\n```",                       # compile error
        [{"role": "assistant", "content": "```python\ndef f(x):\n    return x / 0\n```"}],  # runtime error
    ]
    rewards = code_reward(prompts=["p"] * 4, completions=completions, tests=tests, entry_point=["f"] * 4,
                          code_prefix=[""] * 4, completion_ids=None, task_id=["t"] * 4)
    assert rewards == pytest.approx([1.0, -0.3 + 1.3 / 2, -1.0, -0.6])
    assert code_reward.__name__ == "coderl_reward"


def test_score_completions_returns_verdicts_and_uses_prefix():
    tests = [TestSuite("asserts", ("assert s([1, 2]) == 3",)).to_json(), suite("assert g() == 1")]
    comps = ["def s(xs: List[int]) -> int:\n    return sum(xs)\n", "def g():\n    return 0\n"]
    rewards, verdicts = score_completions(comps, tests, ["s", "g"], ["from typing import List", ""], kind="binary")
    assert rewards == [1.0, 0.0]
    assert [v.status for v in verdicts] == ["passed", "failed"]


def test_stdio_and_fn_name_rewards():
    tests = [TestSuite("stdio", ({"input": "2", "output": "4"}, {"input": "3", "output": "6"})).to_json(),
             TestSuite("stdio", ({"input": "[2]", "output": "[4]"}, {"input": "[3]", "output": "[7]"}),
                       fn_name="dbl").to_json()]
    comps = ["```python\nprint(int(input()) * 2)\n```", "```python\ndef dbl(x):\n    return 2 * x\n```"]
    rewards, verdicts = score_completions(comps, tests)
    assert rewards == pytest.approx([1.0, -0.3 + 1.3 / 2])


def test_code_reward_object_keeps_verdicts():
    fn = CodeReward("binary")
    assert fn.__name__ == "binary_reward" and fn.max_reward == 1.0
    assert fn(prompts=["p"], completions=["def f():\n    return 1\n"], tests=[suite("assert f() == 1")]) == [1.0]
    assert fn.last_verdicts[0].status == "passed"


def test_completion_text():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    with pytest.raises(TypeError):
        completion_text(3)


class _Cfg:
    def __init__(self, reward, reward_model=None):
        self.reward, self.reward_model = reward, reward_model


def test_build_reward_code_kinds():
    fn, top = build_reward(_Cfg("coderl"))
    assert top == 1.0 and fn.__name__ == "coderl_reward"
    fn, top = build_reward(_Cfg("binary"))
    assert top == 1.0 and fn.__name__ == "binary_reward"


def test_build_reward_with_real_config():
    from study.config import TrainConfig

    fn, top = build_reward(TrainConfig(name="x", model="m", reward="binary"))
    assert top == 1.0


def test_reward_model_reward(tiny_reward_model_dir):
    fn, top = build_reward(_Cfg("reward_model", str(tiny_reward_model_dir)))
    assert top is None and isinstance(fn, RewardModelReward)
    scores = fn(prompts=["hello world ", "hello "], completions=["good answer", [{"role": "assistant",
                                                                                   "content": "bad"}]])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores) and scores[0] != scores[1]
    again = fn(prompts=["hello world "], completions=["good answer"])
    assert again[0] == pytest.approx(scores[0], abs=1e-5)  # padding in the batch does not change a score


def test_reward_model_bad_path(tmp_path):
    from study.errors import UserError

    with pytest.raises(UserError):
        RewardModelReward(str(tmp_path / "nope"))
