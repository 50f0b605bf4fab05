"""PPO with a critic and GAE (paper Sec. 4.1, Fig. 4; Table 2's PPO column), in three constraint modes.

    study train configs/mini/ppo_dynamic.yaml          # or ppo_none.yaml / ppo_static.yaml
    summary = train_ppo(cfg, components, run)           # what ``study.train`` calls

One iteration, read top to bottom in :func:`train_ppo` (CleanRL style, OpenRLHF's PPO recipe):

1. rollout   sample ``num_prompts`` problems x ``num_generations`` responses y ~ π_θ(·|x) at ``rollout.temperature``
2. reward    r(x, y) from ``components.reward_fn`` (sequence level)
3. refine    (dynamic only) y' = refiner(x, y) for y below the reward ceiling; r(x, y'); keep_i = 1[r(y') > r(y)]
4. score     old log-probs log π_old(y_t), reference log-probs log π_ref(y_t), values V(s_t), all no-grad
5. shape     per-token rewards: r_t = 1[t = last] · r(x, y)  −  β · KL_t   (the β term in ``static`` only)
6. GAE       A_t, R_t = A_t + V(s_t) over response tokens (γ, λ_GAE), masked whitening of A
7. update    ``ppo_epochs`` passes over shuffled minibatches of ``mini_batch_size`` rollouts:
               actor  L = L_CLIP  (+ λ · L_DC in ``dynamic``: Eq. 6, the kept pairs of this minibatch)
               critic L_V (value clipping); one backward of both, one AdamW (two parameter groups)

The three modes differ in exactly three places, each marked ``# MODE:``: the β·KL reward shaping (static, Eq. 2-3),
the refine+filter phase (dynamic), and the λ·L_DC actor-loss term (dynamic, Eq. 6).

Loss terms (per token, averaged over all response tokens of the minibatch, i.e. token-level like L_DC):

    ρ_t      = exp(log π_θ(y_t) − log π_old(y_t))
    L_CLIP   = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε))                      (Schulman et al. 2017, Eq. 7)
    L_V      = 0.5 · mean_t max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, ±ε_v) − R_t)²)
    L_DC     = Σ kept refined tokens −log π_θ(y'_t | x, y'_<t) / Z, Z = the minibatch's kept tokens    (Eq. 6;
               ``study.constraint.dynamic_constraint_loss`` with ``constraint.normalize``)
    entropy  = mean_t H(π_θ(·|x, y_<t))                                              (logged, not in the loss)
    logged ``loss`` = L_CLIP + λ·L_DC + vf_coef·L_V, averaged over the iteration's minibatches

Choices stated here because the paper does not fix them:
* Log-probs for the ratio, the KL and the entropy use logits / ``rollout.temperature`` (the sampling
  distribution, as OpenRLHF and TRL do); L_DC is the untempered CE (an SFT loss).
* KL (both the static penalty and the logged ``kl`` column) uses ``constraint.kl_estimator`` per token on the
  rollout's own tokens, old policy vs reference (k1 = log π_old − log π_ref, OpenRLHF's default for the reward
  penalty; our PPO configs set k1). The logged ``kl`` is the per-sequence **sum** over response tokens,
  averaged over sequences (a sequence-level KL, the quantity of the paper's Fig. 4), in every mode.
* The critic is a copy of the policy's backbone (same initial weights) with a linear value head on the last
  hidden state; V(s_t) is read at the position that predicts token t. Actor and critic are one ``ActorCritic``
  module with one AdamW of two parameter groups (``optim.learning_rate`` / ``optim.critic_learning_rate``; the
  same per-parameter updates as two optimisers) and one backward of L_actor + vf_coef·L_V per minibatch (they share
  no weights, so each network gets its own loss's gradient); ``ppo.vf_coef`` scales L_V. Each network's gradient
  norm is clipped on its own, except under DeepSpeed, whose engine clips one global norm over both.
* ``optim.warmup_steps`` counts RL iterations (linear warm-up, then constant), for both optimisers.
* The ``samples.jsonl`` CE on y' is the policy's, measured right before the update of that step.

Checkpoints (``checkpoint_every`` and the last step) go to ``<run>/checkpoints/step-<N>/`` (written to a temp
folder, then renamed; only the latest is kept): ``state/`` (``Accelerator.save_state``: weights, optimiser,
scheduler, the problem sampler and every rank's RNG; DeepSpeed's sharded checkpoint under ZeRO), ``policy/`` (HF
folder + tokenizer, full weights), ``critic.pt`` and ``state.json``. :func:`load_checkpoint` restores ``state/``
(the same number of processes), so a resume path only needs to call it and start at ``step + 1``.

Multi-process (``accelerate launch`` / ``torchrun``; DDP or DeepSpeed ZeRO-2/3): see :func:`train_ppo`. Rank 0
writes the run folder; every logged statistic is over all ranks.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import time
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from study.constraint import constraint_normalizer, dc_loss_mask, dynamic_constraint_loss, masked_mean, static_kl
from study.generation import generate_sharing_prompts
from study.prompts import solve_messages
from study.tokens import cut_at_eos, eos_ids, pad_id, pad_left, pad_right, token_logps
from study.trainers.common import (
    MetricTracker,
    RefineResult,
    StepTimer,
    as_row,
    make_refine_fn,
    metric_row,
    refine_and_filter,
    refined_ce_for_samples,
    rollout_stats,
    gather_rollouts,
    global_sum,
    sample_rows,
    score,
)
from study.trainers.gae import compute_gae, whiten

# ================================================================================================================
# critic


class ValueModel(nn.Module):
    """V(s): the policy's backbone (a copy, same initial weights) + a scalar linear head on the last hidden state."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        base = policy.base_model if policy.base_model is not policy else policy
        self.backbone = copy.deepcopy(base)
        self.backbone.requires_grad_(True)
        hidden = policy.config.get_text_config().hidden_size
        p = next(policy.parameters())
        self.value_head = nn.Linear(hidden, 1, bias=False, device=p.device, dtype=p.dtype)
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1))  # OpenRLHF's value-head init

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) values, one per position."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        h = getattr(out, "last_hidden_state", None)
        if h is None:
            h = out.hidden_states[-1]
        return self.value_head(h).squeeze(-1).float()


