"""Packed loss forward (issues 17 and 18): a prompt's rollouts share one row (x once, each y behind a block mask),
and L_DC shares it too: y'_<k = y_<k, so the CE of y' takes its first k tokens from y's columns and only y'_≥k gets
positions of its own. It must give the same log-probs, L_DC and gradients as separate forwards over each x ⊕ y and
x ⊕ y'."""

from __future__ import annotations

import pytest
import torch
from helpers import EditRefiner, dapo_trainer, first_batch, make, step_values, tiny_llama

from study.tokens import attention_mask_4d, first_change, packed_inputs, pad_left, pad_right, token_logps

torch.set_num_threads(1)


def _rows(tok):
    """Hand-made rows, one per case: (prompt, y, y')."""
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = [tok.eos_token_id]
    return [
        (enc("<|user|>say a<|end|><|assistant|>"), enc("abcdef") + eos, enc("abXdef") + eos),  # mid-response edit
        (enc("<|user|>b<|end|><|assistant|>"), enc("hello") + eos, enc("jello") + eos),  # change at token 0
        (enc("<|user|>c<|end|><|assistant|>"), enc("ab") + eos, enc("abcdefgh") + eos),  # y' longer than y
        (enc("<|user|>dd<|end|><|assistant|>"), enc("same") + eos, enc("same") + eos),  # no change
        (enc("<|user|>e<|end|><|assistant|>"), enc("abcdefgh") + eos, enc("abh") + eos),  # deletion
        (enc("<|user|>ff<|end|><|assistant|>"), enc("abc"), enc("abc") + eos),  # truncated y, y' adds EOS only
        (enc("<|user|>g<|end|><|assistant|>"), enc("xyz") + eos, enc("q") + eos),  # not kept
    ]


def _tensors(tok, rows):
    pad = tok.pad_token_id
    p_ids, p_mask = pad_left([p for p, _, _ in rows], pad)
    y_ids, y_mask = pad_right([y for _, y, _ in rows], pad)
    r_ids, r_mask = pad_right([r for _, _, r in rows], pad)
    keep = torch.tensor([True] * (len(rows) - 1) + [False])
    k = first_change(y_ids, y_mask, r_ids, r_mask)
    return p_ids, p_mask, y_ids, y_mask, r_ids, r_mask, keep, k


def test_first_change_on_the_cases(tok):
    *_, r_ids, r_mask, keep, k = _tensors(tok, _rows(tok))
    assert k.tolist() == [2, 0, 2, 5, 2, 3, 0]  # 'same'+EOS is 5 tokens: k = |y'|; a pad equal to EOS cannot match


