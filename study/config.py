"""Experiment configuration: one YAML file per experiment in ``configs/``, validated before any work starts.

Every field has a docstring (CleanRL habit). Unknown keys, wrong types and impossible values raise ``UserError``
naming the key, so ``study train`` exits with code 2 and writes nothing. Defaults follow the paper's Table 2
where the paper gives a value.

    cfg = load_config("configs/mini/dapo_dynamic.yaml", overrides=["constraint.coef=0.5"])
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from study.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class DataConfig(_Strict):
    source: Literal["mini", "mbpp", "apps", "humaneval", "prompt_collection"] = "mini"
    """Where training prompts come from."""
    path: str | None = None
    """Local file or folder for the source (MBPP/APPS/Prompt-Collection); ``None`` uses the default location."""
    split: str = "train"
    """Dataset split used for training."""
    limit: int | None = Field(default=None, gt=0)
    """Use only the first N training problems."""
    mini_profile: str = "mini"
    """Mini world only: which generated problem set (see ``study.mini``)."""


class ConstraintConfig(_Strict):
    mode: Literal["none", "static", "dynamic"] = "dynamic"
    """``none``: pure RL; ``static``: KL(π_θ‖π_ref)·β (Eq. 2-3); ``dynamic``: λ·CE toward filtered refinements (Eq. 6)."""
    coef: float = Field(default=0.1, ge=0)
    """λ, weight of the dynamic constraint's cross-entropy (``dynamic_constraint_coef``)."""
    kl_coef: float = Field(default=1e-4, ge=0)
    """β, weight of the static KL constraint (Table 2: 1e-4 on APPS, 1e-2 on Prompt-Collection)."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    """Per-token KL estimator (also used for the logged KL in every mode)."""
    kl_bias_correction: bool = True
    """DAPO, static mode: TRL's ``use_bias_correction_kl`` (default True since TRL 1.16, so set here explicitly).
    True multiplies the per-token k3 term by the importance ratio ρ_t = π_θ/π_old (= 1 in value on-policy, but
    differentiable): on-policy its gradient is β·(log π_θ - log π_ref)·∇log π_θ, the unbiased gradient of
    KL(π_θ‖π_ref), the constraint of Eq. 2-3 and the KL we log. False is the classic GRPO k3 loss, whose gradient
    β·(1 - π_ref/π_θ)·∇log π_θ is in expectation that of KL(π_ref‖π_θ). The PPO trainer puts the KL in the reward."""
    filter: bool = True
    """Keep only refinements with r(y') > r(y) (Eq. 6's filter); ``False`` is the App. B ablation."""
    ce_scope: Literal["full", "from_first_diff"] = "full"
    """CE over the whole refined response (paper) or from the first token where y' departs from y (issue 9)."""
    normalize: Literal["token", "sequence", "rollout"] = "rollout"
    """L_DC's normaliser (``study.constraint``). Default ``rollout``: Eq. 6 as the paper writes it, an expectation
    over ALL N rollouts (the kept sequences' mean CE summed, divided by N), so the constraint weakens as fewer
    refinements are kept, which is what the paper calls self-annealing (Sec. 4.2: "strong guidance early in training
    and relaxes as the policy becomes competent"; Fig. 5b). ``token`` (the mean CE over all kept tokens, the
    default before issue 18) and ``sequence`` (the mean of the kept sequences' mean CE) average over the K kept
    pairs only, which scales λ by N/K and keeps the pull per kept pair constant however few are kept."""
    refine_scope: Literal["sampled", "selected"] = "sampled"
    """DAPO: which rollouts go to the refiner. ``sampled``: every sampling round's, right after scoring, before
    dynamic sampling selects; a group counts as selectable when its rewards differ OR it has a kept refinement, so
    an all-fail group with a kept y' enters the batch (zero advantage) and acts through L_DC. ``selected``: only the
    batch dynamic sampling kept (groups whose rewards are all equal never meet the refiner). Default ``sampled``,
    from the paper: Eq. 6's expectation runs over y ~ π_θ(·|x) for every sampled response, and the refiner helps
    most where no sample passes; DAPO's dynamic sampling is a device of the policy-gradient term (a group with equal
    rewards has no advantage), not of the constraint. PPO refines every rollout either way."""
    target: Literal["refiner", "self", "dataset", "oracle"] = "refiner"
    """Who supplies y': the frozen reference model (paper), the current policy (self-refinement), the
    dataset's fixed reference solution (static SFT, UFT/LUFFY-style), or ``oracle``: y with its first edit toward
    that solution applied, a deterministic refiner that can fix (tests and smoke runs only; not a method)."""


