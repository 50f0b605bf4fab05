"""Pieces shared by the DAPO and PPO trainers: refine + filter (Sec. 3.2-3.3), per-phase timers, and the
metrics/samples rows of a run folder. (The policy's CE on y' is ``study.tokens.token_logps``, Eq. 6's loss
``study.constraint.dynamic_constraint_loss``.)

    refine = refiner_fn(components.refiner)                       # or self_refiner_fn(...), dataset_fn(tokenizer)
    res = refine_and_filter(rows, responses, rewards, refine, reward_fn, tokenizer,
                            max_reward=1.0, filter_enabled=True)  # RefineResult: ids/mask/keep/rewards + counts

    timer = StepTimer()
    with timer("rollout"): ...
    run.log_metrics(metric_row(step, reward_mean=..., **timer.as_columns()))
    run.log_samples(sample_rows(step, rows, responses, response_ids, rewards, res, ce, tokenizer, n=4))

``rows`` are dataset rows (``Problem.to_row()`` plus an optional ``prompt`` column, the chat prompt); a
``Problem`` is accepted wherever a row is.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from study.filter import improvement_ratio, keep_improved, made_worse, needs_refinement
from study.generation import Generation
from study.prompts import code_block, solve_messages
from study.runs import METRIC_COLUMNS
from study.tokens import pad_id, pad_right, token_logps

RefineFn = Callable[[list[dict], list[str]], list[Generation]]
"""``refine(rows, responses) -> one Generation y' per (x, y)``."""


# ----------------------------------------------------------------------------------------------------------------
# rows


def as_row(p: Any, task: str = "code") -> dict:
    """A dataset row: ``Problem`` -> ``to_row()`` plus its chat ``prompt`` (the policy's solve prompt for ``task``:
    the code instruction + problem, or the bare request for dialogue); a dict passes through."""
    if isinstance(p, dict):
        return p
    row = p.to_row()
    row["prompt"] = solve_messages(p.prompt, task)
    return row


def reward_columns(rows: Sequence[dict]) -> dict[str, list]:
    """The dataset columns TRL hands a reward function (everything but prompt/completion)."""
    keys = [k for k in rows[0] if k not in ("prompt", "completion", "completion_ids")] if rows else []
    return {k: [r.get(k) for r in rows] for k in keys}


def score(reward_fn: Callable, rows: Sequence[dict], texts: Sequence[str],
          token_ids: Sequence[Sequence[int]] | None = None) -> list[float]:
    """Call a TRL-style reward function the way ``GRPOTrainer`` does (conversational completions when the
    prompts are conversational)."""
    if not rows:
        return []
    rows = [as_row(r) for r in rows]
    prompts = [r.get("prompt", r.get("problem", "")) for r in rows]
    conversational = isinstance(prompts[0], list)
    completions = [[{"role": "assistant", "content": t}] if conversational else t for t in texts]
    out = reward_fn(prompts=prompts, completions=completions,
                    completion_ids=[list(x) for x in token_ids] if token_ids is not None else None,
                    **reward_columns(rows))
    return [float("nan") if r is None else float(r) for r in out]


# ----------------------------------------------------------------------------------------------------------------
# who supplies y' (constraint.target)


def refiner_fn(refiner) -> RefineFn:
    """y' from a ``study.refiner.Refiner`` (the frozen reference by default; ``target: self`` passes a Refiner
    around the current policy)."""

    def refine(rows: list[dict], responses: list[str]) -> list[Generation]:
        return refiner.refine([r["problem"] for r in rows], list(responses))

    return refine


def dataset_fn(tokenizer) -> RefineFn:
    """y' = the problem's reference solution in the answer format (static SFT target, UFT/LUFFY-style).
    Rows without a reference get an empty y' (never kept: it scores no higher than anything)."""
    eos = tokenizer.eos_token_id

    def refine(rows: list[dict], responses: list[str]) -> list[Generation]:
        out = []
        for r in rows:
            ref = r.get("reference") or ""
            text = code_block(ref) if ref else ""
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            out.append(Generation(text=text, token_ids=list(ids) + ([eos] if eos is not None else []),
                                  truncated=False))
        return out

    return refine