# ================================================================================================================
# loss terms (each one a small function: tests check them on hand examples)


def _token_mean(x: torch.Tensor, mask: torch.Tensor, n_global: torch.Tensor | None, world: int) -> torch.Tensor:
    return masked_mean(x, mask) if n_global is None else global_token_mean(x, mask, n_global, world)


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float, n_global: torch.Tensor | None = None, world: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_CLIP, PPO's clipped surrogate (to minimise), token-mean over ``mask`` (over every rank's minibatch tokens
    when ``n_global`` is given: ``global_token_mean``); returns (loss, clip_frac)."""
    ratio = torch.exp(logps - old_logps)
    surr_unclipped = -advantages * ratio
    surr_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = _token_mean(torch.maximum(surr_unclipped, surr_clipped), mask, n_global, world)
    clip_frac = _token_mean((surr_clipped > surr_unclipped).float(), mask, n_global, world)
    return loss, clip_frac.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float, n_global: torch.Tensor | None = None, world: int = 1
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_V with value clipping: 0.5 · mean max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²); (loss, clip_frac)."""
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err_unclipped = (values - returns) ** 2
    err_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * _token_mean(torch.maximum(err_unclipped, err_clipped), mask, n_global, world)
    clip_frac = _token_mean((err_clipped > err_unclipped).float(), mask, n_global, world)
    return loss, clip_frac.detach()


