"""DAPO trainer with the online refiner (study.trainers.dapo) and the shared refine/filter helpers
(study.trainers.common), on a tiny random Llama with a character-level tokenizer, plus one run through
``study train configs/smoke/dapo_dynamic.yaml`` with the smoke mini model."""

from __future__ import annotations

import json
import string

import pytest
import torch
from helpers import (
    PROBLEMS,
    TARGET,
    EditRefiner,
    FixedRefiner,
    HalfRefiner,
    dapo_trainer,
    first_batch,
    frac_a,
    is_target,
    make,
    record_rounds,
    step_values,
    text_of,
)

from study.runs import METRIC_COLUMNS, RunLog
from study.tokens import token_logps
from study.train import Components
from study.trainers.common import (
    StepTimer,
    group_reward_std,
    metric_row,
    refine_and_filter,
    refiner_fn,
    sample_rows,
)

torch.set_num_threads(1)


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
    assert res.keep.tolist() == [True] * 4


def test_without_the_filter_every_response_is_refined(tok):
    """App. B's failure mode must be able to occur: with the filter off, max-reward responses go to the refiner too
    (skip_max_reward applies only with the filter on), and their worse y' are kept."""
    rows, responses = PROBLEMS[:4], ["aaaa", "bbbb", "xyz", "aa"]
    rewards = frac_a(completions=responses)  # [1.0, 0.0, 0.0, 1.0]
    worse = FixedRefiner(tok, text="zzzz")  # reward 0
    res = refine_and_filter(rows, responses, rewards, refiner_fn(worse), frac_a, tok, max_reward=1.0,
                            filter_enabled=False, skip_max_reward=True)
    assert res.refined == [True] * 4 and res.n_skipped_max == 0 and worse.calls == 4
    assert res.keep.tolist() == [True] * 4 and res.rewards == [0.0] * 4  # two correct answers made worse, kept


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


def test_lambda_zero_loss_equals_plain_dapo(tok, tmp_path):
    cfg, comp = make(tok, "dynamic", refiner=FixedRefiner(tok, "abab"), constraint={"coef": 0.0})
    dyn, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(dyn)
    assert batch["refine_keep"].any()  # the λ term has something to act on
    cfg0, _ = make(tok, "none")
    plain, _ = dapo_trainer(tmp_path / "p", cfg0, Components(comp.policy, comp.reference, tok, PROBLEMS, frac_a, 1.0,
                                                             None, "cpu"))
    with torch.no_grad():
        l_dyn = dyn._compute_loss(dyn.model, batch)
        l_plain = plain._compute_loss(plain.model, batch)
    assert l_dyn.item() == pytest.approx(l_plain.item(), abs=1e-6)
    # with λ > 0 the same batch gives a different (larger: CE > 0) loss
    dyn.lam = 1.0
    with torch.no_grad():
        assert dyn._compute_loss(dyn.model, batch).item() > l_plain.item() + 1e-3


