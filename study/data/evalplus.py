"""HumanEval+ and MBPP+ (Liu et al., 2023, "EvalPlus") from a local copy of the release JSONL.

Record format (``HumanEvalPlus.jsonl`` / ``MbppPlus.jsonl``): ``task_id``, ``prompt``, ``entry_point``,
``canonical_solution``, ``base_input``, ``plus_input`` (lists of argument lists), ``atol``, ``contract`` and more
(MBPP+ also ``assertion``). HumanEval+'s canonical solution is a body completing ``prompt``; MBPP+'s is a whole
program after a docstring prompt; both are scored as ``prompt + canonical_solution``, as EvalPlus does.

Tests, the EvalPlus differential protocol:

1. Expected outputs are computed the way EvalPlus's ``get_groundtruth`` does: by running ``prompt +
   canonical_solution`` on every base and plus input, directly (trusted dataset code), in one child Python process
   per file (not in this process, so a bad record cannot hurt the caller).
2. Each input becomes one asserts-style case ``_ep_check(<entry_point>, i)``; ``setup`` holds the pickled inputs and
   expected outputs and the comparison: exact ``==``, else, when ``atol`` is set or the expected value is a float
   (or a list/tuple of floats; EvalPlus then forces ``atol = 1e-6``), closeness within ``atol`` plus a 1e-7
   relative tolerance (``numpy.testing.assert_allclose``'s default). ``find_zero`` (HumanEval/32) is checked by
   its oracle ``|poly(xs, x)| <= atol``. The candidate gets a deep copy of each input.
3. MBPP+ inputs are stored as JSON, so tuples, sets and complex numbers are restored per task exactly as EvalPlus's
   ``mbpp_deserialize_inputs`` does (:func:`mbpp_deserialize`).

Differences from EvalPlus, on purpose: one wall-clock limit for the whole program (the sandbox's) instead of a
per-input limit scaled by the reference's time, and no special oracles for MBPP+'s ``are_equivalent`` /
``sum_div`` (two tasks). Like for HumanEval, ``setup`` also defines the prompt's helpers (see
:mod:`study.data.humaneval`).
"""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys

from study.data import read_jsonl, require_fields, require_file
from study.data.humaneval import import_lines, prompt_context
from study.errors import UserError
from study.problems import Problem, TestSuite

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input")


# ----------------------------------------------------------------------------------- MBPP+ input types
def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


_MBPP_TUPLE_ARGS = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726,
                    740, 744, 809}
_MBPP_TUPLE_ITEMS = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_MBPP_FIRST_ITEMS = {75, 413, 444, 753}
_MBPP_SECOND_ARG = {106, 750}
_MBPP_FIRST_ARG = {250, 405, 446, 617, 720, 763, 808}
_MBPP_NESTED = {259, 401, 445}
_MBPP_DEEP = {580, 615, 791}


