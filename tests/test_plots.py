"""Plots, tables and saved outputs on synthetic run folders (no training)."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from fixtures.synthetic import write_synthetic_profile
from study import experiments as ex
from study import explore, outputs, plots, stats, tables
from study.errors import UserError


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    profile = write_synthetic_profile(root, seeds=(0, 1, 2), steps=12)
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
        "fig4": plots.fig_training_dynamics(df, smooth=3, diffs=[("dynamic", "static")]),
        "fig7": plots.fig_lambda(lam),
        "fig6": plots.token_heatmap(explore.pick_sample(samples, label="dynamic")),
    }
    for name, fig in figs.items():
        outputs.save_figure(fig, name, tmp_path / "figs")
        png, pdf = tmp_path / "figs" / f"{name}.png", tmp_path / "figs" / f"{name}.pdf"
        assert _is_png(png) and png.stat().st_size > 1000 and _is_pdf(pdf)
        assert not plt.fignum_exists(fig.number)  # closed: the inline backend will not show it twice
    assert not list((tmp_path / "figs").glob(".*"))  # no temp files left behind


def test_kl_band_respects_its_bound_and_the_difference_row(syn):
    """KL ≥ 0: with seeds whose KL is near 0 the t-band of the mean would dip below 0; the drawn band does not."""
    rows = [{"label": "static", "seed": s, "step": t, "kl": v, "reward_mean": 0.0}
            for s, ys in enumerate([[0.0, 0.01, 0.0], [0.0, 0.0, 0.4], [0.0, 0.02, 0.01]]) for t, v in enumerate(ys, 1)]
    df = pd.DataFrame(rows)
    assert (stats.aggregate(df, "kl", band="t")["low"].dropna() < 0).any()
    ax = plots.plot_curves(df, "kl")
    lows = np.concatenate([p.get_paths()[0].vertices[:, 1] for p in ax.collections])
    assert lows.min() >= 0.0
    plt.close(ax.figure)
    profile, runs = syn
    fig = plots.fig_panels(ex.load_group("fig5_dapo", profile, runs, train_missing=False), ["reward_mean"],
                           diffs=[("dynamic", "dapo")])
    diff_ax = fig.axes[1]
    assert [l.get_label() for l in diff_ax.lines][0] == "dynamic − dapo (n=3)"
    plt.close(fig)


def test_save_table_writes_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"model": ["a", "b|c"], "pass@1": [0.5, float("nan")]})
    outputs.save_table(df, "t1", tmp_path)
    csv, md = tmp_path / "tables" / "t1.csv", tmp_path / "tables" / "t1.md"
    assert pd.read_csv(csv)["model"].tolist() == ["a", "b|c"]
    lines = md.read_text().splitlines()
    assert lines[0] == "| model | pass@1 |" and lines[1] == "|---|---|"
    assert lines[3] == "| b\\|c |  |"


def test_aggregate_over_seeds(syn):
    profile, runs = syn
    df = ex.load_group("fig5_dapo", profile, runs, train_missing=False)
    agg = stats.aggregate(df, "reward_mean")
    row = agg[(agg["label"] == "dynamic") & (agg["step"] == 5)].iloc[0]
    vals = df[(df["label"] == "dynamic") & (df["step"] == 5)]["reward_mean"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(vals.mean()) and row["low"] < row["mean"] < row["high"]
    assert len(stats.final_values(df, "reward_mean", last_k=3)) == 9


def test_ce_after_first_change_and_pick_sample(syn):
    profile, runs = syn
    samples = ex.load_samples("fig5_dapo", profile, runs, train_missing=False)
    v = stats.ce_after_first_change(samples, label="dynamic")
    assert v.n == 3 and v.estimate > 1.0 and stats.classify(v, ">") == "reproduced"  # synthetic CE: ~0.02 then ~2
    row = explore.pick_sample(samples, label="dynamic", seed=1, step=4)
    assert (row["seed"], row["step"], bool(row["kept"])) == (1, 4, True)
    assert explore.pick_sample(samples, label="dynamic")["step"] == 12  # default: the latest step
    with pytest.raises(ValueError, match="no refined sample"):
        explore.pick_sample(samples, label="dynamic", step=99)
    with pytest.raises(ValueError, match="3 values for 4"):
        plots.token_heatmap({"response_tokens": ["a"], "refined_tokens": ["a", "b", "c", "d"],
                             "refined_token_ce": [0.1, 0.2, 0.3]})


def test_relative_gain_table():
    ev = pd.DataFrame({"label": ["dapo", "dapo", "dynamic", "dynamic"], "seed": [0, 1, 0, 1],
                       "benchmark": ["mini"] * 4, "pass@1": [0.30, 0.34, 0.40, 0.44]})
    base = pd.DataFrame({"benchmark": ["mini"], "pass@1": [0.25]})
    t = tables.relative_gain_table(ev, base)
    assert t["model"].tolist() == ["initial model", "dapo", "dynamic"]
    assert t.loc[0, "mini"] == "25.0" and t.loc[2, "mini"] == "42.0 (+68.0%) n=2"


def test_qualitative_table_orders_by_gain():
    s = pd.DataFrame([
        {"label": "dynamic", "run": "r", "step": 1, "task_id": "p1", "response": "a\nb", "refined": "a\nc",
         "reward": -0.3, "refined_reward": 1.0},
        {"label": "dynamic", "run": "r", "step": 2, "task_id": "p2", "response": "x", "refined": "x",
         "reward": 1.0, "refined_reward": 1.0},
        {"label": "dynamic", "run": "r", "step": 3, "task_id": "p3", "response": "x", "refined": None,
         "reward": 1.0, "refined_reward": None},
    ])
    t = tables.qualitative_table(s, k=4, label="dynamic")
    assert t["task_id"].tolist() == ["p1", "p2"]
    assert "-b" in t.loc[0, "diff"] and "+c" in t.loc[0, "diff"] and t.loc[1, "diff"] == "(identical)"
    assert tables.similarity("abc", "abc") == 1.0


def test_improved_share_comes_from_all_refinements_not_the_logged_rows(syn, capsys):
    """Issue 18 (7): samples.jsonl logs kept pairs first, so its share of r(y') > r(y) is not the refiner's. The
    share is Σ n_improved / Σ n_refined of the per-step metrics."""
    profile, runs = syn
    df = ex.load_group("fig5_dapo", profile, runs, train_missing=False)
    samples = ex.load_samples("fig5_dapo", profile, runs, train_missing=False)
    dyn = df[df["label"].astype(str) == "dynamic"]
    want = dyn.groupby("seed").apply(lambda g: g["n_improved"].sum() / g["n_refined"].sum()).mean()
    logged = samples[samples["label"].astype(str) == "dynamic"]
    assert abs((logged["refined_reward"] > logged["reward"]).mean() - want) > 0.02  # the two differ here
    tables.note_refinements(df, samples, "dynamic")
    assert f"share of all refinements with r(y') > r(y) = {want:.3f}" in capsys.readouterr().out
    tables.note_refinements(df.drop(columns=["n_improved"]), samples, "dynamic")  # an old run: no counts
    assert "n/a (column 'n_improved' not logged" in capsys.readouterr().out


def test_outputs_log_for_the_manifest(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(outputs.OUTPUT_LOG_ENV, str(log))
    outputs.note("x = 1", x=1)
    outputs.save_table(pd.DataFrame({"a": [1]}), "t", tmp_path)
    entries = [json.loads(l) for l in log.read_text().splitlines()]
    assert entries[0] == {"kind": "verdict", "text": "x = 1", "numbers": {"x": 1}}
    assert entries[1]["kind"] == "table" and entries[1]["name"] == "t"


def test_group_specs_labels_and_cache(syn, tmp_path):
    profile, runs = syn
    specs = ex.group_specs("fig7_lambda", profile)
    assert [s.label for s in specs] == ["0.05", "0.5"] and specs[0].name == "syn-dapo_dynamic_lambda_0.05-s0"
    assert [s.seed for s in ex.group_specs("fig5_dapo", profile, seeds=[1])] == [1, 1, 1]
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
    assert cost["label"].tolist() == ["dapo", "dynamic", "dapo_kl"]
    assert cost["time_step"].tolist() == pytest.approx([12.0, 18.0, 12.0])  # synthetic: 1.0 s/step, 1.5 s/step
    assert cost["ratio_to_dapo"].tolist() == pytest.approx([1.0, 1.5, 1.0])


def test_heatmap_tokens_show_control_characters_as_escapes():
    """A control character has no glyph: drawn as-is, matplotlib warns on stderr (seen in the smoke notebook 04)."""
    from study.plots import _display

    assert _display("a\x05b") == "a\\x05b" and _display("ĠxĊ") == " x\n" and _display("é") == "é"
