"""The verdict table: every claim, Holm over the family, 'not run' for claims without their runs."""

import json

import pytest

from study import outputs, stats, verdicts

IDS = ["dapo_learns", "dynamic_vs_dapo_pass1", "dynamic_vs_dapo_reward", "dynamic_vs_static_reward",
       "dynamic_vs_none_reward", "none_collapses", "static_kl_plateau", "ce_low_stable", "improvement_ratio_decays",
       "ce_after_first_change", "lambda_early_reward", "lambda_group_std", "lambda_final_reward", "filter_helps",
       "worse_refinements_grow", "dynamic_vs_static_sft", "dynamic_vs_relift", "refiner_vs_self", "dynamic_vs_dapo_kl"]


def _logged(tmp_path, monkeypatch, calls):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(outputs.OUTPUT_LOG_ENV, str(log))
    for claim, est in calls:
        verdicts.record(claim, est)
    return [json.loads(x) for x in log.read_text().splitlines()]


def test_record_logs_a_row_and_assemble_lists_every_claim(tmp_path, monkeypatch, capsys):
    assert set(verdicts.CLAIMS) == set(IDS)
    rows = _logged(tmp_path, monkeypatch, [
        ("dynamic_vs_dapo_reward", stats.one_sample({0: 0.30, 1: 0.32, 2: 0.29, 3: 0.31}, "final reward")),
        ("dynamic_vs_dapo_kl", stats.missing("pass@1", "no arm 'dapo_kl' in this group", not_run=True)),
        ("filter_helps", stats.one_sample({0: 0.01, 1: -0.01, 2: 0.0}, "final reward")),
    ])
    out = capsys.readouterr().out
    assert "dynamic_vs_dapo_reward: final reward = +0.305" in out and out.count("\n") == 3
    assert rows[0]["kind"] == "claim" and rows[0]["n"] == 4 and rows[0]["mde80"] > 0
    t = verdicts.assemble(rows)
    assert t["claim"].tolist() == list(verdicts.CLAIMS) and list(t.columns[:8]) == [
        "claim", "statistic", "estimate", "ci_low", "ci_high", "n", "mde80", "verdict"]
    v = dict(zip(t["claim"], t["verdict"]))
    assert v["dynamic_vs_dapo_reward"] == "reproduced"
    assert v["dynamic_vs_dapo_kl"] == "not run" and v["dapo_learns"] == "not run"  # never recorded
    assert v["filter_helps"].startswith("no effect larger than 0.0")
    assert (t["n"] >= 0).all() and t["mde80"].notna().sum() == 2


def test_holm_downgrades_a_verdict_that_does_not_survive_the_family(tmp_path, monkeypatch):
    weak = stats.one_sample({0: 0.10, 1: 0.30, 2: 0.20, 3: 0.05, 4: 0.25}, "x")  # p ≈ 0.02: CI excludes 0
    strong = stats.one_sample({0: 1.0, 1: 1.01, 2: 0.99, 3: 1.0, 4: 1.02}, "x")
    assert weak.ci_low > 0 and 0.01 < weak.p < 0.05
    rows = _logged(tmp_path, monkeypatch, [("dynamic_vs_dapo_reward", weak), ("dynamic_vs_static_reward", strong),
                                            ("dynamic_vs_none_reward", weak), ("filter_helps", weak)])
    t = verdicts.assemble(rows).set_index("claim")
    assert t.loc["dynamic_vs_static_reward", "verdict"] == "reproduced"
    assert t.loc["dynamic_vs_dapo_reward", "verdict"] == "inconclusive"
    assert "Holm-adjusted p" in t.loc["dynamic_vs_dapo_reward", "note"]
    assert t.loc["dynamic_vs_dapo_reward", "p_holm"] == pytest.approx(stats.holm([weak.p, strong.p, weak.p, weak.p])[0])
    assert "4 verdicts with a p-value" in verdicts.summary(t.reset_index())


def test_write_makes_csv_and_markdown(tmp_path):
    table = verdicts.write(tmp_path, [])
    csv = (tmp_path / "tables" / "verdicts.csv").read_text().splitlines()
    assert csv[0].startswith("claim,statistic,estimate,ci_low,ci_high,n,mde80,verdict")
    assert len(csv) == 1 + len(IDS) and (table["verdict"] == "not run").all()
    md = (tmp_path / "tables" / "verdicts.md").read_text()
    assert md.startswith("19 claims (not run: 19)") and "| dapo_learns |" in md
