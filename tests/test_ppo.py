"""PPO trainer (study/trainers/ppo.py, gae.py): loss terms on hand examples, one iteration per constraint mode on a
tiny random Llama, the dynamic constraint's filter and gradient, the static KL reward penalty, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from study.constraint import static_kl
from study.generation import Generation
from study.problems import Problem, TestSuite
from study.runs import METRIC_COLUMNS, RunLog
from study.trainers.gae import compute_gae, whiten
from study.trainers.ppo import load_checkpoint, policy_loss, token_rewards, train_ppo, value_loss

# ------------------------------------------------------------------------------------------------ hand examples


def test_gae_hand_example_three_tokens():
    # γ = 1, λ = 0.95, terminal reward 1 on the last of 3 tokens, values (0.5, 0.6, 0.7)
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.6, 0.7]])
    m = torch.ones(1, 3)
    adv, ret = compute_gae(r, v, m, gamma=1.0, lam=0.95)
    d2 = 1.0 - 0.7  # δ_2 = r_2 + 0 - V_2
    d1 = 0.0 + 0.7 - 0.6
    d0 = 0.0 + 0.6 - 0.5
    a2 = d2
    a1 = d1 + 0.95 * a2
    a0 = d0 + 0.95 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]), atol=1e-6)
    assert torch.allclose(ret, adv + v, atol=1e-6)


def test_gae_ignores_padding():
    # the same 3-token response padded to 5, next to a 5-token one: padding changes nothing and stays 0
    r = torch.tensor([[0.0, 0.0, 1.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0, -1.0]])
    v = torch.tensor([[0.5, 0.6, 0.7, 5.0, 5.0], [0.1, 0.2, 0.3, 0.4, 0.5]])
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    adv, ret = compute_gae(r, v, m, gamma=1.0, lam=0.95)
    ref_adv, _ = compute_gae(r[:1, :3], v[:1, :3], m[:1, :3], gamma=1.0, lam=0.95)
    assert torch.allclose(adv[0, :3], ref_adv[0], atol=1e-6)
    assert torch.all(adv[0, 3:] == 0) and torch.all(ret[0, 3:] == 0)
    assert abs(adv[1, 4].item() - (-1.0 - 0.5)) < 1e-6


def test_whiten_is_masked():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    w = whiten(x, m)
    assert w[0, 3].item() == 0.0
    assert abs(w[0, :3].mean().item()) < 1e-6
    assert abs(w[0, :3].std().item() - 1.0) < 1e-4


def test_value_loss_clipping_formula():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])  # first moves by 1 (clipped to 0.2), second by 0.1 (inside the range)
    ret = torch.tensor([[0.5, 1.0]])
    m = torch.ones(1, 2)
    loss, frac = value_loss(new, old, ret, m, clip_range=0.2)
    # token 1: unclipped (1-0.5)^2 = .25, clipped (0.2-0.5)^2 = .09 -> max .25
    # token 2: unclipped (0.1-1)^2 = .81, clipped the same -> .81
    assert abs(loss.item() - 0.5 * (0.25 + 0.81) / 2) < 1e-6
    # returns far beyond: clipped error larger -> it is used
    loss2, frac2 = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2)
    assert abs(loss2.item() - 0.5 * (0.2 - 2.0) ** 2) < 1e-6 and frac2.item() == 1.0


def test_policy_clipped_loss_hand_example():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    m = torch.ones(1, 3)
    loss, frac = policy_loss(new, old, adv, m, clip_range=0.2)
    # token 0: A>0, ρ=1.5 -> min(1.5, 1.2)=1.2 -> -1.2 ; token 1: A>0, ρ=.5 -> min(.5, .8)=.5 -> -.5
    # token 2: A<0, ρ=1.1 -> max(-2.2, -2.2) = -2.2 -> 2.2
    assert abs(loss.item() - (-1.2 - 0.5 + 2.2) / 3) < 1e-6
    assert abs(frac.item() - 1 / 3) < 1e-6


def test_static_reward_has_minus_beta_kl():
    scores = torch.tensor([2.0, -1.0])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    logp = torch.log(torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.9, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.4, 0.6], [0.4, 0.9, 0.5]]))
    kl = static_kl(logp, ref, "k1") * m
    r = token_rewards(scores, m, kl=kl, kl_coef=0.1)
    expected = -0.1 * (logp - ref) * m
    expected[0, 2] += 2.0
    expected[1, 1] += -1.0
    assert torch.allclose(r, expected, atol=1e-6)
    plain = token_rewards(scores, m)
    assert plain.tolist() == [[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]


# ------------------------------------------------------------------------------------------- tiny model runs

GOOD = "GOOD ANSWER"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 2-layer Llama + a small BPE tokenizer with the mini chat template, saved to a folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from study.mini.tokenizer import train_tokenizer
    from study.prompts import solve_messages

    torch.manual_seed(0)
    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(50)] + [GOOD, "bad", solve_messages("add")[0]["content"]]
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def reward_fn(prompts=None, completions=None, tests=None, **kw):
    """Stand-in reward: 1 for the GOOD answer, 0 for 'bad', else a deterministic function of the text in [0, 0.5)."""
    out = []
    for c in completions:
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(1.0 if text == GOOD else 0.0 if text == "bad" else (len(text) % 5) / 10)
    return out


class StubRefiner:
    """Returns the GOOD answer for responses of even length, 'bad' (no better) for the others."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def refine(self, problems, responses):
        self.calls += 1
        out = []
        for r in responses:
            text = GOOD if len(r) % 2 == 0 else "bad"
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            out.append(Generation(text=text, token_ids=ids, truncated=False))
        return out