def mbpp_deserialize(task_num: int, inputs: list) -> list:
    """Restore the Python types of MBPP+ inputs that JSON flattened (EvalPlus ``mbpp_deserialize_inputs``)."""
    n = task_num
    if n in _MBPP_TUPLE_ARGS:
        return [[tuple(a) for a in inp] for inp in inputs]
    if n in _MBPP_TUPLE_ITEMS:
        return [[[tuple(x) for x in a] for a in inp] for inp in inputs]
    if n in _MBPP_FIRST_ITEMS:
        return [[[tuple(x) for x in inp[0]]] + [inp[1]] for inp in inputs]
    if n in _MBPP_SECOND_ARG:
        return [[inp[0], tuple(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(x) if isinstance(x, list) and x else {} for x in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in _MBPP_FIRST_ARG:
        return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
    if n in _MBPP_NESTED:
        return [[tuple(tuple(x) for x in a) for a in inp] for inp in inputs]
    if n == 278:
        return [[tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])] for inp in inputs]
    if n == 307:
        return [[tuple(inp[0]), inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{k: tuple(v) for k, v in inp[0].items()}] + inp[1:] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in _MBPP_DEEP:
        return [_tuples(inp) for inp in inputs]
    return inputs


# ----------------------------------------------------------------------------------- expected outputs
_ORACLE_CHILD = r"""
import pickle, sys
jobs = pickle.load(sys.stdin.buffer)
out = []
for code, entry, inputs in jobs:
    try:
        g = {"__name__": "__evalplus_oracle__"}
        exec(compile(code, "<canonical>", "exec"), g)
        fn = g[entry]
        import copy
        out.append(("ok", [fn(*copy.deepcopy(list(inp))) for inp in inputs]))
    except BaseException as exc:
        out.append(("error", f"{type(exc).__name__}: {exc}"[:300]))
sys.stdout.buffer.write(pickle.dumps(out))
"""


def expected_outputs(jobs: list[tuple[str, str, list]], timeout: float = 900.0) -> list[tuple[str, object]]:
    """Run each ``(code, entry_point, inputs)`` canonical solution on its inputs in one child process."""
    if not jobs:
        return []
    proc = subprocess.run([sys.executable, "-c", _ORACLE_CHILD], input=pickle.dumps(jobs),
                          capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise UserError(f"evalplus: computing expected outputs failed: {proc.stderr.decode()[-300:]}")
    return pickle.loads(proc.stdout)


# ----------------------------------------------------------------------------------- test harness
_HARNESS = '''
import base64 as _ep_b64, copy as _ep_copy, math as _ep_math, pickle as _ep_pickle
_EP_INPUTS, _EP_EXPECTED = _ep_pickle.loads(_ep_b64.b64decode("{blob}"))
_EP_ATOL = {atol!r}


def _ep_is_floats(x):
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(i, float) for i in x)


def _ep_close(out, exp, atol):
    if isinstance(exp, (list, tuple)):
        return isinstance(out, (list, tuple)) and len(out) == len(exp) and all(
            _ep_close(o, e, atol) for o, e in zip(out, exp))
    if isinstance(out, bool) or not isinstance(out, (int, float)) or not isinstance(exp, (int, float)):
        return out == exp
    if _ep_math.isnan(exp):
        return _ep_math.isnan(out)
    return abs(out - exp) <= atol + 1e-7 * abs(exp)


def _ep_check(fn, i):
    inp = _EP_INPUTS[i]
    out = fn(*_ep_copy.deepcopy(inp))
    exp = _EP_EXPECTED[i]
    if {entry!r} == "find_zero":
        xs = inp[0]
        assert abs(sum(c * _ep_math.pow(out, k) for k, c in enumerate(xs))) <= max(_EP_ATOL, 1e-6), "not a zero"
        return
    atol = _EP_ATOL
    if atol == 0 and _ep_is_floats(exp):
        atol = 1e-6
    if out == exp:
        return
    assert atol != 0 and _ep_close(out, exp, atol), "wrong output for input %d" % i
'''


def plus_tests(entry: str, inputs: list, expected: list, atol: float, context: str = "") -> TestSuite:
    """The asserts-style suite comparing a candidate with the expected outputs (see module docstring)."""
    blob = base64.b64encode(pickle.dumps((inputs, expected))).decode()
    harness = _HARNESS.format(blob=blob, atol=float(atol or 0.0), entry=entry)
    setup = (context + "\n\n" if context.strip() else "") + harness.strip("\n")
    return TestSuite("asserts", tuple(f"_ep_check({entry}, {i})" for i in range(len(inputs))), setup=setup)


def load_evalplus(path: str | os.PathLike, flavour: str = "humaneval_plus") -> list[Problem]:
    """HumanEval+ (``flavour='humaneval_plus'``) or MBPP+ (``'mbpp_plus'``) problems from a release JSONL."""
    path = require_file(path, flavour)
    records = []
    for lineno, rec in read_jsonl(path):
        require_fields(rec, FIELDS, path, lineno)
        for key in ("base_input", "plus_input"):
            if not isinstance(rec[key], list) or not all(isinstance(a, (list, tuple)) for a in rec[key]):
                raise UserError(f"{path}:{lineno}: {key} must be a list of argument lists")
        inputs = rec["base_input"] + rec["plus_input"]
        if flavour == "mbpp_plus":
            try:
                num = int(str(rec["task_id"]).split("/")[-1])
                inputs = mbpp_deserialize(num, rec["base_input"]) + mbpp_deserialize(num, rec["plus_input"])
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise UserError(f"{path}:{lineno}: cannot restore MBPP+ input types ({exc})") from None
        records.append((lineno, rec, [list(a) for a in inputs]))
    results = expected_outputs([(r["prompt"] + r["canonical_solution"], r["entry_point"], inp)
                                for _, r, inp in records])
    problems = []
    for (lineno, rec, inputs), (ok, value) in zip(records, results):
        if ok != "ok":
            raise UserError(f"{path}:{lineno}: canonical solution of {rec['task_id']} fails on its inputs: {value}")
        prompt, entry = rec["prompt"], rec["entry_point"]
        problems.append(Problem(
            task_id=str(rec["task_id"]),
            prompt=prompt.strip("\n") if flavour == "mbpp_plus" else prompt.rstrip(),
            tests=plus_tests(entry, inputs, value, rec.get("atol") or 0.0, prompt_context(prompt, entry)),
            entry_point=entry,
            reference=prompt + rec["canonical_solution"],
            code_prefix=import_lines(prompt),
            source=flavour,
            meta={"n_base": len(rec["base_input"]), "n_plus": len(rec["plus_input"])},
        ))
    return problems
