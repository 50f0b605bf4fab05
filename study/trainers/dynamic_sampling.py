"""DAPO's dynamic sampling (Yu et al. 2025, Sec. 3.2) as pure functions: which groups enter the batch, how many
prompts the next round samples, and how rows of several rounds become one batch.

    ok = [informative_groups(r, G) for r in round_rewards]         # per round: rewards not all equal, per group
    n_next = refill_prompts(sum(map(sum, ok)), n_groups)           # prompts of the next round (0: stop)
    picks = select_groups(ok, preferred, n_groups)                 # [(round, group)], exactly n_groups of them
    batch = merge_batches(batches, group_rows(picks, G), pad_id)   # one batch dict, re-padded

A group is G consecutive rows (one prompt's samples). The trainer (``study.trainers.dapo``) runs the rounds and
the collectives between processes; nothing here touches a model or a process group.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def informative_groups(rewards: Sequence[float], G: int) -> list[bool]:
    """Per group of G consecutive rewards: True when they are not all equal (the group has a policy gradient)."""
    r = torch.tensor(list(rewards)).view(-1, G)
    return [not torch.allclose(g, g[:1].expand(G)) for g in r]


def refill_prompts(n_selectable: int, n_groups: int) -> int:
    """Prompts the next round samples: twice the still-missing groups, at most a full batch (DAPO samples a full
    batch, which costs more on a CPU for the same result); 0 when the batch is full."""
    missing = max(n_groups - n_selectable, 0)
    return min(n_groups, 2 * missing)


def select_groups(selectable: Sequence[Sequence[bool]], preferred: Sequence[Sequence[bool]],
                  n_groups: int) -> list[tuple[int, int]]:
    """``n_groups`` (round, group) picks: the selectable groups in draw order; if there are too few (the round cap
    was hit), the rest in draw order, preferred groups first (e.g. those below the reward ceiling, which the refiner
    can still improve). Raises if the rounds hold fewer than ``n_groups`` groups."""
    good = [(r, g) for r, sel in enumerate(selectable) for g, s in enumerate(sel) if s]
    picks = good[:n_groups]
    if len(picks) < n_groups:
        rest = [(r, g) for r, sel in enumerate(selectable) for g, s in enumerate(sel) if not s]
        rest = [x for x in rest if preferred[x[0]][x[1]]] + [x for x in rest if not preferred[x[0]][x[1]]]
        picks += rest[: n_groups - len(picks)]
    if len(picks) < n_groups:
        raise ValueError(f"the rounds hold {len(picks)} groups, fewer than the batch's {n_groups}")
    return picks


def group_rows(picks: Sequence[tuple[int, int]], G: int) -> list[tuple[int, int]]:
    """The (round, row) pairs of the picked groups, in pick order."""
    return [(r, g * G + j) for r, g in picks for j in range(G)]


def merge_batches(batches: Sequence[dict[str, Any]], rows: Sequence[tuple[int, int]], pad: int) -> dict[str, Any]:
    """Rows ``rows`` = [(round, row)] of several generated batches (TRL's ``_generate_and_score_completions``
    dicts) as one batch: prompt-aligned tensors (``prompt_*``) re-padded on the left, completion-aligned ones on the
    right (``*_ids`` with ``pad``, others with 0), lists picked per row, 0-dim values from the first batch; then the
    columns that are padding in every row are dropped. ``num_items_in_batch`` is left out: it is a global count
    (the trainer gathers it)."""
    out: dict[str, Any] = {}
    for key, v0 in batches[0].items():
        if key == "num_items_in_batch":
            continue
        if isinstance(v0, torch.Tensor) and v0.dim() >= 1:
            picked = [batches[r][key][i] for r, i in rows]
            if v0.dim() == 1:
                out[key] = torch.stack(picked)
                continue
            left = key.startswith("prompt")
            fill = pad if key.endswith("_ids") else 0
            L = max(x.shape[0] for x in picked)
            padded = []
            for x in picked:
                p = x.new_full((L - x.shape[0], *x.shape[1:]), fill)
                padded.append(torch.cat([p, x] if left else [x, p]))
            out[key] = torch.stack(padded)
        elif isinstance(v0, list):
            out[key] = [batches[r][key][i] for r, i in rows]
        else:
            out[key] = v0
    P = int(out["prompt_mask"].sum(1).max().item())
    T = max(int(out["completion_mask"].sum(1).max().item()), 1)
    for key, v in out.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 2:
            out[key] = v[:, -P:] if key.startswith("prompt") else v[:, :T]
    return out
