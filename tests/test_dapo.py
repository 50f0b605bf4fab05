"""DAPO trainer with the online refiner (study.trainers.dapo) and the shared refine/filter helpers
(study.trainers.common), on a tiny random Llama with a character-level tokenizer, plus one run through
``study train configs/smoke/dapo_dynamic.yaml`` with the smoke mini model."""

from __future__ import annotations

import json
import string

import pytest
import torch

from study.config import validate_config
from study.generation import Generation
from study.problems import Problem, TestSuite
from study.runs import METRIC_COLUMNS, RunLog
from study.train import Components
from study.trainers.common import (
    StepTimer,
    group_reward_std,
    metric_row,
    policy_ce_on_refined,
    refine_and_filter,
    refiner_fn,
    sample_rows,
)

torch.set_num_threads(1)

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|end|>", "<|user|>", "<|assistant|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    t = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    t.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    t.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<|end|>",
                                   additional_special_tokens=specials[2:])
    fast.chat_template = CHAT
    return fast


def tiny_model(tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    m = LlamaForCausalLM(cfg)
    m.generation_config.eos_token_id = tok.eos_token_id
    m.generation_config.pad_token_id = tok.pad_token_id
    return m


PROBLEMS = [Problem(task_id=f"t{i}", prompt=f"say {c}", tests=TestSuite("asserts", (f"x == {c!r}",)),
                    reference=f"print({c!r})") for i, c in enumerate("abcdefgh")]
TARGET = "aaaa"


def text_of(c):
    return c[0]["content"] if isinstance(c, list) else c


def frac_a(prompts=None, completions=None, **kw):
    """Share of 'a' characters (x4, capped at 1): graded, so most groups have distinct rewards."""
    return [min(1.0, 4 * text_of(c).count("a") / max(len(text_of(c)), 1)) for c in completions]


def is_target(prompts=None, completions=None, **kw):
    """1 for exactly TARGET, else 0: a random policy scores 0 everywhere (advantages all zero)."""
    return [1.0 if text_of(c).strip() == TARGET else 0.0 for c in completions]


class FixedRefiner:
    """A refiner that always answers TARGET (y' with the tokenizer's EOS)."""

    def __init__(self, tok, text=TARGET):
        self.tok, self.text = tok, text
        self.calls = 0

    def refine(self, problems, responses):
        self.calls += len(problems)
        ids = self.tok(self.text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
        return [Generation(text=self.text, token_ids=ids, truncated=False) for _ in problems]


def make(tok, mode="dynamic", reward=frac_a, refiner=None, steps=2, **over):
    policy = tiny_model(tok)
    ref = tiny_model(tok)
    ref.load_state_dict(policy.state_dict())
    ref.eval().requires_grad_(False)
    if refiner is None and mode == "dynamic":
        from study.refiner import Refiner

        refiner = Refiner(ref, tok, max_new_tokens=8, batch_size=16)
    raw = dict(name="t", model="x", steps=steps, reward="binary", samples_per_step=2,
               rollout=dict(num_prompts=2, num_generations=4, max_completion_length=8),
               optim=dict(learning_rate=1e-3), constraint=dict(mode=mode), refiner=dict(max_new_tokens=8))
    for k, v in over.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    cfg = validate_config(raw)
    return cfg, Components(policy, ref, tok, PROBLEMS, reward, 1.0, refiner, "cpu")


# ------------------------------------------------------------------------------------------- common helpers


def test_refine_and_filter_keeps_exactly_the_improved_pairs(tok):
    rows = PROBLEMS[:4]
    responses = ["aaaa", "bbbb", "xyz", "aa"]
    rewards = frac_a(completions=responses)  # [1.0, 0.0, 0.0, 1.0]
    ref = FixedRefiner(tok, text="abab")  # scores 1.0 (capped)
    res = refine_and_filter(rows, responses, rewards, refiner_fn(ref), frac_a, tok, max_reward=1.0)
    assert res.refined == [False, True, True, False]  # max-reward responses are not refined
    assert ref.calls == 2 and res.n_skipped_max == 2
    assert res.keep.tolist() == [False, True, True, False]
    assert res.rewards == [None, 1.0, 1.0, None]
    assert res.improvement_ratio == 0.5 and res.kept_frac == 0.5 and res.refined_frac == 0.5
    n = len(tok("abab", add_special_tokens=False)["input_ids"]) + 1
    assert res.refined_mask.sum(1).tolist() == [0, n, n, 0]
    # a refinement that does not score higher is dropped by the filter, kept without it
    worse = FixedRefiner(tok, text="zzzz")
    res = refine_and_filter(rows, responses, rewards, refiner_fn(worse), frac_a, tok, max_reward=1.0)
    assert res.keep.tolist() == [False] * 4
    res = refine_and_filter(rows, responses, rewards, refiner_fn(worse), frac_a, tok, max_reward=1.0,
                            filter_enabled=False)
    assert res.keep.tolist() == [False, True, True, False]


def test_sample_rows_carry_token_ce_for_heatmaps(tok):
    responses = ["bbb", "aaaa"]
    res = refine_and_filter(PROBLEMS[:2], responses, [0.0, 1.0], refiner_fn(FixedRefiner(tok)), frac_a, tok,
                            max_reward=1.0)
    ce = torch.rand(res.refined_ids.shape)
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
    rows = sample_rows(3, PROBLEMS[:2], responses, ids, [0.0, 1.0], res, ce, tok, n=2)
    assert rows[0]["kept"] and rows[0]["task_id"] == "t0" and rows[0]["refined"] == TARGET
    assert len(rows[0]["refined_tokens"]) == len(rows[0]["refined_token_ce"]) == res.refined_mask[0].sum()
    assert rows[0]["response_tokens"] == list("bbb")
    assert rows[1]["refined"] is None and rows[1]["refined_token_ce"] is None


def test_metric_row_and_timer():
    t = StepTimer()
    with t("rollout"):
        pass
    t.add("refine", 1.5)
    row = metric_row(4, reward_mean=0.5, **t.as_columns())
    assert set(METRIC_COLUMNS) <= set(row) and row["step"] == 4 and row["time_refine"] == 1.5
    assert row["time_step"] >= 1.5 and row["kl"] != row["kl"]  # NaN where not given
    assert group_reward_std([0, 1, 1, 1, 2, 2, 2, 2], 4) == pytest.approx((0.4330127 + 0.0) / 2)


# ------------------------------------------------------------------------------------------- the trainer


def _trainer(tmp_path, cfg, comp):
    from study.trainers.dapo import build_trainer

    run = RunLog(tmp_path / cfg.constraint.mode, cfg.model_dump(mode="json"), 0, cfg.hash())
    tr = build_trainer(cfg, comp, run)
    tr.model.train()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the pieces directly
    return tr, run


def _first_batch(tr):
    inputs = next(iter(tr.get_train_dataloader()))
    return tr._generate_and_score_completions(inputs)


def test_lambda_zero_loss_equals_plain_dapo(tok, tmp_path):
    cfg, comp = make(tok, "dynamic", refiner=FixedRefiner(tok, "abab"), constraint={"coef": 0.0})
    dyn, _ = _trainer(tmp_path, cfg, comp)
    batch = _first_batch(dyn)
    assert batch["refine_keep"].any()  # the λ term has something to act on
    cfg0, _ = make(tok, "none")
    plain, _ = _trainer(tmp_path / "p", cfg0, Components(comp.policy, comp.reference, tok, PROBLEMS, frac_a, 1.0,
                                                          None, "cpu"))
    with torch.no_grad():
        l_dyn = dyn._compute_loss(dyn.model, batch)
        l_plain = plain._compute_loss(plain.model, batch)
    assert l_dyn.item() == pytest.approx(l_plain.item(), abs=1e-7)
    # with λ > 0 the same batch gives a different (larger: CE > 0) loss
    dyn.lam = 1.0
    with torch.no_grad():
        assert dyn._compute_loss(dyn.model, batch).item() > l_plain.item() + 1e-3


def test_one_step_on_a_kept_pair_raises_refined_logprob(tok, tmp_path):
    # rewards are 0 for every sample (no RL signal), y' = TARGET scores 1 -> every pair kept, only λ·CE moves θ
    cfg, comp = make(tok, "dynamic", reward=is_target, refiner=FixedRefiner(tok), steps=1,
                     constraint={"coef": 1.0}, dapo={"dynamic_sampling": False})
    tr, run = _trainer(tmp_path, cfg, comp)
    from study.prompts import solve_messages

    p_ids = torch.tensor([tok.apply_chat_template(solve_messages(PROBLEMS[0].prompt), add_generation_prompt=True,
                                                  tokenize=True)["input_ids"]])
    r = tok(TARGET, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    r_ids = torch.tensor([r])

    def ce():
        with torch.no_grad():
            return policy_ce_on_refined(comp.policy, p_ids, torch.ones_like(p_ids), r_ids,
                                        torch.ones_like(r_ids)).sum().item()

    before = ce()
    tr.train()
    after = ce()
    m = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert m[0]["kept_frac"] == 1.0 and m[0]["reward_mean"] == 0.0 and m[0]["dynamic_ce"] > 0
    assert after < before - 1e-3


def test_dynamic_sampling_drops_groups_with_identical_rewards(tok, tmp_path):
    # half the problems always score 0 (uninformative groups); the others get graded rewards
    def half_flat(prompts=None, completions=None, task_id=None, **kw):
        r = [sum(ch in string.ascii_letters for ch in text_of(c)) / 10 for c in completions]
        return [0.0 if int(t[1:]) % 2 else x for t, x in zip(task_id, r)]

    cfg, comp = make(tok, "none", reward=half_flat, rollout={"num_prompts": 4},
                     dapo={"max_sampling_rounds": 8})
    tr, _ = _trainer(tmp_path, cfg, comp)
    rounds = []
    for _ in range(3):
        batch = _first_batch(tr)
        info = tr.last_rollout
        G, B = 4, 16
        assert batch["completion_ids"].shape[0] == B == len(info["rows"])
        for g in range(B // G):
            grp = slice(g * G, (g + 1) * G)
            assert len({r["task_id"] for r in info["rows"][grp]}) == 1  # groups stay whole after merging
            assert len(set(info["reward"][grp])) > 1  # never all equal
        # merged tensors line up with the kept rows
        for i in range(B):
            n = len(info["completion_ids"][i])
            assert batch["completion_ids"][i, :n].tolist() == info["completion_ids"][i]
            assert batch["completion_mask"][i].sum() == n
        assert batch["num_items_in_batch"] == batch["completion_mask"].sum()
        assert batch["advantages"].abs().sum() > 0
        rounds.append(tr._sampling["rounds"])
    assert max(rounds) > 1  # refills (and the merge) were exercised


@pytest.mark.parametrize("mode", ["none", "static", "dynamic"])
def test_train_dapo_end_to_end_writes_logs(tok, tmp_path, mode):
    from study.trainers.dapo import train_dapo

    cfg, comp = make(tok, mode, steps=2)
    run = RunLog(tmp_path / mode, cfg.model_dump(mode="json"), 0, cfg.hash())
    summary = train_dapo(cfg, comp, run)
    assert summary["steps"] == 2
    rows = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert set(METRIC_COLUMNS) <= set(r)
        assert r["kl"] is not None and r["kl"] >= 0  # logged in every mode
        assert r["reward_mean"] is not None and r["time_step"] > 0
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # π_θ = π_ref before the first update
    if mode == "dynamic":
        assert all(r["improvement_ratio"] is not None and r["kept_frac"] is not None for r in rows)
    else:
        assert rows[0]["dynamic_ce"] is None and rows[0]["improvement_ratio"] is None
    samples = [json.loads(x) for x in run.samples_path.read_text().splitlines()]
    assert len(samples) == 4 and {s["step"] for s in samples} == {1, 2}
    assert all(s["response_tokens"] for s in samples)
    if mode == "dynamic":
        s = samples[0]
        assert s["refined"] is not None and len(s["refined_token_ce"]) == len(s["refined_tokens"])
    assert (run.root / "checkpoints" / "final" / "config.json").exists()


def test_static_mode_uses_the_given_reference(tok, tmp_path):
    cfg, comp = make(tok, "static")
    tr, _ = _trainer(tmp_path, cfg, comp)
    assert tr.ref_model is comp.reference and tr.beta == cfg.constraint.kl_coef


def test_study_train_smoke_dynamic(smoke_model_dir, tmp_path, monkeypatch):
    """``study train configs/smoke/dapo_dynamic.yaml`` end to end with the smoke mini model and the sandbox."""
    from study.cli import main

    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parent.parent))
    rc = main(["train", "configs/smoke/dapo_dynamic.yaml", "--runs-dir", str(tmp_path),
               "--set", "steps=2"])
    assert rc == 0
    run = tmp_path / "smoke-dapo-dynamic"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and set(METRIC_COLUMNS) <= set(rows[-1])
    assert rows[0]["refined_frac"] is not None
    assert (run / "samples.jsonl").exists() and (run / "DONE").exists()
