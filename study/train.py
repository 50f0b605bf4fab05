"""``study train CONFIG.yaml``: one RL fine-tuning run (DAPO or PPO; constraint none/static/dynamic).

    study train configs/mini/dapo_dynamic.yaml --set constraint.coef=0.5 --seed 1
    study train configs/paper/apps_dapo_dynamic.yaml --dry-run      # validate and print the plan only
    study train --resume runs/mini-dapo-dynamic                      # continue from the last checkpoint

Builds the pieces named in the config (policy, frozen reference, tokenizer, training problems, reward callable,
refiner), hands them to the trainer, and writes ``runs/<name>/`` (see ``study.runs``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from study.config import TrainConfig, load_config
from study.errors import UserError

# trainer name -> "module:function"; each function has the signature train(cfg, components, run) -> dict, and
# each module also exposes ``latest_checkpoint(run_dir) -> (path, rl_step) | None`` (what ``--resume`` continues).
TRAINERS = {
    "dapo": "study.trainers.dapo:train_dapo",
    "ppo": "study.trainers.ppo:train_ppo",
}

KEY_EXCLUDED = ("name", "checkpoint_every", "report_to", "model", "reward_model", "refiner.model")
"""Config fields that are not part of a run key: the run's name, checkpoint interval and trackers change no number,
and the model paths are replaced by the identity of the weights they point to (``run_identity``)."""


@dataclass
class Components:
    """Everything a trainer needs, built once from the config."""

    policy: Any
    """π_θ, trainable (``PreTrainedModel``)."""
    reference: Any
    """π_ref, frozen: the static-KL anchor, the KL we log in every mode, and the default refiner."""
    tokenizer: Any
    problems: list
    """Training problems (``study.problems.Problem``)."""
    reward_fn: Callable
    """TRL-style reward callable: ``reward_fn(prompts=..., completions=..., **dataset_columns) -> list[float]``."""
    max_reward: float | None
    """Reward ceiling (responses at it are not refined), ``None`` if unbounded."""
    refiner: Any
    """``study.refiner.Refiner`` or ``None`` when the constraint is not dynamic."""
    device: str


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    """``auto`` -> cuda if available, else cpu. Under N launched processes each takes its own GPU
    (``cuda:<LOCAL_RANK>``), where accelerate puts the trained model too."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda requested but no CUDA device is available")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return name


def accelerate_cpu_mode(device: str) -> bool:
    """Whether accelerate runs in its CPU mode (``Accelerator(cpu=True)``) for ``device``: yes on the CPU, except
    under a DeepSpeed launch, where CPU mode would turn DeepSpeed off (DeepSpeed then runs on its CPU accelerator,
    ``DS_ACCELERATOR=cpu``, over gloo)."""
    return device == "cpu" and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"


def process_state(device: str):
    """accelerate's ``PartialState`` for this process: the process group when launched as one of N (gloo on CPU,
    NCCL on GPUs; the trainers' ``Accelerator`` joins the same state), a trivial one otherwise."""
    from accelerate import PartialState

    if device == "cpu" and not accelerate_cpu_mode(device):
        return PartialState(cpu=False, backend="gloo")
    return PartialState(cpu=accelerate_cpu_mode(device))


def resolve_model_path(spec: str) -> str:
    """``mini:<profile>`` -> the mini reference model folder (committed weights, else trained on first use); a
    folder (relative to the root, ``study.paths``, or to the working directory) -> itself; anything else is
    treated as a hub id (fails offline with a clear message)."""
    if spec.startswith("mini:"):
        from study.mini import ensure_reference

        return str(ensure_reference(spec.split(":", 1)[1]))
    p = local_path(spec)
    if p is not None:
        if not (p / "config.json").exists():
            raise UserError(f"model: {spec} is a path but has no config.json (not an HF model folder)")
        return str(p)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise UserError(f"model: path not found: {spec}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") and not _in_hub_cache(spec):
        raise UserError(f"model: '{spec}' is a hub id, HF_HUB_OFFLINE is set and it is not in the local cache; "
                        "download it first or give a local folder")
    return spec  # hub id


def local_path(spec: str) -> Path | None:
    """An existing file or folder named by a config value: relative to the root first, else to the working
    directory (absolute paths pass through); ``None`` when neither exists."""
    from study import paths

    for p in (paths.resolve(spec), Path(spec).expanduser()):
        if p.exists():
            return p
    return None


def model_identity(spec: str | None, resolve: bool = True) -> dict:
    """``study.provenance.model_identity`` of the weights ``spec`` names. ``resolve=False`` never trains a
    missing mini reference (its identity is then ``{"missing": spec}``)."""
    from study import provenance as pv

    if not spec:
        return {}
    if spec.startswith("mini:"):
        from study.mini import ensure_reference, find_reference

        profile = spec.split(":", 1)[1]
        path = ensure_reference(profile) if resolve else find_reference(profile)
        return pv.model_identity(path) if path is not None else {"missing": spec}
    local = local_path(spec)
    return pv.model_identity(local) if local is not None else {"hub_id": spec}