class RefinerConfig(_Strict):
    model: str | None = None
    """Refiner model path; ``None`` uses the reference model (= the policy's initial weights)."""
    task: Literal["code", "dialogue"] = "code"
    """Which refine prompt template to use."""
    max_new_tokens: int = Field(default=256, gt=0)
    """Longest refined response."""
    temperature: float = Field(default=0.0, ge=0)
    """0 = greedy (default), as the refiner should copy what is right."""
    skip_max_reward: bool = True
    """Do not refine responses already at the maximum reward (they cannot improve, so the filter would drop their
    y'). Applies only with ``constraint.filter: true``: without the filter every y' is kept, so every response is
    refined (App. B's ablation, where the refiner can make a correct answer worse)."""
    batch_size: int = Field(default=32, gt=0)
    """Refinements generated per batch."""


class RolloutConfig(_Strict):
    num_prompts: int = Field(default=16, gt=0)
    """Prompts per RL step (the paper's batch size: 64 for DAPO)."""
    num_generations: int = Field(default=8, gt=0)
    """Samples per prompt, G (paper: 8)."""
    max_prompt_length: int = Field(default=512, gt=0)
    """Prompts longer than this are truncated from the left."""
    max_completion_length: int = Field(default=128, gt=0)
    """Longest sampled response."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature for rollouts."""


class OptimConfig(_Strict):
    learning_rate: float = Field(default=1e-6, gt=0)
    """Actor learning rate (Table 2: 1e-6)."""
    critic_learning_rate: float = Field(default=9e-6, gt=0)
    """PPO critic learning rate (Table 2: 9e-6)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warm-up steps, then constant."""


