"""ReLIFT (Ma et al. 2025, "Learning What RL Can't", arXiv:2506.07527) on the DAPO trainer, as implemented here.

    study train configs/mini/dapo_relift.yaml          # relift.enabled: build_trainer picks ReLIFTTrainer

    collect   after each rollout, every group of *every* sampling round (also the groups dynamic sampling drops)
              whose task rewards are all below the reward ceiling (no rollout passes) is a hardest question; its
              (prompt, reference solution) goes to a buffer (one entry per question, at most ``relift.buffer_size``,
              oldest dropped first; problems without a reference are skipped).
    fine-tune every ``relift.sft_every``-th RL step with a non-empty buffer, that step's batch carries the buffered
              pairs (``sft_*`` entries, spread over the batch rows) and its loss adds ``relift.sft_coef · L_SFT``,
              L_SFT = token-mean CE of π_θ on the references formatted with ``study.prompts.code_block`` (+ EOS),
              prompt masked, normalised like L_DAPO (the micro-batch terms sum to the mean over all buffered
              tokens); then the buffer is cleared. One optimiser, no second trainer: RL and fine-tuning interleave
              in the same loss.
    otherwise plain DAPO (with whatever ``constraint.mode`` says). Logged: ``relift_buffer`` (buffer size after the
              step's rollout, before it is consumed), ``relift_hard_groups`` (new all-fail groups this step),
              ``relift_sft_items``, ``relift_sft_ce`` (NaN on steps where SFT does not fire).
    The buffer is not checkpointed: a resumed run starts with it empty.
"""

from __future__ import annotations

import math

import torch

from study.errors import UserError
from study.tokens import pad_id, pad_left, pad_right, token_logps
from study.trainers.common import dataset_fn
from study.trainers.dapo import DynamicDAPOTrainer, Round

SFT_KEYS = ("sft_prompt_ids", "sft_prompt_mask", "sft_ids", "sft_mask")


class ReLIFTTrainer(DynamicDAPOTrainer):
    """DAPO + ReLIFT's interleaved fine-tuning on the hardest questions. ``buffer``: task id -> dataset row (the
    algorithm's state across steps, like a replay buffer)."""

    def __init__(self, *args, study_cfg, components, **kwargs):
        super().__init__(*args, study_cfg=study_cfg, components=components, **kwargs)
        self.relift = study_cfg.relift
        if components.max_reward is None:
            raise UserError("relift.enabled needs a reward with a maximum (components.max_reward is None)")
        self.buffer: dict[str, dict] = {}

    def _sample_rounds(self, inputs):
        rounds = super()._sample_rounds(inputs)
        self._log_step({"relift_hard_groups": self._collect(rounds)})
        return rounds

    def _collect(self, rounds: list[Round]) -> int:
        """Buffer the all-fail groups of this step's sampling rounds; returns how many were found."""
        G, maxr, cap = self.G, self.components.max_reward, self.relift.buffer_size
        new = 0
        for rnd in rounds:
            for g in range(len(rnd.task_reward) // G):
                row = rnd.rows[g * G]
                if not row.get("reference") or any(r >= maxr for r in rnd.task_reward[g * G : (g + 1) * G]):
                    continue
                key = str(row.get("task_id", row.get("problem")))
                self.buffer.pop(key, None)  # re-seen: move to the newest end
                self.buffer[key] = row
                new += 1
                while len(self.buffer) > cap:
                    self.buffer.pop(next(iter(self.buffer)))
        return new

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return batch
        step = self.state.global_step // self.opt_steps_per_rl_step + 1
        size = len(self.buffer)
        fire = step % self.relift.sft_every == 0 and size > 0
        if fire:
            batch.update(self.sft_entries(list(self.buffer.values()), len(batch["advantages"])))
            self.buffer.clear()
        else:
            self._log_step({"relift_sft_ce_sum": float("nan"), "relift_sft_ce_tok": float("nan")})
        self._log_step({"relift_buffer": size, "relift_sft_items": size if fire else 0})
        return batch

    def sft_batch(self, rows: list[dict]) -> tuple[torch.Tensor, ...]:
        """(prompt_ids, prompt_mask) left-padded chat prompts, (ref_ids, ref_mask) right-padded reference
        solutions in the answer format (``dataset_fn``: ``code_block(reference)`` + EOS)."""
        tok = self.processing_class
        prompts = []
        for r in rows:
            p = r["prompt"]
            text = p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            prompts.append(tok(text, add_special_tokens=False)["input_ids"])
        p_ids, p_mask = pad_left(prompts, pad_id(tok))
        refs = dataset_fn(tok)(rows, [""] * len(rows))
        r_ids, r_mask = pad_right([g.token_ids for g in refs], pad_id(tok))
        return p_ids, p_mask, r_ids, r_mask

    def sft_entries(self, rows: list[dict], B: int) -> dict[str, torch.Tensor]:
        """The SFT pairs as per-row batch entries (B, slots, ·): pair m sits in row m % B, slot m // B (TRL
        shuffles and splits every entry along dim 0), plus the global count of reference tokens (0-dim)."""
        dev = self.accelerator.device
        slots = math.ceil(len(rows) / B)
        out = {}
        for key, t in zip(SFT_KEYS, self.sft_batch(rows)):
            full = t.new_zeros((slots * B, t.shape[1]))
            full[: len(rows)] = t
            out[key] = full.view(slots, B, -1).transpose(0, 1).contiguous().to(dev)  # (B, slots, width)
        out["sft_tokens"] = self.accelerator.gather(out["sft_mask"].sum()).sum()
        return out

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        if "sft_ids" not in inputs or not self.model.training:
            return loss
        # ---- ReLIFT step: + sft_coef · L_SFT on the buffered (prompt, reference) pairs of this micro-batch
        p_ids, p_mask, r_ids, r_mask = (inputs[k].flatten(0, 1) for k in SFT_KEYS)
        rows = r_mask.any(1)
        ce_sum = torch.zeros((), device=loss.device)
        if rows.any():
            ce_sum = -token_logps(model, p_ids[rows], p_mask[rows], r_ids[rows], r_mask[rows])[0].sum()
        l_sft = ce_sum / self._per_micro_batch(inputs["sft_tokens"].float(), "train").clamp(min=1.0)
        self._log_step({"relift_sft_ce_sum": ce_sum.item(), "relift_sft_ce_tok": r_mask[rows].sum().item()})
        return loss + self.relift.sft_coef * l_sft
