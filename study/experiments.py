"""Experiment groups: which runs each figure needs, a run cache, and tidy tables of their metrics.

A *profile* (``study/profiles/<name>.yaml``, or ``<root>/configs/profiles/<name>.yaml``) maps each experiment
group of the paper to config files and seeds. A group's runs are trained once and reused: a run folder counts as
cached when its ``DONE`` exists and its ``provenance.json`` records the same **run key**
(``study.train.run_identity``: the resolved config, seed included; the fingerprint of the code that trains it;
the versions of torch, transformers and TRL; the identity of the model weights it starts from). Anything else,
e.g. a run trained by older code, is retrained from an empty folder.

    from study import experiments as ex
    dirs = ex.ensure_runs("fig5_dapo", "mini")              # trains what is missing, returns run folders
    df = ex.load_group("fig5_dapo", "mini")                 # tidy: group, label, seed, run, step, metrics...

Profile file layout::

    profile: mini
    description: ...
    figures_dir: figures            # default output folder of ``study reproduce --profile mini``
    reference: {mini_profile: mini} # or {path: DIR}: the model notebooks 00 and walkthrough inspect
    groups:
      fig5_dapo:
        configs: {dapo: configs/mini/dapo.yaml, dynamic: configs/mini/dapo_dynamic.yaml}
        seeds: [0, 1, 2]
        overrides: []               # --set style KEY=VALUE applied to every config of the group
      fig7_lambda:
        configs: configs/mini/dapo_dynamic_lambda_*.yaml   # a glob (or list): labels are the file stems
      filter_ablation:              # or one file with per-label overrides (run name gets -<label>)
        configs:
          filter: configs/paper/apps_dynamic.yaml
          no_filter: {config: configs/paper/apps_dynamic.yaml, overrides: [constraint.filter=false]}

Config paths are relative to the profile file's folder when they exist there, else to the root
(``study.paths``).
"""

from __future__ import annotations

import glob as _glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from study import paths
from study.errors import UserError


@dataclass
class Profile:
    name: str
    """Profile name (``smoke``, ``mini``, ``paper``, or a test profile)."""
    path: Path
    """The YAML file it was read from."""
    groups: dict[str, dict[str, Any]]
    """Experiment group -> {configs, seeds, overrides}."""
    figures_dir: str | None = None
    """Default figures folder for ``study reproduce``."""
    reference: dict[str, Any] = field(default_factory=dict)
    """``{mini_profile: NAME}`` or ``{path: DIR}``: the reference model notebooks 00/walkthrough inspect."""
    description: str = ""
    notebooks: list[str] | None = None
    """Notebooks ``study reproduce`` runs for this profile when ``--only`` is not given (all when unset): a profile
    without the runs of some notebook (the main ``mini`` job leaves notebook 08's arms to ``mini-full``) names the
    others, and ``--check`` holds it to those."""
    launcher: str | dict[str, str] | None = None
    """How ``study reproduce`` starts each training run: unset -> in this process (or ``--jobs`` spawned ones); a
    command prefix such as ``accelerate launch --config_file configs/accelerate/zero2.yaml`` -> one launch per run,
    ``<launcher> -m study train <config>``; a mapping trainer -> prefix gives DAPO and PPO their own.
    ``study reproduce --launcher`` overrides it."""

    @property
    def base_dir(self) -> Path:
        return self.path.parent


@dataclass
class RunSpec:
    """One (config, seed) run of a group."""

    group: str
    label: str
    """Short name of the variant in plots (``dapo``, ``dynamic``, ``lambda_0.1``...)."""
    config_path: Path
    seed: int
    cfg: Any
    """The resolved ``TrainConfig`` (seed set, name suffixed ``-s<seed>``)."""

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def config_hash(self) -> str:
        return self.cfg.hash()

    def identity(self, resolve: bool = True) -> dict:
        """``study.train.run_identity`` of this run (``resolve=False``: never train a missing reference)."""
        from study.train import run_identity

        return run_identity(self.cfg, resolve=resolve)

    def run_key(self, resolve: bool = True) -> str:
        return self.identity(resolve)["run_key"]

    def run_dir(self, runs_dir: str | Path | None) -> Path:
        return _runs(runs_dir) / self.name