def oracle_fn(tokenizer) -> RefineFn:
    """y' = y with its first edit toward the problem's reference solution (in the answer format) applied: the
    first run of lines where y and the reference differ (``difflib``) is replaced by the reference's lines. A
    deterministic stand-in for a refiner that can fix (``constraint.target: oracle``; tests and smoke runs, where
    the smoke reference model never improves anything): y' keeps y's correct prefix verbatim, edits mid-response,
    and may still fail (then the filter drops it). Rows without a reference get an empty y' (never kept)."""
    import difflib

    eos = tokenizer.eos_token_id

    def refine(rows: list[dict], responses: list[str]) -> list[Generation]:
        out = []
        for r, y in zip(rows, responses):
            ref = r.get("reference") or ""
            text = ""
            if ref:
                a, b = y.splitlines(keepends=True), code_block(ref).splitlines(keepends=True)
                ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
                edit = next((op for op in ops if op[0] != "equal"), None)
                if edit is None:
                    text = y
                else:
                    _, i1, i2, j1, j2 = edit
                    text = "".join(a[:i1] + b[j1:j2] + a[i2:])
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            out.append(Generation(text=text, token_ids=list(ids) + ([eos] if eos is not None else []),
                                  truncated=False))
        return out

    return refine


def make_refine_fn(cfg, components, policy=None) -> RefineFn:
    """Who supplies y' (``constraint.target``): the refiner (frozen π_ref by default), the current policy
    (``policy``: the trainer's model, unwrapped for generation), the dataset's reference solution, or the
    oracle's edit toward it."""
    target = cfg.constraint.target
    if target == "dataset":
        return dataset_fn(components.tokenizer)
    if target == "oracle":
        return oracle_fn(components.tokenizer)
    if target == "self":
        from study.refiner import Refiner

        r = cfg.refiner
        return refiner_fn(Refiner(policy if policy is not None else components.policy, components.tokenizer,
                                  task=r.task, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                  batch_size=r.batch_size, copy_decoding=cfg.speed.refiner_copy_decoding,
                                  draft_len=cfg.speed.refiner_draft_len))
    if components.refiner is None:
        from study.errors import UserError

        raise UserError("constraint.mode: dynamic needs a refiner (components.refiner is None)")
    return refiner_fn(components.refiner)


# ----------------------------------------------------------------------------------------------------------------
# refine + filter (Sec. 3.2-3.3, Eq. 6)


@dataclass
class RefineResult:
    """What the refiner and the filter decided for one batch of N rollouts."""

    refined_ids: torch.Tensor
    """(N, R) token ids of y', right-padded (R >= 1; rows not refined are all padding)."""
    refined_mask: torch.Tensor
    """(N, R) 1 on y' tokens (including its EOS), 0 on padding."""
    keep: torch.Tensor
    """(N,) bool, the filter's decision: y' enters L_DC."""
    refined: list[bool]
    """Was rollout i sent to the refiner."""
    texts: list[str | None]
    """y' text (None when not refined)."""
    rewards: list[float | None]
    """r(x, y') (None when not refined)."""
    improvement_ratio: float
    """Share of all N rollouts whose y' scores strictly higher (Fig. 5b)."""
    n_skipped_max: int = 0
    """Rollouts not refined because they already had the maximum reward."""
    token_ids: list[list[int]] = field(default_factory=list)
    """y' token ids, unpadded (empty when not refined)."""
    n_distinct: int = 0
    """Distinct (x, y) pairs among the refined rollouts (what a greedy refiner actually decodes)."""
    original_rewards: list[float] = field(default_factory=list)
    """r(x, y) of the N rollouts, the filter's reference."""

    @property
    def n(self) -> int:
        return len(self.refined)

    @property
    def n_improved(self) -> int:
        """Rollouts whose y' scores strictly higher (kept when the filter is on)."""
        return sum(keep_improved(self.original_rewards, self.rewards, enabled=True))

    @property
    def n_worse(self) -> int:
        """Rollouts whose y' scores strictly lower (App. B)."""
        return sum(made_worse(self.original_rewards, self.rewards))

    @property
    def n_refined(self) -> int:
        return sum(self.refined)

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum().item())

    @property
    def refined_frac(self) -> float:
        return self.n_refined / self.n if self.n else float("nan")

    @property
    def kept_frac(self) -> float:
        return self.n_kept / self.n if self.n else float("nan")

    def to(self, device) -> "RefineResult":
        self.refined_ids = self.refined_ids.to(device)
        self.refined_mask = self.refined_mask.to(device)
        self.keep = self.keep.to(device)
        return self


