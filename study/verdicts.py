"""The paper's claims as a machine-readable verdict table (``figures/tables/verdicts.csv`` and ``.md``).

    from study import stats, verdicts
    verdicts.record("dynamic_vs_dapo_reward", stats.paired_final(df, "reward_mean", "dynamic", "dapo", 3))

A notebook records each claim it tests with one ``record`` call: it prints the verdict line and appends a row
(claim id + numbers) to the notebook's output log, which ``study reproduce`` keeps in the manifest. After the
notebooks ran, ``study reproduce`` assembles every row of the profile into ``tables/verdicts.csv/.md``
(``write``): one row per claim in ``CLAIMS``, in that order; a claim no notebook recorded (its runs are not in
the profile, or its notebook was never executed) gets the verdict ``not run``.

Columns: ``claim, statistic, estimate, ci_low, ci_high, n, mde80, verdict``, then ``p`` (two-sided paired
t-test), ``p_holm`` (Holm-adjusted over the family), ``direction`` (the paper's sign), ``margin`` (the
smallest effect the claim is about), ``notebook`` and ``note``. Verdict rules: ``study.stats.classify``.

Multiplicity: the verdicts are one family. Every claim with a p-value (direction ``>`` or ``<``) enters Holm's
step-down correction; a *reproduced* or *contradicted* verdict whose adjusted p is ≥ 0.05 becomes
*inconclusive*, with the reason in ``note``. The equivalence claim (``=``) is tested against its margin and is
not in the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from study import outputs, stats


@dataclass(frozen=True)
class Claim:
    notebook: str
    """Notebook that records it."""
    paper: str
    """The claim, as the paper makes it."""
    direction: str
    """``>``: the paper says the statistic is positive; ``<``: negative; ``=``: no change (equivalence)."""
    margin: float | None
    """Smallest effect the claim is about, in the statistic's units (None: no natural scale)."""


# Margins: pass@1 in points: 3 (the paper's HumanEval effect of dynamic over DAPO is +2.7 points); training
# reward (CodeRL, -1..1): 0.05, about 4% of the step from a failing (-0.3) to a passing (+1) answer; ratios per
# 100 steps: 0.05 (5 percentage points); token CE: 0.1 nats; within-group reward std: 0.02.
CLAIMS: dict[str, Claim] = {
    "dapo_learns": Claim("02_dapo_vs_dynamic", "RL fine-tuning (DAPO) raises held-out pass@1 over the initial "
                         "model", ">", 3.0),
    "dynamic_vs_dapo_pass1": Claim("02_dapo_vs_dynamic", "Dynamic has a higher held-out pass@1 than DAPO "
                                   "(Table 1)", ">", 3.0),
    "dynamic_vs_dapo_reward": Claim("02_dapo_vs_dynamic", "Dynamic ends with a higher training reward than DAPO "
                                    "(Fig. 5a)", ">", 0.05),
    "dynamic_vs_dapo_kl": Claim("02_dapo_vs_dynamic", "Dynamic has a higher held-out pass@1 than DAPO with a "
                                "static KL (Table 2's DAPO column, β = 1e-2)", ">", 3.0),
    "dynamic_vs_static_reward": Claim("01_training_dynamics", "PPO: dynamic ends with a higher reward than the "
                                      "static KL constraint (Fig. 4)", ">", 0.05),
    "dynamic_vs_none_reward": Claim("01_training_dynamics", "PPO: dynamic ends with a higher reward than no "
                                    "constraint (Fig. 4)", ">", 0.05),
    "none_collapses": Claim("01_training_dynamics", "PPO without a constraint collapses: its reward ends lower, "
                            "relative to its early level, than with the static KL (Fig. 4)", "<", 0.05),
    "static_kl_plateau": Claim("01_training_dynamics", "The static KL plateaus while the dynamic constraint's KL "
                               "keeps growing (Fig. 4)", ">", None),
    "ce_low_stable": Claim("01_training_dynamics", "The dynamic constraint's CE stays low and stable over "
                           "training (Fig. 4, right)", "=", 0.05),
    "improvement_ratio_decays": Claim("03_improvement_ratio", "The improvement ratio decays over training: the "
                                      "constraint is self-annealing (Fig. 5b)", "<", 0.05),
    "ce_after_first_change": Claim("04_token_heatmap", "Token CE is near zero on the copied prefix and rises "
                                   "from the first change (Fig. 6)", ">", 0.1),
    "lambda_early_reward": Claim("05_ablations", "A large λ raises the early reward (Fig. 7)", ">", 0.05),
    "lambda_group_std": Claim("05_ablations", "A large λ lowers the final within-group reward std (Fig. 7)",
                              "<", 0.02),
    "lambda_final_reward": Claim("05_ablations", "A large λ lowers the final reward (Fig. 7)", "<", 0.05),
    "filter_helps": Claim("05_ablations", "The filter r(y') > r(y) gives a higher final reward than no filter "
                          "(App. B)", ">", 0.05),
    "worse_refinements_grow": Claim("05_ablations", "Without the filter, refinements that lower the reward "
                                    "become more common over training (App. B)", ">", 0.05),
    "dynamic_vs_static_sft": Claim("08_beyond_the_paper", "A dynamic target (refinements) beats a static one "
                                   "(the dataset's solutions; Sec. 3.3)", ">", 3.0),
    "dynamic_vs_relift": Claim("08_beyond_the_paper", "Dynamic beats ReLIFT, RL interleaved with SFT on offline "
                               "demonstrations (related work)", ">", 3.0),
    "refiner_vs_self": Claim("08_beyond_the_paper", "The frozen reference as refiner beats self-refinement by the "
                             "current policy (Sec. 3.2)", ">", 3.0),
}