def _runs(runs_dir: str | Path | None) -> Path:
    return Path(runs_dir) if runs_dir is not None else paths.runs_dir()


def use_repo_root() -> Path:
    """chdir to the study's root (``study.paths.root``: found from the working directory), so relative paths
    mean the same in a notebook as on the command line."""
    import os

    root = paths.root()
    os.chdir(root)
    return root


def start_notebook(profile: str | Path | Profile) -> Profile:
    """A notebook's set-up: ``use_repo_root`` (relative paths as on the command line), the profile, and one line
    naming it."""
    use_repo_root()
    prof = load_profile(profile)
    print(f"profile {prof.name}: {prof.description}")
    return prof


def load_profile(profile: str | Path | Profile) -> Profile:
    """A profile by name (``study.paths.profile_path``) or by path."""
    if isinstance(profile, Profile):
        return profile
    p = Path(profile)
    if p.suffix not in (".yaml", ".yml"):
        p = paths.profile_path(str(profile)) or Path(f"{profile}.yaml")
    if not p.is_file():
        raise UserError(f"unknown profile '{profile}' (known: {', '.join(paths.known_profiles())}; "
                        "or give a .yaml path)")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    groups = raw.get("groups") or {}
    if not isinstance(groups, dict):
        raise UserError(f"{p}: groups must be a mapping")
    nbs = raw.get("notebooks")
    if nbs is not None and not (isinstance(nbs, list) and all(isinstance(n, str) for n in nbs)):
        raise UserError(f"{p}: notebooks must be a list of notebook names")
    launcher = raw.get("launcher")
    if launcher is not None and not (isinstance(launcher, str) or (
            isinstance(launcher, dict) and all(isinstance(v, str) for v in launcher.values()))):
        raise UserError(f"{p}: launcher must be a command prefix or a mapping trainer -> command prefix")
    return Profile(name=raw.get("profile", p.stem), path=p.resolve(), groups=groups,
                   figures_dir=raw.get("figures_dir"), reference=raw.get("reference") or {},
                   description=raw.get("description", ""), notebooks=nbs, launcher=launcher)


def _resolve_path(pattern: str, prof: Profile) -> list[Path]:
    for base in (prof.base_dir, paths.root()):
        hits = sorted(Path(x) for x in _glob.glob(str(base / pattern)))
        if hits:
            return hits
    return []


def _label_from_stem(stem: str, all_stems: list[str]) -> str:
    if len(all_stems) == 1:
        return stem
    import os

    prefix = os.path.commonprefix(all_stems)
    cut = max(prefix.rfind("_"), prefix.rfind("-")) + 1  # whole words only: lambda_0.05 / lambda_0.1 -> 0.05 / 0.1
    lab = stem[cut:]
    return lab or stem