class DAPOConfig(_Strict):
    epsilon_low: float = Field(default=0.2, gt=0)
    """Clip-lower ε (Table 2: 0.2)."""
    epsilon_high: float = Field(default=0.3, gt=0)
    """Clip-higher ε (Table 2: 0.3)."""
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal and refill with fresh prompts (DAPO)."""
    max_sampling_rounds: int = Field(default=3, gt=0)
    """Cap on refill rounds per step."""
    overlong_buffer: int = Field(default=0, ge=0)
    """Soft overlong punishment cache (0 = off); see ``trl.rewards.get_soft_overlong_punishment``."""
    num_iterations: int = Field(default=1, gt=0)
    """Optimisation passes over each generated batch (TRL's ``num_iterations``)."""
    mini_batch_size: int | None = Field(default=None, gt=0)
    """Samples per optimiser step; ``None`` = the whole batch in one step."""


class ReLIFTConfig(_Strict):
    """ReLIFT (Ma et al. 2025, arXiv:2506.07527; issue 9): RL interleaved with online fine-tuning on the hardest
    questions (groups where every rollout is below the maximum reward), toward the dataset's reference solution.
    DAPO trainer only; see ``study.trainers.dapo``. Off by default (then absent from the config hash)."""

    enabled: bool = False
    """Collect the hardest questions during RL and fine-tune on their reference solutions."""
    sft_every: int = Field(default=5, gt=0)
    """Interleave period: every N-th RL step, if the buffer is not empty, add the SFT term and clear the buffer."""
    sft_coef: float = Field(default=1.0, ge=0)
    """Weight of the SFT cross-entropy (token mean over the buffered reference tokens) added to that step's loss."""
    buffer_size: int = Field(default=32, gt=0)
    """Most (prompt, reference) pairs held (one per question; the oldest are dropped first)."""


class SpeedConfig(_Strict):
    """How the step is computed, not what is learned (issue 8): each switch trades nothing but float round-off
    (and ``kl_every``, which only thins the logged KL). Defaults are the fast paths; left at the defaults the
    section is absent from the config hash, so runs made before it existed keep their cache key."""

    kl_every: int = Field(default=1, ge=0)
    """Log KL(π_θ‖π_ref) every N-th RL step (step 1 always; 0 = never; other rows hold NaN). Each logged step
    costs one no-grad forward of the reference (free in static mode, where the loss needs it anyway)."""
    kl_from_loss: bool = True
    """DAPO: take π_θ's log-probs for the logged KL from the loss forward instead of a separate no-grad forward.
    Used only where TRL itself skips ``old_per_token_logps`` (steps_per_generation · num_iterations = 1), i.e.
    where the loss forward sees exactly the sampling policy."""
    pack_groups: bool = True
    """DAPO: the loss forward (and the reference's, for the logged KL) packs the G rollouts of a prompt into one
    row, x once, each y behind a block attention mask (``study.tokens.packed_inputs``): about G·|x| fewer tokens
    per group, the same logits. Needs an attention backend that takes a custom 4-D mask (eager, sdpa); otherwise
    TRL's forward, one row per rollout (said once in the log)."""
    fuse_dc_forward: bool = True
    """DAPO: compute L_DC's CE in the policy forward of L_DAPO, sharing the prefix: y'_<k = y_<k (k = the first
    change), so -log π(y'_t | x, y'_<t) for t < k is read off x ⊕ y and only y'_≥k is appended, behind a block
    attention mask (``study.tokens.packed_inputs``; with ``pack_groups: false`` each rollout has a row of its own).
    Applies when the rollout temperature is 1 (TRL's log-probs are temperature-scaled; L_DC is the CE at
    temperature 1) and the attention backend takes a custom 4-D mask (eager, sdpa); otherwise L_DC gets a separate
    forward over the kept x ⊕ y' (said once in the log)."""
    refiner_copy_decoding: bool = True
    """Greedy refiner (transformers backend): verify drafts taken from each row's own candidate y, re-anchored by
    prompt lookup after an edit, one batched forward per step with a KV cache, the refine prompts' common prefix
    prefilled once per group (``study.generation.greedy_with_drafts``). Token-identical to plain greedy decoding."""
    refiner_draft_len: int = Field(default=16, gt=0)
    """Draft tokens verified per row and forward (``refiner_copy_decoding``)."""
    shared_prompt_prefill: bool = True
    """Rollouts (DAPO through TRL's transformers path, PPO): the G samples of a prompt share one prefill of it in
    the KV cache (``study.generation.generate_sharing_prompts``). Token-identical to plain ``generate``."""
    gradient_checkpointing: bool = True
    """DAPO: recompute activations in the backward pass instead of storing them (TRL's default: memory for
    compute). Worth it on a GPU with a real model; on a CPU with the mini model it only costs time."""


class VLLMConfig(_Strict):
    """vLLM generation (issue 6; the ``gpu`` extra, CUDA only). Off by default (then absent from the config hash).
    Never executed on the project's CPU machines: see README "On a GPU server"."""

    rollouts: bool = False
    """DAPO: sample rollouts with vLLM through TRL (``GRPOConfig.use_vllm``); the policy's weights are synced to
    the engine every step by TRL."""
    mode: Literal["colocate", "server"] = "colocate"
    """TRL's ``vllm_mode``: ``colocate`` runs the engine inside each training process; ``server`` talks to a
    separate ``trl vllm-serve`` process (``server_base_url``)."""
    server_base_url: str | None = None
    """``server`` mode: URL of the ``trl vllm-serve`` process (``None``: TRL's host/port defaults)."""
    gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)
    """``colocate`` mode: the rollout engine's share of GPU memory."""
    refiner: bool = False
    """Refine with a separate ``vllm.LLM`` holding the frozen reference (its weights never change, so TRL's
    rollout engine cannot serve it). Uses ``vllm.LLM.chat`` with greedy ``SamplingParams``."""
    refiner_gpu_memory_utilization: float = Field(default=0.2, gt=0, le=1)
    """The refiner engine's share of GPU memory."""