def refine_and_filter(
    rows: Sequence[Any],
    responses: Sequence[str],
    rewards: Sequence[float],
    refine: RefineFn,
    reward_fn: Callable,
    tokenizer,
    max_reward: float | None = None,
    filter_enabled: bool = True,
    skip_max_reward: bool = True,
    timer: "StepTimer | None" = None,
) -> RefineResult:
    """Refine the rollouts below the reward ceiling (all of them when the filter is off), score y' with the same
    reward function, apply the filter.

    rows:      dataset rows (or ``Problem``s) of the N rollouts (repeat a problem's row for each of its samples).
    responses: the policy's responses y (text).
    rewards:   r(x, y), the task reward used for the filter (no shaping terms).
    timer:     when given, records the sub-phases ``refine_generate`` (decoding y') and ``refine_score`` (r(x, y')).
    """
    timer = timer or StepTimer()
    rows = [as_row(r) for r in rows]
    if not (len(rows) == len(responses) == len(rewards)):
        raise ValueError("rows, responses and rewards differ in length")
    # A max-reward y cannot be improved, so with the filter on its y' would be dropped: skip it. With the filter
    # off every y' is kept, so every y is refined (App. B: the refiner can make a correct answer worse).
    todo = needs_refinement(rewards, max_reward if (skip_max_reward and filter_enabled) else None)
    idx = [i for i, t in enumerate(todo) if t]
    with timer("refine_generate"):
        gens = refine([rows[i] for i in idx], [responses[i] for i in idx]) if idx else []
    texts: list[str | None] = [None] * len(rows)
    ref_rewards: list[float | None] = [None] * len(rows)
    token_ids: list[list[int]] = [[] for _ in rows]
    if idx:
        with timer("refine_score"):
            scored = _score_refined(reward_fn, rows, responses, rewards, idx, gens)
        for i, g, r in zip(idx, gens, scored):
            texts[i], ref_rewards[i], token_ids[i] = g.text, r, list(g.token_ids)
    # (TRL hands DAPO float32 task rewards, ``score`` returns float64: keep_improved treats round-off as a tie)
    keep = keep_improved(rewards, ref_rewards, enabled=filter_enabled)
    # an empty y' (e.g. no dataset reference) carries no tokens to imitate
    keep = [k and len(t) > 0 for k, t in zip(keep, token_ids)]
    ids, mask = pad_right(token_ids, pad_id(tokenizer))
    return RefineResult(
        refined_ids=ids,
        refined_mask=mask,
        keep=torch.tensor(keep, dtype=torch.bool),
        refined=list(todo),
        texts=texts,
        rewards=ref_rewards,
        improvement_ratio=improvement_ratio(rewards, ref_rewards),
        n_skipped_max=len(rows) - len(idx),
        token_ids=token_ids,
        n_distinct=len({(rows[i].get("task_id"), rows[i].get("problem"), responses[i]) for i in idx}),
        original_rewards=[float(r) for r in rewards],
    )


