"""``study train`` refuses a PPO config under FSDP and a DAPO config under DeepSpeed ZeRO-3 (study/cli.py): the PPO
trainer prepares its actor-critic for DDP or DeepSpeed only; TRL's fused LM head on DAPO's frozen reference fails
under ZeRO-3. Executed: the CLI in a subprocess with the variable ``accelerate launch`` sets for an FSDP
config. PPO under DDP and DeepSpeed ZeRO-2/3 runs: tests/test_multiprocess.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP",
                        "ACCELERATE_DEEPSPEED_ZERO_STAGE")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _study(*args, env):
    return subprocess.run([sys.executable, "-m", "study", "--root", str(ROOT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("config", ["configs/smoke/ppo_dynamic.yaml", "configs/smoke/ppo_static.yaml"])
def test_ppo_under_fsdp_stops_before_writing(tmp_path, config):
    runs = tmp_path / "runs"
    p = _study("train", config, "--runs-dir", str(runs),
               env=_env(ACCELERATE_USE_FSDP="true", WORLD_SIZE="2", RANK="0"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study train: error: the PPO trainer runs under DDP or DeepSpeed, "
                                                   "not FSDP")
    assert "2 processes" in lines[0]
    assert p.stdout == ""  # not even the plan
    assert not runs.exists()


def test_ppo_resume_under_fsdp_is_refused_too(tmp_path):
    run = tmp_path / "runs" / "smoke-ppo-dynamic"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text((ROOT / "configs/smoke/ppo_dynamic.yaml").read_text())
    before = sorted(run.iterdir())
    p = _study("train", "--resume", str(run), env=_env(ACCELERATE_USE_FSDP="true"))
    assert p.returncode == 2 and "not FSDP" in p.stderr
    assert sorted(run.iterdir()) == before


def test_ppo_under_ddp_or_deepspeed_and_dapo_under_fsdp_pass_the_guard(tmp_path):
    runs = tmp_path / "runs"
    for env in (_env(WORLD_SIZE="2"), _env(ACCELERATE_USE_DEEPSPEED="true", WORLD_SIZE="2")):
        p = _study("train", "configs/smoke/ppo_dynamic.yaml", "--runs-dir", str(runs), "--dry-run", env=env)
        assert p.returncode == 0, p.stderr
    p = _study("train", "configs/smoke/dapo_dynamic.yaml", "--runs-dir", str(runs), "--dry-run",
               env=_env(ACCELERATE_USE_FSDP="true"))
    assert p.returncode == 0, p.stderr
    assert not runs.exists()


def test_world_size_reads_an_accelerate_state(monkeypatch):
    from study import cli

    for var in cli._WORLD_SIZE_ENV:
        monkeypatch.delenv(var, raising=False)
    assert cli.world_size() == 1

    class FakeState:
        _shared_state = {"initialized": True}
        num_processes = 4

        def __new__(cls):
            return cls

    fake = type(sys)("accelerate.state")
    fake.PartialState = FakeState
    monkeypatch.setitem(sys.modules, "accelerate.state", fake)
    assert cli.world_size() == 4
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    assert cli.world_size() == 8


def test_dapo_under_zero3_stops_before_writing_and_zero2_passes(tmp_path):
    runs = tmp_path / "runs"
    zero = dict(ACCELERATE_USE_DEEPSPEED="true", WORLD_SIZE="2", RANK="0")
    p = _study("train", "configs/smoke/dapo_dynamic.yaml", "--runs-dir", str(runs),
               env=_env(ACCELERATE_DEEPSPEED_ZERO_STAGE="3", **zero))
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study train: error: the DAPO trainer does not run under DeepSpeed "
                                                   "ZeRO-3") and "zero2.yaml" in lines[0]
    assert not runs.exists()
    for stage, config in (("2", "configs/smoke/dapo_dynamic.yaml"), ("3", "configs/smoke/ppo_dynamic.yaml")):
        p = _study("train", config, "--runs-dir", str(runs), "--dry-run",
                   env=_env(ACCELERATE_DEEPSPEED_ZERO_STAGE=stage, **zero))
        assert p.returncode == 0, p.stderr
