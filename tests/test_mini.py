"""The mini world: generated problems, corruptions, and the smoke reference model (trains, loads, generates)."""

from __future__ import annotations

import json
import random

import pytest

from study.mini import ensure_reference, generate_problems, load_split
from study.mini import problems as P
from study.mini.corrupt import KINDS, corrupt
from study.prompts import code_block, parse_refine_messages, refine_messages, solve_messages


def _snapshot(problems):
    return [(p.task_id, p.prompt, p.tests.cases, p.reference, p.entry_point) for p in problems]


def test_generation_is_deterministic():
    a, b = generate_problems(seed=3, n=60), generate_problems(seed=3, n=60)
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(generate_problems(seed=4, n=60)) != _snapshot(a)
    assert len({p.task_id for p in a}) == 60


def test_held_out_split_is_large_and_extends_the_old_one():
    """Issue 18: >= 1,000 held-out problems; a longer split only appends to the stream (same first problems)."""
    test = load_split("test", "mini")
    assert len(test) >= 1000
    assert _snapshot(test[:200]) == _snapshot(generate_problems(0, 200, "test"))
    assert _snapshot(generate_problems(0, 50, "train")) == _snapshot(load_split("train", "mini")[:50])


def test_splits_are_disjoint_and_well_formed():
    train, test = load_split("train", "mini"), load_split("test", "mini")
    assert len(train) == P.PROFILES["mini"]["train"] and len(test) == P.PROFILES["mini"]["test"]
    keys_train = {P.spec_of(p).key for p in train}
    keys_test = {P.spec_of(p).key for p in test}
    assert len(keys_train) == len(train) and len(keys_test) == len(test)
    assert not keys_train & keys_test
    families = {p.meta["family"] for p in test}
    assert {"chain", "comp"} <= families and len(families) >= 5
    for p in test[:20]:
        assert p.source == "mini" and p.task_id.startswith(f"mini/test/{p.meta['family']}-")
        assert p.tests.style == "asserts" and p.tests.total == P.N_VISIBLE + P.N_HIDDEN_EXTRA
        assert f"def {p.entry_point}(" in p.prompt and "Examples:" in p.prompt
        assert 1 <= p.meta["difficulty"] <= 4
        # the statement's examples are hidden tests too
        for line in p.prompt.split("Examples:\n")[1].splitlines():
            assert f"assert {line}" in p.tests.cases
    # the smoke split is a prefix-free subset drawn from the same stream: still disjoint from mini's test
    assert not {P.spec_of(p).key for p in load_split("train", "smoke")} & keys_test


def test_bad_split_or_profile_is_a_user_error():
    from study.errors import UserError

    with pytest.raises(UserError):
        load_split("valid")
    with pytest.raises(UserError):
        load_split("train", profile="huge")


def test_references_and_variants_pass_in_the_sandbox():
    from study.sandbox import run_batch

    problems = load_split("train", "mini")[:240] + load_split("test", "mini")[:60]
    r = random.Random(0)
    programs = [p.reference for p in problems] + [P.solution_variant(p, r) for p in problems[:100]]
    suites = [p.tests for p in problems] + [p.tests for p in problems[:100]]
    verdicts = run_batch(programs, suites, workers=2)
    bad = [(prog, v.stderr) for prog, v in zip(programs, verdicts) if v.status != "passed"]
    assert not bad, bad[:3]
    assert all(v.passed == v.total for v in verdicts)


def test_corruptions_are_small_and_mostly_wrong():
    from study.sandbox import run_batch

    problems = load_split("test", "mini")[:80]
    r = random.Random(1)
    cands, kinds = [], []
    for p in problems:
        bad, kind = corrupt(p.reference, r)
        assert kind in KINDS and bad != p.reference
        assert bad.split("\n")[0].rstrip(":") == p.reference.split("\n")[0].rstrip(":")  # signature kept
        cands.append(bad)
        kinds.append(kind)
    verdicts = run_batch(cands, [p.tests for p in problems], workers=2)
    failing = sum(v.status != "passed" for v in verdicts)
    assert failing >= 0.7 * len(problems)
    # the in-process check used to label training pairs agrees with the sandbox
    assert [P.passes(c, p) for c, p in zip(cands, problems)] == [v.status == "passed" for v in verdicts]
    code = "def f(xs):\n    return [v * 3 for v in xs if v > 2]"
    assert corrupt(code, random.Random(0), kinds=("syntax",))[1] == "syntax"
    assert corrupt(code, random.Random(0), kinds=("missing_return",))[0] == "def f(xs):\n    [v * 3 for v in xs if v > 2]"


