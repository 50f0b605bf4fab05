"""Statistics of the study: intervals over seeds, paired differences between arms, power, and verdicts.

    from study import stats
    e = stats.paired_final(df, "reward_mean", "dynamic", "dapo", last_k=3)   # a − b, paired by seed
    e.estimate, e.ci_low, e.ci_high, e.n, e.mde80, e.p                       # 95% t-interval, n − 1 df
    stats.classify(e, direction=">", margin=0.05)   # reproduced | contradicted | no effect larger than X | ...
    stats.holm([0.01, 0.04, 0.03])                  # Holm-adjusted p-values of a family of verdicts

Unit of replication: the seed. The arms of a group share seeds, and with them the prompt order (step 1 is the
same batch in every arm), so a comparison of arms a and b is a *paired* one: per seed, a summary of a minus the
same summary of b, then a one-sample Student-t interval over seeds with n − 1 degrees of freedom. The shared
variation (a hard batch that lowers every arm) cancels in the difference instead of widening the interval.

Power. ``mde(sd, n)`` is the minimal detectable effect of the paired (one-sample) t-test: the smallest true mean
difference δ that a two-sided test at α = 0.05 detects with probability 0.8, given the observed SD of the
per-seed differences and n seeds. It is the exact solution of

    P(|T'| > t_{1−α/2, n−1}) = 0.8,   T' ~ noncentral t(df = n − 1, nc = δ·√n / sd)

(statsmodels' ``TTestPower`` solves the same equation). The normal-approximation shortcut
(t_{1−α/2,n−1} + t_{0.8,n−1})·sd/√n is within a few percent of it for n ≥ 5 and smaller for tiny n.

Verdicts (``classify``): with the 95% interval [lo, hi] of a claim whose paper direction is ``>`` (or ``<``):

* **reproduced**: the interval excludes 0 on the paper's side;
* **contradicted**: it excludes 0 on the other side;
* **no effect larger than X**: it contains 0 and X = max(|lo|, |hi|), the largest effect the data do not rule
  out, is at most the claim's margin (the smallest effect the claim is about, stated per claim in
  ``study.verdicts.CLAIMS``); X is the number reported;
* **inconclusive**: it contains 0 and is wider than the margin (or there is one seed, so no interval).

A claim that something does *not* change (direction ``=``, e.g. "the CE stays stable") is an equivalence test:
reproduced when the interval lies inside ±margin, contradicted when it lies wholly outside it.

The verdicts of a study are a family: ``holm`` adjusts their p-values (two-sided paired t-tests), and
``study.verdicts.assemble`` downgrades a reproduced / contradicted verdict whose Holm-adjusted p is ≥ α.

Summaries per seed (all unbiased for a flat curve): the mean over the last / first k steps (``window``), the
least-squares slope per 100 steps (``seed_slopes``), and the drift (``drift``): the mean of the last k steps minus
the mean of the first k steps after a warm-up, a collapse statistic whose expectation is 0 for flat noise (the
old "final minus the peak of a rolling mean" is biased negative: about −0.11 for 80 steps of SD-0.1 noise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

ALPHA = 0.05
"""Two-sided level of every test and 1 − the coverage of every interval (95%)."""
POWER = 0.8
"""Power at which ``mde80`` is computed."""

# ---------------------------------------------------------------------------------------------------------------
# intervals


def _finite(values: Iterable[float]) -> np.ndarray:
    return np.asarray([float(x) for x in values if x is not None and x == x], dtype=float)


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval for the mean (n − 1 df); low/high are NaN with < 2 values."""
    from scipy import stats

    v = _finite(values)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    se = float(v.std(ddof=1)) / math.sqrt(len(v))
    h = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1)) * se
    return m, m - h, m + h


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable effect of a two-sided one-sample (paired) t-test: the δ with power ``power`` at level
    ``alpha`` for n units of SD ``sd`` (exact noncentral-t solve; see the module docstring). NaN for n < 2."""
    from scipy import optimize, stats

    if n is None or n < 2 or sd != sd:
        return float("nan")
    if sd == 0:
        return 0.0
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def gap(nc: float) -> float:
        upper = float(stats.nct.sf(crit, df, nc))
        lower = float(stats.nct.cdf(-crit, df, nc))  # the wrong-sign tail: < alpha/2, and < 1e-6 once nc > 4
        if lower != lower:  # scipy's noncentral t returns NaN for some tiny tails (seen at df = 1, nc = 8)
            lower = 0.0
        return upper + lower - power

    hi = 1.0
    while gap(hi) < 0:
        hi *= 2
    nc = optimize.brentq(gap, 0.0, hi, xtol=1e-10)
    return nc * sd / math.sqrt(n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count towards the family size)."""
    p = [float(x) if x is not None else float("nan") for x in pvalues]
    idx = sorted((i for i, x in enumerate(p) if x == x), key=lambda i: p[i])
    m = len(idx)
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ---------------------------------------------------------------------------------------------------------------
# an estimate over seeds


