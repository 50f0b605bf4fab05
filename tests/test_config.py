import pytest
import yaml

from study.cli import main
from study.config import load_config, validate_config
from study.errors import UserError

BASE = {"name": "t", "model": "mini:smoke"}


def test_defaults_follow_table2():
    c = validate_config(BASE)
    assert c.dapo.epsilon_low == 0.2 and c.dapo.epsilon_high == 0.3
    assert c.ppo.gamma == 1.0 and c.ppo.gae_lambda == 0.95 and c.ppo.clip_range == 0.2
    assert c.optim.learning_rate == 1e-6 and c.optim.critic_learning_rate == 9e-6
    assert c.rollout.num_generations == 8


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"constraint": {"coef": -0.1}}, "constraint.coef"),
        ({"constraint": {"mode": "kl"}}, "constraint.mode"),
        ({"rollout": {"max_completion_length": 0}}, "rollout.max_completion_length"),
        ({"steps": "many"}, "steps"),
        ({"trainer": "ppo", "ppo": {"mini_batch_size": 1000}}, "mini_batch_size"),
        ({"reward": "reward_model"}, "reward_model"),
    ],
)
def test_bad_values_name_the_key(patch, needle):
    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        validate_config({**BASE, **patch})


def test_overrides_and_hash(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(BASE))
    a = load_config(p)
    b = load_config(p, ["constraint.coef=0.5", "rollout.temperature=0.7"])
    assert b.constraint.coef == 0.5 and b.rollout.temperature == 0.7
    assert a.hash() != b.hash() and a.hash() == load_config(p).hash()
    with pytest.raises(UserError, match="key=value"):
        load_config(p, ["nonsense"])


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({**BASE, "constraint": {"coef": -1}}))
    runs = tmp_path / "runs"
    rc = main(["train", str(p), "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "constraint.coef" in err[0]
    assert not runs.exists()
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2


def test_cli_missing_model_path(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "model": "./no/such/model"}))
    assert main(["train", str(p), "--dry-run"]) == 2
    assert "model: path not found" in capsys.readouterr().err


def test_a_late_field_at_its_old_behaviour_keeps_the_old_hash():
    """constraint.refine_scope came after runs were cached: ``selected`` (what those runs did) hashes as the config
    did without the field; the new default ``sampled`` is a different run."""
    import hashlib
    import json

    from study.config import load_config

    old = load_config("configs/mini/dapo_dynamic.yaml", ["constraint.refine_scope=selected"])
    d = old.model_dump(mode="json")
    for late in ("relift", "vllm", "report_to", "eval_batch_size"):  # eval_batch_size: greedy answers ignore it
        d.pop(late)
    d["constraint"].pop("refine_scope")
    d["constraint"].pop("kl_bias_correction")  # moot outside DAPO's static mode
    for late in ("refiner_copy_decoding", "refiner_draft_len"):  # mini configs set speed.gradient_checkpointing
        d["speed"].pop(late)
    assert old.hash() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert load_config("configs/mini/dapo_dynamic.yaml").hash() != old.hash()
    # where the field changes nothing (PPO, DAPO without the refiner) it is not in the hash whatever its value
    for name in ("ppo_dynamic", "dapo"):
        assert (load_config(f"configs/mini/{name}.yaml").hash()
                == load_config(f"configs/mini/{name}.yaml", ["constraint.refine_scope=selected"]).hash())
