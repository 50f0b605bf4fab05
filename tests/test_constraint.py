"""The dynamic constraint's pieces (Eq. 6): the policy's CE on refined tokens (``study.tokens.token_logps``), its
masking (``dc_loss_mask``) and explicit normalisers, and the static KL estimator."""

import pytest
import torch

from study.constraint import constraint_normalizer, dc_loss_mask, dynamic_constraint_loss, masked_mean, static_kl
from study.tokens import token_logps

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def _manual_ce(model, prompt: list[int], refined: list[int]) -> list[float]:
    """-log p(y'_t | x, y'_<t) from one unpadded sequence."""
    ids = torch.tensor([prompt + refined])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    P = len(prompt)
    return [-logp[P - 1 + t, tok].item() for t, tok in enumerate(refined)]


def test_ce_on_refined_excludes_prompt_and_padding(model):
    # two rows: prompts of length 3 and 5 (left-padded), refinements of length 4 and 2 (right-padded)
    prompts, refined = [[5, 6, 7], [8, 9, 10, 11, 12]], [[13, 14, 15, 16], [17, 18]]
    P, R = 5, 4
    p_ids = torch.zeros(2, P, dtype=torch.long)
    p_mask = torch.zeros(2, P, dtype=torch.long)
    r_ids = torch.zeros(2, R, dtype=torch.long)
    r_mask = torch.zeros(2, R, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, refined)):
        p_ids[i, P - len(p):] = torch.tensor(p)
        p_mask[i, P - len(p):] = 1
        r_ids[i, :len(r)] = torch.tensor(r)
        r_mask[i, :len(r)] = 1
    with torch.no_grad():
        ce = -token_logps(model, p_ids, p_mask, r_ids, r_mask)[0]
    assert ce.shape == (2, R)
    for i in range(2):
        n = len(refined[i])
        assert torch.allclose(ce[i, :n], torch.tensor(_manual_ce(model, prompts[i], refined[i])), atol=1e-4)
        assert (ce[i, n:] == 0).all()  # padding carries no loss
    with torch.no_grad():  # at a temperature, with the entropy: the same log-probs of tempered logits
        logps, ent = token_logps(model, p_ids, p_mask, r_ids, r_mask, temperature=2.0, with_entropy=True)
        logits = model(input_ids=torch.cat([p_ids, r_ids], 1), attention_mask=torch.cat([p_mask, r_mask], 1)).logits
    lp = torch.log_softmax(logits[:, P - 1 : -1].float() / 2.0, -1)
    assert torch.allclose(logps, lp.gather(-1, r_ids.unsqueeze(-1)).squeeze(-1) * r_mask, atol=1e-5)
    assert torch.allclose(ent, -(lp.exp() * lp).sum(-1) * r_mask, atol=1e-5)


def test_ce_on_refined_is_differentiable(model):
    p = torch.tensor([[1, 2, 3]])
    r = torch.tensor([[4, 5]])
    ce = -token_logps(model, p, torch.ones_like(p), r, torch.ones_like(r))[0]
    ce.sum().backward()
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in model.parameters())
    model.zero_grad()


def test_dynamic_constraint_loss_with_explicit_normalisers():
    ce = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    keep = torch.tensor([True, False, True])
    # token: kept tokens 1, 2, 3, 4 -> mean 2.5; the dropped row's 10s do not count
    z = constraint_normalizer(mask, keep, "token")
    assert z.item() == 4 and dynamic_constraint_loss(ce, mask, keep, "token", z).item() == pytest.approx(2.5)
    # a global normaliser (DAPO: the whole generation batch's kept tokens) replaces this batch's count
    assert dynamic_constraint_loss(ce, mask, keep, "token", 8).item() == pytest.approx(10 / 8)
    # sequence: mean of per-sequence means (2 and 4) over the kept sequences
    z = constraint_normalizer(mask, keep, "sequence")
    assert z.item() == 2 and dynamic_constraint_loss(ce, mask, keep, "sequence", z).item() == pytest.approx(3.0)
    # nothing kept -> 0 (the normaliser is clamped at 1)
    none = torch.zeros(3, dtype=torch.bool)
    assert dynamic_constraint_loss(ce, mask, none, "token", constraint_normalizer(mask, none, "token")).item() == 0.0


def test_dc_loss_mask_and_first_change():
    pad = 0
    orig = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, pad, pad], [9, 9, 9, 9]])
    omask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]])
    ref = torch.tensor([[5, 6, 1, 8, 2], [5, 6, 7, 8, pad], [5, 6, 7, 3, 4], [1, 2, pad, pad, pad]])
    rmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    m, k = dc_loss_mask(orig, omask, ref, rmask, "from_first_diff")
    assert k.tolist() == [2, 4, 2, 0]
    assert m.tolist() == [
        [0, 0, 1, 1, 1],  # departs at position 2, everything after counts
        [0, 0, 0, 0, 0],  # identical refinement -> empty
        [0, 0, 1, 1, 1],  # y shorter than y': departs where y ends
        [1, 1, 0, 0, 0],  # departs at once; padding stays masked
    ]
    full, k_full = dc_loss_mask(orig, omask, ref, rmask, "full")
    assert torch.equal(full, rmask) and torch.equal(k_full, k)
    # a pad id equal to a token of y' never counts as a match (e.g. pad = EOS, y truncated, y' = y + EOS)
    _, k = dc_loss_mask(torch.tensor([[3, 4, 0]]), torch.tensor([[1, 1, 0]]), torch.tensor([[3, 4, 0]]),
                        torch.tensor([[1, 1, 1]]), "full")
    assert k.tolist() == [2]


def test_static_kl_estimators():
    logps = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.allclose(static_kl(logps, logps), torch.zeros(3))
    ref = torch.tensor([-1.5, -1.0, -0.5])
    k3 = static_kl(logps, ref, "k3")
    assert (k3 >= 0).all()
    assert torch.allclose(static_kl(logps, ref, "k1"), logps - ref)
    assert masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).item() == 2.0


def test_rollout_normaliser_is_eq6s_expectation_over_all_rollouts():
    """normalize: rollout divides the kept sequences' mean CE by the number of ALL rollouts: the constraint weakens
    in proportion to the kept fraction (Fig. 5b's self-annealing), where token/sequence scale λ by N/K."""
    ce = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 0.0], [4.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    keep = torch.tensor([True, False, True, False])
    z = constraint_normalizer(mask, keep, "rollout")
    assert z.item() == 4  # every rollout, kept or not
    rollout = dynamic_constraint_loss(ce, mask, keep, "rollout", z).item()
    assert rollout == pytest.approx((2.0 + 4.0) / 4)  # per-sequence means of the kept rows, over N
    sequence = dynamic_constraint_loss(ce, mask, keep, "sequence", constraint_normalizer(mask, keep, "sequence"))
    assert rollout == pytest.approx(sequence.item() * keep.float().mean().item())  # = kept_frac x sequence's
    none = torch.zeros(4, dtype=torch.bool)
    assert dynamic_constraint_loss(ce, mask, none, "rollout", constraint_normalizer(mask, none, "rollout")) == 0