def token_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards (B, T): the sequence reward on the last response token, minus β·KL_t on every token
    when ``kl`` is given (the static constraint as a reward penalty, OpenRLHF-style)."""
    m = mask.to(torch.float32)
    rewards = torch.zeros_like(m)
    last = (m.sum(-1).long() - 1).clamp(min=0)
    has_tokens = m.sum(-1) > 0
    rewards[torch.arange(len(m)), last] = scores.to(m.dtype) * has_tokens.to(m.dtype)
    if kl is not None:
        rewards = rewards - kl_coef * kl.float() * m
    return rewards


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce=lambda t: t) -> float:
    """1 − Var(R − V) / Var(R) over the masked tokens (of every process, with ``reduce``: a sum over ranks)."""
    m = mask.to(torch.float32)
    n = reduce(m.sum()).clamp(min=1.0)
    r_mean = reduce((returns * m).sum()) / n
    var_r = reduce((((returns - r_mean) ** 2) * m).sum()) / n
    d = (returns - values) * m
    d_mean = reduce(d.sum()) / n
    var_d = reduce((((d - d_mean) ** 2) * m).sum()) / n
    return float("nan") if var_r.item() == 0 else (1.0 - var_d / var_r).item()


# ================================================================================================================
# forward passes over x ⊕ y (left-padded prompt, right-padded response)


def response_values(critic: ValueModel, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
    """V(s_t) (B, T): the value at the position that predicts response token t."""
    T = response_ids.shape[1]
    v = critic(torch.cat([prompt_ids, response_ids], 1), torch.cat([prompt_mask, response_mask], 1))
    return v[:, -(T + 1):-1]


# ================================================================================================================
# rollout


@dataclass
class Rollout:
    """One batch of N = num_prompts × G responses (row i belongs to problem ``problems[i]``)."""

    problems: list
    prompt_ids: torch.Tensor  # (N, P) left-padded
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor  # (N, T) right-padded, pad after EOS
    response_mask: torch.Tensor  # 1 on response tokens up to and including EOS
    texts: list[str]
    token_ids: list[list[int]]
    truncated: list[bool]


def encode_prompts(tokenizer, problems, task: str, max_prompt_length: int) -> list[list[int]]:
    """Chat-templated solve prompts as token ids (too-long prompts lose their *left* end)."""
    out = []
    for p in problems:
        text = tokenizer.apply_chat_template(solve_messages(p.prompt, task), tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(list(ids[-max_prompt_length:]))
    return out


@torch.no_grad()
def sample_rollout(policy, tokenizer, problems: list, cfg, device) -> Rollout:
    """y ~ π_θ(·|x): ``model.generate`` on left-padded prompt ids, cut at the first EOS (kept as an action)."""
    pad = pad_id(tokenizer)
    prompts = encode_prompts(tokenizer, problems, cfg.refiner.task, cfg.rollout.max_prompt_length)
    prompt_ids, prompt_mask = pad_left(prompts, pad)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    was_training = policy.training
    policy.eval()
    out = generate_sharing_prompts(  # a prompt's G samples share its prefill
        policy, prompt_ids, prompt_mask, share=cfg.speed.shared_prompt_prefill,
        max_new_tokens=cfg.rollout.max_completion_length, do_sample=True, temperature=cfg.rollout.temperature, top_k=0, top_p=1.0, pad_token_id=pad,
    )
    policy.train(was_training)
    eos = eos_ids(policy, tokenizer)
    cuts = [cut_at_eos(row, eos) for row in out[:, prompt_ids.shape[1]:].tolist()]
    token_ids, truncated = [ids for ids, _ in cuts], [not ended for _, ended in cuts]
    response_ids, response_mask = pad_right(token_ids, pad)
    texts = tokenizer.batch_decode(token_ids, skip_special_tokens=True)
    return Rollout(list(problems), prompt_ids, prompt_mask, response_ids.to(device), response_mask.to(device),
                   texts, token_ids, truncated)


class ProblemSampler:
    """Problems in shuffled epochs (a seeded ``torch.Generator``, saved in checkpoints)."""

    def __init__(self, problems: list, seed: int):
        if not problems:
            from study.errors import UserError

            raise UserError("ppo: no training problems")
        self.problems = problems
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self, n: int) -> list:
        out = []
        while len(out) < n:
            if not self.order:
                self.order = torch.randperm(len(self.problems), generator=self.generator).tolist()
            out.append(self.problems[self.order.pop()])
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state_dict(self, s: dict) -> None:
        self.generator.set_state(s["generator"])
        self.order = list(s["order"])


# ================================================================================================================
# checkpoints


class ActorCritic(nn.Module):
    """π_θ (``actor``, the HF causal LM) and V (``critic``, a ``ValueModel``) as one module, so that one optimiser
    (two parameter groups: ``optim.learning_rate`` and ``optim.critic_learning_rate``) and one accelerate wrapper
    (DDP, or one DeepSpeed engine) train both. ``forward("actor" | "critic", **inputs)`` runs one of them; the
    trainer calls it through the wrapper, which is where DDP hooks its gradient sync and ZeRO-3 gathers weights."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.actor = policy
        self.critic = ValueModel(policy)

    def forward(self, part: str, **inputs):
        if part == "actor":
            return self.actor(**inputs)
        return self.critic(inputs["input_ids"], inputs["attention_mask"])

    # what TRL's ``unwrap_model_for_generation`` reads of a model (it gathers ZeRO-3 weights for ``actor.generate``)
    @property
    def is_gradient_checkpointing(self) -> bool:
        return getattr(self.actor, "is_gradient_checkpointing", False)

    def gradient_checkpointing_disable(self) -> None:
        self.actor.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.actor.gradient_checkpointing_enable(**kwargs)

    @property
    def generation_config(self):
        return self.actor.generation_config

    @generation_config.setter
    def generation_config(self, value) -> None:
        self.actor.generation_config = value