def group_specs(group: str, profile: str | Path | Profile, seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """The runs of ``group`` in ``profile`` (optionally only ``seeds``), configs loaded and validated."""
    from study.config import load_config

    prof = load_profile(profile)
    if group not in prof.groups:
        raise UserError(f"profile '{prof.name}' has no experiment group '{group}' "
                        f"(it has: {', '.join(prof.groups) or 'none'})")
    g = prof.groups[group]
    entries = g.get("configs")
    pairs: list[tuple[str, Path]] = []
    extra: dict[str, list[str]] = {}  # label -> its own overrides (entries written as {config: ..., overrides: [...]})
    if isinstance(entries, dict):
        for label, pat in entries.items():
            if isinstance(pat, dict):
                extra[str(label)] = [str(o) for o in pat.get("overrides") or []]
                pat = pat.get("config", "")
            hits = _resolve_path(str(pat), prof)
            if not hits:
                raise UserError(f"profile '{prof.name}', group '{group}': config not found: {pat}")
            pairs.append((str(label), hits[0]))
    else:
        pats = [entries] if isinstance(entries, str) else list(entries or [])
        files: list[Path] = []
        for pat in pats:
            hits = _resolve_path(str(pat), prof)
            if not hits:
                raise UserError(f"profile '{prof.name}', group '{group}': config not found: {pat}")
            files.extend(hits)
        stems = [f.stem for f in files]
        pairs = [(_label_from_stem(f.stem, stems), f) for f in files]
    if not pairs:
        raise UserError(f"profile '{prof.name}', group '{group}': no configs")
    want = list(g.get("seeds") or [0])
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        want = [s for s in want if s in seeds] or seeds
    overrides = [str(o) for o in g.get("overrides") or []]
    specs = []
    for label, path in pairs:
        base = load_config(path, overrides + extra.get(label, []))
        if label in extra:  # the same file with per-label overrides: keep the run folders apart
            base = base.model_copy(update={"name": f"{base.name}-{label}"})
        for s in want:
            cfg = base.model_copy(update={"seed": int(s), "name": f"{base.name}-s{int(s)}"})
            specs.append(RunSpec(group, label, path, int(s), cfg))
    return specs


def _provenance(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def cached_run(spec: RunSpec, runs_dir: str | Path | None = None, resolve: bool = True) -> Path | None:
    """The run folder if it is complete (``DONE``) and was trained under exactly this run key (same config,
    code, library versions and starting weights), else ``None``."""
    d = spec.run_dir(runs_dir)
    if not (d / "DONE").exists():
        return None
    return d if _provenance(d).get("run_key") == spec.run_key(resolve) else None


def _resumable(spec: RunSpec, runs_dir: str | Path | None) -> bool:
    """An interrupted run under this run key with a checkpoint its trainer can continue from."""
    from study.train import latest_checkpoint

    d = spec.run_dir(runs_dir)
    if (d / "DONE").exists() or _provenance(d).get("run_key") != spec.run_key():
        return False
    return latest_checkpoint(spec.cfg.trainer, d) is not None


def ensure_runs(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None, force: bool = False,
                seeds: Iterable[int] | None = None, progress: bool = True, jobs: int = 1) -> list[Path]:
    """Train the group's missing runs (cache: DONE + matching run key); return all its run folders.

    An interrupted run under the same run key that left a checkpoint is resumed (``run_training(resume=True)``);
    ``force`` retrains everything from scratch; ``jobs`` > 1 trains that many runs at once (one process each)."""
    specs = group_specs(group, profile, seeds)
    train_specs(specs, runs_dir, force=force, progress=progress, jobs=jobs, desc=f"train {group}")
    return [s.run_dir(runs_dir) for s in specs]


def _train_one(cfg, runs_dir: str, resume: bool, threads: int | None, root: str | None = None) -> str:
    if threads:
        import torch

        torch.set_num_threads(threads)
    if root is not None:  # a spawned worker: same root as the parent
        paths.set_root(root)
    from study import train as _train

    return str(_train.run_training(cfg, runs_dir, resume=resume))


def launch_command(launcher: str | dict[str, str], spec: RunSpec, runs_dir: Path, resume: bool) -> list[str]:
    """``<launcher> -m study --root ROOT train CONFIG --runs-dir RUNS`` (or ``train --resume RUN``) for one run;
    the resolved config is written to ``RUNS/.launch/<name>.yaml`` first, so overrides and seed travel with it."""
    import shlex

    import yaml

    prefix = launcher.get(spec.cfg.trainer) if isinstance(launcher, dict) else launcher
    if not prefix:
        raise UserError(f"launcher: no command for trainer '{spec.cfg.trainer}' (has: {', '.join(launcher)})")
    study = ["-m", "study", "--root", str(paths.root()), "train"]
    if resume:
        return [*shlex.split(prefix), *study, "--resume", str(spec.run_dir(runs_dir))]
    cfg_file = runs_dir / ".launch" / f"{spec.name}.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(yaml.safe_dump(spec.cfg.model_dump(mode="json"), sort_keys=False))
    return [*shlex.split(prefix), *study, str(cfg_file), "--runs-dir", str(runs_dir)]


def _launch_one(launcher, spec: RunSpec, runs_dir: Path, resume: bool) -> None:
    import subprocess

    cmd = launch_command(launcher, spec, runs_dir, resume)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise UserError(f"training {spec.name} through the launcher failed (exit {rc}): {' '.join(cmd)}")


def rollouts_planned(spec: RunSpec) -> int:
    """A run's planned rollouts, steps x prompts per step x samples per prompt: the scheduler's proxy for its cost."""
    r = spec.cfg.rollout
    return spec.cfg.steps * r.num_prompts * r.num_generations


def longest_first(specs: list[RunSpec]) -> list[RunSpec]:
    """``specs`` by planned rollouts, largest first (stable): with ``jobs`` workers the short runs fill the tail, so
    no worker idles for long while the last long run finishes (greedy longest-processing-time scheduling)."""
    return sorted(specs, key=rollouts_planned, reverse=True)


def train_specs(specs: list[RunSpec], runs_dir: str | Path | None, force: bool = False, progress: bool = True,
                jobs: int = 1, desc: str = "train", launcher: str | dict[str, str] | None = None) -> list[RunSpec]:
    """Train the runs among ``specs`` that are not cached (each run folder once), ``jobs`` at a time; returns
    the specs it trained.

    Shared prerequisites (the mini reference model) are resolved first, in this process, so parallel runs never
    race to build them. Each parallel run is a fresh (spawned) process with one torch thread. With a
    ``launcher`` (``Profile.launcher``) each run is one launch after the other instead (``launch_command``)."""
    from tqdm.auto import tqdm

    runs_dir = _runs(runs_dir)
    for model in sorted({s.cfg.model for s in specs} | {s.cfg.refiner.model or "" for s in specs}):
        if model.startswith("mini:"):
            from study.mini import ensure_reference

            ensure_reference(model.split(":", 1)[1])
    seen, todo = set(), []
    for s in specs:
        d = s.run_dir(runs_dir)
        if d in seen or (not force and cached_run(s, runs_dir) is not None):
            continue
        seen.add(d)
        todo.append(s)
    if not todo:
        return []
    bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress)
    root = str(paths.root())
    if launcher:
        for s in todo:
            _launch_one(launcher, s, runs_dir, not force and _resumable(s, runs_dir))
            bar.update(1)
    elif jobs <= 1:
        for s in todo:
            _train_one(s.cfg, str(runs_dir), not force and _resumable(s, runs_dir), None)
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_train_one, s.cfg, str(runs_dir), not force and _resumable(s, runs_dir), 1, root): s
                    for s in longest_first(todo)}
            for f in as_completed(futs):
                f.result()
                bar.update(1)
    bar.close()
    for s in todo:
        if cached_run(s, runs_dir) is None:
            raise UserError(f"training {s.name} finished without a complete run folder in {runs_dir}")
    return todo