@dataclass
class Estimate:
    """A mean over units (seeds) with its 95% t-interval, the test of 'mean = 0', and the MDE at 80% power."""

    statistic: str
    """What was computed, in words (goes to the verdict table)."""
    estimate: float
    ci_low: float
    ci_high: float
    n: int
    """Units (seeds) the interval is over."""
    sd: float = float("nan")
    """SD of the per-unit values (for a paired comparison: of the per-seed differences)."""
    p: float = float("nan")
    """Two-sided p-value of the one-sample t-test against 0."""
    values: dict = field(default_factory=dict)
    """unit -> value (seed -> per-seed summary or difference)."""
    note: str = ""
    """Why numbers are missing, or what was dropped."""
    not_run: bool = False
    """The arms it needs are not in the profile: the verdict is ``not run``."""

    @property
    def mde80(self) -> float:
        return mde(self.sd, self.n)

    def asdict(self) -> dict:
        d = asdict(self)
        d["mde80"] = self.mde80
        d["values"] = {str(k): v for k, v in self.values.items()}
        return d


def missing(statistic: str, reason: str, not_run: bool = False) -> Estimate:
    """No numbers (an arm not in the profile, a column never logged): NaN estimate, the reason in ``note``."""
    nan = float("nan")
    return Estimate(statistic, nan, nan, nan, 0, note=reason, not_run=not_run)


def one_sample(values: Mapping | Sequence[float], statistic: str, confidence: float = 0.95) -> Estimate:
    """Mean of per-unit values with a t-interval (n − 1 df), its SD and the t-test p-value against 0."""
    from scipy import stats

    vals = dict(values) if isinstance(values, Mapping) else dict(enumerate(values))
    vals = {k: float(v) for k, v in vals.items() if v is not None and v == v}
    if not vals:
        return missing(statistic, "no finite values")
    v = np.asarray(list(vals.values()))
    m, lo, hi = t_interval(v, confidence)
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    if len(v) < 2:
        p = float("nan")
    elif sd == 0:
        p = 0.0 if m != 0 else 1.0
    else:  # the one-sample t-test against 0 (= scipy.stats.ttest_1samp / ttest_rel, without its warnings)
        p = float(2 * stats.t.sf(abs(m) / (sd / math.sqrt(len(v))), len(v) - 1))
    note = "" if len(v) > 1 else "one unit: no interval"
    return Estimate(statistic, m, lo, hi, len(v), sd, p, vals, note)


def paired(a: Mapping, b: Mapping, statistic: str, confidence: float = 0.95) -> Estimate:
    """a − b over the units (seeds) both have: the paired t-interval and test (= ``scipy.stats.ttest_rel``)."""
    common = [k for k in a if k in b and a[k] == a[k] and b[k] == b[k]]
    if not common:
        return missing(statistic, "no seed common to both arms")
    e = one_sample({k: float(a[k]) - float(b[k]) for k in common}, statistic, confidence)
    dropped = sorted(set(a) ^ set(b), key=str)
    if dropped:
        e.note = (e.note + "; " if e.note else "") + f"unpaired seeds dropped: {dropped}"
    return e


