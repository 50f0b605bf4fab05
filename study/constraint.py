"""Constraints on the policy: the paper's dynamic constraint (Eq. 4-6) and the static KL it replaces (Eq. 2-3).

Dynamic constraint (Eq. 6), the reading we implement (a loss term, as the prose says: "this effectively
integrates an SFT-style loss into the RL objective")::

    L(θ) = L_RL(θ) + λ · L_DC(θ)
    L_DC(θ) = Σ_i keep_i Σ_t m_it · (-log π_θ(y'_it | x_i, y'_i,<t))  /  Σ_i keep_i Σ_t m_it

where y'_i is the refiner's output for rollout y_i, keep_i = 1[r(y'_i) > r(y_i)] (the filter, ``filter.py``),
and m_it masks prompt and padding. The mean is over all kept refined tokens (token level, like DAPO's policy
loss), so λ does not drift with response length; ``normalize="sequence"`` averages per-sequence means instead.

Static constraint (Eq. 2-3): KL(π_θ || π_ref) with coefficient β, estimated per token from log-probabilities
(``k1`` = log ratio, ``k3`` = Schulman's unbiased non-negative estimator, as TRL uses for GRPO/DAPO).

``ce_scope="from_first_diff"`` (issue 9's ablation) restricts L_DC to the tokens from the first position where
y' differs from y: the shared prefix is where the paper's Fig. 6 shows near-zero CE.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token CE, ``-log softmax(logits)[label]``. ``logits`` (B, T, V) already aligned with ``labels`` (B, T)."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")


def dynamic_constraint_loss(
    per_token_ce: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor,
    normalize: Literal["token", "sequence"] = "token",
    num_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """L_DC of Eq. 6 over the kept refinements.

    per_token_ce: (B, T) CE of the policy on the refined response tokens (teacher forced on x ⊕ y').
    mask:         (B, T) 1 on refined-response tokens, 0 on padding (the prompt is not in these columns).
    keep:         (B,) bool, the filter's decision.
    num_tokens:   optional normaliser for ``token`` mode (e.g. the global count of kept tokens across processes
                  and accumulation steps); defaults to this batch's count.
    Returns 0 (with grad) when nothing is kept.
    """
    m = mask.to(per_token_ce.dtype) * keep.to(per_token_ce.dtype).unsqueeze(-1)
    if normalize == "token":
        denom = m.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=m.dtype, device=m.device)
        return (per_token_ce * m).sum() / denom.clamp(min=1.0)
    per_seq = (per_token_ce * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    n_kept = keep.to(per_token_ce.dtype).sum()
    return (per_seq * keep.to(per_seq.dtype)).sum() / n_kept.clamp(min=1.0)


def first_difference_mask(original_ids: torch.Tensor, refined_ids: torch.Tensor, refined_mask: torch.Tensor) -> torch.Tensor:
    """(B, R) mask that is 1 on refined tokens from the first position where y' departs from y (right-padded ids).

    A refinement identical to its original gets an all-zero row."""
    B, R = refined_ids.shape
    T = original_ids.shape[1]
    L = min(R, T)
    same = torch.zeros_like(refined_ids, dtype=torch.bool)
    same[:, :L] = refined_ids[:, :L] == original_ids[:, :L]
    # position of the first mismatch = length of the all-equal prefix
    prefix = torch.cumprod(same.long(), dim=1).sum(dim=1)
    cols = torch.arange(R, device=refined_ids.device).unsqueeze(0)
    return (cols >= prefix.unsqueeze(1)).to(refined_mask.dtype) * refined_mask


def static_kl(
    logps: torch.Tensor, ref_logps: torch.Tensor, estimator: Literal["k1", "k3"] = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(π_θ || π_ref) at the sampled tokens (Eq. 2-3's constraint)."""
    log_ratio = ref_logps - logps
    if estimator == "k1":
        return -log_ratio
    return torch.exp(log_ratio) - log_ratio - 1.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)
