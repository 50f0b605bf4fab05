"""Plots, tables and verdict numbers on synthetic run folders (no training)."""

import json
import math

import pandas as pd
import pytest

from study import experiments as ex
from study import plots
from study.errors import UserError


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    profile = ex.write_synthetic_profile(root, seeds=(0, 1, 2), steps=12)
    return profile, root / "runs"


def _is_png(p):
    return p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_pdf(p):
    return p.read_bytes()[:5] == b"%PDF-"


def test_figures_write_png_and_pdf(syn, tmp_path):
    profile, runs = syn
    df = ex.load_group("fig4_ppo", profile, runs, train_missing=False)
    assert set(df["label"].astype(str)) == {"none", "static", "dynamic"}
    assert set(df["seed"]) == {0, 1, 2} and df.groupby("run").size().eq(12).all()
    lam = ex.load_group("fig7_lambda", profile, runs, train_missing=False)
    samples = ex.load_samples("fig5_dapo", profile, runs, train_missing=False)
    figs = {
        "fig4": plots.fig_training_dynamics(df, smooth=3),
        "fig7": plots.fig_lambda(lam),
        "fig6": plots.token_heatmap(plots.pick_sample(samples, label="dynamic")),
    }
    for name, fig in figs.items():
        png, pdf = plots.save_figure(fig, name, tmp_path / "figs")
        assert png == tmp_path / "figs" / f"{name}.png" and _is_png(png) and png.stat().st_size > 1000
        assert pdf.suffix == ".pdf" and _is_pdf(pdf)
    assert not list((tmp_path / "figs").glob(".*"))  # no temp files left behind


def test_save_table_writes_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"model": ["a", "b|c"], "pass@1": [0.5, float("nan")]})
    csv, md = plots.save_table(df, "t1", tmp_path)
    assert csv == tmp_path / "tables" / "t1.csv"
    assert pd.read_csv(csv)["model"].tolist() == ["a", "b|c"]
    lines = md.read_text().splitlines()
    assert lines[0] == "| model | pass@1 |" and lines[1] == "|---|---|"
    assert lines[3] == "| b\\|c |  |"


def test_t_and_welch_intervals_match_hand_computation():
    m, lo, hi = ex.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    d, lo, hi = plots.welch_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # var_b = 0 -> df = 2
    assert d == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert math.isnan(plots.welch_interval([1.0], [0.0, 1.0])[1])  # one seed: no interval
    m, lo, hi = ex.t_interval([5.0])
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)


def _frame(values: dict) -> pd.DataFrame:
    """label -> list (per seed) of per-step lists."""
    rows = []
    for label, per_seed in values.items():
        for seed, ys in enumerate(per_seed):
            rows += [{"label": label, "seed": seed, "step": t + 1, "reward_mean": y} for t, y in enumerate(ys)]
    return pd.DataFrame(rows)


def test_compare_final_on_a_known_example():
    # last 2 steps of each seed: a -> 1, 2, 3; b -> 0, 0, 0
    df = _frame({"a": [[9, 1, 1], [9, 2, 2], [9, 3, 3]], "b": [[5, 0, 0], [5, 0, 0], [5, 0, 0]]})
    v = plots.compare_final(df, "reward_mean", "a", "b", last_k=2)
    assert (v.diff, v.n_a, v.n_b, v.mean_a, v.mean_b) == (2.0, 3, 3, 2.0, 0.0)
    assert v.low == pytest.approx(2 - 2.4841, abs=1e-3) and v.high == pytest.approx(2 + 2.4841, abs=1e-3)
    assert v.outcome(">") == "inconclusive"
    first = plots.compare_final(df, "reward_mean", "a", "b", last_k=1, where="first")
    assert first.diff == 4.0 and first.low == first.high == 4.0 and first.outcome(">") == "reproduced"
    assert first.outcome("<") == "contradicted"
    line = plots.verdict_line("final reward a − b", v, record=False)
    assert line == "final reward a − b = +2.000 [-0.484, +4.484] over 3 seeds (paper: > 0): claim inconclusive"
    with pytest.raises(ValueError, match="no label 'c'"):
        plots.compare_final(df, "reward_mean", "a", "c")
    # a metric never logged (e.g. CE in a short run with nothing kept): no numbers, inconclusive, no crash
    df["kl"] = float("nan")
    for v in (plots.compare_final(df, "kl", "a", "b"), plots.slope(df, "kl", "a"),
              plots.compare_slopes(df, "kl", "a", "b"), plots.drop_from_peak(df, "kl", "a")):
        assert v.outcome(">") == "inconclusive" and v.n == 0
    assert plots.verdict_line("kl", plots.slope(df, "kl", "a"), record=False) == \
        "kl = n/a (no data) over 0 seeds (paper: > 0): claim inconclusive"