def _specs_with_runs(group, profile, runs_dir, seeds, train_missing) -> list[tuple[RunSpec, Path]]:
    specs = group_specs(group, profile, seeds)
    if train_missing:
        ensure_runs(group, profile, runs_dir, seeds=seeds)
    out = []
    missing = []
    for s in specs:
        d = cached_run(s, runs_dir)
        if d is None:
            missing.append(s.name)
        else:
            out.append((s, d))
    if missing:
        raise UserError(f"group '{group}': runs missing or stale in {_runs(runs_dir)}: {', '.join(missing)} "
                        f"(run `study reproduce --profile {load_profile(profile).name}`)")
    return out


def check_runs(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None,
               seeds: Iterable[int] | None = None) -> list[Path]:
    """The group's run folders; ``UserError`` naming the missing or stale ones."""
    return [d for _, d in _specs_with_runs(group, profile, runs_dir, seeds, train_missing=False)]


def load_group(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None,
               seeds: Iterable[int] | None = None, train_missing: bool = True):
    """Tidy metrics of every run of ``group``: one row per (run, step) with columns
    group, label, config, config_hash, seed, run, step and the metric columns of ``study.runs``."""
    import pandas as pd

    from study.runs import METRIC_COLUMNS, read_metrics

    frames = []
    for s, d in _specs_with_runs(group, profile, runs_dir, seeds, train_missing):
        m = read_metrics(d)
        for c in METRIC_COLUMNS:
            if c not in m.columns:
                m[c] = float("nan")
        m.insert(0, "run", s.name)
        m.insert(0, "seed", s.seed)
        m.insert(0, "config_hash", s.config_hash)
        m.insert(0, "config", str(s.config_path.name))
        m.insert(0, "label", s.label)
        m.insert(0, "group", group)
        frames.append(m)
    df = pd.concat(frames, ignore_index=True)
    df["label"] = pd.Categorical(df["label"], categories=list(dict.fromkeys(df["label"])), ordered=True)
    return df