def take_refinements(results: Sequence[RefineResult], rows: Sequence[tuple[int, int]], pad: int) -> RefineResult:
    """Rows ``rows`` = [(result, row)] of several ``RefineResult``s as one (e.g. the selected groups of dynamic
    sampling's rounds, or every round's rows), y' re-padded. ``n_distinct`` is the sum over the results."""
    def pick(attr):
        return [getattr(results[r], attr)[i] for r, i in rows]

    token_ids = pick("token_ids")
    ids, mask = pad_right(token_ids, pad)
    keep = torch.tensor([bool(results[r].keep[i]) for r, i in rows], dtype=torch.bool)
    refined, original, refined_rewards = pick("refined"), pick("original_rewards"), pick("rewards")
    return RefineResult(
        refined_ids=ids, refined_mask=mask, keep=keep, refined=refined, texts=pick("texts"), rewards=refined_rewards,
        improvement_ratio=improvement_ratio(original, refined_rewards), n_skipped_max=len(rows) - sum(refined),
        token_ids=token_ids, n_distinct=sum(r.n_distinct for r in results), original_rewards=original)


def global_sum(accelerator, x: torch.Tensor | float) -> torch.Tensor:
    """Σ of a per-process number over the processes (the number itself with one), as a 0-dim float32 tensor."""
    t = torch.as_tensor(x).detach().float().reshape(())
    return accelerator.reduce(t.to(accelerator.device), "sum") if accelerator.num_processes > 1 else t


def gather_rollouts(accelerator, task_rewards: Sequence[float], refine: RefineResult | None, pad: int
                    ) -> tuple[list[float], RefineResult | None]:
    """Every process's rollouts (rank order; each rank holds whole groups) and their refinements, for the step's
    statistics: ``rollout_stats`` of the result describes the global batch, not this rank's share. With one
    process (or ``accelerator`` None) the inputs come back as they are."""
    if accelerator is None or accelerator.num_processes == 1:
        return list(task_rewards), refine
    from accelerate.utils import gather_object

    light = None
    if refine is not None:  # python lists only: y' ids are re-padded by take_refinements
        light = RefineResult(refined_ids=torch.zeros((0, 1), dtype=torch.long), refined_mask=torch.zeros((0, 1)),
                             keep=refine.keep.detach().cpu(), refined=list(refine.refined), texts=list(refine.texts),
                             rewards=list(refine.rewards), improvement_ratio=refine.improvement_ratio,
                             n_skipped_max=refine.n_skipped_max, token_ids=[list(t) for t in refine.token_ids],
                             n_distinct=refine.n_distinct, original_rewards=list(refine.original_rewards))
    parts = gather_object([(list(map(float, task_rewards)), light)])  # one entry per process
    rewards = [r for part, _ in parts for r in part]
    if refine is None:
        return rewards, None
    results = [res for _, res in parts]
    return rewards, take_refinements(results, [(p, i) for p, res in enumerate(results) for i in range(res.n)], pad)


def rollout_stats(task_rewards: Sequence[float], group_size: int, max_reward: float | None,
                  refine: RefineResult | None) -> dict[str, float]:
    """The statistics of a set of rollouts (and of their refinements, if any): reward_mean, reward_std,
    group_reward_std (mean within-group std), pass_rate; improvement_ratio, kept_frac, refined_frac, worse_ratio
    and the counts n_rollouts, n_refined, n_improved, n_worse, n_kept, refined_reward_mean. Shared by both
    trainers; DAPO logs them for the whole sampled batch and, prefixed ``selected_``, for the selected one."""
    r = [float(x) for x in task_rewards]
    n = len(r)
    out = {
        "reward_mean": nanmean(r),
        "reward_std": float(torch.tensor(r, dtype=torch.float32).std(unbiased=False)) if r else float("nan"),
        "group_reward_std": group_reward_std(r, group_size) if group_size > 1 else float("nan"),
        "pass_rate": (sum(x >= max_reward for x in r) / n) if max_reward is not None and n else float("nan"),
        "n_rollouts": n,
    }
    if refine is not None:
        out.update(improvement_ratio=refine.improvement_ratio, kept_frac=refine.kept_frac,
                   refined_frac=refine.refined_frac, worse_ratio=refine.n_worse / n if n else float("nan"),
                   n_refined=refine.n_refined, n_improved=refine.n_improved, n_worse=refine.n_worse,
                   n_kept=refine.n_kept, refined_reward_mean=nanmean(refine.rewards))
    return out