def classify(e: Estimate, direction: str = ">", margin: float | None = None) -> str:
    """The verdict of one claim (module docstring): reproduced / contradicted / no effect larger than X /
    inconclusive, or ``not run`` when the claim's arms are not in the profile."""
    if direction not in (">", "<", "="):
        raise ValueError("direction is '>', '<' or '='")
    if e.not_run:
        return "not run"
    lo, hi = e.ci_low, e.ci_high
    if e.n == 0 or not (lo == lo and hi == hi):
        return "inconclusive"
    if direction == "=":  # the paper claims no change: an equivalence test against ±margin
        if margin is None:
            raise ValueError("a '=' claim needs a margin")
        if max(abs(lo), abs(hi)) <= margin:
            return "reproduced"
        return "contradicted" if (lo > margin or hi < -margin) else "inconclusive"
    if lo > 0 or hi < 0:
        return "reproduced" if (lo > 0) == (direction == ">") else "contradicted"
    x = max(abs(lo), abs(hi))
    if margin is not None and x <= margin:
        return f"no effect larger than {x:.3g}"
    return "inconclusive"


def fmt(e: Estimate, digits: int = 3) -> str:
    """``+0.120 [-0.030, +0.270]`` (or ``n/a (reason)``)."""
    if e.estimate != e.estimate:
        return f"n/a ({e.note or 'no data'})"
    if e.ci_low == e.ci_low:
        return f"{e.estimate:+.{digits}f} [{e.ci_low:+.{digits}f}, {e.ci_high:+.{digits}f}]"
    return f"{e.estimate:+.{digits}f} [no interval]"


# ---------------------------------------------------------------------------------------------------------------
# per-seed summaries of tidy run tables (``study.experiments.load_group``: label, seed, step, metrics...)


def labels(df) -> list[str]:
    return list(dict.fromkeys(df["label"].astype(str))) if len(df) else []


def _arm(df, label: str, metric: str):
    if metric not in df.columns:
        return None
    return df[df["label"].astype(str) == str(label)].dropna(subset=[metric]).sort_values("step")


def _need(df, metric: str, *arms: str) -> str | None:
    """Why a comparison cannot be made (an arm missing: not run; a column missing), or None."""
    have = labels(df)
    for a in arms:
        if str(a) not in have:
            return f"no arm '{a}' in this group (arms: {', '.join(have) or 'none'})"
    if metric not in df.columns or not df[metric].notna().any():
        return f"column '{metric}' not logged by these runs"
    return None


@dataclass(frozen=True)
class Windows:
    """The step windows a notebook's summaries use, from the run length T (the same rule in every notebook)."""

    steps: int
    """T, the last logged step."""
    final: int
    """k = max(1, T // 10): the final (and first) window of ``paired_final`` and ``drift``."""
    quarter: int
    """max(1, T // 4): the 'early' window of Fig. 7's early-reward claim."""
    smooth: int
    """max(1, T // 20): rolling-mean window of the drawn curves (drawing only, never in a statistic)."""