def test_slopes_and_drop_from_peak():
    df = _frame({"up": [[0, 1, 2, 3], [0, 1.1, 2, 3.1]], "flat": [[1, 1, 1, 1], [2, 2, 2, 2]],
                 "collapse": [[0, 1, 2, -1], [0, 1, 2.2, -1]]})
    up = plots.slope(df, "reward_mean", "up")
    assert up.diff == pytest.approx(100 * 1.01, rel=0.02) and up.n == 2
    cs = plots.compare_slopes(df, "reward_mean", "up", "flat")
    assert cs.mean_b == pytest.approx(0.0, abs=1e-9) and cs.diff == pytest.approx(up.diff)
    drop = plots.drop_from_peak(df, "reward_mean", "collapse", last_k=1, smooth=1)
    assert drop.diff == pytest.approx(-3.1) and drop.outcome("<") == "reproduced"


def test_aggregate_over_seeds(syn):
    profile, runs = syn
    df = ex.load_group("fig5_dapo", profile, runs, train_missing=False)
    agg = ex.aggregate(df, "reward_mean")
    row = agg[(agg["label"] == "dynamic") & (agg["step"] == 5)].iloc[0]
    vals = df[(df["label"] == "dynamic") & (df["step"] == 5)]["reward_mean"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(vals.mean()) and row["low"] < row["mean"] < row["high"]
    fin = ex.final_values(df, "reward_mean", last_k=3)
    assert len(fin) == 6


def test_token_ce_split_and_divergence():
    assert plots.first_divergence(["a", "b", "c"], ["a", "b", "x", "y"]) == 2
    assert plots.first_divergence(["a"], ["a"]) == 1
    s = {"response_tokens": ["a", "b", "c"], "refined_tokens": ["a", "b", "x", "y"],
         "refined_token_ce": [0.1, 0.3, 2.0, 4.0], "reward": -0.3, "refined_reward": 1.0}
    pre, post, k = plots.ce_split(s)
    assert (pre, post, k) == (pytest.approx(0.2), pytest.approx(3.0), 2)
    with pytest.raises(ValueError, match="3 values for 4"):
        plots.token_heatmap({**s, "refined_token_ce": [0.1, 0.2, 0.3]})


def test_ce_prefix_vs_suffix_and_pick_sample(syn):
    profile, runs = syn
    samples = ex.load_samples("fig5_dapo", profile, runs, train_missing=False)
    v = plots.ce_prefix_vs_suffix(samples, label="dynamic")
    assert v.n == 3 and v.diff > 1.0 and v.outcome(">") == "reproduced"  # synthetic CE: ~0.02 then ~2
    row = plots.pick_sample(samples, label="dynamic", seed=1, step=4)
    assert (row["seed"], row["step"], bool(row["kept"])) == (1, 4, True)
    assert plots.pick_sample(samples, label="dynamic")["step"] == 12  # default: the latest step
    with pytest.raises(ValueError, match="no refined sample"):
        plots.pick_sample(samples, label="dynamic", step=99)


def test_relative_gain_table_and_eval_verdict():
    ev = pd.DataFrame({"label": ["dapo", "dapo", "dynamic", "dynamic"], "seed": [0, 1, 0, 1],
                       "benchmark": ["mini"] * 4, "pass@1": [0.30, 0.34, 0.40, 0.44]})
    base = pd.DataFrame({"benchmark": ["mini"], "pass@1": [0.25]})
    t = plots.relative_gain_table(ev, base)
    assert t["model"].tolist() == ["initial model", "dapo", "dynamic"]
    assert t.loc[0, "mini"] == "25.0" and t.loc[2, "mini"] == "42.0 (+68.0%) n=2"
    v = plots.compare_eval(ev, "dynamic", "dapo")
    half = 4.302652729911275 * math.sqrt(8.0 / 2 + 8.0 / 2)  # Welch: var 8 per side, n 2, df 2
    assert v.diff == pytest.approx(10.0) and (v.low, v.high) == (pytest.approx(10 - half), pytest.approx(10 + half))


def test_qualitative_table_orders_by_gain():
    s = pd.DataFrame([
        {"label": "dynamic", "run": "r", "step": 1, "task_id": "p1", "response": "a\nb", "refined": "a\nc",
         "reward": -0.3, "refined_reward": 1.0},
        {"label": "dynamic", "run": "r", "step": 2, "task_id": "p2", "response": "x", "refined": "x",
         "reward": 1.0, "refined_reward": 1.0},
        {"label": "dynamic", "run": "r", "step": 3, "task_id": "p3", "response": "x", "refined": None,
         "reward": 1.0, "refined_reward": None},
    ])
    t = plots.qualitative_table(s, k=4, label="dynamic")
    assert t["task_id"].tolist() == ["p1", "p2"]
    assert "-b" in t.loc[0, "diff"] and "+c" in t.loc[0, "diff"] and t.loc[1, "diff"] == "(identical)"
    assert plots.similarity("abc", "abc") == 1.0


def test_record_verdict_logs_for_the_manifest(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(plots.OUTPUT_LOG_ENV, str(log))
    plots.record_verdict("x = 1", x=1)
    plots.save_table(pd.DataFrame({"a": [1]}), "t", tmp_path)
    entries = [json.loads(l) for l in log.read_text().splitlines()]
    assert entries[0] == {"kind": "verdict", "text": "x = 1", "numbers": {"x": 1}}
    assert entries[1]["kind"] == "table" and entries[1]["name"] == "t"


def test_group_specs_labels_and_cache(syn, tmp_path):
    profile, runs = syn
    specs = ex.group_specs("fig7_lambda", profile)
    assert [s.label for s in specs] == ["0.05", "0.5"] and specs[0].name == "syn-dapo_dynamic_lambda_0.05-s0"
    assert [s.seed for s in ex.group_specs("fig5_dapo", profile, seeds=[1])] == [1, 1]
    spec = ex.group_specs("fig5_dapo", profile)[0]
    assert ex.cached_run(spec, runs) == runs / spec.name
    prov = runs / spec.name / "provenance.json"
    saved = prov.read_text()
    prov.write_text(json.dumps({**json.loads(saved), "run_key": "stale"}))  # e.g. trained by other code
    try:
        assert ex.cached_run(spec, runs) is None
        with pytest.raises(UserError, match="missing or stale.*syn-dapo-s0"):
            ex.load_group("fig5_dapo", profile, runs, train_missing=False)
    finally:
        prov.write_text(saved)
    with pytest.raises(UserError, match="no experiment group 'nope'"):
        ex.group_specs("nope", profile)
    with pytest.raises(UserError, match="unknown profile"):
        ex.load_profile("no-such-profile")


def test_tables_from_configs_and_runs(syn):
    profile, runs = syn
    t2 = ex.hyperparameter_table("fig4_ppo", profile)
    row = t2[t2["hyperparameter"] == "constraint.mode"].iloc[0]
    assert (row["none"], row["static"], row["dynamic"]) == ("none", "static", "dynamic")
    assert t2[t2["hyperparameter"] == "ppo.gae_lambda"]["paper (APPS)"].iloc[0] == "0.95"
    cost, per_run = ex.cost_table("fig5_dapo", profile, runs, train_missing=False)
    assert cost["label"].tolist() == ["dapo", "dynamic"]
    assert cost["time_step"].tolist() == pytest.approx([12.0, 18.0])  # synthetic: 1.0 s/step and 1.5 s/step
    assert cost["ratio_to_dapo"].tolist() == pytest.approx([1.0, 1.5])
