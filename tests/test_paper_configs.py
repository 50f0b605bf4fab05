"""Every shipped config validates, and every paper profile passes `study train --dry-run` (issue 6)."""

from pathlib import Path

import pytest

from study.cli import main
from study.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
ALL = sorted((ROOT / "configs").glob("*/*.yaml"))
TRAIN_CONFIGS = [p for p in ALL if p.parent.name in {"mini", "smoke", "paper", "smollm"}]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.name


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_profile_dry_run(path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # hub ids are fine on a server that can download
    data = FIXTURES / ("apps-mini.jsonl" if "apps" in path.stem else "prompt-collection-mini.jsonl")
    rc = main(["train", str(path), "--dry-run", "--set", f"data.path={data}"])
    out = capsys.readouterr().out
    assert rc == 0
    cfg = load_config(path)
    assert f"runs/{cfg.name}" in out and f"constraint {cfg.constraint.mode}" in out


def test_dry_run_reports_missing_data_and_offline_hub_ids(capsys, monkeypatch):
    path = ROOT / "configs" / "paper" / "apps_dynamic.yaml"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["train", str(path), "--dry-run"]) == 2  # data/apps/train.jsonl is not shipped
    assert "data.path: not found" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["train", str(path), "--dry-run", "--set", f"data.path={FIXTURES / 'apps-mini.jsonl'}"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