class PPOConfig(_Strict):
    gamma: float = Field(default=1.0, ge=0, le=1)
    """Discount γ (Table 2: 1)."""
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    """GAE λ (Table 2: 0.95)."""
    clip_range: float = Field(default=0.2, gt=0)
    """Policy clip ratio ε (Table 2: 0.2)."""
    value_clip_range: float = Field(default=0.2, gt=0)
    """Value clip range (Table 2: 0.2)."""
    ppo_epochs: int = Field(default=1, gt=0)
    """Passes over each batch (Table 2: 1 dialogue, 4 APPS)."""
    mini_batch_size: int = Field(default=16, gt=0)
    """Samples per optimiser step (Table 2: 16)."""
    vf_coef: float = Field(default=1.0, ge=0)
    """Weight of the value loss when critic and actor share an optimiser step."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch."""


LATE_FIELDS = [
    ("constraint", "refine_scope", "selected", lambda c: c.trainer != "dapo" or c.constraint.mode != "dynamic"),
    ("constraint", "kl_bias_correction", True, lambda c: c.trainer != "dapo" or c.constraint.mode != "static"),
    ("speed", "refiner_copy_decoding", True, lambda c: True),  # same tokens as plain greedy decoding
    ("speed", "refiner_draft_len", 16, lambda c: True),
]
"""(section, field, old, moot): fields added after runs were cached. A config hashes as it did before the field
existed when the field holds ``old`` (the behaviour those runs had) or when ``moot(config)`` says it changes nothing
for this config (e.g. refine_scope outside DAPO's dynamic mode)."""


