"""study eval: the pass@k estimator, canonical self-check through the CLI, scoring of canned answers, and an end-to-end
eval of a tiny random model producing every output file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from study import evaluate
from study.cli import main
from study.evaluate import evaluate_canonical, evaluate_model, mean_pass_at_k, pass_at_k
from study.generation import Generation

FIX = Path(__file__).parent / "fixtures"


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)                    # c/n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)             # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)          # 1 - C(7,5)/C(10,5)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(5, 4, 2) == 1.0                                   # n - c < k
    # the numerically stable product form used by human-eval / EvalPlus agrees
    n, c, k = 20, 7, 10
    stable = 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    assert pass_at_k(n, c, k) == pytest.approx(stable)
    assert mean_pass_at_k([5, 5], [2, 0], 1) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_cli_canonical_humaneval(tmp_path, capsys):
    out = tmp_path / "he"
    assert main(["eval", "--benchmark", "humaneval", "--canonical", "--limit", "10", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_problems"] == 10 and summary["pass@1"] == 1.0 and summary["counts"]["passed"] == 10
    assert summary["model"] == "canonical" and summary["benchmark"] == "humaneval"
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [f"HumanEval/{i}" for i in range(10)]
    assert set(rows[0]) >= {"task_id", "completion", "program", "status", "passed", "total"}
    he = [json.loads(l) for l in (out / "samples_humaneval.jsonl").read_text().splitlines()]
    ep = [json.loads(l) for l in (out / "samples_evalplus.jsonl").read_text().splitlines()]
    assert set(he[0]) == {"task_id", "completion"} and set(ep[0]) == {"task_id", "solution"} and len(ep) == 10
    assert "pass@1 = 1.0000" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    assert main(["eval", "--benchmark", "humaneval", "--limit", "1"]) == 2            # no --model
    assert main(["eval", "--benchmark", "humaneval", "--model", str(tmp_path / "none"), "--limit", "1"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "apps", "--canonical"]) == 2                  # APPS needs --data
    assert main(["eval", "--benchmark", "apps", "--canonical", "--data", str(tmp_path / "x.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_canonical_fixtures():
    s = evaluate_canonical("mbpp_plus", data_path=FIX / "MbppPlus-mini.jsonl")
    assert s["pass@1"] == 1.0 and s["n_problems"] == 3
    s = evaluate_canonical("apps", data_path=FIX / "apps-mini.jsonl")
    assert s["pass@1"] == 1.0


def test_scoring_of_canned_chat_answers(monkeypatch, tmp_path):
    """Fenced answers are extracted, imports prepended, n samples scored per problem, pass@k estimated."""
    import study.generation

    right = ("```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    answers = {0: [right, "```python\ndef has_close_elements(n, t):\n    return True\n```", right],
               1: ["no code here", "```python\ndef separate_paren_groups(s):\n    return [\n```", "x"]}

    def fake_generate(model, tokenizer, prompts, **kw):
        assert kw["temperature"] == 0.7 and kw["max_new_tokens"] == 32
        assert prompts[0][0]["role"] == "user" and "has_close_elements" in prompts[0][0]["content"]
        assert len(prompts) == 6
        return [Generation(a, [], False) for i in (0, 1) for a in answers[i]]

    class Tok:
        chat_template = "{{ x }}"

    monkeypatch.setattr(study.generation, "generate", fake_generate)
    s = evaluate_model(object(), Tok(), "humaneval", limit=2, n=3, temperature=0.7, max_new_tokens=32,
                       out_dir=tmp_path, model_name="fake")
    assert s["n_problems"] == 2 and s["n_samples"] == 6 and s["samples_per_problem"] == 3
    assert s["pass@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["counts"]["passed"] == 2 and s["counts"]["failed"] == 1 and s["counts"]["compile_error"] >= 2
    rows = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert rows[0]["program"].startswith("from typing import List\ndef has_close_elements")
    assert [r["sample"] for r in rows] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(evaluate.UserError, match="temperature"):
        evaluate_model(object(), Tok(), "humaneval", limit=1, n=2)


def _tiny_model_and_tokenizer():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["def f(x):\n    return x + 1\n"] * 10, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = ("{% for m in messages %}{{ '<s>' + m['role'] + '\n' + m['content'] + '</s>\n' }}"
                          "{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}")
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    return LlamaForCausalLM(cfg).eval(), fast


def test_tiny_random_model_end_to_end(tmp_path):
    model, tok = _tiny_model_and_tokenizer()
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "eval"
    assert main(["eval", "--benchmark", "mbpp_plus", "--data", str(FIX / "MbppPlus-mini.jsonl"), "--model",
                 str(model_dir), "--max-new-tokens", "8", "--out", str(out), "--threads", "1"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_problems"] == 3 and s["pass@1"] == 0.0 and s["protocol"] == "chat"
    assert sum(s["counts"].values()) == 3 and s["model"] == str(model_dir)
    for name in ("results.jsonl", "samples_humaneval.jsonl", "samples_evalplus.jsonl"):
        assert len((out / name).read_text().splitlines()) == 3
    # no chat template -> completion-style prompting with the benchmark's stop sequences
    tok.chat_template = None
    s = evaluate_model(model, tok, "humaneval", limit=2, max_new_tokens=4, out_dir=tmp_path / "c")
    assert s["protocol"] == "completion" and s["n_problems"] == 2
    row = json.loads((tmp_path / "c" / "results.jsonl").read_text().splitlines()[0])
    assert row["program"].startswith("from typing import List")


def test_canonical_full_humaneval_is_164_of_164():
    s = evaluate_canonical("humaneval", workers=2)
    assert s["n_problems"] == 164 and s["counts"]["passed"] == 164


def test_summary_breaks_pass_at_1_down_by_family(tmp_path):
    """Mini problems carry meta["family"]: the summary holds each family's problem count and pass@1."""
    from study.mini import load_split

    problems = load_split("test", "mini")[:40]
    # the reference solution for every other problem, a wrong program for the rest
    programs = [[p.reference if i % 2 == 0 else f"def {p.entry_point}(*a):\n    return None"]
                for i, p in enumerate(problems)]
    s = evaluate.score(problems, programs, programs, "mini", out_dir=tmp_path, workers=2)
    by = s["pass@1_by_family"]
    for fam in {p.meta["family"] for p in problems}:
        idx = [i for i, p in enumerate(problems) if p.meta["family"] == fam]
        assert by[fam]["n_problems"] == len(idx)
        assert by[fam]["pass@1"] == pytest.approx(sum(i % 2 == 0 for i in idx) / len(idx))
    assert sum(v["n_problems"] for v in by.values()) == 40 and s["pass@1"] == pytest.approx(0.5)
    assert json.loads((tmp_path / "summary.json").read_text())["pass@1_by_family"] == by
    # problems without a family (HumanEval, MBPP): no breakdown
    assert "pass@1_by_family" not in evaluate_canonical("mbpp_plus", data_path=FIX / "MbppPlus-mini.jsonl")


def test_cli_mini_prints_pass_at_1_next_to_the_family_breakdown(tmp_path, capsys):
    """The mini benchmark's summary holds ``pass@1_by_family`` (a dict) next to ``pass@1``: the CLI line prints
    the number and skips the dict (it raised TypeError before)."""
    from study.train import resolve_model_path

    out = tmp_path / "eval"
    assert main(["eval", "--benchmark", "mini", "--model", resolve_model_path("mini:mini"), "--limit", "8",
                 "--batch-size", "8", "--out", str(out), "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    s = json.loads((out / "summary.json").read_text())
    assert isinstance(s["pass@1_by_family"], dict)
    assert line.startswith("mini [mini]: pass@1 = ") and f"{s['pass@1']:.4f}" in line