def problems(n=3):
    return [Problem(task_id=f"t/{i}", prompt=f"add {i}", tests=TestSuite("asserts", ("assert True",)),
                    entry_point="f", source="test") for i in range(n)]


def make_cfg(mode, **over):
    from study.config import validate_config

    raw = {
        "name": f"ppo-{mode}", "trainer": "ppo", "model": "unused", "steps": 1, "device": "cpu",
        "rollout": {"num_prompts": 2, "num_generations": 2, "max_prompt_length": 64, "max_completion_length": 8},
        "optim": {"learning_rate": 1e-3, "critic_learning_rate": 1e-3},
        "ppo": {"mini_batch_size": 2, "ppo_epochs": 1},
        "constraint": {"mode": mode, "kl_coef": 0.1, "coef": 1.0, "kl_estimator": "k1"},
        "samples_per_step": 4,
    }
    for k, v in over.items():
        d = raw
        parts = k.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = v
    return validate_config(raw)


def run_once(tiny, tmp_path, mode, seed=0, **over):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.train import Components

    cfg = make_cfg(mode, **over)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tiny)
    policy = AutoModelForCausalLM.from_pretrained(tiny)
    reference = AutoModelForCausalLM.from_pretrained(tiny).eval().requires_grad_(False)
    refiner = StubRefiner(tok) if mode == "dynamic" else None
    comps = Components(policy, reference, tok, problems(), reward_fn, 1.0, refiner, "cpu")
    run = RunLog(tmp_path / cfg.name, cfg.model_dump(mode="json"), cfg.seed, cfg.hash())
    torch.manual_seed(seed)
    summary = train_ppo(cfg, comps, run)
    return summary, run, policy, refiner


def read_jsonl(p):
    return [json.loads(l) for l in p.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["none", "static", "dynamic"])
def test_one_iteration_writes_every_metric_column(tiny, tmp_path, mode):
    torch.set_num_threads(1)
    summary, run, _, _ = run_once(tiny, tmp_path, mode, steps=2)
    rows = read_jsonl(run.metrics_path)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        missing = [c for c in METRIC_COLUMNS if c not in r]
        assert not missing
        for c in ("reward_mean", "kl", "loss", "entropy", "clip_frac", "response_length", "learning_rate",
                  "time_step", "value_loss"):
            assert r[c] is not None and math.isfinite(r[c]), c
        if mode == "dynamic":
            assert r["refined_frac"] is not None and r["kept_frac"] is not None
        else:
            assert r["dynamic_ce"] is None and r["kept_frac"] is None  # NaN -> null in JSON
    samples = read_jsonl(run.samples_path)
    assert len(samples) == 8 and {"task_id", "response", "response_tokens", "refined_token_ce"} <= set(samples[0])
    ck = run.root / "checkpoints" / "step-2"
    assert (ck / "policy" / "config.json").exists() and (ck / "critic.pt").exists()
    assert (run.root / "checkpoints" / "latest").read_text() == "step-2"
    assert summary["steps"] == 2


def test_dynamic_kept_matches_filter_and_logs_ce(tiny, tmp_path):
    torch.set_num_threads(1)
    _, run, _, refiner = run_once(tiny, tmp_path, "dynamic")
    row = read_jsonl(run.metrics_path)[0]
    samples = read_jsonl(run.samples_path)
    assert len(samples) == 4 and refiner.calls == 1
    expected = [len(s["response"]) % 2 == 0 for s in samples]  # the stub improves exactly these
    assert [s["kept"] for s in samples] == expected
    assert row["kept"] == sum(expected) and row["kept_frac"] == sum(expected) / 4
    assert row["refined_frac"] == 1.0  # random responses are all below the ceiling
    for s in samples:
        assert s["refined"] == (GOOD if s["kept"] else "bad")
        assert len(s["refined_token_ce"]) == len(s["refined_tokens"])
    if sum(expected):
        assert row["dynamic_ce"] > 0 and row["improvement_ratio"] == sum(expected) / 4


