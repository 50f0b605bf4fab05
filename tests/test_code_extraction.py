"""extract_code / build_program on chat-style completions."""

from __future__ import annotations

from study.code import build_program, code_blocks, extract_code, with_prefix
from study.problems import Problem, TestSuite


def test_single_fenced_block():
    text = "Sure! Here is the solution:\n```python\ndef f(x):\n    return x\n```\nIt returns x."
    assert extract_code(text) == "def f(x):\n    return x"


def test_prefers_block_defining_entry_point():
    text = ("First a helper:\n```python\ndef helper():\n    return 1\n```\n"
            "Then:\n```python\ndef solve(n):\n    return helper() + n\n```\n"
            "Example:\n```python\nprint(solve(2))\n```")
    assert extract_code(text, "solve").startswith("def solve(n):")
    assert extract_code(text, "missing").startswith("def solve(n):")  # else the longest python block


def test_unterminated_last_fence_and_other_tags():
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1"
    assert extract_code("```py\nx = 1\n```") == "x = 1"
    assert extract_code("```\nx = 2\n```") == "x = 2"
    text = "```text\nnot code\n```\n```python3\ny = 3\n```"
    assert extract_code(text) == "y = 3"
    assert code_blocks(text)[0] == ("text", "not code\n")


def test_no_fence_is_raw_text():
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1"


def test_indented_fence_and_async_entry_point():
    text = "  ```python\n  async def go():\n      pass\n  ```"
    assert "async def go" in extract_code(text, "go")


def test_build_program_prepends_missing_imports():
    p = Problem("HumanEval/0", "prompt", TestSuite("asserts", ("assert True",)), entry_point="s",
                code_prefix="from typing import List\nimport math\n")
    prog = build_program(p, "```python\nimport math\ndef s(xs: List[int]) -> int:\n    return sum(xs)\n```")
    assert prog.splitlines()[0] == "from typing import List"
    assert prog.count("import math") == 1
    assert build_program(p, "```python\nfrom typing import List\nimport math\nx=1\n```").startswith("from typing")


def test_with_prefix_non_import_prefix():
    assert with_prefix("x = 1", "") == "x = 1"
    assert with_prefix("y = C", "C = 3") == "C = 3\ny = C"
    assert with_prefix("C = 3\ny = C", "C = 3") == "C = 3\ny = C"


def test_empty_fence_then_python_fence_pairs_as_a_reader_sees_it():
    # a real SmolLM2 answer shape: an empty ``` pair, then the real block, then prose
    text = "```\n\n```python\ndef f(x):\n    return x\n```\n\nThis solution uses a generator."
    assert extract_code(text, "f") == "def f(x):\n    return x"


def test_closing_fence_without_opening_one():
    text = "def f(x):\n    return x + 1\n```\nThis adds one."
    assert extract_code(text, "f") == "def f(x):\n    return x + 1"
