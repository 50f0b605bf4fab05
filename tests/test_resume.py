"""Crash-safe runs (issue 7): kill -9 mid-run, `study train --resume`, and the curve matches an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["step", "reward_mean", "kl", "dynamic_ce", "kept_frac", "response_length"]


def _metrics(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: r.get(k) for k in KEYS} for r in rows]


def _cmd(*args):
    return [sys.executable, "-m", "study", "train", *args]


@pytest.mark.parametrize("config", ["ppo_dynamic", "dapo_dynamic"])
def test_kill9_then_resume_matches_uninterrupted(tmp_path, smoke_model_dir, config):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDY_ARTIFACTS": str(smoke_model_dir.parents[1])}
    cfg = str(ROOT / "configs" / "smoke" / f"{config}.yaml")
    common = ["--set", "steps=5", "--set", "checkpoint_every=1"]
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(_cmd(cfg, "--runs-dir", str(a), *common), env=env, check=True, capture_output=True, cwd=ROOT)

    # the same run, killed with SIGKILL once its third step is logged
    p = subprocess.Popen(_cmd(cfg, "--runs-dir", str(b), *common), env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = f"smoke-{config.replace('_', '-')}"
    log = b / name / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert p.poll() is None, "run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (b / name / "DONE").exists()

    subprocess.run(_cmd("--resume", str(b / name)), env=env, check=True, capture_output=True, cwd=ROOT)
    got, want = _metrics(b / name), _metrics(a / name)
    assert [r["step"] for r in got] == list(range(1, 6))  # no duplicated or missing steps
    assert all(r["kept_frac"] > 0 and r["dynamic_ce"] > 0 for r in want)  # the constraint acts (oracle refiner)
    if config.startswith("ppo"):
        assert got == want  # our PPO restores every RNG and state: the resumed curve equals the uninterrupted one
    else:
        # DAPO resumes through TRL's Trainer checkpoint: rollouts (RNG, data order) continue identically, but the
        # policy after resume differs in the last digits (KL at the 1e-5 level; see README "Safety and reliability")
        for g, w in zip(got, want):
            assert {k: g[k] for k in ("step", "reward_mean", "response_length")} == \
                {k: w[k] for k in ("step", "reward_mean", "response_length")}
            assert abs(g["kl"] - w["kl"]) < 1e-3
    assert (b / name / "DONE").exists()


def test_same_config_and_seed_give_identical_metrics(tmp_path, smoke_model_dir):
    """Determinism on CPU (issue 7): two runs of one config and seed write the same metrics, timings aside."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDY_ARTIFACTS": str(smoke_model_dir.parents[1])}
    cfg = str(ROOT / "configs" / "smoke" / "dapo_dynamic.yaml")
    rows = []
    for d in ("a", "b"):
        subprocess.run(_cmd(cfg, "--runs-dir", str(tmp_path / d), "--set", "steps=3"), env=env, check=True,
                       capture_output=True, cwd=ROOT)
        lines = (tmp_path / d / "smoke-dapo-dynamic" / "metrics.jsonl").read_text().splitlines()
        rows.append([{k: v for k, v in json.loads(l).items() if not k.startswith("time_")} for l in lines])
    assert len(rows[0]) == 3 and rows[0] == rows[1]
    assert all(r["kept_frac"] > 0 and r["dynamic_ce"] > 0 for r in rows[0])  # with pairs kept, L_DC acting
