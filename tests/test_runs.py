import json

from study.runs import METRIC_COLUMNS, RunLog, read_metrics


def test_runlog_records_provenance_and_truncates_on_resume(tmp_path):
    run = RunLog(tmp_path / "r", {"name": "r"}, seed=3, config_hash="abc")
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert prov["seed"] == 3 and prov["config_hash"] == "abc" and prov["packages"]["torch"]
    for s in range(1, 6):
        run.log_metrics({"step": s, "reward_mean": float(s), "kl": float("nan")})
    run.log_samples([{"step": 5, "response": "x"}])
    with open(run.metrics_path, "a") as f:  # a half-written line, as after kill -9
        f.write('{"step": 6, "rew')
    resumed = RunLog(tmp_path / "r", {"name": "r"}, seed=3, config_hash="abc", resume=True)
    resumed.truncate_to_step(3)
    df = read_metrics(tmp_path / "r")
    assert list(df["step"]) == [1, 2, 3]
    assert df["kl"].isna().all()
    assert (tmp_path / "r" / "samples.jsonl").read_text() == ""
    assert "resumed" in json.loads((tmp_path / "r" / "provenance.json").read_text())


def test_metric_columns_cover_the_papers_figures():
    for col in ["reward_mean", "kl", "dynamic_ce", "improvement_ratio", "group_reward_std"]:
        assert col in METRIC_COLUMNS