def _score_refined(reward_fn: Callable, rows: list[dict], responses: Sequence[str], rewards: Sequence[float],
                   idx: list[int], gens: list[Generation]) -> list[float]:
    """r(x, y') for rows ``idx``. The reward is a function of the row and the text, so two computations are reused
    (issue 8; same values, fewer sandbox runs): a y' that repeats y verbatim gets r(x, y), and identical (x, y')
    pairs (the greedy refiner on equal responses of a group) are scored once."""
    out: list[float | None] = [None] * len(idx)
    todo: dict[tuple, list[int]] = {}
    for k, (i, g) in enumerate(zip(idx, gens)):
        if g.text == responses[i]:
            out[k] = float(rewards[i])
        else:
            todo.setdefault((rows[i].get("task_id"), rows[i].get("problem"), g.text), []).append(k)
    if todo:
        first = [ks[0] for ks in todo.values()]
        scored = score(reward_fn, [rows[idx[k]] for k in first], [gens[k].text for k in first],
                       [gens[k].token_ids for k in first])
        for ks, r in zip(todo.values(), scored):
            for k in ks:
                out[k] = r
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# timing and logging


class StepTimer:
    """Wall time per phase of one RL step; phases accumulate until ``reset``.

        with timer("rollout"): ...
        timer.as_columns()   # {"time_rollout": 1.2, ..., "time_step": <sum of the phases or explicit "step">}
    """

    PHASES = ("rollout", "reward", "refine", "update")

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.t0 = time.perf_counter()
        """When the phases began (``reset``)."""

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase: str, seconds: float) -> None:
        self.totals[phase] = self.totals.get(phase, 0.0) + seconds

    def as_columns(self) -> dict[str, float]:
        cols = {f"time_{p}": self.totals.get(p, 0.0) for p in self.PHASES}
        for p, v in self.totals.items():
            cols.setdefault(f"time_{p}", v)
        if "step" not in self.totals:
            cols["time_step"] = sum(self.totals.get(p, 0.0) for p in self.PHASES)
        return cols

    def reset(self) -> None:
        self.totals = {}
        self.t0 = time.perf_counter()


def metric_row(step: int, **values: Any) -> dict[str, Any]:
    """One metrics.jsonl row: every ``METRIC_COLUMNS`` entry (NaN where not given), then the extras."""
    row: dict[str, Any] = {c: float("nan") for c in METRIC_COLUMNS}
    row["step"] = int(step)
    for k, v in values.items():
        if isinstance(v, torch.Tensor):
            v = v.item()
        row[k] = v
    return row


def group_reward_std(rewards: Sequence[float], group_size: int) -> float:
    """Mean within-group (population) std of rewards; consecutive runs of ``group_size`` are one group."""
    r = torch.tensor(list(rewards), dtype=torch.float64)
    if r.numel() == 0 or group_size < 1 or r.numel() % group_size:
        return float("nan")
    return r.view(-1, group_size).std(dim=1, unbiased=False).mean().item()


def nanmean(xs: Sequence[float]) -> float:
    vals = [float(x) for x in xs if x is not None and not math.isnan(float(x))]
    return sum(vals) / len(vals) if vals else float("nan")


def _tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([int(t)]) for t in ids]


def sample_order(refine: RefineResult | None, n_rows: int) -> list[int]:
    """The row order of samples.jsonl: kept pairs first, then other refined ones, then the rest, each in batch
    order (``sample_rows`` logs the first ``n``; only those need the policy's CE on y')."""
    if refine is None:
        return list(range(n_rows))
    keep = refine.keep.tolist()
    return ([i for i in range(n_rows) if keep[i]] + [i for i in range(n_rows) if refine.refined[i] and not keep[i]]
            + [i for i in range(n_rows) if not refine.refined[i]])


