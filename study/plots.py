"""Figures of the paper, drawn from tidy run tables (``study.experiments.load_group``). Drawing only: the numbers
behind bands and verdicts come from ``study.stats``, files are written by ``study.outputs``.

    from study import experiments as ex, outputs, plots
    df = ex.load_group("fig4_ppo", "mini")
    fig = plots.fig_training_dynamics(df, diffs=[("dynamic", "static")])   # Fig. 4 + the paired difference row
    outputs.save_figure(fig, "fig4_training_dynamics", "figures")          # PNG + PDF, shown inline

Curves are the mean over seeds. Bands: for a quantity with bounds (KL ≥ 0, CE ≥ 0, ratios in [0, 1], a std ≥ 0;
``BOUNDED``) the central 95% of the seeds' values (a percentile band, which never leaves the bounds); for the
others the Student-t 95% interval of the mean. No band with one seed. ``diffs=[(a, b)]`` adds a row with the
paired difference a − b per step (same seeds) and its t-band: the comparison the verdicts make.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import matplotlib

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study import stats  # noqa: E402

# Metric -> axis label (paper wording).
LABELS = {
    "reward_mean": "reward",
    "kl": "KL(π_θ ‖ π_ref)",
    "dynamic_ce": "cross-entropy (L_DC)",
    "improvement_ratio": "improvement ratio",
    "group_reward_std": "within-group reward std",
    "kept_frac": "kept refinements",
    "worse_ratio": "refinements worse than y",
    "response_length": "response length",
}

BOUNDED = {"kl", "dynamic_ce", "improvement_ratio", "kept_frac", "refined_frac", "group_reward_std", "reward_std",
           "response_length", "worse_ratio", "entropy"}
"""Metrics with bounds (≥ 0, or in [0, 1]): drawn with a percentile band over seeds."""


def band_kind(metric: str) -> str:
    return "percentile" if metric in BOUNDED else "t"


def _smoothed(df, metric: str, smooth: int):
    d = df.dropna(subset=[metric]) if metric in df.columns else df.iloc[0:0]
    if smooth > 1 and len(d):
        d = d.sort_values("step").copy()
        d[metric] = d.groupby(["label", "seed"], observed=True)[metric].transform(
            lambda s: s.rolling(smooth, min_periods=1).mean())
    return d


def plot_curves(df, metric: str, ax=None, labels: Sequence[str] | None = None, smooth: int = 1,
                confidence: float = 0.95, title: str | None = None, colors: dict | None = None):
    """Mean of ``metric`` over seeds per label vs step, with a band (see the module docstring).
    ``smooth`` = rolling window (steps), applied per run before averaging."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    d = _smoothed(df, metric, smooth)
    kind = band_kind(metric)
    agg = stats.aggregate(d, metric, confidence=confidence, band=kind) if len(d) else None
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
        band = "central 95% of seeds" if kind == "percentile" else "95% t-interval"
        ax.legend(fontsize=8, title=f"band: {band}", title_fontsize=7)
    else:
        ax.text(0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    return ax


def plot_paired_difference(df, metric: str, pairs: Sequence[tuple[str, str]], ax=None, smooth: int = 1,
                           confidence: float = 0.95, colors: dict | None = None):
    """Per step, the mean over seeds of a − b (the same seeds in both arms) with its paired t-band, for each
    (a, b) in ``pairs``; a dashed line at 0."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.0))
    d = _smoothed(df, metric, smooth)
    order = list(dict.fromkeys(df["label"].astype(str)))
    for a, b in pairs:
        c = stats.paired_curve(d, metric, a, b, confidence)
        if c.empty:
            continue
        color = (colors or {}).get(a, f"C{order.index(str(a)) if str(a) in order else 0}")
        n = int(c["n"].max())
        ax.plot(c["step"], c["mean"], color=color, lw=1.4, label=f"{a} − {b} (n={n})")
        if n > 1:
            ax.fill_between(c["step"], c["low"], c["high"], color=color, alpha=0.2, lw=0)
    ax.axhline(0, color="0.3", lw=0.8, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel(f"Δ {LABELS.get(metric, metric)}")
    ax.grid(alpha=0.3)
    if len(ax.lines) > 1:
        ax.legend(fontsize=8, title="paired by seed, 95% t-band", title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "no paired difference", ha="center", va="center", transform=ax.transAxes, color="0.5")
    return ax


def fig_panels(df, metrics: Sequence[str], titles: Sequence[str] | None = None, labels=None, smooth: int = 1,
               suptitle: str | None = None, diffs: Sequence[tuple[str, str]] | None = None):
    """One panel per metric, side by side; with ``diffs`` a second row of paired differences per metric."""
    rows = 2 if diffs else 1
    fig, axes = plt.subplots(rows, len(metrics), figsize=(4.8 * len(metrics), 3.6 + 3.0 * (rows - 1)),
                             squeeze=False, height_ratios=[1.2, 1][:rows])
    for i, m in enumerate(metrics):
        plot_curves(df, m, ax=axes[0, i], labels=labels, smooth=smooth, title=(titles or [None] * len(metrics))[i])
        if diffs:
            plot_paired_difference(df, m, diffs, ax=axes[1, i], smooth=smooth)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def fig_training_dynamics(df, smooth: int = 1, diffs: Sequence[tuple[str, str]] | None = None):
    """Fig. 4: PPO w/o constraint / static / dynamic -- reward, KL to the reference, and L_DC (dynamic only)."""
    return fig_panels(df, ["reward_mean", "kl", "dynamic_ce"], ["Reward", "KL divergence", "Cross entropy"],
                      smooth=smooth, diffs=diffs)


def fig_lambda(df, smooth: int = 1, diffs: Sequence[tuple[str, str]] | None = None):
    """Fig. 7: the λ sweep -- reward and within-group reward std."""
    return fig_panels(df, ["reward_mean", "group_reward_std"], ["Reward", "Group reward std"],
                      labels=numeric_order(df["label"]), smooth=smooth, diffs=diffs)


# ---------------------------------------------------------------------------------------------------------------
# token-level CE heatmap (Fig. 6)


def _display(tok: str) -> str:
    """A token as drawn: BPE space/newline marks decoded, other control characters as ``\\xNN`` (no font has a
    glyph for them: matplotlib warned on stderr, e.g. for the smoke model's stray ``\\x05``)."""
    s = tok.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ").replace("\t", "    ")
    return "".join(ch if ch == "\n" or ch.isprintable() else f"\\x{ord(ch):02x}" for ch in s)


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
    k = stats.first_divergence(y, yp)
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
