"""``report_to``: both trainers send their metrics to TensorBoard (TRL's trackers for DAPO, an accelerate tracker for
PPO); the default sends nothing and the value is not part of the config hash."""

import json

import pytest
import torch

from study.config import validate_config
from study.runs import RunLog

from helpers import make  # (the tok fixture: conftest.py)
from test_ppo import StubRefiner, make_cfg, problems, reward_fn, tiny  # noqa: F401  (tiny: fixture)

pytest.importorskip("tensorboard")


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_report_to_is_validated_and_not_hashed():
    base = {"name": "x", "model": "m"}
    assert validate_config(base).report_to == "none"
    assert validate_config({**base, "report_to": "tensorboard"}).hash() == validate_config(base).hash()
    assert validate_config({**base, "report_to": ["tensorboard", "wandb"]}).report_to == ["tensorboard", "wandb"]
    with pytest.raises(Exception, match="report_to"):
        validate_config({**base, "report_to": "mlflow"})


def test_ppo_metrics_reach_tensorboard(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.train import Components
    from study.trainers.ppo import train_ppo

    torch.set_num_threads(1)
    for report_to in ("none", "tensorboard"):
        cfg = make_cfg("dynamic", steps=2, report_to=report_to)
        tok = AutoTokenizer.from_pretrained(tiny)
        policy = AutoModelForCausalLM.from_pretrained(tiny)
        reference = AutoModelForCausalLM.from_pretrained(tiny).eval().requires_grad_(False)
        comps = Components(policy, reference, tok, problems(), reward_fn, 1.0, StubRefiner(tok), "cpu")
        run = RunLog(tmp_path / report_to, cfg.model_dump(mode="json"), 0, cfg.hash())
        train_ppo(cfg, comps, run)
    assert not (tmp_path / "none" / "tracking").exists()
    logged = [json.loads(x) for x in (tmp_path / "tensorboard" / "metrics.jsonl").read_text().splitlines()]
    got = _scalars(tmp_path / "tensorboard" / "tracking")
    assert [s for s, _ in got["reward_mean"]] == [1, 2]
    assert [v for _, v in got["reward_mean"]] == pytest.approx([r["reward_mean"] for r in logged], rel=1e-6)
    assert "improvement_ratio" in got and "kl" in got


def test_dapo_metrics_reach_tensorboard(tok, tmp_path):
    from study.trainers.dapo import train_dapo

    torch.set_num_threads(1)
    cfg, comp = make(tok, "dynamic", steps=2, report_to="tensorboard")
    run = RunLog(tmp_path / "dapo", cfg.model_dump(mode="json"), 0, cfg.hash())
    train_dapo(cfg, comp, run)
    got = _scalars(tmp_path / "dapo")
    logged = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert any(t.startswith("train/") for t in got)  # TRL's own metrics, as TRL users know them
    assert [v for _, v in got["train/study/improvement_ratio"]] == pytest.approx(
        [r["improvement_ratio"] for r in logged], rel=1e-6)