@torch.no_grad()
def refined_ce_for_samples(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, refine: RefineResult | None,
                           n: int) -> torch.Tensor | None:
    """(N, R) the policy's CE on y' for the refined rows ``sample_rows`` will log (0 elsewhere): the Fig. 6 heatmap
    material, measured before the update. None when nothing is refined or nothing is logged."""
    if refine is None or n <= 0:
        return None
    shown = [i for i in sample_order(refine, refine.n)[:n] if refine.refined[i]]
    ce = torch.zeros(refine.refined_ids.shape)
    if shown:
        idx = torch.tensor(shown, device=prompt_ids.device)
        logps, _ = token_logps(model, prompt_ids[idx], prompt_mask[idx], refine.refined_ids[idx].to(prompt_ids.device),
                               refine.refined_mask[idx].to(prompt_ids.device))
        ce[idx.cpu()] = -logps.float().cpu()
    return ce


def sample_rows(
    step: int,
    rows: Sequence[Any],
    responses: Sequence[str],
    response_ids: Sequence[Sequence[int]],
    rewards: Sequence[float],
    refine: RefineResult | None,
    refined_ce: torch.Tensor | None,
    tokenizer,
    n: int,
) -> list[dict]:
    """Up to ``n`` samples.jsonl rows (``study.runs.SAMPLE_FIELDS``). Kept pairs come first (the Fig. 6 heatmap
    material), then other refined ones, then the rest, each in batch order.

    refined_ce: (N, R) per-token CE of the policy on y' (``refined_ce_for_samples``) or None.
    """
    if n <= 0 or not rows:
        return []
    rows = [as_row(r) for r in rows]
    N = len(rows)
    order = sample_order(refine, N)
    out = []
    for i in order[:n]:
        refined = refine is not None and refine.refined[i]
        r_ids = refine.token_ids[i] if refined else []
        ce = None
        if refined and refined_ce is not None:
            ce = [round(float(x), 5) for x in refined_ce[i, : len(r_ids)].tolist()]
        out.append({
            "step": int(step),
            "task_id": rows[i].get("task_id"),
            "prompt": rows[i].get("problem"),
            "response": responses[i],
            "refined": refine.texts[i] if refined else None,
            "reward": float(rewards[i]),
            "refined_reward": refine.rewards[i] if refined else None,
            "kept": bool(refine.keep[i]) if refine is not None else False,
            "response_tokens": _tokens(tokenizer, response_ids[i]),
            "refined_tokens": _tokens(tokenizer, r_ids) if refined else None,
            "refined_token_ce": ce,
        })
    return out


# ----------------------------------------------------------------------------------------------------------------
# experiment trackers (``report_to``)


def tracker_values(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics row, for TensorBoard / W&B."""
    return {prefix + k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class MetricTracker:
    """``report_to`` for the PPO trainer: an ``accelerate.Accelerator`` used only for its trackers (TensorBoard
    events under ``<run>/tracking/refiner-study/``, or a W&B run named after the run). ``report_to: none``
    creates nothing.

        tracker = MetricTracker(cfg, run)
        tracker.log(row, step)      # every finite number of the metrics row
        tracker.close()
    """

    def __init__(self, cfg, run) -> None:
        trackers = [cfg.report_to] if isinstance(cfg.report_to, str) else list(cfg.report_to)
        trackers = [t for t in trackers if t != "none"]
        self.accelerator = None
        if not trackers:
            return
        from accelerate import Accelerator

        from pathlib import Path

        self.accelerator = Accelerator(log_with=trackers, project_dir=str(Path(run.root) / "tracking"))
        self.accelerator.init_trackers("refiner-study", config=tracker_values(_flat(cfg.model_dump(mode="json"))),
                                       init_kwargs={"wandb": {"name": cfg.name}})

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.accelerator is not None:
            self.accelerator.log(tracker_values(row), step=step)

    def close(self) -> None:
        if self.accelerator is not None:
            self.accelerator.end_training()
            self.accelerator = None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
