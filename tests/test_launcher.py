"""``study reproduce --launcher`` / a profile's ``launcher:``: each training run is its own launch
(``<launcher> -m study train <resolved config>``), and the run it writes is the cached run of that spec (same run
key), so the notebooks find it. Executed: a 1-process launcher (the interpreter itself) and the 2-process
``accelerate launch --config_file configs/accelerate/cpu2.yaml`` on a one-step smoke PPO run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from study import experiments as ex
from study import paths
from study.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _profile(tmp_path: Path, launcher: str | None) -> Path:
    p = tmp_path / "launch.yaml"
    text = ("profile: launch\ngroups:\n  g:\n    configs: {static: %s}\n    seeds: [3]\n    overrides: [steps=1]\n"
            % (ROOT / "configs/smoke/ppo_static.yaml"))
    if launcher:
        text += f"launcher: {json.dumps(launcher)}\n"
    p.write_text(text)
    return p


@pytest.mark.parametrize("processes", [1, 2])
def test_a_launched_run_is_the_cached_run_of_its_spec(tmp_path, monkeypatch, processes):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(paths, "_ROOT", ROOT.resolve())  # restored afterwards (a set root outlives the test)
    launcher = sys.executable if processes == 1 else \
        f"{sys.executable} -m accelerate.commands.launch --config_file {ROOT / 'configs/accelerate/cpu2.yaml'}"
    prof = ex.load_profile(_profile(tmp_path, launcher))
    assert prof.launcher == launcher
    specs = ex.group_specs("g", prof)
    runs = tmp_path / "runs"
    trained = ex.train_specs(specs, runs, progress=False, launcher=prof.launcher)
    assert [s.name for s in trained] == ["smoke-ppo-static-s3"]
    run = ex.cached_run(specs[0], runs)
    assert run is not None  # DONE, and the run key the notebooks look for
    assert json.loads((run / "provenance.json").read_text())["world_size"] == processes
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert ex.train_specs(specs, runs, progress=False, launcher=prof.launcher) == []  # cached: nothing launched


def test_launch_commands_per_trainer_and_bad_launchers(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "_ROOT", ROOT.resolve())
    prof = ex.load_profile(_profile(tmp_path, None))
    spec = ex.group_specs("g", prof)[0]
    cmd = ex.launch_command({"ppo": "accelerate launch --config_file configs/accelerate/ddp.yaml"}, spec,
                            tmp_path, resume=False)
    assert cmd[:4] == ["accelerate", "launch", "--config_file", "configs/accelerate/ddp.yaml"]
    assert cmd[4:6] == ["-m", "study"] and cmd[-2:] == ["--runs-dir", str(tmp_path)]
    from study.config import load_config

    assert load_config(cmd[-3]).hash() == spec.cfg.hash()  # the written config is the spec's
    assert ex.launch_command("torchrun --nproc_per_node 2", spec, tmp_path, resume=True)[-2:] == \
        ["--resume", str(spec.run_dir(tmp_path))]
    with pytest.raises(UserError, match="no command for trainer 'ppo'"):
        ex.launch_command({"dapo": "accelerate launch"}, spec, tmp_path, resume=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\ngroups: {}\nlauncher: [1, 2]\n")
    with pytest.raises(UserError, match="launcher must be"):
        ex.load_profile(bad)
    with pytest.raises(UserError, match="through the launcher failed"):
        ex.train_specs([spec], tmp_path / "runs", progress=False, launcher=f"{sys.executable} -c 'raise SystemExit(3)'")


def test_the_readme_gpu_commands_are_the_tested_ones():
    """Every row of the README's launch table is ``accelerate launch --config_file configs/accelerate/X.yaml -m study
    train CONFIG`` (the form tests/test_multiprocess.py runs with cpu2.yaml), for an existing config of that trainer,
    with PPO under ZeRO-3 (what the memory estimate says the 3B actor + critic need; run in test_multiprocess.py)."""
    import re

    import yaml

    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(configs/paper/[^`]+)` \| (DAPO|PPO) \| `([^`]+)` \|$", text, flags=re.M)
    assert len(rows) == len(list((ROOT / "configs/paper").glob("*.yaml"))) == 8
    for config, trainer, cmd in rows:
        m = re.fullmatch(r"accelerate launch --config_file (configs/accelerate/\w+\.yaml) -m study train (\S+)", cmd)
        assert m, cmd
        assert (ROOT / m.group(1)).is_file() and m.group(2) == config
        assert yaml.safe_load((ROOT / config).read_text())["trainer"] == trainer.lower()
        if trainer == "PPO":
            assert m.group(1) == "configs/accelerate/zero3.yaml"
    prof = ex.load_profile(ROOT / "study/profiles/paper.yaml")
    assert prof.launcher == {"dapo": "accelerate launch --config_file configs/accelerate/zero2.yaml",
                             "ppo": "accelerate launch --config_file configs/accelerate/zero3.yaml"}
