"""Figures, tables and verdicts of the paper, drawn from tidy run tables (``study.experiments.load_group``).

    from study import experiments as ex, plots
    df = ex.load_group("fig4_ppo", "mini")
    fig = plots.fig_training_dynamics(df)                      # Fig. 4: reward / KL / CE, mean ± 95% band
    plots.save_figure(fig, "fig4_training_dynamics", "figures")  # figures/fig4_training_dynamics.png + .pdf
    v = plots.compare_final(df, "reward_mean", "dynamic", "static", last_k=10)
    print(plots.verdict_line("final reward dynamic − static", v))  # numbers, then reproduced/inconclusive/...

Curves are the mean over seeds with a Student-t 95% band (no band with one seed). Verdicts compare per-seed
summaries (mean of the last/first k steps, or a per-seed slope) with a Welch t-interval, and say *reproduced*
only when the whole interval lies on the side the paper claims.

Outputs are written atomically (temp file + rename). When ``STUDY_OUTPUT_LOG`` is set (``study reproduce`` sets
it for each notebook), every saved figure/table and every verdict is also appended to that JSON-lines file,
which becomes ``figures/MANIFEST.json``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study.experiments import aggregate, t_interval  # noqa: E402

OUTPUT_LOG_ENV = "STUDY_OUTPUT_LOG"

# Metric -> axis label (paper wording).
LABELS = {
    "reward_mean": "reward",
    "kl": "KL(π_θ ‖ π_ref)",
    "dynamic_ce": "cross-entropy (L_DC)",
    "improvement_ratio": "improvement ratio",
    "group_reward_std": "within-group reward std",
    "kept_frac": "kept refinements",
    "response_length": "response length",
}


# ---------------------------------------------------------------------------------------------------------------
# saving


def _log_output(entry: dict) -> None:
    path = os.environ.get(OUTPUT_LOG_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_figure(fig, name: str, figures_dir: str | Path = "figures", formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``<figures_dir>/<name>.png`` and ``.pdf`` (atomically); returns the paths."""
    out = []
    for ext in formats:
        p = Path(figures_dir) / f"{name}.{ext}"
        _atomic(p, lambda t, ext=ext: fig.savefig(t, format=ext, dpi=150, bbox_inches="tight"))
        out.append(p)
    _log_output({"kind": "figure", "name": name, "paths": [str(p) for p in out]})
    return out


