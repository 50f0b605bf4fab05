"""DAPO with the online refiner and the dynamic constraint (paper Sec. 3.2-3.3, Sec. 4.2), on TRL's GRPOTrainer.

    study train configs/mini/dapo_dynamic.yaml            # via study.train -> train_dapo(cfg, components, run)

One RL step (= one generation batch of ``rollout.num_prompts`` prompts x G samples):

    1. rollout   sample G responses per prompt (TRL), score them with the task reward (+ DAPO's soft overlong
                 punishment when ``dapo.overlong_buffer > 0``), group-normalised advantages (TRL);
                 DAPO dynamic sampling: drop groups whose rewards are all equal, refill with fresh prompts
                 (at most ``dapo.max_sampling_rounds`` rounds; the batch size B never changes).
    2. KL        log KL(π_θ‖π_ref) on the sampled tokens with the frozen reference, in every mode (Fig. 4);
                 π_θ's log-probs come from the loss forward where that is exact (``speed``, issue 8).
    3. refine    (dynamic mode) responses below the reward ceiling go to the refiner; y' is scored with the
                 same task reward; the filter keeps y' only if r(y') > r(y) (Eq. 6).
    4. update    loss = L_DAPO + β·KL (static) + λ·L_DC (dynamic), one or more optimiser steps (TRL).

The three constraint modes differ only in these lines (search for ``MODE``):

    none:     beta = 0, no refiner                              -> L = L_DAPO
    static:   beta = β, TRL adds β·k3-KL to the per-token loss  -> L = L_DAPO + β·KL(π_θ‖π_ref)
    dynamic:  beta = 0, refine + filter after scoring           -> L = L_DAPO + λ·L_DC   (Eq. 6)

L_DC is the mean CE of the policy on the kept refined tokens, normalised by the *global* count of kept refined
tokens of the generation batch (rescaled per micro-batch exactly like DAPO's token normaliser), so λ keeps its
meaning whatever the batch composition.

ReLIFT (``relift.enabled``; Ma et al. 2025, "Learning What RL Can't", arXiv:2506.07527), as implemented here:

    collect   after each rollout, every group of *every* sampling round (also the groups dynamic sampling drops)
              whose task rewards are all below the reward ceiling (no rollout passes) is a hardest question; its
              (prompt, reference solution) goes to a buffer (one entry per question, at most ``relift.buffer_size``,
              oldest dropped first; problems without a reference are skipped).
    fine-tune every ``relift.sft_every``-th RL step with a non-empty buffer, the first optimiser step of that RL step
              adds ``relift.sft_coef · L_SFT``, L_SFT = token-mean CE of π_θ on the buffered references formatted
              with ``study.prompts.code_block`` (+ EOS), prompt masked (``policy_ce_on_refined``); then the buffer
              is cleared. One optimiser, no second trainer: RL and fine-tuning interleave in the same loss.
    otherwise plain DAPO (with whatever ``constraint.mode`` says). Logged: ``relift_buffer`` (buffer size after the
              step's rollout, before it is consumed), ``relift_hard_groups`` (new all-fail groups this step),
              ``relift_sft_items``, ``relift_sft_ce`` (NaN on steps where SFT does not fire).
    The buffer is not checkpointed: a resumed run starts with it empty.

Step accounting: ``cfg.steps`` RL steps; each is ``steps_per_generation * num_iterations`` TRL optimiser steps
(``steps_per_generation = B / dapo.mini_batch_size``, 1 when it is unset). Checkpoints are TRL/Trainer
checkpoints under ``<run>/checkpoints/checkpoint-<optimiser step>``.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from trl import GRPOConfig, GRPOTrainer

from study.constraint import dynamic_constraint_loss, first_difference_mask, static_kl
from study.errors import UserError
from study.trainers.common import (
    RefineResult,
    StepTimer,
    dataset_fn,
    group_reward_std,
    metric_row,
    nanmean,
    pad_right,
    policy_ce_on_refined,
    refine_and_filter,
    refiner_fn,
    sample_order,
    sample_rows,
    tracker_values,
)

class DynamicDAPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` (loss_type="dapo") + DAPO dynamic sampling + KL logging + the online refiner and Eq. 6.

    study_cfg:  the ``study.config.TrainConfig`` (constraint, refiner, dapo, logging fields are read here).
    components: ``study.train.Components`` (reference = π_ref, refiner, reward_fn, max_reward, tokenizer).
    run:        ``study.runs.RunLog`` receiving one metrics row per RL step and a few samples.
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
        # The frozen reference scores the sampled tokens (KL in every mode; the static term's anchor). TRL's fused
        # LM head returns per-token log-probs without materialising logits; generation is unchanged by it.
        if not getattr(self.reference, "_study_fused_head", False):
            from trl.trainer.utils import add_fused_lm_head

            add_fused_lm_head(self.reference, temperature=self.temperature)
            self.reference._study_fused_head = True
        # ---- MODE: static uses TRL's own KL term, anchored at components.reference (no second copy is loaded).
        if c.mode == "static":
            self.beta = c.kl_coef
            self.ref_model = self.reference
        # ---- MODE: dynamic refines (who supplies y' is constraint.target).
        self.refine_target = c.target if c.mode == "dynamic" else None
        if self.refine_target == "refiner" and components.refiner is None:
            raise UserError("constraint.mode dynamic needs a refiner (components.refiner is None)")
        self.timer = StepTimer()
        self.rl_step = 0
        self._round: dict[str, Any] = {}
        self._row: dict[str, Any] = {}
        self._upd: defaultdict[str, list] = defaultdict(list)
        self._t_step0 = time.perf_counter()
        self._bar = None
        # ---- ReLIFT: buffer of the hardest questions (task_id -> row), the SFT batch pending for the next update
        self.relift = study_cfg.relift if study_cfg.relift.enabled else None
        if self.relift is not None and components.max_reward is None:
            raise UserError("relift.enabled needs a reward with a maximum (components.max_reward is None)")
        self.relift_buffer: dict[str, dict] = {}
        self._relift_pending: tuple[torch.Tensor, ...] | None = None
        self._rounds_info: list[dict] = []
        self._loss_forward: dict | None = None  # set while TRL's loss forward runs (_compute_loss)

    # ------------------------------------------------------------------------------------------------------------
    # 1. rollout: rewards of each round, dynamic sampling

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        t0 = time.perf_counter()
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.timer.add("reward", time.perf_counter() - t0)
        B = len(prompts)
        local = rewards_per_func[self.accelerator.process_index * B : (self.accelerator.process_index + 1) * B]
        total = (local * self.reward_weights.to(local.device).unsqueeze(0)).nansum(dim=1)
        self._round = {
            "rows": list(inputs),
            "completion_ids": [list(c) for c in completion_ids_list],
            "task_reward": local[:, 0].tolist(),  # the study's reward (column 0); shaping terms come after
            "reward": total.tolist(),  # what the advantages are computed from
        }
        return rewards_per_func

    def _one_round(self, rows):
        t0, t_reward0 = time.perf_counter(), self.timer.totals.get("reward", 0.0)
        batch = super()._generate_and_score_completions(rows)
        reward_dt = self.timer.totals.get("reward", 0.0) - t_reward0
        self.timer.add("rollout", time.perf_counter() - t0 - reward_dt)
        return batch, self._round

    def _fresh_rows(self, n_prompts: int, round_: int) -> list[dict]:
        """Refill prompts of sampling round ``round_`` of this RL step: drawn by a generator seeded with (seed,
        process, RL step, round), so a run resumed from a checkpoint draws exactly what the uninterrupted run drew."""
        ds = self.train_dataset
        rng = random.Random(f"refill/{self.cfg.seed}/{self.accelerator.process_index}/{self.rl_step}/{round_}")
        idx = rng.sample(range(len(ds)), min(n_prompts, len(ds)))
        while len(idx) < n_prompts:  # tiny datasets: repeat
            idx.append(rng.randrange(len(ds)))
        return [dict(ds[i]) for i in idx for _ in range(self.G)]

    def _dynamic_sampling(self, inputs):
        """DAPO's dynamic sampling: keep groups whose rewards are not all equal, refill with fresh prompts.

        A refill round samples twice the number of still-missing groups (at most a full batch; DAPO samples a full
        batch, which costs more on a CPU for the same result); every process uses the global maximum so all run
        the same collectives. The loop stops when every process holds B rows from informative groups or after
        ``max_sampling_rounds`` rounds. If the cap
        is hit, the batch is filled with uninformative groups (zero advantage) in draw order, preferring groups
        below the reward ceiling (the refiner can still improve them in dynamic mode). Refills bypass the sampler.
        """
        B, G = len(inputs), self.G
        rounds: list[tuple[dict, dict]] = [self._one_round(inputs)]
        max_rounds = self.cfg.dapo.max_sampling_rounds if self.cfg.dapo.dynamic_sampling else 1

        def informative():
            out = []
            for r, (_, info) in enumerate(rounds):
                rw = torch.tensor(info["reward"]).view(-1, G)
                out += [(r, g) for g in range(rw.shape[0]) if not torch.allclose(rw[g], rw[g, :1].expand(G))]
            return out

        good = informative()
        while len(rounds) < max_rounds:
            have = torch.tensor(min(len(good) * G, B), device=self.accelerator.device)
            if self.accelerator.gather(have.unsqueeze(0)).min().item() >= B:
                break
            # refill with twice the missing groups (the same count on every process), at most a full batch
            missing = torch.tensor(max(B // G - len(good), 0), device=self.accelerator.device)
            missing = int(self.accelerator.gather(missing.unsqueeze(0)).max().item())
            rounds.append(self._one_round(self._fresh_rows(min(B // G, 2 * missing), len(rounds))))
            good = informative()
        picks = good[: B // G]
        if len(picks) < B // G:  # cap hit: fill with the best uninformative groups
            rest = [(r, g) for r, (_, info) in enumerate(rounds) for g in range(len(info["reward"]) // G)
                    if (r, g) not in good]
            maxr = self.components.max_reward

            def refinable(rg):
                r, g = rg
                tr = rounds[r][1]["task_reward"][g * G : (g + 1) * G]
                return maxr is None or min(tr) < maxr

            rest = [x for x in rest if refinable(x)] + [x for x in rest if not refinable(x)]
            picks += rest[: B // G - len(picks)]
        rows_idx = [(r, g * G + j) for r, g in picks for j in range(G)]
        self._sampling = {"rounds": len(rounds), "informative_groups": len(good), "groups": B // G}
        self._rounds_info = [info for _, info in rounds]  # every round, dropped groups included (ReLIFT)
        if len(rounds) == 1:
            batch, info = rounds[0]
            return batch, info
        batch = self._merge([b for b, _ in rounds], rows_idx)
        info = {k: [rounds[r][1][k][i] for r, i in rows_idx] for k in rounds[0][1]}
        return batch, info

    def _merge(self, batches: list[dict], rows_idx: list[tuple[int, int]]) -> dict:
        """Rows ``rows_idx`` of several generated batches as one batch: prompts re-padded on the left, completion-
        aligned tensors on the right, then ``num_items_in_batch`` recomputed."""
        pad_id = self.processing_class.pad_token_id if hasattr(self.processing_class, "pad_token_id") else 0
        out: dict[str, Any] = {}
        for key, v0 in batches[0].items():
            if key == "num_items_in_batch":
                continue
            if isinstance(v0, torch.Tensor) and v0.dim() >= 1:
                rows = [batches[r][key][i] for r, i in rows_idx]
                if v0.dim() == 1:
                    out[key] = torch.stack(rows)
                    continue
                left = key.startswith("prompt")
                fill = pad_id if key.endswith("_ids") else 0
                L = max(x.shape[0] for x in rows)
                padded = []
                for x in rows:
                    p = x.new_full((L - x.shape[0], *x.shape[1:]), fill)
                    padded.append(torch.cat([p, x] if left else [x, p]))
                out[key] = torch.stack(padded)
            elif isinstance(v0, list):
                out[key] = [batches[r][key][i] for r, i in rows_idx]
            else:
                out[key] = v0
        # drop columns that are padding in every row
        P = int(out["prompt_mask"].sum(1).max().item())
        T = max(int(out["completion_mask"].sum(1).max().item()), 1)
        for key, v in out.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 2:
                out[key] = v[:, -P:] if key.startswith("prompt") else v[:, :T]
        loss_mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return out

    # ------------------------------------------------------------------------------------------------------------
    # 2-3. KL logging and refinement, attached to the batch

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:  # evaluation: plain TRL
            return super()._generate_and_score_completions(inputs)
        self.rl_step += 1
        self.timer.reset()
        self._t_step0 = time.perf_counter()
        batch, info = self._dynamic_sampling(inputs)
        self.last_rollout = info  # rows, completion_ids, task_reward, reward of the final batch (inspection)
        rows, comp_ids, task_r, total_r = info["rows"], info["completion_ids"], info["task_reward"], info["reward"]
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
        completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]

        # 2. KL(π_θ‖π_ref) on the sampled tokens (logged in every mode; speed.kl_every thins it)
        t0 = time.perf_counter()
        kl = float("nan")
        ref_logps = batch.get("ref_per_token_logps")  # MODE static: TRL computed them for the loss
        every = self.cfg.speed.kl_every
        if ref_logps is not None or (every > 0 and (self.rl_step - 1) % every == 0):
            with torch.no_grad():
                pc_ids = torch.cat([prompt_ids, completion_ids], dim=1)
                attn = torch.cat([prompt_mask, completion_mask], dim=1)
                T = completion_ids.size(1)
                if ref_logps is None:
                    ref_logps = self._get_per_token_logps_and_entropies(self.reference, pc_ids, attn, T)[0]
                pol_logps = batch.get("old_per_token_logps")
                if pol_logps is None and self.cfg.speed.kl_from_loss:
                    batch["kl_ref_logps"] = ref_logps  # π_θ's side comes from the loss forward (_compute_loss)
                else:
                    if pol_logps is None:
                        pol_logps = self._get_per_token_logps_and_entropies(self.model, pc_ids, attn, T)[0]
                    kl = self._gathered_kl(pol_logps, ref_logps, completion_mask)
        self.timer.add("rollout", time.perf_counter() - t0)

        # 3. MODE dynamic: refine after scoring, filter, attach y' for the λ·CE term
        refine: RefineResult | None = None
        responses = self.processing_class.batch_decode(comp_ids, skip_special_tokens=True)
        if self.refine_target is not None:
            with self.timer("refine"):
                refine = self._refine(rows, responses, task_r)
                refine.to(completion_ids.device)
                loss_mask = refine.refined_mask
                if self.cfg.constraint.ce_scope == "from_first_diff":
                    loss_mask = first_difference_mask(completion_ids, refine.refined_ids, refine.refined_mask)
                batch["refined_ids"] = refine.refined_ids
                batch["refined_attn"] = refine.refined_mask  # y' tokens (attention); refined_mask: tokens with loss
                batch["refined_mask"] = loss_mask
                batch["refine_keep"] = refine.keep
                kept_tokens = (loss_mask * refine.keep.unsqueeze(1)).sum()
                batch["num_refined_tokens"] = self.accelerator.gather(kept_tokens).sum()  # 0-dim, global
                batch["num_refined_seqs"] = self.accelerator.gather(refine.keep.sum()).sum()

        # the step's rollout statistics (update statistics are added in `log`)
        lengths = completion_mask.sum(1).float()
        maxr = self.components.max_reward
        self._row = dict(
            reward_mean=nanmean(task_r),
            reward_std=float(torch.tensor(task_r).std(unbiased=False)) if task_r else float("nan"),
            group_reward_std=group_reward_std(task_r, self.G),
            kl=kl,
            response_length=lengths.mean().item(),
            shaped_reward_mean=nanmean(total_r),
            pass_rate=(sum(r >= maxr for r in task_r) / len(task_r)) if maxr is not None else float("nan"),
            sampling_rounds=self._sampling["rounds"],
            informative_groups=self._sampling["informative_groups"],
            frac_reward_zero_std=1.0 - min(self._sampling["informative_groups"], self._sampling["groups"])
            / self._sampling["groups"],
        )
        if refine is not None:
            self._row.update(
                improvement_ratio=refine.improvement_ratio,
                refined_frac=refine.refined_frac,
                kept_frac=refine.kept_frac,
                skipped_max_reward=refine.n_skipped_max,
                refined_distinct=refine.n_distinct,
                refined_reward_mean=nanmean(refine.rewards),
            )
        if self.relift is not None:
            self._row.update(self._relift_collect())
        self._log_samples(rows, responses, comp_ids, task_r, refine, prompt_ids, prompt_mask)
        self._upd = defaultdict(list)  # per-optimiser-step values of this RL step
        return batch

    # ------------------------------------------------------------------------------------------------------------
    # ReLIFT: the hardest questions and their reference solutions

    def _relift_collect(self) -> dict[str, Any]:
        """Buffer the all-fail groups of this step's sampling rounds; on every ``sft_every``-th RL step hand the
        buffer to the next update as an SFT batch and clear it. Returns the step's ReLIFT metric columns."""
        G, maxr, cap = self.G, self.components.max_reward, self.relift.buffer_size
        new = 0
        for info in self._rounds_info:
            for g in range(len(info["task_reward"]) // G):
                rewards = info["task_reward"][g * G : (g + 1) * G]
                row = info["rows"][g * G]
                if not row.get("reference") or any(r >= maxr for r in rewards):
                    continue
                key = str(row.get("task_id", row.get("problem")))
                self.relift_buffer.pop(key, None)  # re-seen: move to the newest end
                self.relift_buffer[key] = row
                new += 1
                while len(self.relift_buffer) > cap:
                    self.relift_buffer.pop(next(iter(self.relift_buffer)))
        size = len(self.relift_buffer)
        fire = self.rl_step % self.relift.sft_every == 0 and size > 0
        if fire:
            self._relift_pending = self._relift_batch(list(self.relift_buffer.values()))
            self.relift_buffer.clear()
        return {"relift_buffer": size, "relift_hard_groups": new, "relift_sft_items": size if fire else 0}

    def _relift_batch(self, rows: list[dict]) -> tuple[torch.Tensor, ...]:
        """(prompt_ids, prompt_mask) left-padded chat prompts, (ref_ids, ref_mask) right-padded reference
        solutions in the answer format (``dataset_fn``: ``code_block(reference)`` + EOS)."""
        tok = self.processing_class
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        prompts = []
        for r in rows:
            p = r["prompt"]
            text = p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            prompts.append(tok(text, add_special_tokens=False)["input_ids"])
        P = max(len(x) for x in prompts)
        p_ids = torch.tensor([[pad_id] * (P - len(x)) + list(x) for x in prompts], dtype=torch.long)
        p_mask = torch.tensor([[0] * (P - len(x)) + [1] * len(x) for x in prompts], dtype=torch.long)
        refs = dataset_fn(tok)(rows, [""] * len(rows))
        r_ids, r_mask = pad_right([g.token_ids for g in refs], pad_id)
        return p_ids, p_mask, r_ids, r_mask

    def _relift_sft(self, model) -> torch.Tensor:
        """relift.sft_coef · L_SFT on the pending batch (consumed: one optimiser step per firing)."""
        dev = self.accelerator.device
        p_ids, p_mask, r_ids, r_mask = (t.to(dev) for t in self._relift_pending)
        self._relift_pending = None
        ce = policy_ce_on_refined(model, p_ids, p_mask, r_ids, r_mask)
        l_sft = ce.sum() / r_mask.sum().clamp(min=1)
        self._upd["relift_sft_ce"].append(l_sft.detach().item())
        return self.relift.sft_coef * l_sft

    def _refine(self, rows, responses, task_rewards) -> RefineResult:
        """y' for every response below the ceiling, from the frozen refiner, the current policy, or the dataset."""
        r = self.cfg.refiner
        kwargs = dict(reward_fn=self.components.reward_fn, tokenizer=self.processing_class,
                      max_reward=self.components.max_reward, filter_enabled=self.cfg.constraint.filter,
                      skip_max_reward=r.skip_max_reward, timer=self.timer)
        if self.refine_target == "dataset":
            return refine_and_filter(rows, responses, task_rewards, dataset_fn(self.processing_class), **kwargs)
        if self.refine_target == "self":
            from trl.models import unwrap_model_for_generation

            from study.refiner import Refiner

            with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as policy:
                me = Refiner(policy, self.processing_class, task=r.task, max_new_tokens=r.max_new_tokens,
                             temperature=r.temperature, batch_size=r.batch_size)
                return refine_and_filter(rows, responses, task_rewards, refiner_fn(me), **kwargs)
        return refine_and_filter(rows, responses, task_rewards, refiner_fn(self.components.refiner), **kwargs)

    def _log_samples(self, rows, responses, comp_ids, rewards, refine, prompt_ids, prompt_mask):
        n = self.cfg.samples_per_step
        if n <= 0 or not self.accelerator.is_main_process:
            return
        ce = None
        shown = [i for i in sample_order(refine, refine.n)[:n] if refine.refined[i]] if refine is not None else []
        if shown:  # the policy's CE on y' only for the refined rows that get logged (issue 8: was every refined row)
            idx = torch.tensor(shown, device=prompt_ids.device)
            with torch.no_grad():
                model = self.accelerator.unwrap_model(self.model)
                part = policy_ce_on_refined(model, prompt_ids[idx], prompt_mask[idx], refine.refined_ids[idx],
                                            refine.refined_mask[idx])
            ce = torch.zeros(refine.refined_ids.shape, dtype=part.dtype)
            ce[idx.cpu()] = part.cpu()
        self.run.log_samples(sample_rows(self.rl_step, rows, responses, comp_ids, rewards, refine, ce,
                                         self.processing_class, n))

    # ------------------------------------------------------------------------------------------------------------
    # 4. the loss

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        keep = inputs.get("refine_keep")
        fuse = (mode == "train" and keep is not None and bool(keep.any()) and self.cfg.speed.fuse_dc_forward
                and self.temperature == 1.0)
        # the policy forward of TRL's loss (see _get_per_token_logps_and_entropies) also serves L_DC and the KL log
        self._loss_forward = {"refined": (keep, inputs["refined_ids"], inputs["refined_attn"]) if fuse else None}
        try:
            loss = super()._compute_loss(model, inputs)  # L_DAPO (+ β·KL when beta > 0: MODE static)
        finally:
            fwd, self._loss_forward = self._loss_forward, None
        if mode == "train":
            self._upd["policy_loss"].append(loss.detach().item())
            if "kl_ref_logps" in inputs and "policy_logps" in fwd:  # speed.kl_from_loss: KL(π_θ‖π_ref) to log
                kl_sum, n_tok = self._gathered_kl_sums(fwd["policy_logps"], inputs["kl_ref_logps"],
                                                       inputs["completion_mask"])
                self._upd["kl_sum"].append(kl_sum)
                self._upd["kl_tok"].append(n_tok)
        if self.refine_target is not None:
            # MODE dynamic: L = L_DAPO + λ·L_DC
            l_dc = self._dynamic_constraint(model, inputs, mode, refined_logps=fwd.get("refined_logps"))
            loss = loss + self.lam * l_dc
        if self._relift_pending is not None and mode == "train":  # ReLIFT step: L += sft_coef · L_SFT
            loss = loss + self._relift_sft(model)
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """TRL's per-token log-probs. Inside ``_compute_loss`` (its first call there is the policy forward of
        L_DAPO) two things ride along (issue 8, ``speed``): the kept (x, y') rows are appended to the same forward
        (``fuse_dc_forward``: their log-probs are L_DC's -CE), and π_θ's log-probs are kept for the KL log."""
        fwd = self._loss_forward
        if fwd is None or "policy_logps" in fwd:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)
        if fwd["refined"] is None:
            logps, ent, aux = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                                         logits_to_keep, *args, **kwargs)
        else:
            keep, refined_ids, refined_attn = fwd["refined"]
            keep = keep.bool()
            n, T, R = input_ids.size(0), logits_to_keep, refined_ids.size(1)
            P, W = input_ids.size(1) - T, max(T, R)
            pad = self.processing_class.pad_token_id or 0
            ids = torch.cat([
                torch.nn.functional.pad(input_ids, (0, W - T), value=pad),
                torch.cat([input_ids[keep, :P], torch.nn.functional.pad(refined_ids[keep], (0, W - R), value=pad)], 1),
            ])
            mask = torch.cat([
                torch.nn.functional.pad(attention_mask, (0, W - T)),
                torch.cat([attention_mask[keep, :P], torch.nn.functional.pad(refined_attn[keep], (0, W - R))], 1),
            ])
            logps, ent, aux = super()._get_per_token_logps_and_entropies(model, ids, mask, W, *args, **kwargs)
            fwd["refined_logps"] = logps[n:, :R]
            logps, ent = logps[:n, :T], (ent[:n, :T] if ent is not None else None)
        fwd["policy_logps"] = logps.detach()
        return logps, ent, aux

    def _gathered_kl_sums(self, pol_logps, ref_logps, mask) -> tuple[float, float]:
        """(sum of the per-token KL(π_θ‖π_ref) estimates, token count) over every process's sampled tokens."""
        kl_tok = static_kl(pol_logps, ref_logps, self.cfg.constraint.kl_estimator) * mask
        both = self.accelerator.gather(torch.stack([kl_tok.sum(), mask.sum().float()]).view(1, 2))
        return both[:, 0].sum().item(), both[:, 1].sum().item()

    def _gathered_kl(self, pol_logps, ref_logps, mask) -> float:
        """Token-mean KL(π_θ‖π_ref) estimate over every process's sampled tokens."""
        kl_sum, n_tok = self._gathered_kl_sums(pol_logps, ref_logps, mask)
        return kl_sum / max(n_tok, 1.0)

    def _dynamic_constraint(self, model, inputs, mode: str, refined_logps=None) -> torch.Tensor:
        """λ's term of Eq. 6 for this micro-batch: CE on kept refined tokens / global kept-token count (rescaled to one
        accumulation window like DAPO's normaliser), so the micro-batch terms sum to the batch's token mean.
        ``refined_logps``: log π_θ(y'_t | x, y'_<t) of the kept rows from the fused loss forward (else a forward
        of its own)."""
        if "refine_keep" not in inputs:
            return torch.zeros((), device=inputs["prompt_ids"].device)
        keep = inputs["refine_keep"].bool()
        if not keep.any():
            return torch.zeros((), device=keep.device)
        mask = inputs["refined_mask"][keep]
        if refined_logps is not None:
            ce = -refined_logps * mask.to(refined_logps.dtype)
        else:
            ce = policy_ce_on_refined(model, inputs["prompt_ids"][keep], inputs["prompt_mask"][keep],
                                      inputs["refined_ids"][keep], inputs["refined_attn"][keep]) * mask
        scale = self.accelerator.num_processes
        if mode == "train":
            scale = scale / (self.current_gradient_accumulation_steps / self.args.steps_per_generation)
        ones = torch.ones(int(keep.sum()), dtype=torch.bool, device=keep.device)
        if self.cfg.constraint.normalize == "token":
            norm = inputs["num_refined_tokens"].float() / scale
            l_dc = dynamic_constraint_loss(ce, mask, ones, "token", num_tokens=norm)
        else:
            norm = inputs["num_refined_seqs"].float() / scale
            l_dc = dynamic_constraint_loss(ce, mask, ones, "sequence") * ones.sum() / norm.clamp(min=1.0)
        if mode == "train":
            self._upd["ce_sum"].append((ce * mask).sum().detach().item())
            self._upd["ce_tok"].append(mask.sum().item())
        return l_dc

    # ------------------------------------------------------------------------------------------------------------
    # logging: one metrics row per RL step

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)  # merges TRL's averaged metrics into `logs`
        if "loss" not in logs or not self._row:
            return
        u = self._upd
        u["loss"].append(logs["loss"])
        u["entropy"].append(logs.get("entropy", float("nan")))
        u["clip_frac"].append(logs.get("clip_ratio/region_mean", float("nan")))
        u["grad_norm"].append(logs.get("grad_norm", float("nan")))
        u["learning_rate"].append(logs.get("learning_rate", float("nan")))
        if self.state.global_step % self.opt_steps_per_rl_step:
            return
        step_time = time.perf_counter() - self._t_step0
        pre = sum(self.timer.totals.get(p, 0.0) for p in ("rollout", "reward", "refine"))
        self.timer.add("update", step_time - pre)
        self.timer.add("step", step_time)
        if u["kl_tok"]:  # speed.kl_from_loss: measured in the loss forward
            self._row["kl"] = sum(u["kl_sum"]) / max(sum(u["kl_tok"]), 1.0)
        row = metric_row(
            self.rl_step,
            **self._row,
            dynamic_ce=(sum(u["ce_sum"]) / max(sum(u["ce_tok"]), 1)) if u["ce_tok"] and sum(u["ce_tok"]) else
            (0.0 if self.refine_target is not None else float("nan")),
            entropy=nanmean(u["entropy"]),
            clip_frac=nanmean(u["clip_frac"]),
            learning_rate=u["learning_rate"][-1],
            loss=nanmean(u["loss"]),
            policy_loss=nanmean(u["policy_loss"]),
            grad_norm=nanmean(u["grad_norm"]),
            optimizer_step=self.state.global_step,
            **self.timer.as_columns(),
        )
        if self.relift is not None:
            row["relift_sft_ce"] = nanmean(u["relift_sft_ce"])
        if self.accelerator.is_main_process:
            self.run.log_metrics(row)
            if self.args.report_to and self.args.report_to != ["none"]:  # the study's row to TRL's trackers too
                self.callback_handler.on_log(self.args, self.state, self.control, tracker_values(row, "study/"))
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.4f}")
        self._row = {}


