"""Generalised advantage estimation (Schulman et al. 2016) over response tokens, and masked whitening.

    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    advantages = whiten(advantages, mask)

All tensors are (B, T) over the *response* tokens only (right-padded; ``mask`` is 1 on real tokens). Padding
carries no reward and no value, so the recursion never leaks across the end of a response::

    δ_t = r_t + γ · V(s_{t+1}) · m_{t+1} - V(s_t)            (TD error; V after the last token is 0)
    A_t = δ_t + γ · λ · A_{t+1}
    R_t = A_t + V(s_t)                                        (the critic's regression target)
"""

from __future__ import annotations

import torch


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, T) and zero on padding."""
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape")
    m = mask.to(values.dtype)
    rewards = rewards * m
    values = values * m
    T = rewards.shape[1]
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        advantages[:, t] = last
    returns = (advantages + values) * m
    return advantages, returns


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def masked_mean_var(x: torch.Tensor, mask: torch.Tensor, reduce=_identity) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance over the masked entries. ``reduce`` sums a 0-dim tensor over processes (PPO under
    N processes: ``lambda t: accelerator.reduce(t, "sum")``), so the moments are those of every rank's tokens."""
    m = mask.to(x.dtype)
    n = reduce(m.sum()).clamp(min=1.0)
    mean = reduce((x * m).sum()) / n
    var = reduce((((x - mean) ** 2) * m).sum()) / (n - 1).clamp(min=1.0)
    return mean, var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           reduce=_identity) -> torch.Tensor:
    """(x - mean) / std over the masked entries (of every process, with ``reduce``); padding stays 0."""
    mean, var = masked_mean_var(x, mask, reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)