def to_markdown(df, floatfmt: str = ".3g") -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    def fmt(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", "<br>")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, name: str, figures_dir: str | Path = "figures") -> list[Path]:
    """Write ``<figures_dir>/tables/<name>.csv`` and ``.md`` (atomically); returns the paths."""
    base = Path(figures_dir) / "tables"
    csv, md = base / f"{name}.csv", base / f"{name}.md"
    _atomic(csv, lambda t: df.to_csv(t, index=False))
    _atomic(md, lambda t: Path(t).write_text(to_markdown(df)))
    _log_output({"kind": "table", "name": name, "paths": [str(csv), str(md)]})
    return [csv, md]


def record_verdict(text: str, **numbers) -> str:
    """Print a verdict line and log it (it ends up in the manifest next to the figures)."""
    print(text)
    _log_output({"kind": "verdict", "text": text, "numbers": numbers})
    return text


# ---------------------------------------------------------------------------------------------------------------
# curves


def plot_curves(df, metric: str, ax=None, labels: Sequence[str] | None = None, smooth: int = 1,
                confidence: float = 0.95, title: str | None = None, colors: dict | None = None):
    """Mean of ``metric`` over seeds per label vs step, with a t-interval band. ``smooth`` = rolling window (steps)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    d = df.dropna(subset=[metric])
    if smooth > 1:
        d = d.sort_values("step").copy()
        d[metric] = d.groupby(["label", "seed"], observed=True)[metric].transform(
            lambda s: s.rolling(smooth, min_periods=1).mean())
    agg = aggregate(d, metric, confidence=confidence) if len(d) else None
    order = list(labels) if labels else list(dict.fromkeys(df["label"].astype(str)))
    for i, lab in enumerate(order):
        if agg is None:
            break
        a = agg[agg["label"].astype(str) == str(lab)]
        if a.empty:
            continue
        color = (colors or {}).get(lab, f"C{i}")
        n = int(a["n"].max())
        ax.plot(a["step"], a["mean"], label=f"{lab} (n={n})", color=color, lw=1.6)
        if n > 1:
            ax.fill_between(a["step"], a["low"], a["high"], color=color, alpha=0.2, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel(LABELS.get(metric, metric))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    return ax


def fig_panels(df, metrics: Sequence[str], titles: Sequence[str] | None = None, labels=None, smooth: int = 1,
               suptitle: str | None = None):
    """One panel per metric, side by side."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.6), squeeze=False)
    for i, m in enumerate(metrics):
        plot_curves(df, m, ax=axes[0, i], labels=labels, smooth=smooth, title=(titles or [None] * len(metrics))[i])
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def fig_training_dynamics(df, smooth: int = 1):
    """Fig. 4: PPO w/o constraint / static / dynamic -- reward, KL to the reference, and L_DC (dynamic only)."""
    return fig_panels(df, ["reward_mean", "kl", "dynamic_ce"], ["Reward", "KL divergence", "Cross entropy"],
                      smooth=smooth)


def fig_lambda(df, smooth: int = 1):
    """Fig. 7: the λ sweep -- reward and within-group reward std."""
    return fig_panels(df, ["reward_mean", "group_reward_std"], ["Reward", "Group reward std"], smooth=smooth)


# ---------------------------------------------------------------------------------------------------------------
# verdicts


@dataclass
class Verdict:
    """Difference of per-seed summaries between variants ``a`` and ``b`` (or one variant's slope)."""

    what: str
    diff: float
    low: float
    high: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float

    @property
    def n(self) -> int:
        return min(self.n_a, self.n_b) if self.n_b else self.n_a

    def outcome(self, expect: str = ">") -> str:
        """``reproduced`` if the interval is wholly on the claimed side of 0, ``contradicted`` if wholly on the
        other side, ``inconclusive`` otherwise (always with fewer than 2 seeds per side)."""
        if not (self.low == self.low and self.high == self.high):
            return "inconclusive"
        if expect == ">":
            return "reproduced" if self.low > 0 else "contradicted" if self.high < 0 else "inconclusive"
        if expect == "<":
            return "reproduced" if self.high < 0 else "contradicted" if self.low > 0 else "inconclusive"
        raise ValueError("expect is '>' or '<'")

    def asdict(self) -> dict:
        return asdict(self)


def empty_verdict(what: str) -> Verdict:
    """No data to decide on (e.g. a metric never logged in a short run): NaN numbers, outcome inconclusive."""
    nan = float("nan")
    return Verdict(what, nan, nan, nan, 0, 0, nan, nan)


def _labels(df) -> set[str]:
    return set(df["label"].astype(str))


def welch_interval(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) − mean(b), low, high): Welch's t-interval; NaN bounds when either side has < 2 values."""
    from scipy import stats

    a = np.asarray([x for x in a if x == x], float)
    b = np.asarray([x for x in b if x == x], float)
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), float("nan")
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return d, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    dof = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0) + (vb**2 / (len(b) - 1) if vb else 0))
    h = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
    return d, d - h, d + h


def _window(df, metric: str, k: int, where: str):
    d = df.dropna(subset=[metric]).sort_values("step")
    g = d.groupby(["label", "seed"], observed=True, group_keys=False)
    part = g.tail(k) if where == "last" else g.head(k)
    return part.groupby(["label", "seed"], observed=True)[metric].mean().reset_index()


def compare_final(df, metric: str, a: str, b: str, last_k: int = 10, confidence: float = 0.95,
                  where: str = "last") -> Verdict:
    """Mean of ``metric`` over each run's last (``where='first'``: first) ``last_k`` steps; difference a − b
    over seeds with a 95% Welch t-interval."""
    what = f"{where} {last_k} steps {metric}: {a} − {b}"
    for lab in (a, b):
        if str(lab) not in _labels(df):
            raise ValueError(f"no label '{lab}' (labels: {sorted(_labels(df))})")
    per = _window(df, metric, last_k, where)
    va = per[per["label"].astype(str) == str(a)][metric].tolist()
    vb = per[per["label"].astype(str) == str(b)][metric].tolist()
    if not va or not vb:
        return empty_verdict(what)
    d, lo, hi = welch_interval(va, vb, confidence)
    return Verdict(what, d, lo, hi, len(va), len(vb), float(np.mean(va)), float(np.mean(vb)))