def trainer_module(name: str):
    return importlib.import_module(TRAINERS[name].split(":")[0])


def run_identity(cfg: TrainConfig, resolve: bool = True) -> dict:
    """What a run's numbers depend on, and its **run key** (the cache key of ``study.experiments``):

    - the resolved config without ``KEY_EXCLUDED`` fields (seed, λ, steps, eval settings ... all count);
    - the fingerprint of the ``study`` code the run executes (``study.train`` + its trainer module, with
      everything they import; ``study.provenance.code_fingerprint``);
    - the versions of torch, transformers and TRL;
    - the identity of the model weights it starts from (policy/reference, refiner, reward model).
    """
    from study import provenance as pv

    d = cfg.model_dump(mode="json")
    for dotted in KEY_EXCLUDED:
        *parents, last = dotted.split(".")
        sub = d
        for k in parents:
            sub = sub[k]
        sub.pop(last, None)
    code = pv.code_fingerprint(["study.train", TRAINERS[cfg.trainer].split(":")[0]])
    models = {"model": model_identity(cfg.model, resolve), "refiner": model_identity(cfg.refiner.model, resolve),
              "reward_model": model_identity(cfg.reward_model, resolve)}
    env = pv.environment()
    key = pv.sha256_json({"config": d, "code": code["sha256"], "env": env,
                          "models": {k: v.get("sha256", v) for k, v in models.items()}})
    return {"run_key": key, "code_fingerprint": code, "environment": env, "models": models}


def latest_checkpoint(trainer: str, run_dir: str | Path) -> tuple[Path, int] | None:
    """The checkpoint ``--resume`` would continue ``run_dir`` from, and the RL step it holds."""
    return trainer_module(trainer).latest_checkpoint(Path(run_dir))


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def require_vllm(cfg: TrainConfig) -> None:
    """A one-line error (exit 2) when the config asks for vLLM and it is not installed."""
    if not (cfg.vllm.rollouts or cfg.vllm.refiner):
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise UserError("the config asks for vLLM (vllm.rollouts / vllm.refiner) but it is not installed: "
                        "pip install -e '.[gpu]' on a CUDA machine, or --set vllm.rollouts=false "
                        "--set vllm.refiner=false") from None


def vllm_engine(cfg: TrainConfig, path: str):  # pragma: no cover - needs vLLM and CUDA
    """``vllm.LLM`` for the frozen refiner: greedy decoding is set per call (``study.refiner._refine_vllm``)."""
    import vllm

    return vllm.LLM(model=str(path), dtype=cfg.dtype, seed=cfg.seed,
                    gpu_memory_utilization=cfg.vllm.refiner_gpu_memory_utilization)


def build_components(cfg: TrainConfig) -> Components:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.data import load_problems
    from study.refiner import Refiner
    from study.rewards import build_reward

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    path = resolve_model_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    reference.requires_grad_(False)
    data_path = str(local_path(cfg.data.path) or cfg.data.path) if cfg.data.path else None
    problems = load_problems(cfg.data.source, path=data_path, split=cfg.data.split, limit=cfg.data.limit,
                             mini_profile=cfg.data.mini_profile)
    reward_fn, max_reward = build_reward(cfg)
    refiner = None
    if cfg.constraint.mode == "dynamic":
        ref_model, ref_tok = reference, tokenizer
        if cfg.refiner.model:
            rpath = resolve_model_path(cfg.refiner.model)
            ref_tok = AutoTokenizer.from_pretrained(rpath)
            ref_model = AutoModelForCausalLM.from_pretrained(rpath, dtype=dtype).to(device).eval()
        backend = "transformers"
        if cfg.vllm.refiner:  # the frozen reference in its own vLLM engine (issue 6)
            ref_model, backend = vllm_engine(cfg, resolve_model_path(cfg.refiner.model or cfg.model)), "vllm"
        refiner = Refiner(ref_model, ref_tok, task=cfg.refiner.task, max_new_tokens=cfg.refiner.max_new_tokens,
                          temperature=cfg.refiner.temperature, batch_size=cfg.refiner.batch_size, backend=backend,
                          copy_decoding=cfg.speed.refiner_copy_decoding, draft_len=cfg.speed.refiner_draft_len)
    return Components(policy, reference, tokenizer, problems, reward_fn, max_reward, refiner, device)