@pytest.mark.parametrize("mode", ["none", "static"])
def test_loss_is_trls_dapo_loss(tok, tmp_path, mode):
    """_compute_loss writes TRL's loss_type="dapo" out (one forward we can extend): same loss, same gradients."""
    from trl import GRPOTrainer

    cfg, comp = make(tok, mode, constraint={"kl_coef": 0.5})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(tr)
    with torch.no_grad():  # move π_θ away from π_ref so the KL term and the clipping have something to do
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch["old_per_token_logps"] = batch.get("kl_ref_logps", batch.get("ref_per_token_logps")).clone()
    grads = []
    for loss_fn in (tr._compute_loss, lambda m, b: GRPOTrainer._compute_loss(tr, m, b)):
        tr.model.zero_grad(set_to_none=True)
        loss = loss_fn(tr.model, batch)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}))
    (ours, g_ours), (trl, g_trl) = grads
    assert ours == pytest.approx(trl, rel=1e-6, abs=1e-7) and ours != 0.0
    assert g_ours.keys() == g_trl.keys()
    for n in g_ours:
        torch.testing.assert_close(g_ours[n], g_trl[n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("normalize", ["rollout", "token"])
def test_dynamic_gradient_is_plain_dapo_plus_lambda_times_the_dc_gradient(tok, tmp_path, normalize):
    """∇L = ∇L_DAPO + λ∇L_DC, with ∇L_DC from an independent forward over the kept (x, y') pairs: the parameters
    after a step differ from plain DAPO's by the λ·L_DC gradient, and by nothing else. Both Eq. 6 normalisers:
    ``rollout`` (default: the kept sequences' mean CE summed over ALL rollouts' count) and ``token``."""
    lam = 0.7
    cfg, comp = make(tok, "dynamic", refiner=EditRefiner(tok), constraint={"coef": lam, "normalize": normalize})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(tr)
    keep = batch["refine_keep"].bool()
    assert keep.any() and not keep.all()

    def grads(fn):
        tr.model.zero_grad(set_to_none=True)
        fn().backward()
        return {n: p.grad.clone() for n, p in tr.model.named_parameters()}

    g_dyn = grads(lambda: tr._compute_loss(tr.model, batch))
    tr.lam = 0.0
    g_plain = grads(lambda: tr._compute_loss(tr.model, batch))

    def l_dc():  # Eq. 6 by hand
        ce = -token_logps(tr.model, batch["prompt_ids"][keep], batch["prompt_mask"][keep],
                          batch["refined_ids"][keep], batch["refined_mask"][keep])[0]
        m = batch["dc_mask"][keep]
        if normalize == "token":  # kept tokens' CE over the kept-token count
            return (ce * m).sum() / m.sum()
        return ((ce * m).sum(-1) / m.sum(-1)).sum() / len(keep)  # kept sequences' mean CE over all N rollouts

    g_dc = grads(l_dc)
    for n in g_dyn:
        torch.testing.assert_close(g_dyn[n] - g_plain[n], lam * g_dc[n], atol=1e-5, rtol=1e-4, msg=n)
    assert sum(g.abs().sum() for g in g_dc.values()) > 0


def test_one_step_on_a_kept_pair_raises_refined_logprob(tok, tmp_path):
    # rewards are 0 for every sample (no RL signal), y' = TARGET scores 1 -> every pair kept, only λ·CE moves θ
    cfg, comp = make(tok, "dynamic", reward=is_target, refiner=FixedRefiner(tok), steps=1,
                     constraint={"coef": 1.0}, dapo={"dynamic_sampling": False})
    tr, run = dapo_trainer(tmp_path, cfg, comp)
    from study.prompts import solve_messages

    p_ids = torch.tensor([tok.apply_chat_template(solve_messages(PROBLEMS[0].prompt), add_generation_prompt=True,
                                                  tokenize=True)["input_ids"]])
    r = tok(TARGET, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    r_ids = torch.tensor([r])

    def ce():
        with torch.no_grad():
            return -token_logps(comp.policy, p_ids, torch.ones_like(p_ids), r_ids, torch.ones_like(r_ids))[0].sum().item()

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
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    rounds = []
    for _ in range(3):
        tr._metrics["train"].clear()
        batch = first_batch(tr)
        G, B = 4, 16
        assert batch["completion_ids"].shape[0] == B == len(batch["task_reward"])
        for g in range(B // G):
            grp = slice(g * G, (g + 1) * G)
            ids = batch["prompt_ids"][grp]
            assert (ids == ids[:1]).all()  # groups stay whole after merging: one prompt each
            assert len(set(batch["task_reward"][grp].tolist())) > 1  # never all equal
        # merged masks line up with the ids: real tokens up to and including EOS, padding after
        for i in range(B):
            n = int(batch["completion_mask"][i].sum())
            assert (batch["completion_ids"][i, n:] == tok.pad_token_id).all()
            assert batch["completion_ids"][i, n - 1] == tok.eos_token_id or n == batch["completion_ids"].shape[1]
        assert batch["num_items_in_batch"] == batch["completion_mask"].sum()
        assert batch["advantages"].abs().sum() > 0
        rounds.append(step_values(tr)["sampling_rounds"])
    assert max(rounds) > 1  # refills (and the merge) were exercised


@pytest.mark.parametrize("mode", ["none", "static", "dynamic"])
def test_train_dapo_end_to_end_writes_logs(tok, tmp_path, mode):
    from study.trainers.dapo import train_dapo

    cfg, comp = make(tok, mode, steps=2, refiner=EditRefiner(tok) if mode == "dynamic" else None)
    run = RunLog(tmp_path / mode, cfg.model_dump(mode="json"), 0, cfg.hash())
    summary = train_dapo(cfg, comp, run)
    assert summary["steps"] == 2
    rows = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert set(METRIC_COLUMNS) <= set(r)
        assert r["kl"] is not None and r["kl"] >= 0  # logged in every mode
        assert r["reward_mean"] is not None and r["time_step"] > 0 and r["optimizer_step"] == r["step"]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # π_θ = π_ref before the first update
    if mode == "dynamic":  # the constraint acts: pairs are kept and L_DC enters the loss
        assert all(r["improvement_ratio"] > 0 and r["kept_frac"] > 0 and r["dynamic_ce"] > 0 for r in rows)
    else:
        assert rows[0]["dynamic_ce"] is None and rows[0]["improvement_ratio"] is None
    samples = [json.loads(x) for x in run.samples_path.read_text().splitlines()]
    assert len(samples) == 4 and {s["step"] for s in samples} == {1, 2}
    assert all(s["response_tokens"] for s in samples)
    if mode == "dynamic":
        s = samples[0]
        assert s["kept"] and s["refined"] is not None and len(s["refined_token_ce"]) == len(s["refined_tokens"])
    assert (run.root / "checkpoints" / "final" / "config.json").exists()


def test_static_mode_uses_the_given_reference(tok, tmp_path):
    cfg, comp = make(tok, "static")
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    assert tr.ref_model is comp.reference and tr.beta == cfg.constraint.kl_coef


def test_study_train_smoke_dynamic(smoke_model_dir, tmp_path, monkeypatch):
    """``study train configs/smoke/dapo_dynamic.yaml`` end to end with the smoke mini model and the sandbox; the
    oracle refiner fixes answers, so pairs are kept and the run learns something other than plain DAPO."""
    from study.cli import main

    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parent.parent))
    for config in ("dapo_dynamic", "dapo"):
        rc = main(["train", f"configs/smoke/{config}.yaml", "--runs-dir", str(tmp_path), "--set", "steps=2"])
        assert rc == 0
    dyn, plain = ([json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                  for name in ("smoke-dapo-dynamic", "smoke-dapo"))
    assert len(dyn) == 2 and set(METRIC_COLUMNS) <= set(dyn[-1])
    assert all(r["kept_frac"] > 0 and r["dynamic_ce"] > 0 and r["refined_frac"] > 0 for r in dyn)
    assert dyn[0]["loss"] > dyn[0]["policy_loss"] + 1e-4  # L = L_DAPO + λ·L_DC
    assert plain[0]["loss"] == pytest.approx(plain[0]["policy_loss"], abs=1e-6)
    assert dyn[1]["kl"] != pytest.approx(plain[1]["kl"], abs=1e-9)  # and θ moved differently
    run = tmp_path / "smoke-dapo-dynamic"
    assert (run / "samples.jsonl").exists() and (run / "DONE").exists()


def test_statistics_of_the_full_sampled_batch_and_of_the_selected_one(tok, tmp_path):
    """reward_mean, group_reward_std, improvement_ratio, kept_frac, ... describe every rollout of every sampling
    round (dropped groups included); selected_* the batch the loss sees; plus the counts and App. B's worse_ratio."""
    def half_flat(prompts=None, completions=None, task_id=None, **kw):  # odd tasks always 0: their groups drop
        r = [sum(ch in string.ascii_letters for ch in text_of(c)) / 10 for c in completions]
        return [0.0 if int(t[1:]) % 2 else x for t, x in zip(task_id, r)]

    cfg, comp = make(tok, "dynamic", reward=half_flat, refiner=EditRefiner(tok), rollout={"num_prompts": 4},
                     dapo={"max_sampling_rounds": 4}, constraint={"refine_scope": "selected"})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    seen = record_rounds(tr)
    for _ in range(4):
        tr._metrics["train"].clear()
        batch = first_batch(tr)
        if len(seen[-1]) > 1:
            break
    rounds, v = seen[-1], step_values(tr)
    assert len(rounds) > 1  # groups were dropped and refilled
    every = [x for r in rounds for x in r.task_reward]
    assert v["n_rollouts"] == len(every) > len(batch["task_reward"])
    assert v["reward_mean"] == pytest.approx(sum(every) / len(every))
    assert v["selected_reward_mean"] == pytest.approx(batch["task_reward"].mean().item())
    assert v["reward_mean"] < v["selected_reward_mean"]  # the dropped all-zero groups count in the full batch
    assert v["group_reward_std"] < v["selected_group_reward_std"]  # ... and so do their zero stds
    # refinement counts: only the selected rows were refined (refine_scope=selected) -> shares of all rollouts
    keep = batch["refine_keep"]
    assert v["n_kept"] == keep.sum().item() > 0 and v["kept_frac"] == pytest.approx(v["n_kept"] / v["n_rollouts"])
    assert v["selected_kept_frac"] == pytest.approx(keep.float().mean().item())
    assert v["improvement_ratio"] == pytest.approx(v["n_improved"] / v["n_rollouts"])
    assert v["worse_ratio"] == pytest.approx(v["n_worse"] / v["n_rollouts"])
    r, rr = batch["task_reward"], batch["refined_reward"]
    assert v["n_worse"] == int((rr < r - 1e-6).sum()) and v["n_improved"] == int((rr > r + 1e-6).sum())
    assert v["n_refined"] == int((~rr.isnan()).sum())


def test_refinement_before_selection_lets_all_fail_groups_in_through_l_dc(tok, tmp_path):
    """refine_scope: sampled (the default): every round is refined before dynamic sampling selects, and a group
    whose rewards are all equal is selectable when it has a kept y'. Here every rollout fails (no advantage
    anywhere) but the refiner fixes them: the first round fills the batch, and only L_DC moves θ."""
    cfg, comp = make(tok, "dynamic", reward=is_target, refiner=FixedRefiner(tok), dapo={"max_sampling_rounds": 3},
                     constraint={"coef": 1.0})
    assert cfg.constraint.refine_scope == "sampled"
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(tr)
    v = step_values(tr)
    assert v["sampling_rounds"] == 1 and v["informative_groups"] == 0  # no group has a policy gradient ...
    assert batch["refine_keep"].all() and (batch["advantages"] == 0).all()  # ... yet all enter, through L_DC
    assert v["n_refined"] == v["n_rollouts"] == 8 and v["kept_frac"] == 1.0
    assert tr._compute_loss(tr.model, batch).item() > 0.1  # λ·L_DC
    # refine_scope: selected: the groups are dropped and refilled up to the cap, and refined only after selection
    cfg, comp = make(tok, "dynamic", reward=is_target, refiner=FixedRefiner(tok), dapo={"max_sampling_rounds": 3},
                     constraint={"coef": 1.0, "refine_scope": "selected"})
    tr, _ = dapo_trainer(tmp_path / "selected", cfg, comp)
    first_batch(tr)
    v = step_values(tr)
    assert v["sampling_rounds"] == 3 and comp.refiner.calls == 8 and v["n_rollouts"] > 8


def test_rollout_normaliser_in_the_trainer(tok, tmp_path):
    """DAPO with normalize: rollout: λ·L_DC = λ · (1/N) Σ_kept mean_t CE, i.e. kept_frac times the sequence value."""
    terms = {}
    for norm in ("sequence", "rollout"):
        cfg, comp = make(tok, "dynamic", refiner=HalfRefiner(tok), constraint={"coef": 1.0, "normalize": norm})
        tr, _ = dapo_trainer(tmp_path / norm, cfg, comp)
        torch.manual_seed(0)
        batch = first_batch(tr)
        with torch.no_grad():
            full = tr._compute_loss(tr.model, batch).item()
            tr.lam = 0.0
            terms[norm] = full - tr._compute_loss(tr.model, batch).item()
        keep = batch["refine_keep"]
        assert 0 < keep.sum() < len(keep)
    assert terms["rollout"] == pytest.approx(terms["sequence"] * keep.float().mean().item(), rel=1e-4)


def test_dapo_kl_baseline_config():
    """configs/mini/dapo_kl.yaml (+ its smoke twin): DAPO + static KL, β = 1e-2 (Table 2), TRL's
    use_bias_correction_kl set explicitly; otherwise the DAPO baseline."""
    from study.config import load_config
    from study.experiments import flatten
    from study.trainers.dapo import grpo_args

    for tier in ("mini", "smoke"):
        kl, base = (load_config(f"configs/{tier}/{n}.yaml") for n in ("dapo_kl", "dapo"))
        assert (kl.constraint.mode, kl.constraint.kl_coef, kl.constraint.kl_bias_correction) == ("static", 1e-2, True)
        a, b = flatten(kl.model_dump(mode="json")), flatten(base.model_dump(mode="json"))
        assert {k for k in a if a[k] != b[k]} - {"name"} <= {"constraint.mode", "constraint.kl_coef",
                                                            "constraint.kl_bias_correction"}
    assert grpo_args(kl, "/tmp/x", "cpu").use_bias_correction_kl is True
    off = load_config("configs/mini/dapo_kl.yaml", ["constraint.kl_bias_correction=false"])
    assert grpo_args(off, "/tmp/x", "cpu").use_bias_correction_kl is False
    assert off.hash() != load_config("configs/mini/dapo_kl.yaml").hash()


@pytest.mark.parametrize("correct", [True, False])
def test_kl_bias_correction_picks_the_kl_direction_of_the_gradient(tok, tmp_path, correct):
    """On-policy, with advantages 0 (only β·KL acts): with use_bias_correction_kl the gradient is that of
    Σ (log π_θ - log π_ref) log π_θ (the score-function gradient of KL(π_θ‖π_ref)); without it that of
    Σ (1 - π_ref/π_θ) log π_θ (in expectation, of KL(π_ref‖π_θ)). Our loss equals TRL's either way."""
    from trl import GRPOTrainer

    beta = 0.5
    cfg, comp = make(tok, "static", constraint={"kl_coef": beta, "kl_bias_correction": correct})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    assert tr.args.use_bias_correction_kl is correct
    batch = first_batch(tr)
    batch["advantages"] = torch.zeros_like(batch["advantages"])
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    T, mask = batch["completion_ids"].shape[1], batch["completion_mask"]
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], mask], 1)

    def grads(fn):
        tr.model.zero_grad(set_to_none=True)
        fn().backward()
        return {n: p.grad.clone() for n, p in tr.model.named_parameters()}

    def surrogate():
        logp = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, T)[0]
        ref = batch["ref_per_token_logps"]
        w = (logp - ref) if correct else (1 - torch.exp(ref - logp))
        return beta * (w.detach() * logp * mask).sum() / mask.sum()

    ours = grads(lambda: tr._compute_loss(tr.model, batch))
    want = grads(surrogate)
    trl = grads(lambda: GRPOTrainer._compute_loss(tr, tr.model, batch))
    for n in ours:
        torch.testing.assert_close(ours[n], want[n], atol=1e-6, rtol=1e-4, msg=n)
        torch.testing.assert_close(ours[n], trl[n], atol=1e-6, rtol=1e-5, msg=n)


def test_study_train_smoke_dapo_kl(smoke_model_dir, tmp_path, monkeypatch):
    from study.cli import main

    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parent.parent))
    assert main(["train", "configs/smoke/dapo_kl.yaml", "--runs-dir", str(tmp_path), "--set", "steps=2"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "smoke-dapo-kl" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[1]["kl"] > 0