def slope(df, metric: str, label: str, steps: tuple[float, float] | None = None, confidence: float = 0.95) -> Verdict:
    """Least-squares slope of ``metric`` vs step (per 100 steps) for each seed of ``label``; t-interval over seeds."""
    what = f"slope of {metric} per 100 steps ({label})"
    vals = _seed_slopes(df, metric, label, steps)
    if not vals:
        return empty_verdict(what)
    m, lo, hi = t_interval(vals, confidence)
    return Verdict(what, m, lo, hi, len(vals), 0, m, float("nan"))


def fmt_interval(v: Verdict, digits: int = 3) -> str:
    if v.diff != v.diff:
        return "n/a (no data)"
    if v.low == v.low:
        return f"{v.diff:+.{digits}f} [{v.low:+.{digits}f}, {v.high:+.{digits}f}]"
    return f"{v.diff:+.{digits}f} [no interval]"


def verdict_line(claim: str, v: Verdict, expect: str = ">", record: bool = True) -> str:
    """``"<claim> = +0.12 [-0.03, +0.27] over 3 seeds (expected > 0): inconclusive"``; printed and logged."""
    text = (f"{claim} = {fmt_interval(v)} over {v.n} seed{'s' if v.n != 1 else ''} "
            f"(paper: {expect} 0): claim {v.outcome(expect)}")
    if record:
        record_verdict(text, **{k: (None if isinstance(x, float) and x != x else x) for k, x in v.asdict().items()},
                       outcome=v.outcome(expect))
    return text


# ---------------------------------------------------------------------------------------------------------------
# tables