COLUMNS = ["claim", "statistic", "estimate", "ci_low", "ci_high", "n", "mde80", "verdict", "p", "p_holm",
           "direction", "margin", "notebook", "note"]


def line(claim: str, e: stats.Estimate, verdict: str) -> str:
    c = CLAIMS[claim]
    mde = f", MDE80 {e.mde80:.3g}" if e.mde80 == e.mde80 else ""
    paper = f"within ±{c.margin:g}" if c.direction == "=" else f"{c.direction} 0"
    return (f"{claim}: {e.statistic} = {stats.fmt(e)}, n = {e.n}{mde} (paper: {paper}): {verdict}"
            + (f" [{e.note}]" if e.note and verdict in ("not run", "inconclusive") else ""))


def line_of(row: dict) -> str:
    """``line`` of a logged claim row (what the manifest keeps)."""
    e = stats.Estimate(row.get("statistic", ""), _num(row.get("estimate")), _num(row.get("ci_low")),
                       _num(row.get("ci_high")), int(row.get("n") or 0), _num(row.get("sd")), _num(row.get("p")),
                       note=row.get("note") or "", not_run=bool(row.get("not_run")))
    return line(row["claim"], e, row.get("verdict", stats.classify(e, CLAIMS[row["claim"]].direction,
                                                                   CLAIMS[row["claim"]].margin)))