def get_trainer(name: str) -> Callable:
    module, fn = TRAINERS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def run_training(cfg: TrainConfig, runs_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train one config into ``<runs_dir>/<name>`` (default ``study.paths.runs_dir()``); returns the run folder.

    A fresh run starts from an empty folder. ``resume=True`` keeps the folder, cuts its logs back to the
    trainer's latest checkpoint (to nothing where there is none) and continues from there."""
    from study import paths
    from study.runs import RunLog

    require_vllm(cfg)
    seed_everything(cfg.seed)
    run_dir = (Path(runs_dir) if runs_dir is not None else paths.runs_dir()) / cfg.name
    components = build_components(cfg)
    state = process_state(components.device)
    # rank 0 writes the run folder; the others wait until it is there (a fresh run clears an old one first)
    run = RunLog(run_dir, cfg.model_dump(mode="json"), cfg.seed, cfg.hash(), resume=resume,
                 identity=run_identity(cfg), world_size=state.num_processes, main=state.is_main_process)
    if resume:
        ck = latest_checkpoint(cfg.trainer, run_dir)
        run.truncate_to_step(ck[1] if ck is not None else 0)
    state.wait_for_everyone()
    summary = get_trainer(cfg.trainer)(cfg, components, run)
    summary["world_size"] = state.num_processes
    if cfg.eval_benchmarks and state.is_main_process:  # the trained policy is the same on every rank
        from study.evaluate import evaluate_after_training

        policy = components.policy
        if state.num_processes > 1:  # ZeRO-3 leaves each rank a shard: rank 0 evaluates the saved full weights
            import torch
            from transformers import AutoModelForCausalLM

            policy = AutoModelForCausalLM.from_pretrained(summary["final_model"], dtype=getattr(torch, cfg.dtype))
            policy = policy.to(components.device).eval()
        for bench in cfg.eval_benchmarks:
            evaluate_after_training(policy, components.tokenizer, bench, cfg, out_dir=run_dir / "eval" / bench)
    run.mark_done(summary)
    return run_dir


def describe_plan(cfg: TrainConfig, runs_dir: str | Path | None = None) -> str:
    from study import paths

    c = cfg.constraint
    run_dir = (Path(runs_dir) if runs_dir is not None else paths.runs_dir()) / cfg.name
    lines = [
        f"run        {paths.relative(run_dir)}  (config hash {cfg.hash()}, seed {cfg.seed})",
        f"trainer    {cfg.trainer}  steps={cfg.steps}  prompts/step={cfg.rollout.num_prompts}  G={cfg.rollout.num_generations}",
        f"model      {cfg.model}",
        f"data       {cfg.data.source} split={cfg.data.split} path={cfg.data.path} limit={cfg.data.limit}",
        f"reward     {cfg.reward}",
        f"constraint {c.mode}  λ={c.coef}  β={c.kl_coef}  filter={c.filter}  scope={c.ce_scope}  target={c.target}",
        f"optim      lr={cfg.optim.learning_rate}  critic_lr={cfg.optim.critic_learning_rate}",
        f"generate   rollouts={'vllm (' + cfg.vllm.mode + ')' if cfg.vllm.rollouts else 'transformers'}  "
        f"refiner={'vllm' if cfg.vllm.refiner else 'transformers'}",
        f"eval       {cfg.eval_benchmarks or '-'}",
    ]
    try:
        require_vllm(cfg)
    except UserError:
        lines.append("note       vLLM is not installed here: training with this config would stop at once")
    return "\n".join(lines)


def check_paths(cfg: TrainConfig) -> None:
    """Dry-run checks that need no model loading: model and data paths exist (or are hub ids)."""
    if not cfg.model.startswith("mini:"):
        resolve_model_path(cfg.model)
    if cfg.data.path and local_path(cfg.data.path) is None:
        raise UserError(f"data.path: not found: {cfg.data.path}")
    if cfg.refiner.model and not cfg.refiner.model.startswith("mini:"):
        resolve_model_path(cfg.refiner.model)
    if cfg.reward_model:
        resolve_model_path(cfg.reward_model)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (configs/...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. constraint.coef=0.5 (repeatable)")
    p.add_argument("--seed", type=int, help="override the seed (the run name gets a -s<seed> suffix)")
    p.add_argument("--runs-dir", default=None, help="parent folder of run folders (default: <root>/runs)")
    p.add_argument("--dry-run", action="store_true", help="validate the config, check paths, print the plan")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")


def run(args: argparse.Namespace) -> int:
    resume = False
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            raise UserError(f"--resume: {run_dir} has no config.yaml (not a run folder)")
        cfg = load_config(run_dir / "config.yaml", args.overrides)
        args.runs_dir = str(run_dir.parent)
        if run_dir.name != cfg.name:
            raise UserError(f"--resume: {run_dir} holds run '{cfg.name}' (folder renamed?)")
        resume = True
    else:
        if not args.config:
            raise UserError("give a CONFIG.yaml (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.overrides)
        if args.seed is not None:
            cfg = cfg.model_copy(update={"seed": args.seed, "name": f"{cfg.name}-s{args.seed}"})
    check_paths(cfg)
    print(describe_plan(cfg, args.runs_dir))
    if args.dry_run:
        return 0
    out = run_training(cfg, args.runs_dir, resume=resume)
    print(f"wrote {out}")
    return 0