def relative_gain_table(eval_df, base_df, order: Sequence[str] | None = None, base_name: str = "initial model"):
    """Table 1: pass@1 (%) per benchmark, mean over seeds, with the relative gain over the initial model."""
    import pandas as pd

    benches = list(dict.fromkeys(base_df["benchmark"])) if len(base_df) else sorted(eval_df["benchmark"].unique())
    base = {r.benchmark: 100 * r._2 for r in base_df.itertuples()} if len(base_df) else {}
    rows = [{"model": base_name, **{b: f"{base.get(b, float('nan')):.1f}" for b in benches},
             "Avg.": f"{np.mean([base.get(b, np.nan) for b in benches]):.1f}"}]
    labels = list(order) if order else list(dict.fromkeys(eval_df["label"].astype(str)))
    base_avg = np.mean([base.get(b, np.nan) for b in benches])
    for lab in labels:
        e = eval_df[eval_df["label"].astype(str) == lab]
        row = {"model": lab}
        vals = []
        for b in benches:
            s = 100 * e[e["benchmark"] == b]["pass@1"]
            m = float(s.mean()) if len(s) else float("nan")
            vals.append(m)
            row[b] = _with_gain(m, base.get(b, np.nan), len(s))
        row["Avg."] = _with_gain(float(np.mean(vals)), base_avg, e["seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


def _with_gain(v: float, base: float, n: int) -> str:
    if v != v:
        return ""
    gain = f" ({100 * (v - base) / base:+.1f}%)" if base == base and base > 0 else ""
    return f"{v:.1f}{gain}" + (f" n={n}" if n > 1 else "")


# ---------------------------------------------------------------------------------------------------------------
# token-level CE heatmap (Fig. 6) and qualitative diffs (Figs. 8-11, Table 4)


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


def _display(tok: str) -> str:
    return tok.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ").replace("\t", "    ")


def _layout(tokens: Sequence[str], max_cols: int) -> list[tuple[int, int, str, bool]]:
    """(row, col, text, ends_line) per token on a character grid, wrapping at ``max_cols``."""
    out, row, col = [], 0, 0
    for t in tokens:
        s = _display(str(t))
        parts = s.split("\n")
        first = parts[0] if parts[0] else ("↵" if len(parts) > 1 else "·")
        if col + len(first) > max_cols and col > 0:
            row, col = row + 1, 0
        out.append((row, col, first, len(parts) > 1))
        col += max(len(first), 1)
        if len(parts) > 1:
            row, col = row + len(parts) - 1, len(parts[-1])
    return out


def token_heatmap(sample, max_cols: int = 90, cmap: str = "Reds", vmax: float | None = None, title: str | None = None):
    """Fig. 6: the original response y (grey; its tokens after the first divergence in red) above the refined
    response y' with each token colored by the policy's CE; the first divergent token is boxed in both."""
    from matplotlib.patches import Rectangle

    y = list(sample["response_tokens"] or [])
    yp = list(sample["refined_tokens"] or [])
    ce = np.asarray(sample["refined_token_ce"] or [], float)
    if len(ce) != len(yp):
        raise ValueError(f"refined_token_ce has {len(ce)} values for {len(yp)} refined tokens")
    k = first_divergence(y, yp)
    vmax = vmax or max(float(np.nanmax(ce)) if len(ce) else 1.0, 1e-6)
    norm = matplotlib.colors.Normalize(0, vmax)
    cm = plt.get_cmap(cmap)
    top, bottom = _layout(y, max_cols), _layout(yp, max_cols)
    n_top = (top[-1][0] + 1) if top else 1
    n_bot = (bottom[-1][0] + 1) if bottom else 1
    line_h = 1.5
    rows_total = n_top + n_bot + 3
    width_in = 12.0
    fig, ax = plt.subplots(figsize=(width_in, 0.22 * rows_total * line_h + 0.6))
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cm)
    fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="token CE (nats)")
    ax_w_pt = ax.get_position().width * width_in * 72
    font = 0.95 * ax_w_pt / (max_cols * 0.61)  # monospace glyphs are ~0.6 em wide
    ax.set_xlim(0, max_cols)
    ax.set_ylim(rows_total * line_h, 0)
    ax.axis("off")
    lab = font * 1.1
    ax.text(0, 0.6, f"y  (reward {_num(sample.get('reward'))})", fontsize=lab, weight="bold", va="center")
    for i, (r, c, s, _) in enumerate(top):
        yy = (r + 1.5) * line_h
        color = "0.45" if i < k else "tab:red"
        ax.text(c, yy, s, fontsize=font, family="monospace", va="center", color=color)
        if i == k:
            ax.add_patch(Rectangle((c, yy - 0.6), max(len(s), 1), 1.2, fill=False, ec="k", lw=1.2))
    off = n_top + 2.5
    kept = sample.get("kept")
    status = "" if kept is None else ("kept, " if kept else "dropped by the filter, ")
    ax.text(0, (off - 0.4) * line_h, f"y' (reward {_num(sample.get('refined_reward'))}; {status}colored by CE; "
            f"first change at token {k})", fontsize=lab, weight="bold", va="center")
    for i, (r, c, s, _) in enumerate(bottom):
        yy = (r + off + 0.5) * line_h
        ax.add_patch(Rectangle((c, yy - 0.6), max(len(s), 1), 1.2, color=cm(norm(ce[i])), lw=0))
        ax.text(c, yy, s, fontsize=font, family="monospace", va="center")
        if i == k:
            ax.add_patch(Rectangle((c, yy - 0.6), max(len(s), 1), 1.2, fill=False, ec="k", lw=1.2))
    if title:
        ax.set_title(title)
    return fig


def _num(v) -> str:
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def side_by_side_diff(original: str, refined: str) -> str:
    """Line diff y → y' as unified-diff text ('-' lines only in y, '+' lines only in y')."""
    lines = difflib.unified_diff(original.splitlines(), refined.splitlines(), "y (policy)", "y' (refiner)",
                                 lineterm="", n=2)
    return "\n".join(lines) or "(identical)"


