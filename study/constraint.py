"""Constraints on the policy: the paper's dynamic constraint (Eq. 4-6) and the static KL it replaces (Eq. 2-3).

Both trainers call these functions; only the normaliser they pass differs (see ``dynamic_constraint_loss``).

Dynamic constraint, the reading we implement (a loss term, as the prose says: "this effectively integrates an
SFT-style loss into the RL objective")::

    y   ~ π_θ(· | x)                                  (Eq. 4: the rollout; the trainers)
    y'  = refine(x, y),  refine = greedy π_ref(· | refine_prompt(x, y))     (Eq. 5: ``study.refiner``)
    keep = 1[ r(x, y') > r(x, y) ]                     (the filter of Eq. 6: ``study.filter.keep_improved``)
    L_DC(θ) = Σ_i keep_i · c_i / Z,   c_i from the per-token CE_it = -log π_θ(y'_it | x_i, y'_i,<t)   (Eq. 6)
    L(θ)   = L_RL(θ) + λ · L_DC(θ)

``normalize`` picks c_i and Z (``constraint.normalize``):

    token     c_i = Σ_t m_it CE_it            Z = Σ_i keep_i Σ_t m_it      mean over kept tokens
    sequence  c_i = Σ_t m_it CE_it / Σ_t m_it  Z = Σ_i keep_i               mean over kept sequences
    rollout   c_i = Σ_t m_it CE_it / Σ_t m_it  Z = N (all rollouts)         Eq. 6's expectation over every y (default)

``rollout`` is the paper's normaliser: Eq. 6 is an expectation over y ~ π_θ(·|x) (and y'), with the filter's
indicator inside, so a rollout without a kept y' contributes 0 and the constraint weakens as fewer refinements are
kept, the self-annealing of Fig. 5(b): L_DC = (1/N) Σ_i keep_i · mean_t CE_it = kept_frac × (the ``sequence``
value). ``token`` and ``sequence`` average over the kept pairs only, which multiplies λ by N/K.

where m_it masks y' (and, with ``ce_scope="from_first_diff"``, its tokens before the first change k_i). Z is the
count over the batch the trainer normalises by (``constraint_normalizer``): the PPO minibatch or DAPO's whole
generation batch, in both cases summed over every process (DAPO's also over accumulation steps, rescaled per
micro-batch like its token normaliser).

Static constraint (Eq. 2-3): KL(π_θ || π_ref) with coefficient β, estimated per token from log-probabilities
(``k1`` = log ratio, ``k3`` = Schulman's unbiased non-negative estimator, as TRL uses for GRPO/DAPO).
"""

from __future__ import annotations

from typing import Literal

import torch

from study.tokens import first_change, token_cross_entropy  # noqa: F401  (token_cross_entropy: the walkthrough)

Normalize = Literal["token", "sequence", "rollout"]


def dc_loss_mask(y_ids: torch.Tensor, y_mask: torch.Tensor, refined_ids: torch.Tensor, refined_mask: torch.Tensor,
                 ce_scope: Literal["full", "from_first_diff"]) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, k): the tokens of y' that carry L_DC (N, R) and the first-change index k (N,) (``tokens.first_change``).

    ``full`` (the paper): every token of y'. ``from_first_diff`` (issue 9's ablation): only y'_≥k, the tokens from
    the first position where y' departs from y (Fig. 6 shows near-zero CE on the copied prefix); a y' equal to y
    gets an all-zero row."""
    k = first_change(y_ids, y_mask, refined_ids, refined_mask)
    if ce_scope == "full":
        return refined_mask, k
    cols = torch.arange(refined_ids.shape[1], device=refined_ids.device).unsqueeze(0)
    return (cols >= k.unsqueeze(1)).to(refined_mask.dtype) * refined_mask, k


def constraint_normalizer(mask: torch.Tensor, keep: torch.Tensor, normalize: Normalize) -> torch.Tensor:
    """Z's contribution of these rows (0-dim): kept tokens (``token``), kept sequences (``sequence``) or all rows,
    kept or not (``rollout``)."""
    keep = keep.to(mask.dtype)
    if normalize == "token":
        return (mask * keep.unsqueeze(-1)).sum()
    if normalize == "rollout":
        return torch.tensor(float(keep.numel()), device=keep.device)
    return keep.sum()


def dynamic_constraint_loss(per_token_ce: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor,
                            normalize: Normalize = "token", normalizer: torch.Tensor | float | None = None) -> torch.Tensor:
    """L_DC of Eq. 6 for these rows: Σ_i keep_i · c_i / Z (see the module docstring for c_i and Z).

    per_token_ce: (N, R) -log π_θ(y'_t | x, y'_<t), teacher forced on x ⊕ y'.
    mask:         (N, R) m, the y' tokens that carry loss (0 on padding; the prompt is not in these columns).
    keep:         (N,) bool, the filter's decision.
    normalizer:   Z, given explicitly by the trainers (``constraint_normalizer`` over the rows they average over:
                  the PPO minibatch, DAPO's generation batch); None: Z over these rows. Clamped at 1. Returns 0
                  (with grad) when nothing is kept.
    """
    if normalizer is None:
        normalizer = constraint_normalizer(mask, keep, normalize)
    m = mask.to(per_token_ce.dtype)
    c = (per_token_ce * m).sum(-1)  # (N,)
    if normalize in ("sequence", "rollout"):
        c = c / m.sum(-1).clamp(min=1.0)
    z = torch.as_tensor(normalizer, dtype=c.dtype, device=c.device).clamp(min=1.0)
    return (c * keep.to(c.dtype)).sum() / z


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
