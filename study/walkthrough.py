"""Helpers of the walkthrough notebook: choosing its example and laying out its per-token table. The method's
steps themselves (rollout, reward, refine, filter, CE, L_DC) are the trainers' own functions, called in the
notebook.

    ex_ = pick_example(components, cfg, profile, runs_dir, group="fig5_dapo", label="dynamic")
    ex_.problem, ex_.rollout, ex_.index, ex_.source      # the group of G rollouts and the one the notebook follows

The default example comes from run data: the first logged sample (by seed, then step) of the group's ``label``
arm whose refinement the filter kept and that changes the reward. Its y is the response the policy sampled at
that step; its G − 1 group-mates are sampled here from the initial policy. Without such a sample (no runs, or
none kept) it searches: the first training problem where a group sampled from the initial policy gets a kept
refinement that changes the reward.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.errors import UserError


def config(group: str, profile, label: str):
    """The config of arm ``label`` of ``group`` (its first seed), moved to the CPU."""
    from study import experiments as ex

    specs = [s for s in ex.group_specs(group, profile) if s.label == label]
    if not specs:
        raise UserError(f"group '{group}' has no arm '{label}'")
    return specs[0].cfg.model_copy(update={"device": "cpu"})


@dataclass
class Example:
    problem: object
    """The training problem (``study.problems.Problem``)."""
    rollout: object
    """A ``study.trainers.ppo.Rollout`` of G responses to it."""
    index: int
    """The rollout the walkthrough follows."""
    source: str
    """Where the example came from, in words."""


def _rollout(c, cfg, problem):
    from study.trainers.ppo import sample_rollout

    return sample_rollout(c.policy, c.tokenizer, [problem] * cfg.rollout.num_generations, cfg, c.device)


def _with_response(roll, i: int, text: str, ids: list[int], pad_id: int):
    """``roll`` with response i replaced by (text, ids) (padded tensors rebuilt)."""
    import torch

    from study.trainers.common import pad_right

    texts, token_ids = list(roll.texts), [list(x) for x in roll.token_ids]
    texts[i], token_ids[i] = text, list(ids)
    r_ids, r_mask = pad_right(token_ids, pad_id)
    roll.texts, roll.token_ids = texts, token_ids
    roll.response_ids, roll.response_mask = r_ids.to(roll.response_ids.device), r_mask.to(torch.long)
    return roll


def _improves(c, cfg, roll) -> int | None:
    """Index of the first rollout whose refinement the filter keeps with a different reward, else None."""
    from study.trainers.common import as_row, refine_and_filter, refiner_fn, score

    rows = [as_row(p, cfg.refiner.task) for p in roll.problems]
    r = score(c.reward_fn, rows, roll.texts, roll.token_ids)
    res = refine_and_filter(rows, roll.texts, r, refiner_fn(c.refiner), c.reward_fn, c.tokenizer,
                            max_reward=c.max_reward, filter_enabled=cfg.constraint.filter,
                            skip_max_reward=cfg.refiner.skip_max_reward)
    for i, k in enumerate(res.keep.tolist()):
        if k and res.rewards[i] is not None and abs(res.rewards[i] - r[i]) > 1e-6:
            return i
    return None


def pick_example(c, cfg, profile, runs_dir, group: str, label: str, mode: str = "run", max_problems: int = 20,
                 seed: int | None = None) -> Example:
    """The walkthrough's example (module docstring). ``mode``: ``run`` (from run data, else search) or
    ``search``."""
    from study import experiments as ex
    from study import explore

    if mode not in ("run", "search"):
        raise UserError(f"example: expected 'run' or 'search', got {mode!r}")
    by_id = {p.task_id: p for p in c.problems}
    if mode == "run":
        try:
            samples = ex.load_samples(group, profile, runs_dir, [seed] if seed is not None else None,
                                      train_missing=False)
        except UserError:
            samples = None
        row = explore.first_improved(samples, label) if samples is not None and len(samples) else None
        if row is not None and row["task_id"] in by_id:
            problem = by_id[row["task_id"]]
            roll = _rollout(c, cfg, problem)
            eos = c.tokenizer.eos_token_id
            ids = c.tokenizer(row["response"], add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
            pad = c.tokenizer.pad_token_id if c.tokenizer.pad_token_id is not None else eos
            roll = _with_response(roll, 0, row["response"], ids, pad)
            return Example(problem, roll, 0, f"run {row['run']}, step {int(row['step'])}: its logged response y and "
                           f"the refinement the filter kept (r(y) = {row['reward']:.3g} → r(y') = "
                           f"{row['refined_reward']:.3g}); the other {len(roll.texts) - 1} rollouts of the group "
                           f"are sampled here from the initial policy")
    roll = None
    for problem in c.problems[:max_problems]:
        roll = _rollout(c, cfg, problem)
        i = _improves(c, cfg, roll)
        if i is not None:
            return Example(problem, roll, i, f"search: {problem.task_id}, the first training problem where a group "
                           "sampled from the initial policy gets a kept refinement that changes the reward")
    if roll is None:
        raise UserError("no training problems")
    return Example(roll.problems[0], roll, 0, f"search: no kept refinement in the first {max_problems} problems; "
                   f"following rollout 0 of {roll.problems[0].task_id} (nothing will be kept)")


def follow(refine, index: int) -> int:
    """The rollout to follow: ``index`` if its refinement was kept, else the first kept one, else ``index``."""
    keep = refine.keep.tolist()
    return index if keep[index] else next((j for j, k in enumerate(keep) if k), index)


def token_table(tokenizer, ids, ce_before, ce_after, first_change: int):
    """Per token of y': the decoded token (not BPE symbols), the CE before and after the gradient step, the change
    of its log-probability, and whether it lies at or after the first change."""
    import pandas as pd

    ids = [int(x) for x in ids]
    before = [float(x) for x in ce_before]
    after = [float(x) for x in ce_after]
    return pd.DataFrame({
        "position": range(len(ids)),
        "token": [repr(tokenizer.decode([t]))[1:-1] for t in ids],
        "from first change": [j >= first_change for j in range(len(ids))],
        "CE before (nats)": before,
        "CE after (nats)": after,
        "Δ log π": [b - a for b, a in zip(before, after)],
    })


def ce_before_after(table) -> tuple[float, float]:
    """Mean CE (before the step) on the tokens before the first change and on those from it on."""
    m = table.groupby("from first change")["CE before (nats)"].mean()
    return float(m.get(False, float("nan"))), float(m.get(True, float("nan")))