def qualitative_table(samples, k: int = 4, label: str | None = None):
    """Figs. 8-11: the ``k`` refinements with the largest reward gain (one per problem), with their diff."""
    import pandas as pd

    s = samples
    if label is not None and "label" in s.columns:
        s = s[s["label"].astype(str) == str(label)]
    s = s[s["refined"].notna() & s["refined_reward"].notna()].copy()
    if s.empty:
        return pd.DataFrame(columns=["run", "step", "task_id", "reward", "refined_reward", "diff"])
    s["gain"] = s["refined_reward"].astype(float) - s["reward"].astype(float)
    s = s.sort_values(["gain", "step"], ascending=[False, False]).drop_duplicates("task_id").head(k)
    s["diff"] = [side_by_side_diff(a, b) for a, b in zip(s["response"], s["refined"])]
    cols = [c for c in ["run", "step", "task_id", "reward", "refined_reward", "gain", "diff"] if c in s.columns]
    return s[cols].reset_index(drop=True)


def diff_html(original: str, refined: str) -> str:
    """Side-by-side HTML diff (for display in a notebook)."""
    return difflib.HtmlDiff(wrapcolumn=70).make_table(original.splitlines(), refined.splitlines(),
                                                      "y (policy)", "y' (refiner)", context=False)


def compare_slopes(df, metric: str, a: str, b: str, steps: tuple[float, float] | None = None,
                   confidence: float = 0.95) -> Verdict:
    """Per-seed slope of ``metric`` (per 100 steps, within ``steps``) of a minus b, Welch t-interval."""
    sa, sb = _seed_slopes(df, metric, a, steps), _seed_slopes(df, metric, b, steps)
    if not sa or not sb:
        return empty_verdict(f"slope of {metric}: {a} − {b}")
    d, lo, hi = welch_interval(sa, sb, confidence)
    return Verdict(f"slope of {metric}: {a} − {b}", d, lo, hi, len(sa), len(sb), float(np.mean(sa)),
                   float(np.mean(sb)))


def _seed_slopes(df, metric, label, steps) -> list[float]:
    """Per-seed least-squares slope (per 100 steps); seeds with fewer than 2 logged steps are skipped."""
    if str(label) not in _labels(df):
        raise ValueError(f"no label '{label}' (labels: {sorted(_labels(df))})")
    d = df[(df["label"].astype(str) == str(label))].dropna(subset=[metric])
    if steps is not None:
        d = d[(d["step"] >= steps[0]) & (d["step"] <= steps[1])]
    out = [100.0 * float(np.polyfit(g["step"].astype(float), g[metric].astype(float), 1)[0])
           for _, g in d.groupby("seed") if g["step"].nunique() >= 2]
    return out


def drop_from_peak(df, metric: str, label: str, last_k: int = 5, smooth: int = 5, confidence: float = 0.95) -> Verdict:
    """Per seed: mean of the last ``last_k`` steps minus the peak of the ``smooth``-step rolling mean
    (negative = the curve fell from its best, the paper's 'collapse' of unconstrained RL)."""
    if str(label) not in _labels(df):
        raise ValueError(f"no label '{label}' (labels: {sorted(_labels(df))})")
    d = df[(df["label"].astype(str) == str(label))].dropna(subset=[metric]).sort_values("step")
    vals = []
    for _, g in d.groupby("seed"):
        roll = g[metric].rolling(smooth, min_periods=1).mean()
        vals.append(float(g[metric].tail(last_k).mean() - roll.max()))
    if not vals:
        return empty_verdict(f"{label}: final − peak {metric}")
    m, lo, hi = t_interval(vals, confidence)
    return Verdict(f"{label}: final − peak {metric}", m, lo, hi, len(vals), 0, m, float("nan"))


def compare_eval(eval_df, a: str, b: str, benchmarks: Sequence[str] | None = None, confidence: float = 0.95) -> Verdict:
    """pass@1 (percentage points) averaged over benchmarks, per seed; a − b with a Welch t-interval."""
    e = eval_df if benchmarks is None else eval_df[eval_df["benchmark"].isin(benchmarks)]
    per = e.groupby(["label", "seed"], observed=True)["pass@1"].mean().reset_index()
    va = (100 * per[per["label"].astype(str) == a]["pass@1"]).tolist()
    vb = (100 * per[per["label"].astype(str) == b]["pass@1"]).tolist()
    if not va or not vb:
        return empty_verdict(f"avg pass@1 (points): {a} − {b}")
    d, lo, hi = welch_interval(va, vb, confidence)
    return Verdict(f"avg pass@1 (points): {a} − {b}", d, lo, hi, len(va), len(vb), float(np.mean(va)), float(np.mean(vb)))