def load_samples(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None,
                 seeds: Iterable[int] | None = None, train_missing: bool = True):
    """samples.jsonl of every run of the group (columns label, seed, run + ``study.runs.SAMPLE_FIELDS``)."""
    import pandas as pd

    from study.runs import read_samples

    frames = []
    for s, d in _specs_with_runs(group, profile, runs_dir, seeds, train_missing):
        sm = read_samples(d)
        if sm.empty:
            continue
        sm.insert(0, "run", s.name)
        sm.insert(0, "seed", s.seed)
        sm.insert(0, "label", s.label)
        frames.append(sm)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_eval(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None,
              seeds: Iterable[int] | None = None, train_missing: bool = True):
    """Post-training benchmark scores: one row per (run, benchmark) with ``pass@1`` (from eval/<bench>/summary.json)."""
    import pandas as pd

    rows = []
    for s, d in _specs_with_runs(group, profile, runs_dir, seeds, train_missing):
        for summ in sorted((d / "eval").glob("*/summary.json")):
            data = json.loads(summ.read_text())
            rows.append({"label": s.label, "seed": s.seed, "run": s.name, "benchmark": summ.parent.name,
                         "pass@1": float(data.get("pass@1", float("nan")))})
    return pd.DataFrame(rows, columns=["label", "seed", "run", "benchmark", "pass@1"])


def base_eval_dir(cfg, bench: str, runs_dir: str | Path | None = None, resolve: bool = True) -> Path:
    """Where the initial model's evaluation on ``bench`` is cached: ``<runs>/_base/<bench>-<key>``, the key built
    from the model's weights identity, the benchmark, ``eval_limit``, the evaluation protocol, the code that
    evaluates and the library versions (``study.provenance``). Other weights or code give another folder."""
    from study import provenance as pv
    from study.evaluate import post_training_protocol
    from study.train import model_identity

    ident = model_identity(cfg.model, resolve)
    key = pv.sha256_json({"model": ident.get("sha256", ident), "benchmark": bench, "limit": cfg.eval_limit,
                          "protocol": post_training_protocol(cfg), "env": pv.environment(),
                          "code": pv.code_fingerprint(["study.evaluate"])["sha256"]})
    return _runs(runs_dir) / "_base" / f"{bench}-{key}"


def base_eval(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None):
    """pass@1 of the group's initial model on the benchmarks its configs evaluate (Table 1's first row), with the
    same protocol as the post-training evaluation of its runs. Cached in :func:`base_eval_dir`; computed with
    ``study.evaluate`` when missing."""
    import pandas as pd

    cfg = group_specs(group, profile)[0].cfg
    rows = []
    for bench in cfg.eval_benchmarks:
        out = base_eval_dir(cfg, bench, runs_dir)
        summ = out / "summary.json"
        if not summ.exists():
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from study.evaluate import evaluate_after_training
            from study.train import resolve_model_path

            path = resolve_model_path(cfg.model)
            tok = AutoTokenizer.from_pretrained(path)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            evaluate_after_training(model, tok, bench, cfg, out_dir=out)
        rows.append({"benchmark": bench, "pass@1": float(json.loads(summ.read_text())["pass@1"])})
    return pd.DataFrame(rows, columns=["benchmark", "pass@1"])