def test_refine_prompt_round_trips():
    for p in load_split("test", "mini")[:10]:
        answer = code_block(p.reference)
        assert parse_refine_messages(refine_messages(p.prompt, answer)) == (p.prompt, answer)


def test_smoke_model_loads_and_generates(smoke_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.generation import generate

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(smoke_model_dir)
    model = AutoModelForCausalLM.from_pretrained(smoke_model_dir).eval()
    assert model.config.model_type == "llama"
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|end|>")
    assert tok.pad_token_id is not None and tok.bos_token_id is not None
    for role in ("<|user|>", "<|assistant|>", "<|system|>"):
        assert len(tok(role, add_special_tokens=False)["input_ids"]) == 1
    msgs = solve_messages("Write a Python function that returns x.")
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|bos|><|user|>\n") and text.endswith("<|end|>\n<|assistant|>\n")
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "ok"}], tokenize=False)
    assert full == text + "ok<|end|>\n"
    p = load_split("test", "smoke")[0]
    outs = generate(model, tok, [solve_messages(p.prompt), refine_messages(p.prompt, code_block(p.reference))],
                    max_new_tokens=8, temperature=1.0, batch_size=2)
    assert len(outs) == 2 and all(1 <= len(o.token_ids) <= 8 for o in outs)


def test_smoke_artifact_has_logs_metrics_and_is_reused(smoke_model_dir, monkeypatch):
    from study.mini.train_reference import recipe_for

    done = json.loads((smoke_model_dir / "DONE").read_text())
    assert done["recipe_hash"] == recipe_for("smoke").hash()
    rows = [json.loads(line) for line in (smoke_model_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, recipe_for("smoke").steps + 1))
    assert all({"loss", "elapsed"} <= set(r) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    metrics = json.loads((smoke_model_dir / "metrics.json").read_text())
    for key in ("parameters", "train_seconds", "solve_pass@1_greedy", "refine_own_failing", "refine_variant_correct"):
        assert key in metrics
    assert {"verbatim", "mean_common_prefix", "improved"} <= set(metrics["refine_variant_correct"])
    # a finished artifact is reused, found through STUDY_ARTIFACTS (root = $STUDY_ARTIFACTS/mini)
    stamp = (smoke_model_dir / "DONE").stat().st_mtime_ns
    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parent.parent))
    assert ensure_reference("smoke") == smoke_model_dir
    assert (smoke_model_dir / "DONE").stat().st_mtime_ns == stamp


def test_training_examples_mask_the_prompt(smoke_model_dir):
    from transformers import AutoTokenizer

    from study.mini.train_reference import encode, make_example, recipe_for

    tok = AutoTokenizer.from_pretrained(smoke_model_dir)
    p = load_split("train", "smoke")[0]
    r = random.Random(0)
    for kind in ("solve", "refine_ok", "refine_bad"):
        msgs, answer = make_example(p, kind, r, recipe_for("smoke"))
        assert answer.startswith("```python\n") and answer.endswith("\n```")
        if kind == "refine_ok":
            assert parse_refine_messages(msgs)[1] in (answer, answer[len("```python\n"):-len("\n```")])
        ids, labels = encode(tok, msgs, answer)
        kept = [t for t, lab in zip(ids, labels) if lab != -100]
        assert tok.decode(kept) == answer + tok.eos_token
        assert labels[: len(ids) - len(kept)] == [-100] * (len(ids) - len(kept))


def test_cli_rejects_unknown_profile(tmp_path, capsys):
    from study.cli import main

    assert main(["mini-reference", "--out", str(tmp_path / "m"), "--profile", "huge"]) == 2
    assert "unknown profile" in capsys.readouterr().err