def test_dynamic_filter_off_keeps_every_refinement(tiny, tmp_path):
    torch.set_num_threads(1)
    _, run, _, _ = run_once(tiny, tmp_path, "dynamic", **{"constraint.filter": False})
    row = read_jsonl(run.metrics_path)[0]
    assert row["kept_frac"] == 1.0 and row["dynamic_ce"] > 0


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_mode_terms_change_the_update(tiny, tmp_path):
    """Same seed, same rollouts: dynamic with λ=0 and static with β=0 update exactly like 'none';
    λ>0 (λ·L_DC in the actor loss) and β>0 (−β·KL_t in the reward) change the update."""
    torch.set_num_threads(1)
    # all refinements kept so the λ term is sure to be present
    over = {"constraint.filter": False}
    _, _, p_none, _ = run_once(tiny, tmp_path / "a", "none")
    _, _, p_dyn0, _ = run_once(tiny, tmp_path / "b", "dynamic", **{"constraint.coef": 0.0}, **over)
    _, _, p_dyn1, _ = run_once(tiny, tmp_path / "c", "dynamic", **{"constraint.coef": 1.0}, **over)
    _, _, p_st0, _ = run_once(tiny, tmp_path / "d", "static", **{"constraint.kl_coef": 0.0})
    w_none, w_dyn0, w_dyn1, w_st0 = map(_params, (p_none, p_dyn0, p_dyn1, p_st0))
    assert torch.equal(w_none, w_dyn0)
    assert torch.equal(w_none, w_st0)
    assert not torch.allclose(w_none, w_dyn1)


def test_static_penalty_enters_advantages(tiny, tmp_path):
    """With 2 steps the policy moves away from π_ref, KL ≠ 0, and β > 0 changes the second update."""
    torch.set_num_threads(1)
    _, run0, p0, _ = run_once(tiny, tmp_path / "a", "static", steps=2, **{"constraint.kl_coef": 0.0})
    _, run1, p1, _ = run_once(tiny, tmp_path / "b", "static", steps=2, **{"constraint.kl_coef": 10.0})
    r1 = read_jsonl(run1.metrics_path)
    assert r1[1]["kl"] != 0.0 and r1[1]["kl_penalty_mean"] != 0.0
    assert not torch.allclose(_params(p0), _params(p1))


def test_critic_starts_from_the_policy_weights(tiny):
    from transformers import AutoModelForCausalLM

    from study.trainers.ppo import ValueModel, response_values

    policy = AutoModelForCausalLM.from_pretrained(tiny)
    critic = ValueModel(policy)
    for (n, p), (n2, q) in zip(policy.model.named_parameters(), critic.backbone.named_parameters()):
        assert n == n2 and torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    ids = torch.tensor([[0, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1, 1]])
    v = response_values(critic, ids[:, :3], mask[:, :3], ids[:, 3:], mask[:, 3:])
    assert v.shape == (1, 2) and v.dtype == torch.float32


def test_checkpoint_round_trip(tiny, tmp_path):
    """``load_checkpoint`` restores the weights, the optimiser state and the registered objects (scheduler, problem
    sampler) into a freshly prepared actor-critic."""
    from transformers import AutoModelForCausalLM

    from study.trainers.ppo import ProblemSampler, make_accelerator, prepare_actor_critic

    torch.set_num_threads(1)
    _, run, policy, _ = run_once(tiny, tmp_path, "none")
    ck = run.root / "checkpoints" / "step-1"
    cfg = make_cfg("none")
    acc = make_accelerator("cpu")
    fresh = AutoModelForCausalLM.from_pretrained(tiny)
    model, opt, sched = prepare_actor_critic(fresh, cfg, acc, 2)
    sampler = ProblemSampler(problems(), 0)
    acc.register_for_checkpointing(sched, sampler)
    assert not torch.equal(_params(fresh), _params(policy))
    step = load_checkpoint(ck, acc)
    assert step == 1
    assert torch.equal(_params(fresh), _params(policy))
    assert len(opt.state) > 0 and sched.last_epoch == 1
    untouched = ProblemSampler(problems(), 0)
    assert not torch.equal(sampler.generator.get_state(), untouched.generator.get_state())  # the draws of step 1
    assert not list(ck.parent.glob(".step-*"))  # no temp folder left behind


def test_ppo_logs_refinement_counts_and_worse_ratio(tiny, tmp_path):
    """Both trainers log App. B's quantities per step: the counts of rollouts, refined, improved, worse and kept
    pairs, and worse_ratio = n_worse / n_rollouts."""
    torch.set_num_threads(1)
    _, run, _, _ = run_once(tiny, tmp_path, "dynamic", steps=3, **{"rollout.num_generations": 4})
    rows = read_jsonl(run.metrics_path)
    assert sum(r["n_worse"] for r in rows) > 0 and sum(r["n_kept"] for r in rows) > 0
    for r in rows:
        assert r["n_rollouts"] == 2 * 4  # num_prompts x num_generations
        assert r["n_kept"] <= r["n_refined"] <= r["n_rollouts"] and r["n_improved"] + r["n_worse"] <= r["n_refined"]
        assert r["worse_ratio"] == pytest.approx(r["n_worse"] / r["n_rollouts"])
        assert r["improvement_ratio"] == pytest.approx(r["n_improved"] / r["n_rollouts"])
        assert r["kept_frac"] == pytest.approx(r["n_kept"] / r["n_rollouts"])