def make_accelerator(device: str):
    """The run's ``Accelerator``: one process, or the N that ``accelerate launch`` / ``torchrun`` started (DDP:
    gloo on CPU, NCCL on GPUs; DeepSpeed ZeRO-2/3 from a DeepSpeed config file)."""
    from accelerate import Accelerator

    from study.train import accelerate_cpu_mode

    return Accelerator(cpu=accelerate_cpu_mode(device))


def is_deepspeed(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED


def prepare_actor_critic(policy, cfg, acc, rows_per_minibatch: int):
    """(model, optimiser, scheduler) with ``model`` the prepared ``ActorCritic`` (DDP / DeepSpeed engine / itself).

    AdamW with two parameter groups (the actor's and the critic's learning rates; per-parameter updates, so the
    same as two AdamWs), a linear warm-up over ``optim.warmup_steps`` RL iterations for both. Under DeepSpeed the
    engine clips ONE global gradient norm over actor and critic (``gradient_clipping`` = ``optim.max_grad_norm``);
    otherwise the trainer clips each network's gradients separately, as with two optimisers."""
    model = ActorCritic(policy).to(acc.device)
    model.train()
    groups = [{"params": list(model.actor.parameters()), "lr": cfg.optim.learning_rate},
              {"params": list(model.critic.parameters()), "lr": cfg.optim.critic_learning_rate}]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay)
    if is_deepspeed(acc):  # what transformers' Trainer fills in from its batch size (the config files say "auto")
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = rows_per_minibatch
        ds["train_batch_size"] = rows_per_minibatch * acc.num_processes * int(ds.get("gradient_accumulation_steps", 1))
        ds["gradient_clipping"] = cfg.optim.max_grad_norm
    model, opt = acc.prepare(model, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [_lr_lambda(cfg.optim.warmup_steps)] * 2)
    return model, opt, sched


def save_checkpoint(root: Path, step: int, acc, model, tokenizer, extra: dict | None = None) -> Path:
    """Write ``root/step-<step>/`` (a temp folder, renamed once complete) and point ``root/latest`` at it. Every
    rank calls this (collective under DeepSpeed).

    ``state/``: ``Accelerator.save_state`` (weights, optimiser, the registered scheduler and problem sampler, and
    each rank's RNG states; under DeepSpeed the engine's sharded checkpoint). ``policy/`` (HF folder + tokenizer)
    and ``critic.pt``: the full weights, for whoever reads the run (rank 0 writes them). ``state.json``: step,
    world size."""
    rank = acc.process_index
    root = Path(root)
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    full = acc.get_state_dict(model)  # gathered under ZeRO-3 (every rank takes part); rank 0 gets the weights
    if acc.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    acc.wait_for_everyone()  # the temp folder exists
    acc.save_state(str(tmp / "state"), safe_serialization=False)
    if acc.is_main_process:
        actor_sd = {k[len("actor."):]: v for k, v in full.items() if k.startswith("actor.")}
        acc.unwrap_model(model).actor.save_pretrained(tmp / "policy", state_dict=actor_sd)
        tokenizer.save_pretrained(tmp / "policy")
        torch.save({k[len("critic."):]: v for k, v in full.items() if k.startswith("critic.")}, tmp / "critic.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": acc.num_processes, **(extra or {})},
                                                   indent=2))
    acc.wait_for_everyone()  # every rank's state is in it
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = root / f".latest.tmp{os.getpid()}"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, root / "latest")
        for old in root.glob("step-*"):  # only the latest is ever resumed from
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()  # nobody reads a half-renamed checkpoint
    return final


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint ``--resume`` continues from (``checkpoints/latest``) and its step
    (``study.train.latest_checkpoint``)."""
    root = Path(run_dir) / "checkpoints"
    try:
        path = root / (root / "latest").read_text().strip()
        return path, int(json.loads((path / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


def load_checkpoint(path: Path, acc) -> int:
    """Restore what :func:`save_checkpoint` wrote into the prepared model, optimiser and the objects registered
    with ``acc`` (scheduler, problem sampler), and this rank's RNG (``Accelerator.load_state``; the same number of
    processes as the run that wrote it); returns the step it was taken at."""
    path = Path(path)
    acc.load_state(str(path / "state"))
    return int(json.loads((path / "state.json").read_text())["step"])


# ================================================================================================================
# the trainer


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _lr_lambda(warmup: int):
    return lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0


def global_token_mean(x: torch.Tensor, mask: torch.Tensor, n_global: torch.Tensor, world: int) -> torch.Tensor:
    """Σ_local x·m / Z · world, Z = every rank's masked-token count (``n_global``): DDP averages the ranks'
    gradients, so the N-process update is that of the mean over all ranks' tokens (= ``masked_mean`` with one)."""
    return (x * mask.to(x.dtype)).sum() / n_global.clamp(min=1.0) * world