def windows(df) -> Windows:
    T = int(df["step"].max()) if len(df) else 1
    return Windows(T, max(1, T // 10), max(1, T // 4), max(1, T // 20))


def share_below(df, metric: str, label: str, threshold: float) -> float:
    """Share of steps where the mean over seeds of ``metric`` (arm ``label``) is below ``threshold``."""
    d = _arm(df, label, metric)
    if d is None or d.empty:
        return float("nan")
    return float((d.groupby("step")[metric].mean() < threshold).mean())


def window(df, metric: str, label: str, k: int, where: str = "last") -> dict:
    """seed -> mean of ``metric`` over the run's last (``where='first'``: first) k logged steps."""
    d = _arm(df, label, metric)
    if d is None:
        return {}
    out = {}
    for seed, g in d.groupby("seed"):
        part = g.tail(k) if where == "last" else g.head(k)
        if len(part):
            out[seed] = float(part[metric].mean())
    return out


def seed_slopes(df, metric: str, label: str, steps: tuple[float, float] | None = None) -> dict:
    """seed -> least-squares slope of ``metric`` vs step, per 100 steps (within ``steps`` when given)."""
    d = _arm(df, label, metric)
    if d is None:
        return {}
    if steps is not None:
        d = d[(d["step"] >= steps[0]) & (d["step"] <= steps[1])]
    return {seed: 100.0 * float(np.polyfit(g["step"].astype(float), g[metric].astype(float), 1)[0])
            for seed, g in d.groupby("seed") if g["step"].nunique() >= 2}


def drift(df, metric: str, label: str, k: int, warmup: int | None = None) -> dict:
    """seed -> mean of the last k steps minus the mean of the k steps after the first ``warmup`` (default k)
    steps. Expectation 0 for a flat curve, negative when the curve ends below where it stood early on."""
    d = _arm(df, label, metric)
    if d is None:
        return {}
    w = k if warmup is None else warmup
    out = {}
    for seed, g in d.groupby("seed"):
        early, late = g.iloc[w : w + k], g.tail(k)
        if len(early) and len(late) and len(g) >= w + 2 * k:
            out[seed] = float(late[metric].mean() - early[metric].mean())
    return out


def paired_final(df, metric: str, a: str, b: str, last_k: int, where: str = "last") -> Estimate:
    """Mean of ``metric`` over each run's last (first) ``last_k`` steps; a − b paired by seed."""
    what = f"{metric}, mean of the {where} {last_k} steps, {a} − {b} (paired by seed)"
    why = _need(df, metric, a, b)
    if why:
        return missing(what, why, not_run=why.startswith("no arm"))
    e = paired(window(df, metric, a, last_k, where), window(df, metric, b, last_k, where), what)
    return e if e.n else missing(what, f"'{metric}' has no values in these runs")


def paired_slope(df, metric: str, a: str, b: str, steps: tuple[float, float] | None = None) -> Estimate:
    """Per-seed slope of ``metric`` (per 100 steps, within ``steps``) of a minus b, paired by seed."""
    span = f" over steps {steps[0]:g}-{steps[1]:g}" if steps else ""
    what = f"slope of {metric} per 100 steps{span}, {a} − {b} (paired by seed)"
    why = _need(df, metric, a, b)
    if why:
        return missing(what, why, not_run=why.startswith("no arm"))
    e = paired(seed_slopes(df, metric, a, steps), seed_slopes(df, metric, b, steps), what)
    return e if e.n else missing(what, f"'{metric}' has fewer than 2 logged steps per run")


def slope(df, metric: str, label: str, steps: tuple[float, float] | None = None) -> Estimate:
    """Per-seed slope of ``metric`` per 100 steps of one arm; t-interval over seeds."""
    span = f" over steps {steps[0]:g}-{steps[1]:g}" if steps else ""
    what = f"slope of {metric} per 100 steps{span} ({label})"
    why = _need(df, metric, label)
    if why:
        return missing(what, why, not_run=why.startswith("no arm"))
    e = one_sample(seed_slopes(df, metric, label, steps), what)
    return e if e.n else missing(what, f"'{metric}' has fewer than 2 logged steps per run")


def paired_drift(df, metric: str, a: str, b: str, k: int, warmup: int | None = None) -> Estimate:
    """``drift`` of a minus ``drift`` of b, paired by seed (negative: a ends lower, relative to its own early
    level, than b does)."""
    what = (f"{metric} drift (last {k} steps − {k} steps after a {k if warmup is None else warmup}-step "
            f"warm-up), {a} − {b} (paired by seed)")
    why = _need(df, metric, a, b)
    if why:
        return missing(what, why, not_run=why.startswith("no arm"))
    e = paired(drift(df, metric, a, k, warmup), drift(df, metric, b, k, warmup), what)
    return e if e.n else missing(what, "runs too short for two disjoint windows")


def eval_per_seed(eval_df, label: str, benchmarks: Sequence[str] | None = None) -> dict:
    """seed -> held-out pass@1 in points (mean over benchmarks)."""
    if eval_df is None or not len(eval_df):
        return {}
    e = eval_df if benchmarks is None else eval_df[eval_df["benchmark"].isin(benchmarks)]
    e = e[e["label"].astype(str) == str(label)]
    return {s: 100.0 * float(g["pass@1"].mean()) for s, g in e.groupby("seed")}


def paired_eval(eval_df, a: str, b: str, benchmarks: Sequence[str] | None = None, arms=None) -> Estimate:
    """Held-out pass@1 (points, mean over benchmarks) of a minus b, paired by seed. ``arms``: the group's arms
    (to tell 'not in the profile' from 'not evaluated')."""
    what = f"held-out pass@1 (points), {a} − {b} (paired by seed)"
    if arms is not None:
        absent = [x for x in (a, b) if str(x) not in set(map(str, arms))]
        if absent:
            return missing(what, f"no arm {', '.join(map(repr, absent))} in this group", not_run=True)
    va, vb = eval_per_seed(eval_df, a, benchmarks), eval_per_seed(eval_df, b, benchmarks)
    if not va or not vb:
        return missing(what, "runs not evaluated (no eval/<benchmark>/summary.json)")
    return paired(va, vb, what)


def versus_base(eval_df, base_df, label: str) -> Estimate:
    """Held-out pass@1 (points) of each seed of ``label`` minus the initial model's on the same problems
    (one-sample over seeds: the base model is greedy-decoded once, so it is a constant per benchmark)."""
    what = f"held-out pass@1 (points), {label} − initial model (same problems; interval over seeds)"
    if base_df is None or not len(base_df):
        return missing(what, "no evaluation of the initial model")
    base = {r["benchmark"]: 100.0 * float(r["pass@1"]) for _, r in base_df.iterrows()}
    if eval_df is None or not len(eval_df):
        return missing(what, "runs not evaluated (no eval/<benchmark>/summary.json)")
    e = eval_df[(eval_df["label"].astype(str) == str(label)) & eval_df["benchmark"].isin(list(base))]
    if e.empty:
        return missing(what, f"no evaluated run of '{label}'", not_run=str(label) not in set(eval_df["label"].astype(str)))
    per = {s: float(np.mean([100.0 * float(r["pass@1"]) - base[r["benchmark"]] for _, r in g.iterrows()]))
           for s, g in e.groupby("seed")}
    return one_sample(per, what)


# ---------------------------------------------------------------------------------------------------------------
# tokens of one refinement (Fig. 6)


def first_divergence(original: Sequence[str], refined: Sequence[str]) -> int:
    """Index of the first token of ``refined`` that differs from ``original`` (len(refined) if none does)."""
    n = 0
    for x, y in zip(original, refined):
        if x != y:
            break
        n += 1
    return n


def ce_split(sample) -> tuple[float, float, int]:
    """(mean CE on y' tokens before the first divergence from y, mean CE from it on, divergence index)."""
    toks = list(sample["refined_tokens"] or [])
    ce = np.asarray(sample["refined_token_ce"] or [], float)
    k = first_divergence(list(sample["response_tokens"] or []), toks)
    pre = float(ce[:k].mean()) if k > 0 else float("nan")
    post = float(ce[k:].mean()) if k < len(ce) else float("nan")
    return pre, post, k


def ce_after_first_change(samples, label: str | None = None) -> Estimate:
    """Fig. 6's sparsity claim over every kept refinement that shares a prefix with y and then departs: per
    seed, the mean over refinements of (mean CE from the first change on − mean CE on the shared prefix)."""
    what = "token CE after − before the first change, kept refinements (mean per seed)"
    s = samples
    if s is None or not len(s) or "refined_token_ce" not in s.columns:
        return missing(what, "no samples with token CE")
    if label is not None:
        if str(label) not in set(s["label"].astype(str)):
            return missing(what, f"no arm '{label}' in these samples", not_run=True)
        s = s[s["label"].astype(str) == str(label)]
    s = s[s["refined_token_ce"].notna() & s["kept"].fillna(False).astype(bool)]
    per_seed: dict = {}
    for _, r in s.iterrows():
        pre, post, _k = ce_split(r)
        if pre == pre and post == post:
            per_seed.setdefault(r["seed"], []).append(post - pre)
    if not per_seed:
        return missing(what, "no kept refinement with both a shared prefix and a change")
    return one_sample({k: float(np.mean(v)) for k, v in per_seed.items()}, what)


# ---------------------------------------------------------------------------------------------------------------
# curves: per-step bands over seeds


def aggregate(df, metric: str, by: tuple[str, ...] = ("label", "step"), confidence: float = 0.95,
              band: str = "t"):
    """Mean of ``metric`` over seeds per (label, step) with a band: columns mean, low, high, n.

    ``band='t'``: the Student-t interval of the mean; ``band='percentile'``: the central ``confidence`` range
    of the seeds' values (linear interpolation; with 3 seeds close to min-max). The percentile band never leaves
    the range of the data, so it respects a bounded quantity's bounds (KL ≥ 0, ratios in [0, 1])."""
    import pandas as pd

    rows = []
    q = (0.5 - confidence / 2, 0.5 + confidence / 2)
    for key, g in df.groupby(list(by), observed=True, sort=True):
        v = _finite(g[metric])
        if band == "percentile":
            m = float(v.mean()) if len(v) else float("nan")
            lo, hi = ((float(np.quantile(v, q[0])), float(np.quantile(v, q[1]))) if len(v) > 1
                      else (float("nan"), float("nan")))
        else:
            m, lo, hi = t_interval(v, confidence)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": m, "low": lo, "high": hi, "n": int(len(v))})
    return pd.DataFrame(rows, columns=[*by, "mean", "low", "high", "n"])


def paired_curve(df, metric: str, a: str, b: str, confidence: float = 0.95):
    """Per step: the mean over seeds of (a − b) with its paired t-band (columns step, mean, low, high, n)."""
    import pandas as pd

    cols = ["step", "mean", "low", "high", "n"]
    if _need(df, metric, a, b):
        return pd.DataFrame(columns=cols)
    wide = df[df["label"].astype(str).isin([str(a), str(b)])].assign(label=lambda d: d["label"].astype(str))
    wide = wide.pivot_table(index=["step", "seed"], columns="label", values=metric, aggfunc="mean")
    if str(a) not in wide or str(b) not in wide:
        return pd.DataFrame(columns=cols)
    diff = (wide[str(a)] - wide[str(b)]).dropna().rename("d").reset_index()
    rows = []
    for step, g in diff.groupby("step"):
        m, lo, hi = t_interval(g["d"], confidence)
        rows.append({"step": step, "mean": m, "low": lo, "high": hi, "n": len(g)})
    return pd.DataFrame(rows, columns=cols)


def final_values(df, metric: str, last_k: int = 10):
    """Per (label, seed): mean of ``metric`` over each run's last ``last_k`` logged steps."""
    d = df.dropna(subset=[metric]).sort_values("step")
    tail = d.groupby(["label", "seed"], observed=True, group_keys=False).tail(last_k)
    return tail.groupby(["label", "seed"], observed=True)[metric].mean().reset_index()


def ratio_of_sums(df, num: str, den: str, label: str | None = None) -> Estimate:
    """Per seed Σ num / Σ den over the run's steps (e.g. improved refinements / all refinements); t-interval
    over seeds. Missing columns give NaN with the reason."""
    what = f"Σ {num} / Σ {den} per run" + (f" ({label})" if label else "")
    for c in (num, den):
        if c not in df.columns or df[c].isna().all():
            return missing(what, f"column '{c}' not logged by these runs")
    d = df if label is None else df[df["label"].astype(str) == str(label)]
    if label is not None and d.empty:
        return missing(what, f"no arm '{label}'", not_run=True)
    per = {}
    for seed, g in d.groupby("seed"):
        den_sum = float(g[den].sum())
        if den_sum > 0:
            per[seed] = float(g[num].sum()) / den_sum
    return one_sample(per, what) if per else missing(what, f"Σ {den} is 0")
