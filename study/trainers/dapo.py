"""DAPO with the online refiner and the dynamic constraint (paper Sec. 3.2-3.3, Sec. 4.2), on TRL's GRPOTrainer.

    study train configs/mini/dapo_dynamic.yaml            # via study.train -> train_dapo(cfg, components, run)

One RL step is one generation batch of B = ``rollout.num_prompts`` x G rollouts. The algorithm is two TRL hooks:

``_generate_and_score_completions(rows) -> batch``          once per RL step
    1. rollout   TRL samples G responses per prompt and scores them with the task reward (+ DAPO's soft overlong
                 punishment when ``dapo.overlong_buffer > 0``); group-normalised advantages (TRL). DAPO dynamic
                 sampling drops groups whose rewards are all equal and refills with fresh prompts (at most
                 ``dapo.max_sampling_rounds`` rounds; B never changes; ``dynamic_sampling.py``).
    2. KL        the frozen reference's log-probs of the sampled tokens: KL(π_θ‖π_ref) is logged in every mode
                 (Fig. 4); π_θ's side comes from the loss forward where that is exact (``speed.kl_from_loss``).
    3. refine    MODE dynamic: y' for every response below the reward ceiling (every response without the
                 filter), r(x, y') with the same task reward, keep = 1[r(y') > r(y)] (Eq. 6's filter), the
                 first-change index k. ``constraint.refine_scope: sampled`` (default) refines each round's rollouts
                 right after scoring, before dynamic sampling selects, and a group with a kept y' is selectable
                 even if its rewards are all equal (it enters with advantage 0 and acts through L_DC);
                 ``selected`` refines only the selected batch.
    -> one flat dict: TRL's keys (prompt_ids/_mask, completion_ids/_mask, advantages, num_items_in_batch, ...)
       plus ``task_reward``, ``refined_ids``/``refined_mask`` (y'), ``dc_mask`` (its tokens with loss),
       ``refine_keep``, ``first_change``, ``dc_normalizer`` and ``kl_ref_logps``. TRL shuffles and splits it into
       micro-batches (every per-row entry along dim 0).

``_compute_loss(model, batch) -> loss``                     once per micro-batch
    one policy forward (``_policy_forward``) gives log π_θ(y_t | x, y_<t) for L_DAPO and, for the kept rows,
    CE_t = -log π_θ(y'_t | x, y'_<t) for L_DC. Packed (``study.tokens.packed_inputs``): one row per prompt holds x
    once, its G rollouts y, and for each kept y' only y'_≥k (y'_<k = y_<k is read off y), behind a block mask, so
    no token is forwarded twice (TRL's forward per rollout, and a separate forward over x ⊕ y', where the attention
    backend takes no custom mask; the separate L_DC forward also where the rollout temperature is not 1);
    loss = L_DAPO + β·KL (static) + λ·L_DC (dynamic, Eq. 6).

The three constraint modes differ only in these lines (search for ``MODE``):

    none:     beta = 0, no refiner                              -> L = L_DAPO
    static:   beta = β, per-token k3 KL in the loss             -> L = L_DAPO + β·KL(π_θ‖π_ref)
    dynamic:  beta = 0, refine + filter after scoring           -> L = L_DAPO + λ·L_DC   (Eq. 6)

L_DAPO is TRL's ``loss_type="dapo"`` written out: the token-level clipped surrogate with clip-higher,
``-min(ρ_t A, clip(ρ_t, 1-ε_low, 1+ε_high) A)`` summed over the micro-batch's tokens and divided by the generation
batch's token count (rescaled to one accumulation window). L_DC is divided the same way by the generation batch's
kept-token count (``constraint.normalize``), so λ keeps its meaning whatever the batch composition.

State: besides TRL's own, the trainer keeps a wall clock per RL step (``timer``, instrumentation) and the refill
RNG. Per-step values are logged through TRL's ``_metrics`` (prefix ``step/``); ``RunLogger`` turns each RL step's
log into one metrics.jsonl row. ReLIFT is a subclass (``study.trainers.relift``).

Step accounting: ``cfg.steps`` RL steps; each is ``steps_per_generation * num_iterations`` TRL optimiser steps
(``steps_per_generation = B / dapo.mini_batch_size``, 1 when it is unset); TRL logs once per RL step.
Checkpoints are TRL/Trainer checkpoints under ``<run>/checkpoints/checkpoint-<optimiser step>``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from trl import GRPOConfig, GRPOTrainer

from study.constraint import constraint_normalizer, dc_loss_mask, dynamic_constraint_loss, static_kl
from study.errors import UserError
from study.generation import generate_sharing_prompts
from study.tokens import (
    CUSTOM_MASK_BACKENDS,
    attention_mask_4d,
    cut_at_eos,
    pad_id,
    pad_left,
    packed_inputs,
    token_logps,
)
from study.trainers.common import (
    RefineResult,
    StepTimer,
    metric_row,
    gather_rollouts,
    global_sum,
    nanmean,
    refine_and_filter,
    refined_ce_for_samples,
    rollout_stats,
    take_refinements,
    make_refine_fn,
    sample_rows,
    tracker_values,
)
from study.trainers.dynamic_sampling import (
    group_rows,
    informative_groups,
    merge_batches,
    refill_prompts,
    select_groups,
)

log = logging.getLogger(__name__)
STEP = "step/"
"""Prefix of the trainer's per-step values in TRL's ``_metrics`` (kept apart from TRL's own keys)."""


@dataclass
class Round:
    """One sampling round: TRL's batch and, per rollout, its dataset row and rewards."""

    batch: dict[str, Any]
    rows: list[dict]
    task_reward: list[float]
    """r(x, y): the study's reward (the first reward function); shaping terms come after it."""
    reward: list[float]
    """What the advantages are computed from (task reward + shaping)."""
    responses: list[str]
    """y as text (what the reward function and the refiner see)."""
    refine: RefineResult | None = None
    """y' and the filter's decision per rollout (MODE dynamic; with ``refine_scope: sampled`` every round's)."""


def _unrefined(n: int, device) -> RefineResult:
    """n rollouts that never went to the refiner."""
    return RefineResult(refined_ids=torch.zeros((n, 1), dtype=torch.long, device=device),
                        refined_mask=torch.zeros((n, 1), dtype=torch.long, device=device),
                        keep=torch.zeros(n, dtype=torch.bool, device=device), refined=[False] * n, texts=[None] * n,
                        rewards=[None] * n, improvement_ratio=0.0, token_ids=[[] for _ in range(n)],
                        original_rewards=[float("nan")] * n)


class DynamicDAPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` (loss_type="dapo") + DAPO dynamic sampling + KL logging + the online refiner and Eq. 6.

    study_cfg:  the ``study.config.TrainConfig`` (constraint, refiner, dapo, speed, logging fields are read here).
    components: ``study.train.Components`` (reference = π_ref, refiner, reward_fn, max_reward, tokenizer).
    run:        ``study.runs.RunLog``; ``RunLogger`` writes its metrics rows, ``_log_samples`` a few samples.
    """

    def __init__(self, *args, study_cfg, components, run, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg, self.components, self.run = study_cfg, components, run
        c = study_cfg.constraint
        self.mode = c.mode
        self.lam = c.coef if c.mode == "dynamic" else 0.0
        self.reference = components.reference
        self.G = self.num_generations
        self.opt_steps_per_rl_step = self.args.steps_per_generation * self.num_iterations
        self._check_loss_options()
        # The frozen reference scores the sampled tokens (KL in every mode; the static term's anchor). TRL's fused
        # LM head returns per-token log-probs without materialising logits; generation is unchanged by it.
        if not getattr(self.reference, "_study_fused_head", False):
            from trl.trainer.utils import add_fused_lm_head

            add_fused_lm_head(self.reference, temperature=self.temperature)
            self.reference._study_fused_head = True
        # ---- MODE: static: β·KL in the loss, anchored at components.reference (no second copy is loaded).
        if c.mode == "static":
            self.beta = c.kl_coef
            self.ref_model = self.reference
        # ---- MODE: dynamic refines (who supplies y' is constraint.target).
        self.refine_target = c.target if c.mode == "dynamic" else None
        if self.refine_target == "refiner" and components.refiner is None:
            raise UserError("constraint.mode dynamic needs a refiner (components.refiner is None)")
        self.packed, self.fuse_dc = self._packing_ok()
        self.timer = StepTimer()

    def _check_loss_options(self) -> None:
        """``_compute_loss`` writes out TRL's DAPO loss for the options ``grpo_args`` sets; refuse the others."""
        a = self.args
        if (self.loss_type != "dapo" or a.importance_sampling_level != "token" or a.delta is not None
                or self.top_entropy_quantile < 1.0 or self.off_policy_mask_threshold is not None
                or self._entropy_bonus_enabled or self.aux_loss_enabled):
            raise UserError("DynamicDAPOTrainer implements TRL's loss_type='dapo' with token-level importance "
                            "sampling only (no delta, entropy mask/bonus, off-policy mask or MoE aux loss)")

    def _packing_ok(self) -> tuple[bool, bool]:
        """(packed, fuse_dc): does the loss forward pack each prompt's rollouts into one row
        (``speed.pack_groups``, ``study.tokens.packed_inputs``), and does L_DC share it (``speed.fuse_dc_forward``)?
        Both need an attention backend that takes a custom 4-D mask; fusing L_DC also needs rollout temperature 1
        (TRL's log-probs are tempered, L_DC's CE is not). Says once in the log why not."""
        sp, dynamic = self.cfg.speed, self.refine_target is not None
        want_fuse = dynamic and sp.fuse_dc_forward
        if not (sp.pack_groups or want_fuse):
            return False, False
        impl = self.accelerator.unwrap_model(self.model).config._attn_implementation
        if impl not in CUSTOM_MASK_BACKENDS:
            log.warning("the loss forward is TRL's, one row per rollout, and L_DC a separate forward over x ⊕ y' "
                        "(attention implementation %r takes no custom 4-D mask)", impl)
            return False, False
        if want_fuse and self.temperature != 1.0:
            log.warning("L_DC uses a separate forward over x ⊕ y' (rollout temperature %s != 1: TRL's log-probs are "
                        "tempered; L_DC is not)", self.temperature)
            want_fuse = False
        return True, want_fuse

    # ------------------------------------------------------------------------------------------------------------
    # 1. rollout: rewards of each round, dynamic sampling

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.timer("reward"):
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """TRL's transformers generation, except that a prompt's G samples share its prefill
        (``study.generation.generate_sharing_prompts``: token-identical; ``speed.shared_prompt_prefill``). vLLM,
        continuous batching, multimodal prompts and ``pad_to_multiple_of`` stay TRL's own path."""
        if (not self.cfg.speed.shared_prompt_prefill or self.use_vllm or self.use_transformers_continuous_batching
                or images is not None or multimodal_fields or self.pad_to_multiple_of):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        from trl.models import unwrap_model_for_generation

        ids, mask = pad_left(prompt_ids, self._tokenizer.pad_token_id)  # (N, P)
        ids, mask = ids.to(self.accelerator.device), mask.to(self.accelerator.device)
        with (unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                          gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                          generation_kwargs=self.generation_kwargs,
                                          gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
              as model, torch.no_grad(), self._dist.summon_full_params(self.model_wrapped, recurse=False)):
            out = generate_sharing_prompts(model, ids, mask, generation_config=self.generation_config)
        eos = set(self.eos_token_ids)
        return [cut_at_eos(row, eos)[0] for row in out[:, ids.size(1):].tolist()], None  # (ids, TRL's logprobs)

    def _rollout(self, rows: list[dict]) -> Round:
        """TRL's generate-and-score on ``rows`` (each prompt repeated G times) as a ``Round``."""
        t0, reward0 = time.perf_counter(), self.timer.totals.get("reward", 0.0)
        batch = super()._generate_and_score_completions(rows)
        self.timer.add("rollout", time.perf_counter() - t0 - (self.timer.totals.get("reward", 0.0) - reward0))
        # TRL keeps the latest rewards of every process in its completion log: this round's are the last n·world
        n, world, rank = len(rows), self.accelerator.num_processes, self.accelerator.process_index
        per_func = torch.tensor([list(self._logs["rewards"][name])[-n * world:] for name in self.reward_func_names],
                                dtype=torch.float32).T[rank * n : (rank + 1) * n]  # (n, reward functions)
        total = (per_func * self.reward_weights.cpu().unsqueeze(0)).nansum(dim=1)
        responses = self.processing_class.batch_decode(
            [ids[m.bool()].tolist() for ids, m in zip(batch["completion_ids"], batch["completion_mask"])],
            skip_special_tokens=True)
        rnd = Round(batch, list(rows), per_func[:, 0].tolist(), total.tolist(), responses)
        if self.refine_target is not None and self.cfg.constraint.refine_scope == "sampled":
            with self.timer("refine"):  # 3. refine right after scoring, before dynamic sampling selects
                rnd.refine = self._refine(rnd.rows, rnd.responses, rnd.task_reward)
        return rnd

    def _fresh_rows(self, n_prompts: int, round_: int) -> list[dict]:
        """Refill prompts of sampling round ``round_`` of this RL step: drawn by a generator seeded with (seed,
        process, RL step, round), so a run resumed from a checkpoint draws exactly what the uninterrupted run drew."""
        ds = self.train_dataset
        step = self.state.global_step // self.opt_steps_per_rl_step + 1  # the RL step being sampled
        rng = random.Random(f"refill/{self.cfg.seed}/{self.accelerator.process_index}/{step}/{round_}")
        idx = rng.sample(range(len(ds)), min(n_prompts, len(ds)))
        while len(idx) < n_prompts:  # tiny datasets: repeat
            idx.append(rng.randrange(len(ds)))
        return [dict(ds[i]) for i in idx for _ in range(self.G)]

    def _global(self, x: int, op: str) -> int:
        t = self.accelerator.gather(torch.tensor([x], device=self.accelerator.device))
        return int(t.min().item() if op == "min" else t.max().item())

    def _sum(self, x: float) -> float:
        return global_sum(self.accelerator, x).item()

    def _selectable(self, rnd: Round) -> list[bool]:
        """Per group: can it enter the batch? Its rewards differ (a policy gradient), or, when refinement comes
        before selection (``refine_scope: sampled``), it has a kept refinement (an L_DC term; advantage 0)."""
        ok = informative_groups(rnd.reward, self.G)
        if rnd.refine is not None:
            keep = rnd.refine.keep.view(-1, self.G).any(dim=1).tolist()
            ok = [a or b for a, b in zip(ok, keep)]
        return ok

    def _sample_rounds(self, inputs: list[dict]) -> list[Round]:
        """DAPO's dynamic sampling rounds: the first on ``inputs``, then refills while some process lacks B rows
        from selectable groups (``refill_prompts``; every process samples the global maximum, so all run the same
        collectives), at most ``dapo.max_sampling_rounds`` rounds. Refills bypass the sampler."""
        n_groups = len(inputs) // self.G
        rounds = [self._rollout(inputs)]
        max_rounds = self.cfg.dapo.max_sampling_rounds if self.cfg.dapo.dynamic_sampling else 1
        while len(rounds) < max_rounds:
            n_ok = sum(sum(self._selectable(r)) for r in rounds)
            if self._global(min(n_ok, n_groups), "min") >= n_groups:
                break
            n_new = self._global(refill_prompts(n_ok, n_groups), "max")
            rounds.append(self._rollout(self._fresh_rows(n_new, len(rounds))))
        return rounds

    def _select(self, rounds: list[Round]) -> tuple[dict, Round, list[tuple[int, int]]]:
        """The batch: selectable groups in draw order; when the round cap was hit, filled with the others, those
        below the reward ceiling first (the refiner can still improve them in dynamic mode). Returns TRL's batch of
        the picked rows, their ``Round`` (refinements included), and the picked (round, row) pairs."""
        G, maxr = self.G, self.components.max_reward
        if len(rounds) == 1:
            return rounds[0].batch, rounds[0], [(0, i) for i in range(len(rounds[0].rows))]
        ok = [self._selectable(r) for r in rounds]
        below = [[maxr is None or min(r.task_reward[g * G : (g + 1) * G]) < maxr for g in range(len(r.rows) // G)]
                 for r in rounds]
        rows = group_rows(select_groups(ok, below, len(rounds[0].rows) // G), G)
        batch = merge_batches([r.batch for r in rounds], rows, pad_id(self.processing_class))
        loss_mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        picked = Round(batch, *([getattr(rounds[r], f)[i] for r, i in rows]
                                for f in ("rows", "task_reward", "reward", "responses")))
        if rounds[0].refine is not None:
            picked.refine = take_refinements([r.refine for r in rounds], rows, pad_id(self.processing_class))
        return batch, picked, rows

    # ------------------------------------------------------------------------------------------------------------
    # the batch: rollout, KL, refinement -> one dict

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:  # evaluation: plain TRL
            return super()._generate_and_score_completions(inputs)
        step = self.state.global_step // self.opt_steps_per_rl_step + 1
        self.timer.reset()
        # 1. rollout + dynamic sampling (each round refined right after scoring: 3. with refine_scope: sampled)
        rounds = self._sample_rounds(inputs)
        batch, picked, rows = self._select(rounds)
        batch["task_reward"] = torch.tensor(picked.task_reward, device=batch["advantages"].device)
        # 2. KL(π_θ‖π_ref) on the sampled tokens (logged in every mode; speed.kl_every thins it)
        with self.timer("rollout"):
            kl = self._reference_kl(batch, step)
        # 3. MODE dynamic: y' of the selected rows (refined above with refine_scope: sampled, else here), the
        #    filter's keep, the first change: what the λ·L_DC term needs
        if self.refine_target is not None:
            with self.timer("refine"):
                if picked.refine is None:  # refine_scope: selected
                    picked.refine = self._refine(picked.rows, picked.responses, picked.task_reward)
                batch.update(self._refinement_entries(batch, picked.refine))
        self._log_step(self._rollout_stats(batch, picked, rounds, rows, kl))
        self._log_samples(step, picked, batch)
        return batch

    def _reference_kl(self, batch: dict, step: int) -> float:
        """The reference's log-probs of the sampled tokens; returns KL(π_θ‖π_ref) when π_θ's side is at hand now,
        else NaN and leaves ``kl_ref_logps`` in the batch for the loss forward (exact when TRL skips
        ``old_per_token_logps``: steps_per_generation · num_iterations = 1) or nothing (``kl_every``)."""
        ref_logps = batch.get("ref_per_token_logps")  # MODE static: TRL computed them for the loss
        every = self.cfg.speed.kl_every
        if ref_logps is None and not (every > 0 and (step - 1) % every == 0):
            return float("nan")
        with torch.no_grad():
            ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
            attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
            T = batch["completion_ids"].size(1)
            ref_impl = self.accelerator.unwrap_model(self.reference).config._attn_implementation
            if ref_logps is None and self.packed and ref_impl in CUSTOM_MASK_BACKENDS:
                ref_logps = self._packed_logps(self.reference, batch, with_entropy=False)[0]
            elif ref_logps is None:
                ref_logps = self._get_per_token_logps_and_entropies(self.reference, ids, attn, T)[0]
            pol_logps = batch.get("old_per_token_logps")
            if pol_logps is None and self.cfg.speed.kl_from_loss:
                batch["kl_ref_logps"] = ref_logps
                return float("nan")
            if pol_logps is None:
                pol_logps = self._get_per_token_logps_and_entropies(self.model, ids, attn, T)[0]
            kl_sum, n_tok = self._gathered_kl_sums(pol_logps, ref_logps, batch["completion_mask"])
        return kl_sum / max(n_tok, 1.0)

    def _gathered_kl_sums(self, pol_logps, ref_logps, mask) -> tuple[float, float]:
        """(sum of the per-token KL(π_θ‖π_ref) estimates, token count) over every process's sampled tokens."""
        kl_tok = static_kl(pol_logps, ref_logps, self.cfg.constraint.kl_estimator) * mask
        both = self.accelerator.gather(torch.stack([kl_tok.sum(), mask.sum().float()]).view(1, 2))
        return both[:, 0].sum().item(), both[:, 1].sum().item()

    def _refine(self, rows, responses, task_rewards) -> RefineResult:
        """y' for every response below the ceiling (``constraint.target`` says who supplies it), scored, filtered."""
        from trl.models import unwrap_model_for_generation

        kwargs = dict(reward_fn=self.components.reward_fn, tokenizer=self.processing_class,
                      max_reward=self.components.max_reward, filter_enabled=self.cfg.constraint.filter,
                      skip_max_reward=self.cfg.refiner.skip_max_reward, timer=self.timer)
        if self.refine_target != "self":
            return refine_and_filter(rows, responses, task_rewards, make_refine_fn(self.cfg, self.components),
                                     **kwargs)
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as policy:  # self-refinement
            return refine_and_filter(rows, responses, task_rewards, make_refine_fn(self.cfg, self.components, policy),
                                     **kwargs)

    def _refinement_entries(self, batch: dict, refine: RefineResult) -> dict[str, torch.Tensor]:
        """What L_DC needs, per row: y' (ids, mask), the tokens with loss (``dc_mask``, ``constraint.ce_scope``),
        keep, the first-change index k; and the normaliser Z over the whole generation batch (0-dim, global)."""
        dev = batch["completion_ids"].device
        refine.to(dev)
        dc_mask, k = dc_loss_mask(batch["completion_ids"], batch["completion_mask"], refine.refined_ids,
                                  refine.refined_mask, self.cfg.constraint.ce_scope)
        z = constraint_normalizer(dc_mask, refine.keep, self.cfg.constraint.normalize)
        rewards = [float("nan") if r is None else float(r) for r in refine.rewards]
        return {"refined_ids": refine.refined_ids, "refined_mask": refine.refined_mask, "dc_mask": dc_mask,
                "refine_keep": refine.keep, "first_change": k, "refined_reward": torch.tensor(rewards, device=dev),
                "dc_normalizer": self.accelerator.gather(z).sum()}

    # ------------------------------------------------------------------------------------------------------------
    # 4. the loss

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        dynamic = "refine_keep" in inputs
        # ---- one policy forward: log π_θ(y_t | x, y_<t) at the rollout temperature; CE on y' for L_DC
        logps, entropy, dc_ce = self._policy_forward(model, inputs, dynamic)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # one optimiser step per batch: π_old = π_θ
        advantages = inputs["advantages"].unsqueeze(1)
        # ---- L_DAPO: token-level clipped surrogate with clip-higher (TRL's loss_type="dapo")
        ratio = torch.exp(logps - old)
        clipped = torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)
        per_token = -torch.min(ratio * advantages, clipped * advantages)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token = per_token * inputs["importance_sampling_ratio"]
        # ---- MODE static: + β·KL(π_θ‖π_ref) per token (k3; times ρ_t with TRL's use_bias_correction_kl)
        if self.beta != 0.0:
            kl = static_kl(logps, inputs["ref_per_token_logps"], "k3")
            per_token = per_token + self.beta * (kl * ratio if self.args.use_bias_correction_kl else kl)
        loss = (per_token * mask).sum() / self._per_micro_batch(inputs["num_items_in_batch"].clamp(min=1.0), mode)
        self._log_loss_stats(mode, inputs, loss, logps, entropy, ratio, advantages)
        # ---- MODE dynamic: + λ·L_DC (Eq. 6), Z = the generation batch's kept tokens (or sequences)
        if dynamic:
            keep, dc_mask = inputs["refine_keep"].bool(), inputs["dc_mask"]
            z = self._per_micro_batch(inputs["dc_normalizer"].float(), mode)
            l_dc = dynamic_constraint_loss(dc_ce, dc_mask, keep, self.cfg.constraint.normalize, normalizer=z)
            loss = loss + self.lam * l_dc
            if mode == "train":
                kept_mask = dc_mask * keep.unsqueeze(1)
                both = self.accelerator.reduce(torch.stack([(dc_ce.detach() * kept_mask).sum(),
                                                            kept_mask.sum().float()]), "sum")
                self._log_step({"dynamic_ce_sum": both[0].item(), "dynamic_ce_tok": both[1].item()})
        return loss

    def _per_micro_batch(self, count: torch.Tensor, mode: str) -> torch.Tensor:
        """A generation-batch count (global) as this micro-batch's normaliser, the way TRL's DAPO loss does it: the
        micro-batch terms then sum to the batch mean over processes and accumulation steps."""
        z = count / self.accelerator.num_processes
        if mode == "train":
            z = z * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return z

    def _policy_forward(self, model, inputs, dynamic: bool):
        """(logps (B, T) at the rollout temperature, entropy (B, T), dc_ce (B, R) or None).

        dc_ce is CE_t = -log π_θ(y'_t | x, y'_<t) at temperature 1 (0 on rows that are not kept). Packed
        (``self.packed``): one forward over each prompt's rows, x once, its rollouts y and (``self.fuse_dc``) the
        kept y'_≥k behind a block mask (``study.tokens.packed_inputs``); y'_<k = y_<k is read off y's columns.
        Otherwise TRL's forward over every x ⊕ y. Where L_DC is not fused, a separate forward over the kept x ⊕ y'."""
        p_ids, p_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        c_ids, c_mask = inputs["completion_ids"], inputs["completion_mask"]
        T = c_ids.shape[1]
        fuse = dynamic and self.fuse_dc
        if self.packed:
            logps, entropy, dc_ce = self._packed_logps(model, inputs, with_refined=fuse)
        else:
            ids, attn = torch.cat([p_ids, c_ids], 1), torch.cat([p_mask, c_mask], 1)
            logps, entropy, _ = self._get_per_token_logps_and_entropies(model, ids, attn, T, compute_entropy=True)
            dc_ce = None
        if dynamic and not fuse:  # the separate forward over the kept x ⊕ y', untempered
            keep, y2_ids, y2_mask = inputs["refine_keep"].bool(), inputs["refined_ids"], inputs["refined_mask"]
            dc_ce = torch.zeros(y2_ids.shape, device=c_ids.device)
            if keep.any():
                dc_ce[keep] = -token_logps(model, p_ids[keep], p_mask[keep], y2_ids[keep], y2_mask[keep])[0].float()
        return logps, entropy, dc_ce

    def _packed_logps(self, model, inputs, with_refined: bool = False, with_entropy: bool = True):
        """``_policy_forward``'s packed forward (also the reference's, for the logged KL): (logps (B, T),
        entropy (B, T) or None, dc_ce (B, R) or None), 0 on padding."""
        c_mask = inputs["completion_mask"]
        y2 = ((inputs["refined_ids"], inputs["refined_mask"], inputs["first_change"], inputs["refine_keep"])
              if with_refined else (None, None, None, None))
        pk = packed_inputs(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], c_mask,
                           pad_id(self.processing_class), *y2, group=self.cfg.speed.pack_groups)
        impl = self.accelerator.unwrap_model(model).config._attn_implementation
        mask4 = attention_mask_4d(pk["allowed"], impl, next(model.parameters()).dtype)
        with self.accelerator.autocast():
            out = model(input_ids=pk["input_ids"], attention_mask=mask4, position_ids=pk["position_ids"],
                        shift_labels=pk["shift_labels"], fused_lm_head=True)
        flat_logps = out.log_probs.reshape(-1).float()  # (M·L,)
        logps = flat_logps[pk["y_at"]] * c_mask  # (B, T)
        entropy = out.entropy.reshape(-1).float()[pk["y_at"]] * c_mask if with_entropy else None
        dc_ce = None
        if with_refined:  # (B, R), kept rows only
            keep = inputs["refine_keep"].to(flat_logps.dtype).unsqueeze(1)
            dc_ce = -flat_logps[pk["y2_at"]] * inputs["refined_mask"] * keep
        return logps, entropy, dc_ce

    # ------------------------------------------------------------------------------------------------------------
    # logging: values go to TRL's _metrics; RunLogger writes one row per RL step

    def _log_step(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self._metrics["train"][STEP + k].append(float(v))

    def _log_loss_stats(self, mode, inputs, loss, logps, entropy, ratio, advantages) -> None:
        if mode != "train":
            return
        mask = inputs["completion_mask"]

        def global_mean(x):
            s = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum().float()]).detach(), "sum")
            return (s[0] / s[1].clamp(min=1.0)).item()

        clipped = (((ratio < 1 - self.epsilon_low) & (advantages < 0))
                   | ((ratio > 1 + self.epsilon_high) & (advantages > 0))).float()
        values = {"policy_loss": self.accelerator.reduce(loss.detach(), "mean").item(), "entropy": global_mean(entropy),
                  "clip_frac": global_mean(clipped)}
        if "kl_ref_logps" in inputs:  # speed.kl_from_loss: KL(π_θ‖π_ref) of the sampling policy
            values["kl_sum"], values["kl_tok"] = self._gathered_kl_sums(logps.detach(), inputs["kl_ref_logps"], mask)
        self._log_step(values)

    def _rollout_stats(self, batch: dict, picked: Round, rounds: list[Round], rows: list[tuple[int, int]],
                       kl: float) -> dict[str, float]:
        """The step's statistics: of the FULL sampled batch (every sampling round; ``reward_mean``,
        ``group_reward_std``, ``improvement_ratio``, ``kept_frac``, ... and the counts ``n_*``) and, prefixed
        ``selected_``, of the batch dynamic sampling selected (what the loss sees). With ``refine_scope:
        selected`` the rollouts of dropped groups were never refined: they count as not refined, not improved."""
        G, maxr, pad = self.G, self.components.max_reward, pad_id(self.processing_class)
        refine, full_refine = picked.refine, None
        every = [(r, i) for r, rnd in enumerate(rounds) for i in range(len(rnd.rows))]
        if refine is not None and self.cfg.constraint.refine_scope == "sampled":  # every round was refined
            full_refine = take_refinements([r.refine for r in rounds], every, pad)
        elif refine is not None:  # the selected rows' refinements, and nothing for the rows that were dropped
            where = {rc: j for j, rc in enumerate(rows)}
            nothing = _unrefined(len(every), refine.refined_ids.device)
            full_refine = take_refinements([refine, nothing], [(0, where[rc]) if rc in where else (1, j)
                                                               for j, rc in enumerate(every)], pad)
        # every process's rollouts (rank 0 logs the row): the statistics of the global batch
        acc = self.accelerator
        full_task, full_refine = gather_rollouts(acc, [x for r in rounds for x in r.task_reward], full_refine, pad)
        full = rollout_stats(full_task, G, maxr, full_refine)
        sel_task, sel_refine = gather_rollouts(acc, picked.task_reward, refine, pad)
        selected = rollout_stats(sel_task, G, maxr, sel_refine)
        n_groups = self._sum(len(picked.rows) // G)
        n_ok = self._sum(sum(sum(informative_groups(r.reward, G)) for r in rounds))
        mask = batch["completion_mask"]
        stats = dict(
            **full,
            **{f"selected_{k}": v for k, v in selected.items() if not k.startswith("n_")},
            kl=kl,
            response_length=self._sum(mask.sum().item()) / len(sel_task),
            shaped_reward_mean=nanmean(picked.reward if acc.num_processes == 1 else gather_object(list(picked.reward))),
            sampling_rounds=len(rounds),
            informative_groups=n_ok,
            frac_reward_zero_std=1.0 - min(n_ok, n_groups) / n_groups,
        )
        if sel_refine is not None:
            stats.update(skipped_max_reward=sel_refine.n_skipped_max, refined_distinct=sel_refine.n_distinct)
        stats.update({f"time_{k}": v for k, v in self.timer.totals.items()})
        return stats

    def _log_samples(self, step: int, picked: Round, batch) -> None:
        n = self.cfg.samples_per_step
        if n <= 0 or not self.accelerator.is_main_process:
            return
        comp_ids = [ids[m.bool()].tolist() for ids, m in zip(batch["completion_ids"], batch["completion_mask"])]
        ce = refined_ce_for_samples(self.accelerator.unwrap_model(self.model), batch["prompt_ids"],
                                    batch["prompt_mask"], picked.refine, n)
        self.run.log_samples(sample_rows(step, picked.rows, picked.responses, comp_ids, picked.task_reward,
                                         picked.refine, ce, self.processing_class, n))


class RunLogger(TrainerCallback):
    """One metrics.jsonl row per RL step, from TRL's log of that step (``logging_steps`` = optimiser steps per RL
    step), and a tqdm bar over RL steps (in place of Trainer's per-optimiser-step bar)."""

    def __init__(self, trainer: DynamicDAPOTrainer, total: int):
        self.trainer, self.total, self.bar = trainer, total, None

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            done = state.global_step // self.trainer.opt_steps_per_rl_step
            self.bar = tqdm(total=self.total, initial=done, desc=f"dapo/{self.trainer.mode}", unit="step")

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        tr = self.trainer
        v = {k[len(STEP):]: (float("nan") if x is None else x) for k, x in logs.items() if k.startswith(STEP)}
        for key in [k[: -len("_sum")] for k in v if k.endswith("_sum")]:  # token means: Σ over tokens / count
            total, n = v.pop(key + "_sum"), v.pop(key + "_tok", float("nan"))
            if n == n and n > 0:
                v[key] = total / n
        if tr.refine_target is not None:
            v.setdefault("dynamic_ce", 0.0)  # no kept token this step: L_DC = 0
        if "relift_buffer" in v:
            v.setdefault("relift_sft_ce", float("nan"))  # SFT did not fire
        times = {k: v.pop(k) for k in list(v) if k.startswith("time_")}
        step_time = time.perf_counter() - tr.timer.t0
        pre = sum(times.get(f"time_{p}", 0.0) for p in ("rollout", "reward", "refine"))
        timer = StepTimer()
        for k, x in times.items():
            timer.add(k[len("time_"):], x)
        timer.add("update", step_time - pre)
        timer.add("step", step_time)
        row = metric_row(
            state.global_step // tr.opt_steps_per_rl_step,
            **v,
            learning_rate=logs.get("learning_rate", float("nan")),
            loss=logs["loss"],
            grad_norm=logs.get("grad_norm", float("nan")),
            optimizer_step=state.global_step,
            **timer.as_columns(),
        )
        tr.run.log_metrics(row)
        if args.report_to and args.report_to != ["none"]:  # the study's row to TRL's trackers too
            tr.callback_handler.on_log(args, state, control, tracker_values(row, "study/"))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.4f}")

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------------------------------------------
# TrainConfig -> GRPOConfig, dataset, entry point


def build_dataset(problems, tokenizer=None, max_prompt_length: int | None = None, task: str = "code"):
    """Conversational prompt dataset: ``Problem.to_row()`` + ``prompt`` (solve messages). Problems whose templated
    prompt exceeds ``max_prompt_length`` tokens are dropped (TRL 1.16 does not truncate prompts)."""
    from datasets import Dataset

    from study.prompts import solve_messages

    rows = []
    for p in problems:
        msgs = solve_messages(p.prompt, task)
        if tokenizer is not None and max_prompt_length is not None:
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if n > max_prompt_length:
                continue
        rows.append(p.to_row() | {"prompt": msgs})
    if not rows:
        raise UserError("no training problems (after dropping prompts longer than rollout.max_prompt_length)")
    return Dataset.from_list(rows)


def grpo_args(cfg, output_dir: str | Path, device: str) -> GRPOConfig:
    """Map the study's TrainConfig onto TRL's GRPOConfig (DAPO loss, clip-higher, no KL unless static)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    G = cfg.rollout.num_generations
    B = cfg.rollout.num_prompts * G  # samples per RL step, all processes
    mini = cfg.dapo.mini_batch_size or B
    if B % (mini) or mini % world or B % world or (B // world) % G:
        raise UserError(f"dapo.mini_batch_size={cfg.dapo.mini_batch_size} must divide rollout.num_prompts * "
                        f"num_generations = {B}, and each process's share must hold whole groups of {G}")
    spg = B // mini
    if cfg.dapo.overlong_buffer >= cfg.rollout.max_completion_length:
        raise UserError("dapo.overlong_buffer must be smaller than rollout.max_completion_length")
    return GRPOConfig(
        output_dir=str(output_dir),
        loss_type="dapo",
        epsilon=cfg.dapo.epsilon_low,
        epsilon_high=cfg.dapo.epsilon_high,
        beta=0.0,  # MODE static sets β on the trainer, anchored at components.reference (see DynamicDAPOTrainer)
        use_bias_correction_kl=cfg.constraint.kl_bias_correction,  # explicit: TRL 1.16 changed its default
        num_generations=G,
        per_device_train_batch_size=mini // world,
        steps_per_generation=spg,
        gradient_accumulation_steps=1,
        num_iterations=cfg.dapo.num_iterations,
        max_completion_length=cfg.rollout.max_completion_length,
        temperature=cfg.rollout.temperature,
        top_p=1.0,
        scale_rewards="group",
        mask_truncated_completions=False,
        learning_rate=cfg.optim.learning_rate,
        weight_decay=cfg.optim.weight_decay,
        max_grad_norm=cfg.optim.max_grad_norm,
        warmup_steps=cfg.optim.warmup_steps * spg * cfg.dapo.num_iterations,
        lr_scheduler_type="constant_with_warmup",
        max_steps=cfg.steps * spg * cfg.dapo.num_iterations,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to,
        use_cpu=device == "cpu",
        bf16=cfg.dtype == "bfloat16" and device != "cpu",
        fp16=cfg.dtype == "float16",
        logging_steps=spg * cfg.dapo.num_iterations,  # one log (= one metrics row) per RL step
        save_strategy="steps",
        save_steps=(cfg.checkpoint_every or cfg.steps) * spg * cfg.dapo.num_iterations,
        save_total_limit=1,  # only the latest checkpoint is resumed from
        disable_dropout=True,
        gradient_checkpointing=cfg.speed.gradient_checkpointing,
        use_vllm=cfg.vllm.rollouts,  # vLLM rollouts through TRL (issue 6; never run on our CPU machines)
        vllm_mode=cfg.vllm.mode,
        vllm_server_base_url=cfg.vllm.server_base_url,
        vllm_gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
        log_completions=False,
        dataloader_num_workers=0,
    )


def build_trainer(cfg, components, run) -> DynamicDAPOTrainer:
    """The configured trainer (not yet trained): dataset, reward functions, GRPOConfig, progress bar."""
    from trl.rewards import get_soft_overlong_punishment

    args = grpo_args(cfg, Path(run.root) / "checkpoints", components.device)
    dataset = build_dataset(components.problems, components.tokenizer, cfg.rollout.max_prompt_length,
                            cfg.refiner.task)
    reward_funcs = [components.reward_fn]
    if cfg.dapo.overlong_buffer > 0:
        reward_funcs.append(get_soft_overlong_punishment(cfg.rollout.max_completion_length,
                                                         cfg.dapo.overlong_buffer))
    cls = DynamicDAPOTrainer
    if cfg.relift.enabled:
        from study.trainers.relift import ReLIFTTrainer as cls
    trainer = cls(
        model=components.policy,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=components.tokenizer,
        study_cfg=cfg,
        components=components,
        run=run,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RunLogger(trainer, cfg.steps))
    return trainer


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    cks = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return cks[-1] if cks else None


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The TRL checkpoint ``--resume`` continues from and the RL step it holds (``study.train.latest_checkpoint``).
    A checkpoint folder counts once TRL has written its ``trainer_state.json`` (the last file it writes)."""
    ck = last_checkpoint(Path(run_dir) / "checkpoints")
    if ck is None or not (ck / "trainer_state.json").exists():
        return None
    state = json.loads((ck / "trainer_state.json").read_text())
    per_rl_step = max(1, int(state.get("max_steps", 0)) // max(1, _rl_steps(run_dir)))
    return ck, int(ck.name.split("-")[-1]) // per_rl_step


def _rl_steps(run_dir: Path) -> int:
    import yaml

    return int(yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["steps"])


def train_dapo(cfg, components, run) -> dict:
    """Train ``components.policy`` with DAPO under ``cfg.constraint.mode``; writes metrics/samples/checkpoints
    into ``run``. Resumes from the last checkpoint under ``run.root/checkpoints`` when one exists and the run
    folder was opened with ``resume=True`` (its metrics.jsonl is cut back to that step first)."""
    if cfg.trainer != "dapo":
        raise UserError(f"train_dapo got trainer={cfg.trainer!r}")
    trainer = build_trainer(cfg, components, run)
    ckpt_dir = Path(trainer.args.output_dir)
    resume = None
    metrics_path = Path(run.root) / "metrics.jsonl"
    ck = last_checkpoint(ckpt_dir)
    if ck is not None and not metrics_path.exists():  # a fresh run in an old folder: stale checkpoints go
        for old in list(ckpt_dir.glob("checkpoint-*")) + [ckpt_dir / "final"]:
            shutil.rmtree(old, ignore_errors=True)
        ck = None
    if ck is not None:
        resume = str(ck)
        done_steps = int(ck.name.split("-")[-1]) // trainer.opt_steps_per_rl_step
        run.truncate_to_step(done_steps)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - t0
    final = Path(ckpt_dir) / "final"
    trainer.save_model(str(final))
    components.tokenizer.save_pretrained(str(final))
    return {
        "trainer": "dapo",
        "mode": cfg.constraint.mode,
        "steps": trainer.state.global_step // trainer.opt_steps_per_rl_step,
        "optimizer_steps": trainer.state.global_step,
        "wall_seconds": round(wall, 2),
        "seconds_per_step": round(wall / max(cfg.steps, 1), 3),
        "final_model": str(final),
    }
