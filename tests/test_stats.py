"""study.stats against reference numbers (scipy, statsmodels, textbook values) and on known curves."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from study import stats


def test_t_interval_and_one_sample_match_scipy():
    m, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert math.isnan(stats.t_interval([5.0])[1])
    x = [0.3, -0.1, 0.5, 0.2, 0.4]
    e = stats.one_sample(x, "x")
    ci = sps.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert (e.ci_low, e.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert e.p == pytest.approx(sps.ttest_1samp(x, 0.0).pvalue) and e.n == 5 and e.sd == pytest.approx(np.std(x, ddof=1))


def test_paired_difference_is_scipy_ttest_rel_and_drops_unpaired_seeds():
    a = {0: 1.0, 1: 1.4, 2: 0.9, 3: 1.3, 9: 5.0}
    b = {0: 0.8, 1: 1.1, 2: 0.85, 3: 0.9}
    e = stats.paired(a, b, "a − b")
    common = [0, 1, 2, 3]
    ref = sps.ttest_rel([a[k] for k in common], [b[k] for k in common])
    ci = ref.confidence_interval(0.95)
    assert e.n == 4 and e.p == pytest.approx(ref.pvalue)
    assert (e.ci_low, e.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert "unpaired seeds dropped: [9]" in e.note
    # pairing removes the shared per-seed variation that an unpaired (Welch) interval keeps
    shared = {s: 10.0 * s for s in range(4)}
    pa = {s: shared[s] + 0.5 + 0.01 * s for s in range(4)}
    pb = {s: shared[s] for s in range(4)}
    paired = stats.paired(pa, pb, "")
    welch = sps.ttest_ind(list(pa.values()), list(pb.values()), equal_var=False).confidence_interval(0.95)
    assert paired.ci_low > 0 and welch.low < 0  # the same data: decided when paired, not when unpaired


def test_mde80_matches_statsmodels_and_the_textbook():
    # G*Power / statsmodels: paired t-test, α = 0.05 two-sided, power 0.8 -> d = 0.9960 at n = 10, 3.2640 at n = 3
    assert stats.mde(1.0, 10) == pytest.approx(0.99600, abs=2e-4)
    assert stats.mde(1.0, 3) == pytest.approx(3.26404, abs=2e-4)
    assert stats.mde(2.5, 10) == pytest.approx(2.5 * 0.99600, abs=1e-3)  # scales with the SD
    assert math.isnan(stats.mde(1.0, 1)) and stats.mde(0.0, 5) == 0.0
    # two seeds (df = 1): scipy's noncentral-t lower tail is NaN at nc = 8 on the way (a ValueError before);
    # statsmodels' TTestPower().solve_power(nobs=2, alpha=0.05, power=0.8) = 11.54989
    assert stats.mde(1.0, 2) == pytest.approx(11.54989, rel=1e-5)
    power = pytest.importorskip("statsmodels.stats.power")
    for n in (4, 7, 20):
        d = power.TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert stats.mde(1.0, n) == pytest.approx(d, rel=1e-5)
    # the documented shortcut (t_{1-α/2} + t_{0.8})·sd/√n is close for moderate n
    n = 20
    approx = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) / math.sqrt(n)
    assert stats.mde(1.0, n) == pytest.approx(approx, rel=0.03)


def test_holm_matches_statsmodels_and_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert stats.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(stats.holm(p)[4])
    mt = pytest.importorskip("statsmodels.stats.multitest")
    assert stats.holm(p[:4]) == pytest.approx(list(mt.multipletests(p[:4], method="holm")[1]))


def _e(lo, hi, n=3, not_run=False):
    return stats.Estimate("x", (lo + hi) / 2, lo, hi, n, not_run=not_run)


def test_classify_each_verdict():
    assert stats.classify(_e(0.1, 0.5), ">") == "reproduced"
    assert stats.classify(_e(0.1, 0.5), "<") == "contradicted"
    assert stats.classify(_e(-0.5, -0.1), "<") == "reproduced"
    assert stats.classify(_e(-0.02, 0.03), ">", margin=0.05) == "no effect larger than 0.03"
    assert stats.classify(_e(-0.2, 0.3), ">", margin=0.05) == "inconclusive"
    assert stats.classify(_e(-0.2, 0.3), ">", margin=None) == "inconclusive"
    assert stats.classify(_e(float("nan"), float("nan"), n=1), ">") == "inconclusive"
    assert stats.classify(_e(0.1, 0.2, not_run=True), ">") == "not run"
    assert stats.classify(_e(-0.01, 0.02), "=", margin=0.05) == "reproduced"
    assert stats.classify(_e(0.1, 0.3), "=", margin=0.05) == "contradicted"
    assert stats.classify(_e(0.01, 0.3), "=", margin=0.05) == "inconclusive"


def _frame(per_label_seed_curves: dict) -> pd.DataFrame:
    rows = []
    for label, per_seed in per_label_seed_curves.items():
        for seed, ys in enumerate(per_seed):
            rows += [{"label": label, "seed": seed, "step": t + 1, "reward_mean": y} for t, y in enumerate(ys)]
    return pd.DataFrame(rows)


def test_drift_is_unbiased_on_flat_noise_where_final_minus_peak_is_not():
    """Issue 18 (1): 80 steps of flat SD-0.1 noise. The drift (last window − first window after warm-up) averages
    0 and its paired interval covers 0; the old 'final minus peak of a 5-step rolling mean' averages about −0.11."""
    rng = np.random.default_rng(0)
    T, k, seeds = 80, 8, 5
    drifts, old = [], []
    for _ in range(200):
        df = _frame({"a": [rng.normal(0, 0.1, T) for _ in range(seeds)],
                     "b": [rng.normal(0, 0.1, T) for _ in range(seeds)]})
        drifts.append(stats.paired_drift(df, "reward_mean", "a", "b", k).estimate)
        for _, g in df[df["label"] == "a"].groupby("seed"):
            old.append(g["reward_mean"].tail(k).mean() - g["reward_mean"].rolling(5, min_periods=1).mean().max())
    assert abs(np.mean(drifts)) < 0.01 and np.mean(old) < -0.1
    df = _frame({"a": [rng.normal(0, 0.1, T) for _ in range(seeds)], "b": [rng.normal(0, 0.1, T) for _ in range(seeds)]})
    e = stats.paired_drift(df, "reward_mean", "a", "b", k)
    assert e.n == seeds and e.ci_low < 0 < e.ci_high
    # a collapse is seen: a falls by 1 in its last quarter, b stays flat
    fall = [np.r_[np.zeros(60), -np.ones(20)] + rng.normal(0, 0.1, T) for _ in range(seeds)]
    df = _frame({"a": fall, "b": [rng.normal(0, 0.1, T) for _ in range(seeds)]})
    assert stats.classify(stats.paired_drift(df, "reward_mean", "a", "b", k), "<", 0.05) == "reproduced"


def test_paired_final_slopes_and_missing_arms():
    df = _frame({"a": [[9, 1, 1], [9, 2, 2], [9, 3, 3]], "b": [[5, 0, 0], [5, 0, 0], [5, 0, 0]]})
    e = stats.paired_final(df, "reward_mean", "a", "b", last_k=2)
    assert e.estimate == 2.0 and e.n == 3
    assert (e.ci_low, e.ci_high) == (pytest.approx(2 - 4.302652729911275 * 1 / math.sqrt(3)),
                                     pytest.approx(2 + 4.302652729911275 * 1 / math.sqrt(3)))
    first = stats.paired_final(df, "reward_mean", "a", "b", last_k=1, where="first")
    assert first.estimate == 4.0 and first.ci_low == first.ci_high == 4.0
    up = _frame({"up": [[0, 1, 2, 3], [0, 1.1, 2, 3.1]], "flat": [[1, 1, 1, 1], [2, 2, 2, 2]]})
    assert stats.slope(up, "reward_mean", "up").estimate == pytest.approx(100 * 1.01, rel=0.02)
    assert stats.paired_slope(up, "reward_mean", "up", "flat").estimate == pytest.approx(101.0, rel=0.02)
    gone = stats.paired_final(df, "reward_mean", "a", "dapo_kl", 2)
    assert gone.not_run and "no arm 'dapo_kl'" in gone.note and stats.classify(gone) == "not run"
    df["kl"] = float("nan")  # a column never logged: no numbers, not 'not run'
    nolog = stats.paired_final(df, "kl", "a", "b", 2)
    assert not nolog.not_run and stats.classify(nolog) == "inconclusive" and "not logged" in nolog.note


def test_eval_comparisons():
    ev = pd.DataFrame({"label": ["dapo", "dapo", "dynamic", "dynamic"], "seed": [0, 1, 0, 1],
                       "benchmark": ["mini"] * 4, "pass@1": [0.30, 0.34, 0.40, 0.46]})
    base = pd.DataFrame({"benchmark": ["mini"], "pass@1": [0.25]})
    e = stats.paired_eval(ev, "dynamic", "dapo")
    assert e.estimate == pytest.approx(11.0) and e.n == 2 and e.values == {0: pytest.approx(10.0), 1: pytest.approx(12.0)}
    v = stats.versus_base(ev, base, "dapo")
    assert v.estimate == pytest.approx(7.0) and v.values == {0: pytest.approx(5.0), 1: pytest.approx(9.0)}
    assert stats.paired_eval(ev, "dynamic", "dapo_kl", arms=["dapo", "dynamic"]).not_run
    assert not stats.paired_eval(ev.iloc[0:0], "dynamic", "dapo", arms=["dapo", "dynamic"]).not_run


def test_token_ce_split_and_divergence():
    assert stats.first_divergence(["a", "b", "c"], ["a", "b", "x", "y"]) == 2
    assert stats.first_divergence(["a"], ["a"]) == 1
    s = {"response_tokens": ["a", "b", "c"], "refined_tokens": ["a", "b", "x", "y"],
         "refined_token_ce": [0.1, 0.3, 2.0, 4.0]}
    assert stats.ce_split(s) == (pytest.approx(0.2), pytest.approx(3.0), 2)


def test_bands_percentile_stays_within_the_data_and_paired_curve():
    df = _frame({"a": [[0.0, 0.01, 0.02], [0.0, 0.0, 0.3], [0.0, 0.02, 0.01]]})
    t = stats.aggregate(df, "reward_mean", band="t")
    p = stats.aggregate(df, "reward_mean", band="percentile")
    assert (t["low"].dropna() < 0).any()  # the t-band of a non-negative quantity dips below 0 ...
    assert (p["low"].dropna() >= 0).all() and (p["high"] <= 0.3).all()  # ... the percentile band does not
    two = _frame({"a": [[1, 2], [2, 3], [3, 5]], "b": [[0, 1], [1, 2], [2, 3]]})
    c = stats.paired_curve(two, "reward_mean", "a", "b")
    assert c["mean"].tolist() == pytest.approx([1.0, 4 / 3]) and c["n"].tolist() == [3, 3]
    assert c.loc[0, "low"] == c.loc[0, "high"] == 1.0  # identical differences: zero width