def train_ppo(cfg, components, run, resume_from: str | Path | None = None) -> dict:
    """Run ``cfg.steps`` PPO iterations; one metrics row per iteration; returns a summary dict.

    Under N processes each rank samples ``num_prompts / N`` of the step's prompts (the same global draw on every
    rank, then rank r's slice) and ``mini_batch_size / N`` rollouts per minibatch; advantage whitening, the L_CLIP /
    L_V / L_DC normalisers and the logged statistics use every rank's tokens (``acc.reduce``), so one step of N
    processes computes the update of one process on the same global batch (tests/test_multiprocess.py). Only rank 0
    writes the run folder."""
    from tqdm.auto import tqdm

    mode = cfg.constraint.mode
    acc = make_accelerator(components.device)
    world, rank = acc.num_processes, acc.process_index
    device = acc.device

    gsum = functools.partial(global_sum, acc)  # Σ over processes (identity with one)

    policy, reference, tokenizer = components.policy, components.reference, components.tokenizer
    temperature = cfg.rollout.temperature
    G = cfg.rollout.num_generations
    N = cfg.rollout.num_prompts * G  # rollouts per step, all processes
    if cfg.rollout.num_prompts % world or cfg.ppo.mini_batch_size % world:
        from study.errors import UserError

        raise UserError(f"ppo: rollout.num_prompts ({cfg.rollout.num_prompts}) and ppo.mini_batch_size "
                        f"({cfg.ppo.mini_batch_size}) must be multiples of the number of processes ({world})")
    n_local, mb = N // world, cfg.ppo.mini_batch_size // world  # this rank's rollouts and minibatch rows
    lam_dc = cfg.constraint.coef
    beta = cfg.constraint.kl_coef

    # actor + critic in one module, one AdamW (two parameter groups), prepared by accelerate: DDP (gradients
    # averaged over ranks) or one DeepSpeed engine. The frozen reference and the refiner are one copy per rank.
    model, opt, sched = prepare_actor_critic(policy, cfg, acc, mb)
    ac = acc.unwrap_model(model)  # its .actor / .critic for no-grad work and generation (no gradient hooks)
    policy, critic = ac.actor, ac.critic
    deepspeed = is_deepspeed(acc)

    def actor_fn(**inputs):  # through the wrapper: the forwards that carry gradients
        return model("actor", **inputs)

    def critic_fn(input_ids, attention_mask):
        return model("critic", input_ids=input_ids, attention_mask=attention_mask)

    sampler = ProblemSampler(list(components.problems), cfg.seed)  # same draw on every rank
    acc.register_for_checkpointing(sched, sampler)
    if rank > 0:  # each rank samples its own rollouts (rank 0 keeps the one-process stream)
        torch.manual_seed(cfg.seed + 1_000_003 * rank)
    refine_fn = make_refine_fn(cfg, components) if mode == "dynamic" else None
    ckpt_root = Path(run.root) / "checkpoints"

    if resume_from is None and getattr(run, "resumed", False) and latest_checkpoint(run.root) is not None:
        resume_from = latest_checkpoint(run.root)[0]
    start = 1
    if resume_from is not None:
        start = load_checkpoint(Path(resume_from), acc) + 1
        run.truncate_to_step(start - 1)  # rows written after the checkpoint are redone (rank 0)

    step_times: list[float] = []
    last_row: dict[str, Any] = {}
    tracker = MetricTracker(cfg, run) if acc.is_main_process else None  # report_to: TensorBoard / W&B
    bar = tqdm(range(start, cfg.steps + 1), desc=f"ppo[{mode}]", unit="it", dynamic_ncols=True,
               disable=not acc.is_main_process)
    for step in bar:
        timer = StepTimer()
        t_step = time.perf_counter()
        lr_now = opt.param_groups[0]["lr"]

        # ---- 1. rollout: y ~ π_θ(·|x) (this rank's slice of the step's prompts) -------------------------------
        with timer("rollout"):
            drawn = sampler.next(cfg.rollout.num_prompts)
            mine = drawn[rank * len(drawn) // world:(rank + 1) * len(drawn) // world]
            problems = [p for p in mine for _ in range(G)]
            from trl.models import unwrap_model_for_generation

            with unwrap_model_for_generation(model, acc) as unwrapped:  # ZeRO-3: the weights gathered for generate
                roll = sample_rollout(unwrapped.actor, tokenizer, problems, cfg, device)
            rows = [as_row(p, cfg.refiner.task) for p in problems]  # what the reward model sees
            mask = roll.response_mask
            n_tok = gsum(mask.sum())  # response tokens of the whole step, all ranks

        # ---- 2. reward: r(x, y) ----------------------------------------------------------------------------
        with timer("reward"):
            scores_list = score(components.reward_fn, rows, roll.texts, roll.token_ids)
            scores = torch.tensor(scores_list, dtype=torch.float32, device=device)

        # ---- 3. MODE: dynamic -- refine below the ceiling, score y', filter (Sec. 3.2-3.3) -------------------
        ref: RefineResult | None = None
        dc_mask = None
        with timer("refine"):
            if mode == "dynamic":
                ref = refine_and_filter(rows, roll.texts, scores_list, refine_fn, components.reward_fn, tokenizer,
                                        max_reward=components.max_reward, filter_enabled=cfg.constraint.filter,
                                        skip_max_reward=cfg.refiner.skip_max_reward).to(device)
                dc_mask, _ = dc_loss_mask(roll.response_ids, mask, ref.refined_ids, ref.refined_mask,
                                          cfg.constraint.ce_scope)

        # ---- 4. old log-probs, reference log-probs, values (no grad) ----------------------------------------
        with timer("score"), torch.no_grad():
            old_logps = torch.zeros(mask.shape, device=device)
            ref_logps = torch.zeros(mask.shape, device=device)
            old_values = torch.zeros(mask.shape, device=device)
            for s in _chunks(n_local, mb):
                args = (roll.prompt_ids[s], roll.prompt_mask[s], roll.response_ids[s], mask[s])
                old_logps[s] = token_logps(policy, *args, temperature=temperature)[0]
                ref_logps[s] = token_logps(reference, *args, temperature=temperature)[0]
                old_values[s] = response_values(critic, *args)
            kl_t = static_kl(old_logps, ref_logps, cfg.constraint.kl_estimator) * mask  # (n_local, T) per token
            # every rank (symmetric forwards: ZeRO-3 gathers weights in them); rank 0 logs its samples
            ce_samples = refined_ce_for_samples(policy, roll.prompt_ids, roll.prompt_mask, ref, cfg.samples_per_step)

        # ---- 5. per-token rewards; MODE: static adds −β·KL_t (Eq. 2-3 as a reward penalty) -------------------
        # ---- 6. GAE over response tokens, returns, advantages whitened over every rank's tokens ---------------
        with timer("update"):
            rewards_t = token_rewards(scores, mask, kl=kl_t if mode == "static" else None, kl_coef=beta)
            advantages, returns = compute_gae(rewards_t, old_values, mask, cfg.ppo.gamma, cfg.ppo.gae_lambda)
            if cfg.ppo.whiten_advantages:
                advantages = whiten(advantages, mask, reduce=gsum)

            # ---- 7. PPO update: ppo_epochs passes over shuffled minibatches ---------------------------------
            stats: dict[str, list[float]] = {k: [] for k in (
                "loss", "pg_loss", "vf_loss", "dc_loss", "clip_frac", "vf_clip_frac", "entropy", "approx_kl",
                "grad_norm", "critic_grad_norm")}
            # minibatch order is a function of (seed, step, rank): a resumed run shuffles as an uninterrupted one
            shuffle_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + 7_919 * rank)
            for _epoch in range(cfg.ppo.ppo_epochs):
                perm = torch.randperm(n_local, generator=shuffle_gen).to(device)
                for s in _chunks(n_local, mb):
                    idx = perm[s]
                    args = (roll.prompt_ids[idx], roll.prompt_mask[idx], roll.response_ids[idx], mask[idx])
                    n_mb = gsum(mask[idx].sum())  # the global minibatch's response tokens
                    # actor: L_CLIP, token mean over the global minibatch
                    logps, entropy = token_logps(actor_fn, *args, temperature=temperature, with_entropy=True)
                    pg_loss, clip_frac = policy_loss(logps, old_logps[idx], advantages[idx], mask[idx],
                                                     cfg.ppo.clip_range, n_global=n_mb, world=world)
                    actor_loss = pg_loss
                    # MODE: dynamic -- + λ · L_DC on the minibatch's kept refined pairs (Eq. 6), normalised over
                    # the global minibatch (Z: its kept tokens, kept sequences or rollouts, all ranks)
                    dc_loss = None
                    if ref is not None:
                        kept = idx[ref.keep[idx]]
                        z = gsum(constraint_normalizer(dc_mask[idx], ref.keep[idx], cfg.constraint.normalize))
                        n_kept = gsum(torch.tensor(float(len(kept))))
                        if n_kept > 0:  # every rank runs the L_DC forward when any rank has a kept pair (DDP)
                            rows_dc = kept if len(kept) else idx[:1]  # no local pair: one row at weight 0
                            ce = -token_logps(actor_fn, roll.prompt_ids[rows_dc], roll.prompt_mask[rows_dc],
                                              ref.refined_ids[rows_dc], ref.refined_mask[rows_dc])[0]
                            dc_loss = dynamic_constraint_loss(ce, dc_mask[rows_dc], ref.keep[rows_dc],
                                                              cfg.constraint.normalize, normalizer=z) * world
                            actor_loss = actor_loss + lam_dc * dc_loss
                    # critic: L_V with value clipping, token mean over the global minibatch
                    values = response_values(critic_fn, *args)
                    vf_loss, vf_clip = value_loss(values, old_values[idx], returns[idx], mask[idx],
                                                  cfg.ppo.value_clip_range, n_global=n_mb, world=world)
                    # one backward for both networks (they share no weights: each gets its own loss's gradient)
                    opt.zero_grad(set_to_none=True)
                    acc.backward(actor_loss + cfg.ppo.vf_coef * vf_loss)  # DeepSpeed: clips and steps here
                    if deepspeed:  # one global norm over actor + critic (see prepare_actor_critic)
                        gn, cgn = acc.clip_grad_norm_(ac.parameters(), cfg.optim.max_grad_norm), float("nan")
                    else:  # each network clipped on its own, as with two optimisers
                        gn = acc.clip_grad_norm_(policy.parameters(), cfg.optim.max_grad_norm)
                        cgn = acc.clip_grad_norm_(critic.parameters(), cfg.optim.max_grad_norm)
                    opt.step()

                    with torch.no_grad():  # logged values: global means (each rank's term sums to them)
                        def gmean(x):
                            return (gsum(x) / world).item()

                        log_ratio = (logps - old_logps[idx]) * mask[idx]
                        stats["approx_kl"].append(gmean(global_token_mean(torch.exp(log_ratio) - 1 - log_ratio,
                                                                          mask[idx], n_mb, world)))
                        stats["entropy"].append(gmean(global_token_mean(entropy, mask[idx], n_mb, world)))
                        stats["loss"].append(gmean(actor_loss) + cfg.ppo.vf_coef * gmean(vf_loss))
                        stats["pg_loss"].append(gmean(pg_loss))
                        stats["vf_loss"].append(gmean(vf_loss))
                        if dc_loss is not None:
                            stats["dc_loss"].append(gmean(dc_loss))
                        stats["clip_frac"].append(gmean(clip_frac))
                        stats["vf_clip_frac"].append(gmean(vf_clip))
                    stats["grad_norm"].append(float("nan") if gn is None else float(gn))  # synced: same on all ranks
                    stats["critic_grad_norm"].append(float(cgn))
            sched.step()

        # ---- log (statistics of every rank's rollouts; rank 0 writes) ---------------------------------------
        def mean(xs):
            return sum(xs) / len(xs) if xs else float("nan")

        def seq_mean(per_row: torch.Tensor) -> float:  # mean over the step's N sequences, all ranks
            return (gsum(per_row.sum()) / N).item()

        def tok_mean(x: torch.Tensor) -> float:  # mean over the step's response tokens, all ranks
            return (gsum((x * mask).sum()) / n_tok.clamp(min=1.0)).item()

        all_scores, all_ref = gather_rollouts(acc, scores_list, ref, pad_id(tokenizer))
        row = metric_row(
            step,
            **rollout_stats(all_scores, G, components.max_reward, all_ref),  # rewards, refinements, counts
            kl=seq_mean(kl_t.sum(-1)),
            dynamic_ce=mean(stats["dc_loss"]),
            response_length=seq_mean(mask.sum(-1).float()),
            entropy=mean(stats["entropy"]),
            clip_frac=mean(stats["clip_frac"]),
            learning_rate=lr_now,
            loss=mean(stats["loss"]),
            **timer.as_columns(),
            # extras
            policy_loss=mean(stats["pg_loss"]),
            value_loss=mean(stats["vf_loss"]),
            value_clip_frac=mean(stats["vf_clip_frac"]),
            approx_kl=mean(stats["approx_kl"]),
            grad_norm=mean(stats["grad_norm"]),
            critic_grad_norm=mean(stats["critic_grad_norm"]),
            explained_variance=explained_variance(old_values, returns, mask, reduce=gsum),
            value_mean=tok_mean(old_values),
            return_mean=tok_mean(returns),
            kl_k1=seq_mean((static_kl(old_logps, ref_logps, "k1") * mask).sum(-1)),
            kl_k3=seq_mean((static_kl(old_logps, ref_logps, "k3") * mask).sum(-1)),
            kl_penalty_mean=seq_mean(beta * kl_t.sum(-1)) if mode == "static" else 0.0,
            truncated_frac=seq_mean(torch.tensor([float(t) for t in roll.truncated])),
            critic_learning_rate=opt.param_groups[1]["lr"],
            kept=all_ref.n_kept if all_ref is not None else float("nan"),
        )
        row["time_step"] = time.perf_counter() - t_step
        if acc.is_main_process:
            run.log_metrics(row)
            tracker.log(row, step)
            run.log_samples(sample_rows(step, rows, roll.texts, roll.token_ids, scores_list, ref, ce_samples,
                                        tokenizer, cfg.samples_per_step))  # rank 0's rollouts
        step_times.append(row["time_step"])
        last_row = row
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.3f}")

        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
            save_checkpoint(ckpt_root, step, acc, model, tokenizer, extra={"mode": mode, "config_hash": cfg.hash()})

    if tracker is not None:
        tracker.close()
    return {
        "trainer": "ppo",
        "mode": mode,
        "steps": cfg.steps,
        "world_size": world,
        "final_reward_mean": last_row.get("reward_mean", float("nan")),
        "final_kl": last_row.get("kl", float("nan")),
        "seconds_per_step": (sum(step_times) / len(step_times)) if step_times else float("nan"),
        "checkpoint": str(ckpt_root / f"step-{cfg.steps}"),
        "final_model": str(ckpt_root / f"step-{cfg.steps}" / "policy"),
    }


__all__ = [
    "ValueModel", "policy_loss", "value_loss", "token_rewards", "compute_gae", "whiten",
    "response_values", "sample_rollout", "ActorCritic", "prepare_actor_critic", "save_checkpoint", "load_checkpoint",
    "train_ppo",
]
