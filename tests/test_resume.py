"""Crash-safe runs: ``kill -9`` a run before or after its first checkpoint, resume it, and its logs equal an
uninterrupted run's row for row (no duplicated, missing or stale step), for both trainers and both resume paths
(``study train --resume`` and ``study reproduce``'s run cache, which finds the checkpoint a trainer wrote)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 4, 2
OVERRIDES = [f"steps={STEPS}", f"checkpoint_every={EVERY}"]


def _cmd(*args):
    return [sys.executable, "-m", "study", "train", *args]


def _env(smoke_model_dir):
    return {**os.environ, "PYTHONPATH": str(ROOT), "STUDY_ARTIFACTS": str(smoke_model_dir.parents[1])}


def _rows(path: Path) -> list[dict]:
    """JSON lines without the wall-clock columns (timings differ between any two runs)."""
    if not path.exists():
        return []
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def _same(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert g == w, (g["step"], {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)})


def _has_checkpoint(trainer: str, run_dir: Path) -> bool:
    from study.train import latest_checkpoint

    return latest_checkpoint(trainer, run_dir) is not None


@pytest.fixture(scope="module")
def uninterrupted(smoke_model_dir, tmp_path_factory):
    """The two smoke configs trained without interruption (the reference logs)."""
    out = {}
    root = tmp_path_factory.mktemp("uninterrupted")
    for config in ("ppo_dynamic", "dapo_dynamic"):
        cfg = str(ROOT / "configs" / "smoke" / f"{config}.yaml")
        args = [cfg, "--runs-dir", str(root)] + [x for o in OVERRIDES for x in ("--set", o)]
        subprocess.run(_cmd(*args), env=_env(smoke_model_dir), check=True, capture_output=True, cwd=ROOT)
        out[config] = root / f"smoke-{config.replace('_', '-')}"
    return out


def _kill_after(cmd, env, log: Path, n_rows: int, trainer: str, run_dir: Path, want_checkpoint: bool):
    """Start ``cmd``, SIGKILL it as soon as ``log`` holds ``n_rows`` rows (and, if ``want_checkpoint``, the
    trainer has written a checkpoint). Returns whether a checkpoint existed at the kill."""
    _has_checkpoint(trainer, run_dir)  # import the trainer module now, not while the run races ahead
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and p.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= n_rows:
                if not want_checkpoint or _has_checkpoint(trainer, run_dir):
                    break
            time.sleep(0.02)
        assert p.poll() is None, "the run ended before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    return _has_checkpoint(trainer, run_dir)


@pytest.mark.parametrize("config", ["ppo_dynamic", "dapo_dynamic"])
@pytest.mark.parametrize("when", ["before_checkpoint", "after_checkpoint"])
def test_kill9_then_resume_gives_the_uninterrupted_logs(tmp_path, smoke_model_dir, uninterrupted, config, when):
    from study import experiments as ex
    from study.config import load_config

    trainer = config.split("_")[0]
    name = f"smoke-{config.replace('_', '-')}"
    run_dir = tmp_path / name
    cfg_path = ROOT / "configs" / "smoke" / f"{config}.yaml"
    args = [str(cfg_path), "--runs-dir", str(tmp_path)] + [x for o in OVERRIDES for x in ("--set", o)]
    env = _env(smoke_model_dir)
    if when == "before_checkpoint":  # step 1 logged, the first checkpoint (step 2) not yet written
        had = _kill_after(_cmd(*args), env, run_dir / "metrics.jsonl", 1, trainer, run_dir, want_checkpoint=False)
        assert not had, "killed too late: a checkpoint already existed"
        # `study train --resume` with no checkpoint: the logs are cut to nothing and the run restarts
        subprocess.run(_cmd("--resume", str(run_dir)), env=env, check=True, capture_output=True, cwd=ROOT)
    else:  # step 3 logged after the checkpoint of step 2: steps 3+ must be redone, not appended
        had = _kill_after(_cmd(*args), env, run_dir / "metrics.jsonl", EVERY + 1, trainer, run_dir,
                          want_checkpoint=True)
        assert had and not (run_dir / "DONE").exists()
        assert len(_rows(run_dir / "metrics.jsonl")) > EVERY  # rows past the checkpoint, to be redone
        # `study reproduce`'s run cache: same run key, no DONE, the trainer's own checkpoint -> resumed
        cfg = load_config(cfg_path, OVERRIDES)
        spec = ex.RunSpec("resume", "x", cfg_path, cfg.seed, cfg)
        monkey_env = {"STUDY_ARTIFACTS": env["STUDY_ARTIFACTS"]}
        old = {k: os.environ.get(k) for k in monkey_env}
        os.environ.update(monkey_env)
        try:
            assert ex._resumable(spec, tmp_path)
            assert ex.train_specs([spec], tmp_path, progress=False) == [spec]
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        prov = json.loads((run_dir / "provenance.json").read_text())
        assert len(prov.get("resumed", [])) == 1
    assert (run_dir / "DONE").exists()
    want = uninterrupted[config]
    assert all(r["kept_frac"] > 0 and r["dynamic_ce"] > 0 for r in _rows(want / "metrics.jsonl"))  # L_DC acts
    _same(_rows(run_dir / "metrics.jsonl"), _rows(want / "metrics.jsonl"))
    got_s, want_s = _rows(run_dir / "samples.jsonl"), _rows(want / "samples.jsonl")
    assert [(r["step"], r["task_id"], r["response"]) for r in got_s] == \
        [(r["step"], r["task_id"], r["response"]) for r in want_s]


def test_same_config_and_seed_give_identical_metrics(tmp_path, smoke_model_dir):
    """Determinism on CPU: two runs of one config and seed write the same metrics, timings aside."""
    cfg = str(ROOT / "configs" / "smoke" / "dapo_dynamic.yaml")
    rows = []
    for d in ("a", "b"):
        subprocess.run(_cmd(cfg, "--runs-dir", str(tmp_path / d), "--set", "steps=3"), env=_env(smoke_model_dir),
                       check=True, capture_output=True, cwd=ROOT)
        rows.append(_rows(tmp_path / d / "smoke-dapo-dynamic" / "metrics.jsonl"))
    assert len(rows[0]) == 3 and rows[0] == rows[1]


def test_a_fresh_run_starts_from_an_empty_folder(tmp_path):
    """Retraining a run never mixes in what an earlier run of the same name left (eval/, checkpoints, logs);
    a folder that is not a run folder is refused, not emptied."""
    from study.errors import UserError
    from study.runs import RunLog

    d = tmp_path / "r"
    (d / "eval" / "mini").mkdir(parents=True)
    (d / "eval" / "mini" / "summary.json").write_text("{}")
    (d / "checkpoints" / "step-3").mkdir(parents=True)
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
    RunLog(d, {"name": "r"}, 0, "h")
    assert sorted(p.name for p in d.iterdir()) == ["checkpoints", "config.yaml", "provenance.json"]
    assert not any((d / "checkpoints").iterdir())
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a run folder"):
        RunLog(other, {"name": "x"}, 0, "h")
    assert (other / "thesis.tex").read_text() == "precious"