def record(claim: str, e: stats.Estimate) -> None:
    """Print the claim's verdict line and log its row for the profile's verdict table."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim '{claim}' (known: {', '.join(CLAIMS)})")
    c = CLAIMS[claim]
    verdict = stats.classify(e, c.direction, c.margin)
    print(line(claim, e, verdict))
    d = e.asdict()
    outputs.log({"kind": "claim", "claim": claim, "verdict": verdict,
                 **{k: d[k] for k in ("statistic", "estimate", "ci_low", "ci_high", "n", "sd", "mde80", "p",
                                      "note", "not_run", "values")}})


def _num(x):
    return float("nan") if x is None else float(x)


def assemble(rows: list[dict], alpha: float = stats.ALPHA):
    """The verdict table: one row per claim of ``CLAIMS`` (a later row of the same claim replaces an earlier one),
    Holm-adjusted p-values over the claims that have one, ``not run`` for claims never recorded."""
    import pandas as pd

    got = {r["claim"]: r for r in rows if r.get("claim") in CLAIMS}
    table = []
    for cid, c in CLAIMS.items():
        r = got.get(cid)
        if r is None:
            table.append({"claim": cid, "statistic": "", "estimate": float("nan"), "ci_low": float("nan"),
                          "ci_high": float("nan"), "n": 0, "mde80": float("nan"), "verdict": "not run",
                          "p": float("nan"), "direction": c.direction, "margin": c.margin, "notebook": c.notebook,
                          "note": f"not recorded: {c.notebook} did not test it for this profile"})
            continue
        e = stats.Estimate(r.get("statistic", ""), _num(r.get("estimate")), _num(r.get("ci_low")),
                           _num(r.get("ci_high")), int(r.get("n") or 0), _num(r.get("sd")), _num(r.get("p")),
                           note=r.get("note") or "", not_run=bool(r.get("not_run")))
        table.append({"claim": cid, "statistic": e.statistic, "estimate": e.estimate, "ci_low": e.ci_low,
                      "ci_high": e.ci_high, "n": e.n, "mde80": e.mde80, "verdict": stats.classify(e, c.direction,
                                                                                                   c.margin),
                      "p": e.p if c.direction != "=" else float("nan"), "direction": c.direction,
                      "margin": c.margin, "notebook": c.notebook, "note": e.note})
    adj = stats.holm([t["p"] for t in table])
    family = sum(1 for p in adj if p == p)
    for t, p in zip(table, adj):
        t["p_holm"] = p
        if t["verdict"] in ("reproduced", "contradicted") and t["direction"] != "=" and not p < alpha:
            t["note"] = "; ".join(x for x in (t["note"], f"interval excludes 0 but Holm-adjusted p = {p:.3g} "
                                              f"over {family} verdicts") if x)
            t["verdict"] = "inconclusive"
    return pd.DataFrame(table, columns=COLUMNS)


def summary(table) -> str:
    """One sentence: how many verdicts, the family size, and the count per verdict."""
    counts = table["verdict"].map(lambda v: "no effect larger than X" if v.startswith("no effect") else v)
    parts = ", ".join(f"{k}: {v}" for k, v in counts.value_counts().items())
    family = int(table["p_holm"].notna().sum())
    return (f"{len(table)} claims ({parts}); Holm's correction over the {family} verdicts with a p-value "
            f"(α = {stats.ALPHA}); intervals are 95% paired t-intervals over seeds (n − 1 df), MDE80 the "
            f"smallest true effect a paired t-test detects with 80% power.")


def markdown(table) -> str:
    def f(x, d=3):
        return "" if x != x else f"{x:+.{d}f}"

    view = table.assign(
        estimate=table["estimate"].map(f),
        ci=[f"[{f(a)}, {f(b)}]" if a == a else "" for a, b in zip(table["ci_low"], table["ci_high"])],
        mde80=table["mde80"].map(lambda x: "" if x != x else f"{x:.3g}"),
        p_holm=table["p_holm"].map(lambda x: "" if x != x else f"{x:.3g}"),
        margin=table["margin"].map(lambda x: "" if x is None or x != x else f"{x:g}"),
    )[["claim", "statistic", "estimate", "ci", "n", "mde80", "verdict", "p_holm", "direction", "margin", "note"]]
    return summary(table) + "\n\n" + outputs.to_markdown(view)


def write(figures_dir: str | Path, rows: list[dict]):
    """Assemble ``rows`` and write ``<figures_dir>/tables/verdicts.csv`` and ``.md``; returns the table."""
    from study.runs import atomic_write_text

    table = assemble(rows)
    base = Path(figures_dir) / "tables"
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base / "verdicts.csv", table.to_csv(index=False))
    atomic_write_text(base / "verdicts.md", markdown(table))
    return table
