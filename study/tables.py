"""Tables of the study (pass@1 with gains, qualitative refinements, the beyond-the-paper summary) and their
inline display. Numbers come from ``study.stats``; files are written by ``study.outputs.save_table``.

    from study import tables
    t = tables.relative_gain_table(ev, base, order=["dapo", "dynamic"])   # Table 1
    q = tables.qualitative_table(samples, k=4, label="dynamic")            # Figs. 8-11 / Table 4
    tables.show_refinements(q, samples)                                    # each as a side-by-side HTML diff
    s = tables.beyond_summary(df, ev, last_k=3)                            # notebook 08's summary
"""

from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np

from study import outputs, stats


def relative_gain_table(eval_df, base_df, order: Sequence[str] | None = None, base_name: str = "initial model"):
    """Table 1: pass@1 (%) per benchmark, mean over seeds, with the relative gain over the initial model."""
    import pandas as pd

    benches = list(dict.fromkeys(base_df["benchmark"])) if len(base_df) else sorted(eval_df["benchmark"].unique())
    base = {r.benchmark: 100 * r._2 for r in base_df.itertuples()} if len(base_df) else {}
    rows = [{"model": base_name, **{b: f"{base.get(b, float('nan')):.1f}" for b in benches},
             "Avg.": f"{_mean([base.get(b, np.nan) for b in benches]):.1f}"}]
    labels = list(order) if order else list(dict.fromkeys(eval_df["label"].astype(str)))
    base_avg = _mean([base.get(b, np.nan) for b in benches])
    for lab in labels:
        e = eval_df[eval_df["label"].astype(str) == lab]
        row = {"model": lab}
        vals = []
        for b in benches:
            s = 100 * e[e["benchmark"] == b]["pass@1"]
            m = float(s.mean()) if len(s) else float("nan")
            vals.append(m)
            row[b] = _with_gain(m, base.get(b, np.nan), len(s))
        row["Avg."] = _with_gain(_mean(vals), base_avg, e["seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(xs) -> float:
    """Mean of the numbers (NaN when there are none, without numpy's empty-slice warning)."""
    xs = [float(x) for x in xs]
    return float(np.mean(xs)) if xs else float("nan")


def _with_gain(v: float, base: float, n: int) -> str:
    if v != v:
        return ""
    gain = f" ({100 * (v - base) / base:+.1f}%)" if base == base and base > 0 else ""
    return f"{v:.1f}{gain}" + (f" n={n}" if n > 1 else "")


def side_by_side_diff(original: str, refined: str) -> str:
    """Line diff y → y' as unified-diff text ('-' lines only in y, '+' lines only in y')."""
    lines = difflib.unified_diff((original or "").splitlines(), (refined or "").splitlines(), "y (policy)",
                                 "y' (refiner)", lineterm="", n=2)
    return "\n".join(lines) or "(identical)"


def diff_html(original: str, refined: str) -> str:
    """Side-by-side HTML diff (for display in a notebook)."""
    return difflib.HtmlDiff(wrapcolumn=70).make_table((original or "").splitlines(), (refined or "").splitlines(),
                                                      "y (policy)", "y' (refiner)", context=False)


def similarity(a: str, b: str) -> float:
    """difflib ratio of two texts (1 = identical): how minimal a refinement's edit is."""
    return difflib.SequenceMatcher(None, a or "", b or "").ratio()


def qualitative_table(samples, k: int = 4, label: str | None = None):
    """Figs. 8-11: the ``k`` refinements with the largest reward gain (one per problem), with their diff."""
    import pandas as pd

    cols = ["run", "step", "task_id", "reward", "refined_reward", "gain", "diff"]
    s = samples
    if not len(s) or "refined" not in s.columns:
        return pd.DataFrame(columns=cols)
    if label is not None and "label" in s.columns:
        s = s[s["label"].astype(str) == str(label)]
    s = s[s["refined"].notna() & s["refined_reward"].notna()].copy()
    if s.empty:
        return pd.DataFrame(columns=cols)
    s["gain"] = s["refined_reward"].astype(float) - s["reward"].astype(float)
    s = s.sort_values(["gain", "step"], ascending=[False, False]).drop_duplicates("task_id").head(k)
    s["diff"] = [side_by_side_diff(a, b) for a, b in zip(s["response"], s["refined"])]
    return s[[c for c in cols if c in s.columns]].reset_index(drop=True)


def show_refinements(table, samples) -> None:
    """Display each row of ``qualitative_table`` as a heading and a side-by-side HTML diff."""
    from IPython.display import HTML, Markdown

    for _, r in table.iterrows():
        src = samples[(samples["run"] == r["run"]) & (samples["step"] == r["step"])
                      & (samples["task_id"] == r["task_id"])].iloc[0]
        outputs.display(Markdown(f"**{r['task_id']}** (step {r['step']}): reward {r['reward']:.3g} → "
                                 f"{r['refined_reward']:.3g}"))
        outputs.display(HTML(diff_html(src["response"], src["refined"])))


def median_similarity(samples, label: str | None = None) -> tuple[float, int]:
    """(median difflib similarity y → y' over the logged refinements of ``label``, their count)."""
    s = samples
    if not len(s) or "refined" not in s.columns:
        return float("nan"), 0
    if label is not None:
        s = s[s["label"].astype(str) == str(label)]
    s = s[s["refined"].notna()]
    sims = [similarity(a, b) for a, b in zip(s["response"], s["refined"])]
    return (float(np.median(sims)) if sims else float("nan")), len(sims)


def _cell(e: stats.Estimate) -> str:
    if e.estimate != e.estimate:
        return "n/a"
    return f"{e.estimate:.3g}" + (f" [{e.ci_low:.3g}, {e.ci_high:.3g}]" if e.ci_low == e.ci_low else "")


def beyond_summary(df, ev, last_k: int):
    """Notebook 08's table: per variant, seeds, final train reward, held-out pass@1 (%), final KL and wall time,
    each the mean over seeds with a 95% t-interval."""
    import pandas as pd

    rows = []
    for lab in stats.labels(df):
        row = {"variant": lab, "seeds": int(df[df["label"].astype(str) == lab]["seed"].nunique())}
        row["final train reward"] = _cell(stats.one_sample(stats.window(df, "reward_mean", lab, last_k), ""))
        row["held-out pass@1 (%)"] = _cell(stats.one_sample(stats.eval_per_seed(ev, lab), ""))
        row["final KL"] = _cell(stats.one_sample(stats.window(df, "kl", lab, last_k), ""))
        d = df[df["label"].astype(str) == lab]
        row["wall time (s)"] = _cell(stats.one_sample(d.groupby("seed")["time_step"].sum(min_count=1).to_dict(), ""))
        rows.append(row)
    return pd.DataFrame(rows)


def time_ratio(df, a: str, b: str, column: str = "time_step") -> stats.Estimate:
    """Per seed Σ time of a / Σ time of b (paired by seed); t-interval over seeds."""
    what = f"training time {a} / {b} (paired by seed)"
    t = df.assign(label=df["label"].astype(str)).groupby(["label", "seed"])[column].sum(min_count=1)
    if a not in t.index.get_level_values(0) or b not in t.index.get_level_values(0):
        return stats.missing(what, f"no arm '{a}' or '{b}'", not_run=True)
    ta, tb = t.xs(a).to_dict(), t.xs(b).to_dict()
    return stats.one_sample({s: ta[s] / tb[s] for s in ta if s in tb and tb[s]}, what)


# ---------------------------------------------------------------------------------------------------------------
# the reference model (notebook 00)


def reference_table(head: dict):
    """The headline numbers of the reference model (``experiments.reference_headline``) as a table."""
    import pandas as pd

    return pd.DataFrame([{"metric": k, "value": v} for k, v in head.items()])


def reference_details(metrics: dict):
    """Every number of the reference's metrics.json except its training recipe."""
    import pandas as pd

    from study.experiments import flatten

    return pd.DataFrame([{"metric": k, "value": v} for k, v in flatten(metrics).items()
                         if not k.startswith("recipe.")])


def note_reference(head: dict) -> None:
    p1 = head["pass@1"]
    verb = head["verbatim rate (own correct samples)"]
    imp = head["improvement ratio at step 0 (own failing samples)"]
    inside = "inside" if 0.15 <= p1 <= 0.60 else "outside"
    outputs.note(f"reference pass@1 = {p1:.3f} (window 0.15-0.60: {inside}); verbatim rate on its own correct "
                        f"samples = {verb:.3f} (aim: 0.90); improvement ratio at step 0 = {imp:.3f}",
                        pass_at_1=p1, verbatim=verb, improved=imp)


# ---------------------------------------------------------------------------------------------------------------
# findings that are not claims of the paper (printed and kept in the manifest)


def note_refinements(df, samples, label: str = "dynamic") -> None:
    """Notebook 06: the share of ALL refinements with r(y') > r(y), from the per-step counts in the metrics
    (samples.jsonl logs kept pairs first, so its rows are no sample of the refiner), and how minimal the logged
    edits are."""
    e = stats.ratio_of_sums(df, "n_improved", "n_refined", label)
    worse = stats.ratio_of_sums(df, "n_worse", "n_refined", label)
    med, n = median_similarity(samples, label)
    share = (f"{e.estimate:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}] over {e.n} runs" if e.ci_low == e.ci_low else
             f"{e.estimate:.3f} over {e.n} run(s)" if e.estimate == e.estimate else f"n/a ({e.note})")
    worse_s = f"{worse.estimate:.3f}" if worse.estimate == worse.estimate else f"n/a ({worse.note})"
    outputs.note(f"{label}: share of all refinements with r(y') > r(y) = {share}; with r(y') < r(y) = "
                        f"{worse_s}; median similarity y → y' of the {n} logged refinements = {med:.2f} (paper: "
                        f"minimal edits, close to 1)", improved_share=e.estimate, improved_low=e.ci_low,
                        improved_high=e.ci_high, worse_share=worse.estimate, median_similarity=med, n_logged=n)


def note_relift(df) -> None:
    """Notebook 08: how often ReLIFT's SFT term fired (None when there is no ReLIFT arm)."""
    rl = df[df["label"].astype(str) == "relift"]
    if rl.empty or "relift_sft_items" not in rl.columns:
        return
    items = rl["relift_sft_items"].fillna(0)
    outputs.note(f"ReLIFT: {int((items > 0).sum())} SFT steps over {rl['seed'].nunique()} seed(s), mean "
                        f"buffered questions per SFT step = {rl.loc[items > 0, 'relift_sft_items'].mean():.1f}")


def note_ce_scope(df, last_k: int) -> None:
    """Notebook 08: CE over the full y' vs from the first change (two-sided), and the time per step it saves."""
    if not {"dynamic", "from_first_diff"} <= set(stats.labels(df)):
        return
    v = stats.paired_final(df, "reward_mean", "dynamic", "from_first_diff", last_k)
    t = df.assign(label=df["label"].astype(str)).groupby(["label", "seed"])["time_step"].mean()
    saved = stats.one_sample({s: 1 - t[("from_first_diff", s)] / t[("dynamic", s)]
                              for s in t.xs("dynamic").index if ("from_first_diff", s) in t.index}, "")
    effect = ("no detectable difference" if not (v.ci_low > 0 or v.ci_high < 0)
              else "full better" if v.ci_low > 0 else "from_first_diff better")
    outputs.note(f"final reward full − from_first_diff CE scope = {stats.fmt(v)} over {v.n} seed(s), MDE80 "
                        f"{v.mde80:.3g}: {effect}; time per step saved by from_first_diff = "
                        f"{100 * saved.estimate:+.1f}% [{100 * saved.ci_low:+.1f}, {100 * saved.ci_high:+.1f}] "
                        "(paired by seed)", **{k: x for k, x in v.asdict().items() if k != "values"},
                        time_saved=saved.estimate)
