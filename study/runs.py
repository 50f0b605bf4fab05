"""Run folders: ``runs/<name>/`` holds everything a figure needs and everything needed to trust it.

    runs/<name>/
      config.yaml        the resolved config (after --set overrides)
      provenance.json    run key, config hash, seed, code fingerprint, package versions, model identities,
                         git commit, host, start time (a list under "resumed" for each resume)
      metrics.jsonl      one JSON row per RL step (see ``METRIC_COLUMNS``)
      samples.jsonl      a few (prompt, response, refinement, rewards, token CE) per step
      checkpoints/       resumable checkpoints, written atomically
      eval/              post-training benchmark results
      DONE               written last; a run folder without it is incomplete

A fresh run starts from an empty folder (whatever an earlier run of the same name left is removed first). A
resumed run keeps the folder and cuts every log back to the checkpoint it resumes from (``truncate_to_step``),
so the logs never hold duplicated or missing steps; post-training results (``eval/``, ``DONE``) go too.

Under N processes (``accelerate launch`` / ``torchrun``) every rank opens the same ``RunLog`` but only rank 0
(``main=True``) writes: the folder, config, provenance (with ``world_size``), metrics, samples and DONE. The
trainers log statistics gathered over all ranks.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from study.errors import UserError

# Columns every trainer writes each step (a value may be NaN where it does not apply, e.g. CE without refinement).
METRIC_COLUMNS = [
    "step",
    "reward_mean",
    "reward_std",
    "group_reward_std",  # mean within-group std (Fig. 7 right)
    "kl",  # KL(π_θ || π_ref) estimate, logged in every mode (Fig. 4)
    "dynamic_ce",  # L_DC of Eq. 6 on kept refinements (Fig. 4 right)
    "improvement_ratio",  # Fig. 5b
    "refined_frac",  # share of rollouts sent to the refiner
    "kept_frac",  # share of rollouts whose refinement passed the filter
    "response_length",
    "entropy",
    "clip_frac",
    "learning_rate",
    "loss",
    "time_rollout",
    "time_reward",
    "time_refine",
    "time_update",
    "time_step",
]

# Fields of one samples.jsonl row (Fig. 6 heatmaps, Figs. 8-11 / Table 4 qualitative examples).
SAMPLE_FIELDS = {
    "step": "RL step",
    "task_id": "problem id",
    "prompt": "problem text shown to the policy",
    "response": "the policy's response y",
    "refined": "the refiner's output y' (null when not refined)",
    "reward": "r(x, y)",
    "refined_reward": "r(x, y') (null when not refined)",
    "kept": "passed the filter (entered L_DC)",
    "response_tokens": "token strings of y",
    "refined_tokens": "token strings of y'",
    "refined_token_ce": "policy's per-token CE on y' (same length as refined_tokens), at the step's update",
}

PACKAGES = ["torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "numpy", "scipy", "pandas",
            "matplotlib", "seaborn", "papermill", "jupytext", "refiner-study", "vllm", "deepspeed"]
"""Versions recorded in every provenance.json and in figures/MANIFEST.json (None: not installed)."""


def package_versions() -> dict[str, str | None]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    out["python"] = platform.python_version()
    return out


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.item() if v.numel() == 1 else v.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float) and v != v:
        return None
    return v


class RunLog:
    """Writer for one run folder."""

    def __init__(self, root: str | Path, config: dict, seed: int, config_hash: str, resume: bool = False,
                 identity: dict | None = None, world_size: int = 1, main: bool = True):
        """``identity``: what the run's numbers depend on (``study.experiments.run_identity``: run key, code
        fingerprint, environment, model identities), written into provenance.json. ``world_size``: the number of
        training processes (recorded); ``main``: this is the process that writes (rank 0), else a no-op log."""
        self.root = Path(root)
        self.resumed = resume
        """True when the folder was opened to continue a run (trainers then restart from their last checkpoint)."""
        self.main = main
        self.metrics_path = self.root / "metrics.jsonl"
        self.samples_path = self.root / "samples.jsonl"
        if not main:
            return
        if not resume:
            clear_run_folder(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "checkpoints").mkdir(exist_ok=True)
        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        prov = {
            **(identity or {}),
            "seed": seed,
            "world_size": world_size,
            "config_hash": config_hash,
            "git_commit": git_commit(),
            "packages": package_versions(),
            "host": platform.node(),
            "platform": platform.platform(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        prov_path = self.root / "provenance.json"
        if resume and prov_path.exists():
            old = json.loads(prov_path.read_text())
            old.setdefault("resumed", []).append(prov)
            prov = old
        atomic_write_text(prov_path, json.dumps(prov, indent=2))

    def log_metrics(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        row = {k: _jsonable(v) for k, v in row.items()}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        if not rows or not self.main:
            return
        with open(self.samples_path, "a") as f:
            for r in rows:
                f.write(json.dumps({k: _jsonable(v) for k, v in r.items()}) + "\n")
            f.flush()

    def truncate_to_step(self, last_step: int) -> None:
        """Drop metric/sample rows with step > last_step, and the post-training ``eval/`` and ``DONE`` (used when
        resuming from the checkpoint of ``last_step``; 0 when there is none and the run restarts)."""
        import shutil

        if not self.main:
            return
        shutil.rmtree(self.root / "eval", ignore_errors=True)
        (self.root / "DONE").unlink(missing_ok=True)
        for p in (self.metrics_path, self.samples_path):
            if not p.exists():
                continue
            keep = []
            for line in p.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= last_step:
                        keep.append(line)
                except json.JSONDecodeError:  # a half-written last line after kill -9
                    continue
            atomic_write_text(p, "".join(l + "\n" for l in keep))

    def mark_done(self, summary: dict[str, Any] | None = None) -> None:
        if not self.main:
            return
        atomic_write_text(self.root / "DONE", json.dumps(summary or {}, indent=2))


RUN_FILES = ("config.yaml", "provenance.json", "metrics.jsonl", "samples.jsonl", "DONE", "checkpoints", "eval")


def clear_run_folder(root: Path) -> None:
    """Empty ``root`` for a fresh run. Only a folder that looks like a run folder (or is empty) is cleared: a
    mistyped ``--runs-dir`` must not delete someone's files."""
    import shutil

    if not root.exists():
        return
    entries = list(root.iterdir())
    if entries and not any(e.name in RUN_FILES for e in entries):
        raise UserError(f"{root} exists and is not a run folder; not overwriting it (pick another run name or "
                        "--runs-dir)")
    for e in entries:
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e)
        else:
            e.unlink()


def read_metrics(run_dir: str | Path):
    """metrics.jsonl as a pandas DataFrame."""
    import pandas as pd

    return pd.read_json(Path(run_dir) / "metrics.jsonl", lines=True, precise_float=True)


def read_samples(run_dir: str | Path):
    import pandas as pd

    p = Path(run_dir) / "samples.jsonl"
    return pd.read_json(p, lines=True, precise_float=True) if p.exists() and p.stat().st_size else pd.DataFrame()
