"""The filter of Eq. 6 (paper Sec. 3.3, App. B): keep a refinement only if it earns a higher reward.

    keep_i = 1[ r(x, y'_i) > r(x, y_i) + tol ]      (filter on; tol = 1e-6 absorbs float32/float64 round-off,
                                                     so an unchanged refinement never counts as improved)
    keep_i = 1[ y'_i exists ]                        (filter off, the App. B ablation)

``improvement_ratio`` is the paper's Fig. 5(b) quantity: the share of *all* rollouts whose refinement beats
them (rollouts that were never refined, e.g. because they already had the maximum reward, count as not improved).
``worse_ratio`` is App. B's: the share of all rollouts whose refinement scores *lower* than them.
"""

from __future__ import annotations

from typing import Sequence


TOL = 1e-6
"""Rewards closer than this are ties (rollout rewards pass through float32 tensors, refinement rewards do not)."""


def keep_improved(
    original_rewards: Sequence[float],
    refined_rewards: Sequence[float | None],
    enabled: bool = True,
) -> list[bool]:
    """Which (x, y') pairs enter the dynamic constraint. ``None`` marks a rollout that was not refined."""
    if len(original_rewards) != len(refined_rewards):
        raise ValueError("original and refined rewards differ in length")
    keep = []
    for r, r_ref in zip(original_rewards, refined_rewards):
        if r_ref is None:
            keep.append(False)
        elif enabled:
            keep.append(float(r_ref) > float(r) + TOL)
        else:
            keep.append(True)
    return keep


def improvement_ratio(original_rewards: Sequence[float], refined_rewards: Sequence[float | None]) -> float:
    """Share of rollouts whose refinement earns a strictly higher reward (Fig. 5b)."""
    if not original_rewards:
        return 0.0
    improved = keep_improved(original_rewards, refined_rewards, enabled=True)
    return sum(improved) / len(original_rewards)


def made_worse(original_rewards: Sequence[float], refined_rewards: Sequence[float | None]) -> list[bool]:
    """Which refinements score lower than their rollout, r(x, y') < r(x, y) - tol (None: not refined)."""
    return [r_ref is not None and float(r_ref) < float(r) - TOL for r, r_ref in zip(original_rewards, refined_rewards)]


def worse_ratio(original_rewards: Sequence[float], refined_rewards: Sequence[float | None]) -> float:
    """Share of rollouts whose refinement earns a strictly lower reward (App. B)."""
    if not original_rewards:
        return 0.0
    return sum(made_worse(original_rewards, refined_rewards)) / len(original_rewards)


def needs_refinement(rewards: Sequence[float], max_reward: float | None) -> list[bool]:
    """Rollouts worth sending to the refiner: those below the reward ceiling (a max-reward response cannot be
    improved, so the filter would drop its refinement anyway; issue 8's first saving)."""
    if max_reward is None:
        return [True] * len(rewards)
    return [float(r) < max_reward - TOL for r in rewards]