def ce_prefix_vs_suffix(samples, label: str | None = None, confidence: float = 0.95) -> Verdict:
    """Fig. 6's sparsity claim over every kept refinement that shares a prefix with y and then departs:
    per seed, mean CE after the first divergence minus mean CE on the shared prefix (t-interval over seeds)."""
    s = samples
    if label is not None:
        s = s[s["label"].astype(str) == str(label)]
    s = s[s["refined_token_ce"].notna() & s["kept"].fillna(False).astype(bool)] if len(s) else s
    per_seed: dict = {}
    pre_all, post_all = [], []
    for _, r in s.iterrows():
        pre, post, _k = ce_split(r)
        if pre == pre and post == post:
            per_seed.setdefault(r["seed"], []).append(post - pre)
            pre_all.append(pre)
            post_all.append(post)
    vals = [float(np.mean(v)) for v in per_seed.values()]
    if not vals:
        return Verdict("CE after − before first divergence", float("nan"), float("nan"), float("nan"), 0, 0,
                       float("nan"), float("nan"))
    m, lo, hi = t_interval(vals, confidence)
    return Verdict("CE after − before first divergence", m, lo, hi, len(vals), 0, float(np.mean(post_all)),
                   float(np.mean(pre_all)))


def pick_sample(samples, label: str | None = None, seed: int | None = None, step: int | None = None,
                index: int = 0, kept_only: bool = True):
    """One samples.jsonl row for the heatmap: filters by label/seed/step (``step=None`` = the latest step with a
    usable refinement), then the ``index``-th row, preferring refinements that share a prefix with y. Kept
    refinements are preferred (``kept_only``); when none was kept, a dropped one is shown."""
    s = samples
    if label is not None:
        s = s[s["label"].astype(str) == str(label)]
    if seed is not None:
        s = s[s["seed"] == seed]
    s = s[s["refined_token_ce"].notna() & s["refined_tokens"].notna()]
    if step is not None:
        s = s[s["step"] == step]
    if kept_only and "kept" in s.columns and s["kept"].fillna(False).astype(bool).any():
        s = s[s["kept"].fillna(False).astype(bool)]  # else fall back to refinements the filter dropped
    if s.empty:
        raise ValueError(f"no refined sample with token CE for label={label} seed={seed} step={step}")
    if step is None:
        s = s[s["step"] == s["step"].max()]
    shared = s.apply(lambda r: 0 < first_divergence(r["response_tokens"] or [], r["refined_tokens"] or []), axis=1)
    s = s.loc[s.index[shared.values].tolist() + s.index[~shared.values].tolist()]
    return s.iloc[min(index, len(s) - 1)]


def numeric_order(labels: Iterable[str]) -> list[str]:
    """Labels sorted by their numeric value when they are numbers (λ sweep), else unchanged."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    try:
        return sorted(labels, key=float)
    except ValueError:
        return labels


def fig_learning_curve(curve, x: str | None = None):
    """Every numeric column of a learning-curve table against its step column, one panel each."""
    x = x or next((c for c in ("step", "steps", "iter", "epoch") if c in curve.columns), None)
    cols = [c for c in curve.columns if c != x and np.issubdtype(curve[c].dtype, np.number)]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(4.2 * max(1, len(cols)), 3.2), squeeze=False)
    xs = curve[x] if x else np.arange(len(curve))
    for ax, c in zip(axes[0], cols):
        ax.plot(xs, curve[c], lw=1.5)
        ax.set_title(c)
        ax.set_xlabel(x or "row")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def similarity(a: str, b: str) -> float:
    """difflib ratio of two texts (1 = identical): how minimal a refinement's edit is."""
    return difflib.SequenceMatcher(None, a or "", b or "").ratio()