def _shared_prompts(tok, rows):
    """The same cases, but rows 0, 2, 5 share one prompt, rows 1, 4 another (interleaved: grouping must not rely
    on batch order); rows 3 and 6 keep their own."""
    share = {2: 0, 5: 0, 4: 1}
    return [(rows[share.get(i, i)][0], y, r) for i, (_, y, r) in enumerate(rows)]


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("group", [True, False])
def test_packed_forward_equals_separate_forwards(tok, impl, group):
    """Log-probs of y (L_DAPO) and of y' (L_DC) from one packed forward equal those of plain forwards over each
    x ⊕ y and x ⊕ y', and so do the gradients of a loss on both; with shared prompts, one packed row per prompt."""
    model = tiny_llama(tok, seed=3, attn_implementation=impl)
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    rows = _shared_prompts(tok, _rows(tok))
    p_ids, p_mask, y_ids, y_mask, r_ids, r_mask, keep, k = _tensors(tok, rows)
    pk = packed_inputs(p_ids, p_mask, y_ids, y_mask, tok.pad_token_id, r_ids, r_mask, k, keep, group=group)
    n_y, n_r, n_x = y_mask.sum(1), r_mask.sum(1), p_mask.sum(1)
    suffix = torch.where(keep & (n_r > k), n_r - k, 0)
    if group:  # x once per prompt (its last token heads each stream), then every y and the kept y'_≥k
        assert pk["input_ids"].shape[0] == 4
        assert pk["input_ids"].shape[1] == max(int(n_x[0]) - 1 + int(n_y[[0, 2, 5]].sum() + suffix[[0, 2, 5]].sum()),
                                               int(n_x[1]) - 1 + int(n_y[[1, 4]].sum() + suffix[[1, 4]].sum()),
                                               *(int(n_x[i] - 1 + n_y[i] + suffix[i]) for i in (3, 6)))
    else:
        assert pk["input_ids"].shape == (len(rows), int((n_x - 1 + n_y + suffix).max()))

    def packed():
        out = model(input_ids=pk["input_ids"], attention_mask=attention_mask_4d(pk["allowed"], impl, torch.float32),
                    position_ids=pk["position_ids"], shift_labels=pk["shift_labels"], fused_lm_head=True)
        flat = out.log_probs.reshape(-1)
        return flat[pk["y_at"]] * y_mask, flat[pk["y2_at"]] * r_mask

    def separate():
        return token_logps(model, p_ids, p_mask, y_ids, y_mask)[0], token_logps(model, p_ids, p_mask, r_ids, r_mask)[0]

    w_y, w_r = torch.randn(y_ids.shape), torch.randn(r_ids.shape) * keep.unsqueeze(1)
    results = []
    for fn in (packed, separate):
        model.zero_grad(set_to_none=True)
        ly, lr = fn()
        ((ly * w_y).sum() + (lr * w_r).sum()).backward()
        results.append((ly.detach(), lr.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (py, pr, pg), (sy, sr, sg) = results
    assert (sy != 0).sum() == y_mask.sum()  # every y token compared
    torch.testing.assert_close(py, sy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pr * keep.unsqueeze(1), sr * keep.unsqueeze(1), atol=1e-5, rtol=1e-5)
    for n in pg:
        torch.testing.assert_close(pg[n], sg[n], atol=1e-5, rtol=1e-4, msg=n)


def test_a_mask_that_lets_streams_see_each_other_is_caught(tok):
    """The equality above is not vacuous: letting one rollout attend to another's tokens changes its log-probs."""
    model = tiny_llama(tok, seed=3, attn_implementation="eager")
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)
    p_ids, p_mask, y_ids, y_mask, *_ = _tensors(tok, _shared_prompts(tok, _rows(tok)))
    pk = packed_inputs(p_ids, p_mask, y_ids, y_mask, tok.pad_token_id)
    leaky = torch.tril(torch.ones_like(pk["allowed"][0])).unsqueeze(0).expand_as(pk["allowed"])  # plain causal
    with torch.no_grad():
        out = model(input_ids=pk["input_ids"], attention_mask=attention_mask_4d(leaky, "eager", torch.float32),
                    position_ids=pk["position_ids"], shift_labels=pk["shift_labels"], fused_lm_head=True)
        got = out.log_probs.reshape(-1)[pk["y_at"]] * y_mask
        want = token_logps(model, p_ids, p_mask, y_ids, y_mask)[0]
    assert torch.allclose(got[[0, 1]], want[[0, 1]], atol=1e-5)  # the first stream of each prompt sees no other
    assert not torch.allclose(got[2], want[2], atol=1e-3)  # row 2 follows row 0 in the same packed row


PATHS = {"packed + fused L_DC": (True, True, True), "per-row packing + fused L_DC": (True, True, False),
         "packed, separate L_DC": (True, False, True), "TRL's forward, separate L_DC": (False, False, True)}


@pytest.mark.parametrize("scope", ["full", "from_first_diff"])
@pytest.mark.parametrize("filter_on", [True, False])
def test_trainer_packed_loss_equals_the_separate_forwards(tok, tmp_path, scope, filter_on):
    """In the trainer: the same loss (L_DAPO + λ·L_DC), gradients and logged CE on every forward path, on a batch
    holding mid-response edits, a change at token 0, insertions, deletions and unchanged rows."""
    cfg, comp = make(tok, "dynamic", refiner=EditRefiner(tok), dapo={"dynamic_sampling": False},
                     rollout={"num_prompts": 3}, constraint={"coef": 1.0, "ce_scope": scope, "filter": filter_on})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    assert tr.packed and tr.fuse_dc
    batch = first_batch(tr)
    keep, k = batch["refine_keep"].bool(), batch["first_change"]
    n2, n1 = batch["refined_mask"].sum(1), batch["completion_mask"].sum(1)
    assert keep.any() and (not keep.all() if filter_on else keep.all())
    assert ((k == 0) & keep).any() and ((n2 > n1) & keep).any() and ((k < n1 - 1) & (k > 0) & keep).any()
    assert ((k == n1) & (keep if not filter_on else True)).any()  # y' copies all of y (kept only without the filter;
    # the random policy never ends with EOS, so y' = y + EOS: the exact no-change row is in the test above)
    out = {}
    for name, (packed, fuse, group) in PATHS.items():
        tr.packed, tr.fuse_dc, tr.cfg.speed.pack_groups = packed, fuse, group
        tr._metrics["train"].clear()
        tr.model.zero_grad(set_to_none=True)
        loss = tr._compute_loss(tr.model, batch)
        loss.backward()
        out[name] = (loss.item(), {n: p.grad.clone() for n, p in tr.model.named_parameters()}, step_values(tr))
    l2, g2, v2 = out.pop("TRL's forward, separate L_DC")
    assert v2["dynamic_ce_sum"] > 0
    for name, (l1, g1, v1) in out.items():
        assert l1 == pytest.approx(l2, abs=1e-5), name
        for n in g1:
            torch.testing.assert_close(g1[n], g2[n], atol=1e-5, rtol=1e-4, msg=f"{name}: {n}")
        assert v1["dynamic_ce_sum"] == pytest.approx(v2["dynamic_ce_sum"], rel=1e-5), name
        assert v1["dynamic_ce_tok"] == v2["dynamic_ce_tok"], name
        assert v1["policy_loss"] == pytest.approx(v2["policy_loss"], abs=1e-6), name


def test_trainer_packed_reference_kl_equals_trl_s_forward(tok, tmp_path):
    """The logged KL's reference log-probs (``kl_ref_logps``) from the packed forward equal TRL's per-row ones."""
    cfg, comp = make(tok, "none", rollout={"num_prompts": 3})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(tr)
    T = batch["completion_ids"].shape[1]
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        want = tr._get_per_token_logps_and_entropies(tr.reference, ids, attn, T)[0] * batch["completion_mask"]
    torch.testing.assert_close(batch["kl_ref_logps"], want, atol=1e-5, rtol=1e-5)


def test_no_custom_mask_backend_falls_back_to_separate_forwards(tok, tmp_path, caplog):
    cfg, comp = make(tok, "dynamic", refiner=EditRefiner(tok))
    comp.policy.config._attn_implementation = "flash_attention_2"
    from study.trainers.dapo import DynamicDAPOTrainer

    with caplog.at_level("WARNING"):
        ok = DynamicDAPOTrainer._packing_ok(type("T", (), {"cfg": cfg, "temperature": 1.0, "model": comp.policy,
                                                           "refine_target": "refiner", "accelerator": _Unwrap()})())
    assert ok == (False, False) and "flash_attention_2" in caplog.text and "separate forward" in caplog.text


def test_temperature_other_than_one_keeps_packing_but_not_the_fused_l_dc(tok, caplog):
    cfg, comp = make(tok, "dynamic", refiner=EditRefiner(tok))
    comp.policy.config._attn_implementation = "sdpa"
    from study.trainers.dapo import DynamicDAPOTrainer

    with caplog.at_level("WARNING"):
        ok = DynamicDAPOTrainer._packing_ok(type("T", (), {"cfg": cfg, "temperature": 0.7, "model": comp.policy,
                                                           "refine_target": "refiner", "accelerator": _Unwrap()})())
    assert ok == (True, False) and "temperature 0.7" in caplog.text


class _Unwrap:
    @staticmethod
    def unwrap_model(m):
        return m