class _Bar(TrainerCallback):
    """A tqdm bar over RL steps (replaces Trainer's per-optimiser-step bar that prints every log dict)."""

    def __init__(self, trainer: DynamicDAPOTrainer, total: int):
        self.trainer, self.total = trainer, total

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            done = state.global_step // self.trainer.opt_steps_per_rl_step
            self.trainer._bar = tqdm(total=self.total, initial=done, desc=f"dapo/{self.trainer.mode}", unit="step")

    def on_train_end(self, args, state, control, **kw):
        if self.trainer._bar is not None:
            self.trainer._bar.close()
            self.trainer._bar = None


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
        logging_steps=1,
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
    trainer = DynamicDAPOTrainer(
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
    trainer.add_callback(_Bar(trainer, cfg.steps))
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
        trainer.rl_step = done_steps
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - t0
    final = Path(ckpt_dir) / "final"
    trainer.save_model(str(final))
    components.tokenizer.save_pretrained(str(final))
    return {
        "trainer": "dapo",
        "mode": cfg.constraint.mode,
        "steps": trainer.rl_step,
        "optimizer_steps": trainer.state.global_step,
        "wall_seconds": round(wall, 2),
        "seconds_per_step": round(wall / max(cfg.steps, 1), 3),
        "final_model": str(final),
    }
