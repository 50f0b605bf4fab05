"""``study bench refiner-overhead`` runs end to end on the smoke model (correctness only: no timing asserts)."""

from __future__ import annotations

import pytest


def test_refiner_overhead_smoke_prints_ratio(smoke_model_dir, capsys):
    from study.cli import main

    rc = main(["bench", "refiner-overhead", "--smoke", "--repeats", "1", "--steps", "1", "--model",
               str(smoke_model_dir)])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("time_refine") for line in out)
    assert any(line.startswith("dynamic/dapo step time over repeats") for line in out)
    key, value = out[-1].split()
    assert key == "ratio" and float(value) > 0


def test_bench_configs_differ_only_in_constraint():
    from study.bench import bench_configs

    a, b = bench_configs("mini", steps=2, model=None, seed=0)
    assert (a.constraint.mode, b.constraint.mode) == ("none", "dynamic")
    assert a.steps == b.steps == 2 and a.eval_benchmarks == b.eval_benchmarks == [] and a.checkpoint_every == 0


def test_bench_rejects_bad_repeats():
    from study.bench import refiner_overhead
    from study.errors import UserError

    with pytest.raises(UserError):
        refiner_overhead(repeats=0, steps=1, world="smoke")


def test_refined_scores_reuse_computations_with_the_same_values(smoke_model_dir):
    """r(x, y') is not recomputed for a y' equal to y, and equal (x, y') pairs are scored once: same RefineResult."""
    from transformers import AutoTokenizer

    from study.generation import Generation
    from study.problems import Problem, TestSuite
    from study.trainers.common import refine_and_filter

    tok = AutoTokenizer.from_pretrained(smoke_model_dir)
    probs = [Problem(task_id=f"t{i}", prompt=f"p{i}", tests=TestSuite("asserts", ("assert True",))) for i in range(2)]
    rows = [probs[0]] * 3 + [probs[1]] * 3
    responses = ["aa", "ab", "ab", "b", "bb", "bbb"]
    refined = {"aa": "aa", "ab": "aaa", "b": "aaa", "bb": "bb", "bbb": "aaa"}  # y' == y for "aa" and "bb"
    seen = []

    def frac_a(completions, **kw):  # deterministic: share of 'a' characters
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        seen.extend(texts)
        return [t.count("a") / max(len(t), 1) for t in texts]

    def refine(rs, ys):
        return [Generation(text=refined[y], token_ids=tok(refined[y])["input_ids"], truncated=False) for y in ys]

    rewards = frac_a(responses)
    seen.clear()
    res = refine_and_filter(rows, responses, rewards, refine, frac_a, tok, max_reward=2.0)
    # scored: "aaa" once for problem t0 (rows 1, 2) and once for t1 (rows 3, 5); "aa"/"bb" reuse r(y)
    assert sorted(seen) == ["aaa", "aaa"]
    assert res.rewards == [frac_a([refined[y]])[0] for y in responses]
    assert res.keep.tolist() == [False, True, True, True, False, True]
    assert res.n_distinct == 5  # (t0, "ab") twice


def test_filter_compares_float32_task_rewards_at_one_precision(smoke_model_dir):
    """TRL hands DAPO float32 task rewards; an unchanged y' (or one with the same true reward) is not an improvement."""
    import torch
    from transformers import AutoTokenizer

    from study.generation import Generation
    from study.problems import Problem, TestSuite
    from study.trainers.common import refine_and_filter

    tok = AutoTokenizer.from_pretrained(smoke_model_dir)
    rows = [Problem(task_id="t", prompt="p", tests=TestSuite("asserts", ("assert True",)))] * 3
    responses = ["abc", "cab", "abc"]

    def frac_a(completions, **kw):  # float64, like the code reward
        return [(c if isinstance(c, str) else c[-1]["content"]).count("a") / 3 - 0.5 for c in completions]

    refined = {"abc": "bca", "cab": "aab"}  # same true reward / a real improvement

    def refine(rs, ys):
        return [Generation(text=refined[y], token_ids=tok(refined[y])["input_ids"], truncated=False) for y in ys]

    rewards32 = torch.tensor(frac_a(responses), dtype=torch.float32).tolist()  # what TRL's rewards tensor holds
    assert rewards32[0] < frac_a(["bca"])[0]  # the float32 value is below the float64 one
    res = refine_and_filter(rows, responses, rewards32, refine, frac_a, tok, max_reward=1.0)
    assert res.keep.tolist() == [False, True, False]
    assert res.improvement_ratio == 1 / 3


def test_refiner_decoding_smoke_compares_five_decoders(smoke_model_dir, capsys):
    from study.cli import main

    rc = main(["bench", "refiner-decoding", "--smoke", "--repeats", "1", "--model", str(smoke_model_dir)])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    rows = [line for line in out if line.startswith(("batched", "one row"))]
    assert len(rows) == 5
    import re

    tokens = int(re.search(r"(\d+) refined tokens", out[0]).group(1))
    per_row = rows[1].split()
    assert int(per_row[-3]) == tokens and per_row[-2] == "1.00"  # plain decoding: one forward per token
    lookup = rows[2].split()
    assert int(lookup[-3]) <= tokens and float(lookup[-2]) >= 1.0  # drafts can only save forwards
    for r in rows:
        same, n = r.split()[-1].split("/")
        assert int(n) == int(out[0].split()[0]) and 0 <= int(same) <= int(n)
    for r in rows[3:]:  # copy-aware: the same tokens as plain greedy, more than one token per forward
        same, n = r.split()[-1].split("/")
        assert same == n and float(r.split()[-2]) >= 1.0