def reference_dir(profile: str | Path | Profile, resolve: bool = True) -> Path | None:
    """The reference model folder of the profile (the mini world's, or a given path). ``resolve=False`` never
    trains a missing mini reference (returns ``None`` instead)."""
    prof = load_profile(profile)
    ref = prof.reference
    if ref.get("path"):
        hits = _resolve_path(str(ref["path"]), prof)
        if not hits:
            raise UserError(f"profile '{prof.name}': reference path not found: {ref['path']}")
        return hits[0]
    if ref.get("mini_profile"):
        from study.mini import ensure_reference, find_reference

        return Path(ensure_reference(ref["mini_profile"])) if resolve else find_reference(ref["mini_profile"])
    raise UserError(f"profile '{prof.name}' names no reference model (reference: {{mini_profile|path}})")


def run_manifest(group: str, profile: str | Path | Profile, seeds: Iterable[int] | None = None,
                 resolve: bool = True) -> list[dict]:
    """What a figure of this group was computed from: label, config file, config hash, seed and run key per run."""
    return [{"group": s.group, "label": s.label, "config": paths.relative(s.config_path), "config_hash": s.config_hash,
             "seed": s.seed, "run": s.name, "run_key": s.run_key(resolve)} for s in group_specs(group, profile, seeds)]


# ---------------------------------------------------------------------------------------------------------------
# run folders


def run_wall_time(run_dir: str | Path) -> float:
    """Seconds of training of one run: the sum of the per-step ``time_step`` column."""
    from study.runs import read_metrics

    m = read_metrics(run_dir)
    if "time_step" not in m.columns:
        return float("nan")
    return float(m["time_step"].sum())


# ---------------------------------------------------------------------------------------------------------------
# tables from configs and run folders (Table 2, training cost, the reference model)

# Table 2 of the paper (APPS columns), keyed by our config field; one column per paper variant.
_DAPO_PAPER = {"optim.learning_rate": 1e-6, "rollout.num_prompts": 64, "dapo.mini_batch_size": 8,
               "rollout.num_generations": 8, "steps": 150, "dapo.epsilon_low": 0.2, "dapo.epsilon_high": 0.3}
PAPER_HPARAMS = {
    "ppo": {"paper (APPS)": {"optim.learning_rate": 1e-6, "optim.critic_learning_rate": 9e-6, "ppo.ppo_epochs": 4,
                             "rollout.num_prompts": 128, "ppo.mini_batch_size": 16, "steps": 200,
                             "constraint.kl_coef": 1e-4, "ppo.gamma": 1, "ppo.gae_lambda": 0.95,
                             "ppo.clip_range": 0.2, "ppo.value_clip_range": 0.2}},
    "dapo": {"paper DAPO": {**_DAPO_PAPER, "constraint.kl_coef": 1e-2},
             "paper Dynamic": {**_DAPO_PAPER, "constraint.kl_coef": 1e-4}},
}
HPARAM_FIELDS = {
    "ppo": ["optim.learning_rate", "optim.critic_learning_rate", "ppo.ppo_epochs", "rollout.num_prompts",
            "rollout.num_generations", "ppo.mini_batch_size", "steps", "constraint.mode", "constraint.kl_coef",
            "constraint.coef", "ppo.gamma", "ppo.gae_lambda", "ppo.clip_range", "ppo.value_clip_range",
            "rollout.max_completion_length", "model"],
    "dapo": ["optim.learning_rate", "rollout.num_prompts", "rollout.num_generations", "dapo.mini_batch_size",
             "dapo.num_iterations", "steps", "constraint.mode", "constraint.kl_coef", "constraint.coef",
             "constraint.filter", "dapo.epsilon_low", "dapo.epsilon_high", "rollout.max_completion_length", "model"],
}


