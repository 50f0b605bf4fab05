"""Prefix-shared L_DC (issue 17): y'_<k = y_<k, so the CE of y' takes its first k tokens from the L_DAPO forward
over x ⊕ y and only y'_≥k gets positions of its own, packed after x ⊕ y behind a block mask. It must give the same
L_DC and the same gradients as a separate forward over x ⊕ y'."""

from __future__ import annotations

import pytest
import torch
from helpers import EditRefiner, dapo_trainer, first_batch, make, step_values, tiny_llama

from study.tokens import attention_mask_4d, first_change, pad_left, pad_right, prefix_shared_inputs, token_logps

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


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_forward_equals_separate_forwards(tok, impl):
    """Log-probs of y (L_DAPO) and of y' (L_DC) from one packed forward equal those of two plain forwards, and so
    do the gradients of a loss on both."""
    model = tiny_llama(tok, seed=3, attn_implementation=impl)
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    p_ids, p_mask, y_ids, y_mask, r_ids, r_mask, keep, k = _tensors(tok, _rows(tok))
    pk = prefix_shared_inputs(p_ids, p_mask, y_ids, y_mask, r_ids, r_mask, k, keep, tok.pad_token_id)
    assert pk["input_ids"].shape[1] == p_ids.shape[1] + y_ids.shape[1] + int(((r_mask.sum(1) - k) * keep).max())

    def packed():
        out = model(input_ids=pk["input_ids"], attention_mask=attention_mask_4d(pk["allowed"], impl, torch.float32),
                    position_ids=pk["position_ids"], shift_labels=pk["shift_labels"], fused_lm_head=True)
        return out.log_probs[:, pk["y_cols"]] * y_mask, out.log_probs.gather(1, pk["y2_cols"]) * r_mask

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
    torch.testing.assert_close(py, sy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pr * keep.unsqueeze(1), sr * keep.unsqueeze(1), atol=1e-5, rtol=1e-5)
    for n in pg:
        torch.testing.assert_close(pg[n], sg[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("scope", ["full", "from_first_diff"])
@pytest.mark.parametrize("filter_on", [True, False])
def test_trainer_prefix_shared_loss_equals_the_separate_forward(tok, tmp_path, scope, filter_on):
    """In the trainer: the same loss (L_DAPO + λ·L_DC), gradients and logged CE with and without prefix sharing,
    on a batch holding mid-response edits, a change at token 0, insertions, deletions and unchanged rows."""
    cfg, comp = make(tok, "dynamic", refiner=EditRefiner(tok), dapo={"dynamic_sampling": False},
                     rollout={"num_prompts": 3}, constraint={"coef": 1.0, "ce_scope": scope, "filter": filter_on})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    assert tr.prefix_shared
    batch = first_batch(tr)
    keep, k = batch["refine_keep"].bool(), batch["first_change"]
    n2, n1 = batch["refined_mask"].sum(1), batch["completion_mask"].sum(1)
    assert keep.any() and (not keep.all() if filter_on else keep.all())
    assert ((k == 0) & keep).any() and ((n2 > n1) & keep).any() and ((k < n1 - 1) & (k > 0) & keep).any()
    assert ((k == n1) & (keep if not filter_on else True)).any()  # y' copies all of y (kept only without the filter;
    # the random policy never ends with EOS, so y' = y + EOS: the exact no-change row is in the test above)
    out = []
    for shared in (True, False):
        tr.prefix_shared = shared
        tr._metrics["train"].clear()
        tr.model.zero_grad(set_to_none=True)
        loss = tr._compute_loss(tr.model, batch)
        loss.backward()
        out.append((loss.item(), {n: p.grad.clone() for n, p in tr.model.named_parameters()}, step_values(tr)))
    (l1, g1, v1), (l2, g2, v2) = out
    assert l1 == pytest.approx(l2, abs=1e-5)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-5, rtol=1e-4, msg=n)
    assert v1["dynamic_ce_sum"] == pytest.approx(v2["dynamic_ce_sum"], rel=1e-5) and v1["dynamic_ce_sum"] > 0
    assert v1["dynamic_ce_tok"] == v2["dynamic_ce_tok"]
    assert v1["policy_loss"] == pytest.approx(v2["policy_loss"], abs=1e-6)


def test_no_custom_mask_backend_falls_back_to_a_separate_forward(tok, tmp_path, caplog):
    cfg, comp = make(tok, "dynamic", refiner=EditRefiner(tok))
    comp.policy.config._attn_implementation = "flash_attention_2"
    from study.trainers.dapo import DynamicDAPOTrainer

    with caplog.at_level("WARNING"):
        ok = DynamicDAPOTrainer._prefix_shared_ok(type("T", (), {"cfg": cfg, "temperature": 1.0, "model": comp.policy,
                                                                 "accelerator": _Unwrap()})())
    assert not ok and "flash_attention_2" in caplog.text and "separate forward" in caplog.text


class _Unwrap:
    @staticmethod
    def unwrap_model(m):
        return m