class TrainConfig(_Strict):
    name: str
    """Run name: the run folder is ``runs/<name>`` (seed appended when ``--seed`` overrides)."""
    trainer: Literal["dapo", "ppo"] = "dapo"
    """RL algorithm."""
    model: str
    """Policy initialisation and reference model: a local HF folder, ``mini:<profile>`` or a hub id."""
    seed: int = 0
    """Seed for torch, python and data order."""
    steps: int = Field(default=100, gt=0)
    """RL iterations (Table 2's 'Iterations')."""
    reward: Literal["coderl", "binary", "reward_model"] = "coderl"
    """Reward: CodeRL's tiers with the adaptive partial-pass term (Eq. 7-8), 0/1 pass, or a reward model."""
    reward_model: str | None = None
    """Sequence-classifier reward model path (dialogue)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype for policy and reference."""
    torch_threads: int | None = Field(default=None, gt=0)
    """``torch.set_num_threads`` (CPU); ``None`` leaves torch's default."""
    data: DataConfig = DataConfig()
    constraint: ConstraintConfig = ConstraintConfig()
    refiner: RefinerConfig = RefinerConfig()
    rollout: RolloutConfig = RolloutConfig()
    optim: OptimConfig = OptimConfig()
    dapo: DAPOConfig = DAPOConfig()
    ppo: PPOConfig = PPOConfig()
    relift: ReLIFTConfig = ReLIFTConfig()
    speed: SpeedConfig = SpeedConfig()
    vllm: VLLMConfig = VLLMConfig()
    samples_per_step: int = Field(default=4, ge=0)
    """Samples (prompt, response, refinement, rewards, token CE) logged per step."""
    checkpoint_every: int = Field(default=10, ge=0)
    """Save a resumable checkpoint every N RL steps, and at the last (0 = only at the end). Only the latest is kept;
    ``study train --resume`` and ``study reproduce`` continue an interrupted run from it. Not part of the run key."""
    eval_benchmarks: list[str] = []
    """Benchmarks scored after training (``mini``, ``humaneval``, ``mbpp``, ...)."""
    eval_limit: int | None = Field(default=None, gt=0)
    """Evaluate on the first N problems of each benchmark."""
    report_to: list[Literal["tensorboard", "wandb"]] | Literal["none", "tensorboard", "wandb"] = "none"
    """Experiment trackers for the training metrics, as in TRL (``none``, ``tensorboard``, ``wandb`` or a list).
    DAPO: TRL's ``GRPOConfig.report_to`` (TensorBoard events under ``<run>/checkpoints/runs/``), plus the study's
    per-step row as ``study/<metric>``; PPO: an ``accelerate`` tracker (``<run>/tracking/``). Logging only: not
    in the config hash."""
    eval_batch_size: int = Field(default=8, gt=0)
    """Prompts decoded at once in the post-training evaluation (greedy: the answers do not depend on it; the mini
    configs use 64, which halves the eval time of the 1M-parameter model on a CPU)."""
    eval_max_new_tokens: int = Field(default=512, gt=0)
    """Longest answer in the post-training evaluation. The mini configs use 128, the rollout length the policy is
    trained with (mini reference answers are at most 48 tokens; longer ones are degenerate loops that cost the
    whole batch 512 decoding steps)."""

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.trainer == "ppo" and self.ppo.mini_batch_size > self.rollout.num_prompts * self.rollout.num_generations:
            raise ValueError("ppo.mini_batch_size is larger than the batch (rollout.num_prompts * num_generations)")
        if self.reward == "reward_model" and not self.reward_model:
            raise ValueError("reward: reward_model needs reward_model: PATH")
        if self.vllm.rollouts and self.trainer != "dapo":
            raise ValueError("vllm.rollouts needs trainer: dapo (TRL's use_vllm; the PPO trainer generates with "
                             "transformers)")
        if self.relift.enabled and self.trainer != "dapo":
            raise ValueError("relift.enabled needs trainer: dapo (ReLIFT is implemented in the DAPO trainer)")
        if self.relift.enabled and self.reward == "reward_model":
            raise ValueError("relift.enabled needs a reward with a ceiling (coderl or binary): the hardest "
                             "questions are groups with no rollout at the maximum reward")
        return self

    def hash(self) -> str:
        """Short content hash (runs are cached by it)."""
        d = self.model_dump(mode="json")
        if self.relift == ReLIFTConfig():  # added later (issue 9): off-by-default keeps earlier runs' hashes
            d.pop("relift")
        if self.speed == SpeedConfig():  # added later (issue 8): the same
            d.pop("speed")
        if self.vllm == VLLMConfig():  # added later (issue 6): the same
            d.pop("vllm")
        d.pop("report_to")  # where metrics are also sent changes nothing that is learned
        for section, key, old, moot in LATE_FIELDS:  # as before the field existed, where it changes nothing
            if section in d and (d[section].get(key) == old or moot(self)):
                d[section].pop(key, None)
        d.pop("eval_batch_size")  # greedy answers do not depend on it
        if self.eval_max_new_tokens == 512:  # added later (issue 18): the default keeps earlier runs' hashes
            d.pop("eval_max_new_tokens")
        blob = json.dumps(d, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise UserError(f"--set {key}: '{p}' is not a section")
    d[parts[-1]] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override (``key.sub=value``, value parsed as YAML) and validate a config. A relative ``path`` is
    looked up in the working directory, then under the root (``study.paths``)."""
    from study import paths

    path = Path(path)
    if not path.is_file() and paths.resolve(path).is_file():
        path = paths.resolve(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: top level must be a mapping")
    for ov in overrides or []:
        if "=" not in ov:
            raise UserError(f"--set expects key=value, got '{ov}'")
        k, v = ov.split("=", 1)
        _set_dotted(raw, k.strip(), yaml.safe_load(v))
    return validate_config(raw, source=str(path))


def validate_config(raw: dict, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise UserError(f"{source}: {loc}: {msg}") from None