def _get(d: dict, dotted: str):
    for p in dotted.split("."):
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def hyperparameter_table(group: str, profile: str | Path | Profile):
    """Table 2 for one group: a row per hyperparameter, a column per variant, and the paper's APPS values."""
    import pandas as pd

    specs = group_specs(group, profile)
    by_label = {}
    for s in specs:
        by_label.setdefault(s.label, s.cfg.model_dump(mode="json"))
    trainer = specs[0].cfg.trainer
    rows = []
    for f in HPARAM_FIELDS[trainer]:
        row = {"hyperparameter": f}
        for lab, d in by_label.items():
            v = _get(d, f)
            row[lab] = "" if v is None else str(v)
        for col, values in PAPER_HPARAMS[trainer].items():
            pv = values.get(f)
            row[col] = "" if pv is None else str(pv)
        rows.append(row)
    return pd.DataFrame(rows)


TIME_COLUMNS = ["time_rollout", "time_reward", "time_refine", "time_update", "time_step"]


def cost_table(group: str, profile: str | Path | Profile, runs_dir: str | Path | None = None,
               seeds: Iterable[int] | None = None, train_missing: bool = True):
    """Training time per variant: mean over seeds of the summed per-step times (s), and the ratio to the first."""
    df = load_group(group, profile, runs_dir, seeds, train_missing)
    per_run = df.groupby(["label", "seed"], observed=True)[TIME_COLUMNS].sum(min_count=1).reset_index()
    agg = per_run.groupby("label", observed=True)[TIME_COLUMNS].mean().reset_index()
    agg.insert(1, "seeds", per_run.groupby("label", observed=True)["seed"].nunique().values)
    first = float(agg["time_step"].iloc[0])
    agg["ratio_to_" + str(agg["label"].iloc[0])] = agg["time_step"] / first if first else float("nan")
    agg["label"] = agg["label"].astype(str)
    return agg, per_run


def reference_metrics(ref_dir: str | Path) -> dict:
    """The reference model's ``metrics.json``."""
    p = Path(ref_dir) / "metrics.json"
    if not p.exists():
        raise UserError(f"{ref_dir}: no metrics.json (not a mini reference model folder)")
    return json.loads(p.read_text())


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b": value}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# headline -> candidate keys in the reference's metrics.json (first present wins; then any key containing it)
REFERENCE_HEADLINES = {
    "pass@1": ["solve_pass@1_greedy", "pass@1"],
    "verbatim rate (own correct samples)": ["refine_own_correct.verbatim", "verbatim"],
    "verbatim rate (correct candidates in other forms)": ["refine_variant_correct.verbatim"],
    "improvement ratio at step 0 (own failing samples)": ["refine_own_failing.improved", "improvement_ratio", "improved"],
    "parameters": ["parameters", "params"],
    "train seconds": ["train_seconds", "wall_time_s", "wall_time"],
}


def reference_headline(metrics: dict) -> dict[str, float]:
    """The numbers notebook 00 reports: pass@1, verbatim rate, improvement ratio at step 0, size, wall time."""
    flat = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {}
    for name, keys in REFERENCE_HEADLINES.items():
        hit = next((k for k in keys if k in flat), None)
        if hit is None:
            hit = next((k for k in flat for c in keys if c in k), None)
        out[name] = float(flat[hit]) if hit is not None else float("nan")
    return out


def reference_curve(ref_dir: str | Path):
    """The reference model's learning curve (the first ``*.jsonl`` in its folder) as a DataFrame."""
    import pandas as pd

    hits = sorted(Path(ref_dir).glob("*.jsonl"))
    if not hits:
        return pd.DataFrame()
    return pd.read_json(hits[0], lines=True)
