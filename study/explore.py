"""The token-CE explorer: browse every logged refinement y' of every run, each token coloured by the policy's CE.

    from study import explore
    explore.explore("mini", "runs")                   # JupyterLab: widgets (group, arm, seed, step, sample, filters)
    explore.explore(samples_df)                       # the same over any samples table (e.g. the walkthrough's)
    explore.write_page("mini", "runs", "figures/explorer.html")   # one self-contained HTML page, no server

What it shows for the selected sample: the problem, y and y' with the token diff marked (tokens of y that the
refiner dropped or replaced struck through, tokens of y' it inserted underlined, the first change boxed), each
token of y' coloured by the policy's CE with its value on hover, the rewards r(y) and r(y'), whether the filter
kept y', the first-change index and the mean CE before and from it. Filters: kept / not kept; improved
(r(y') > r(y)) / worse / same reward / verbatim (y' = y) / not refined; the problem family.

In a notebook executed unattended (``study reproduce``; ``study.outputs.batch()``) or without ``ipywidgets`` the
call renders a static HTML view of the default selection plus a count table, so the executed notebook still
shows it. The page (``write_page``) embeds the samples as gzip-compressed JSON and a small vanilla-JS renderer:
nothing is fetched; it needs a browser with ``DecompressionStream`` (Chromium 80+, Firefox 113+, Safari 16.4+).

All numbers the views show (first change, CE before/after, the diff) are computed here, once, in Python
(``annotate``); the page's JavaScript only lays them out.
"""

from __future__ import annotations

import base64
import difflib
import gzip
import html
import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from study import outputs, stats

CHANGES = ["improved", "worse", "same reward", "verbatim", "not refined"]
"""What the refiner did to y: r(y') > r(y), r(y') < r(y), an edit with the same reward, y' = y, no y'."""


# ---------------------------------------------------------------------------------------------------------------
# data


def family(task_id: str) -> str:
    """Problem family from a task id: ``mini/train/cond-0004`` -> ``cond``; ``HumanEval/12`` -> ``HumanEval``."""
    parts = str(task_id or "").split("/")
    m = re.match(r"([A-Za-z_]+)-\d+$", parts[-1])
    return m.group(1) if m else parts[0]


def change(row) -> str:
    """One of ``CHANGES`` for a samples.jsonl row."""
    ref = row.get("refined")
    if ref is None or (isinstance(ref, float) and ref != ref):
        return "not refined"
    if ref == row.get("response"):
        return "verbatim"
    r, rr = row.get("reward"), row.get("refined_reward")
    if r is None or rr is None or rr != rr:
        return "same reward"
    from study.filter import TOL

    return "improved" if rr > r + TOL else "worse" if rr < r - TOL else "same reward"


def token_diff(y: list[str], yp: list[str]) -> list[list]:
    """The non-equal opcodes of a token diff y -> y' (difflib): ``[tag, i1, i2, j1, j2]``."""
    sm = difflib.SequenceMatcher(None, y, yp, autojunk=False)
    return [[t, i1, i2, j1, j2] for t, i1, i2, j1, j2 in sm.get_opcodes() if t != "equal"]


def _list(v) -> list:
    return list(v) if isinstance(v, (list, tuple, np.ndarray)) else []


def annotate(samples):
    """Add the explorer's columns: family, change, first_change, ce_before, ce_after, diff."""
    s = samples.copy()
    if s.empty:
        for c in ("family", "change", "first_change", "ce_before", "ce_after", "diff"):
            s[c] = []
        return s
    recs = s.to_dict("records")
    s["family"] = [family(r.get("task_id")) for r in recs]
    s["change"] = [change(r) for r in recs]
    firsts, pres, posts, diffs = [], [], [], []
    for r in recs:
        y, yp = _list(r.get("response_tokens")), _list(r.get("refined_tokens"))
        ce = _list(r.get("refined_token_ce"))
        if yp and len(ce) == len(yp):
            pre, post, k = stats.ce_split({"response_tokens": y, "refined_tokens": yp, "refined_token_ce": ce})
        else:
            pre, post, k = float("nan"), float("nan"), stats.first_divergence(y, yp) if yp else -1
        firsts.append(k)
        pres.append(pre)
        posts.append(post)
        diffs.append(token_diff(y, yp) if yp else [])
    s["first_change"], s["ce_before"], s["ce_after"], s["diff"] = firsts, pres, posts, diffs
    return s


def load_samples(profile, runs_dir="runs", groups: Iterable[str] | None = None, seeds=None):
    """samples.jsonl of every run of the profile's groups (default: all; groups whose runs are not all trained
    are left out), one row per (group, logged sample), annotated (``annotate``)."""
    import pandas as pd

    from study import experiments as ex

    from study.errors import UserError

    prof = ex.load_profile(profile)
    frames = []
    for g in groups or list(prof.groups):
        try:
            sm = ex.load_samples(g, prof, runs_dir, seeds, train_missing=False)
        except UserError:  # a group whose runs are not trained (yet): the others are still shown
            continue
        if len(sm):
            sm.insert(0, "group", g)
            frames.append(sm)
    return annotate(pd.concat(frames, ignore_index=True)) if frames else annotate(pd.DataFrame())


def _as_samples(source, runs_dir, groups, seeds):
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        s = source.copy()
        if "group" not in s.columns:
            s.insert(0, "group", "samples")
        for c, v in (("label", "-"), ("seed", 0), ("run", "-")):
            if c not in s.columns:
                s[c] = v
        return annotate(s) if "change" not in s.columns else s
    return load_samples(source, runs_dir, groups, seeds)


def select(samples, group=None, arm=None, seed=None, kept=None, change=None, family=None, step=None):
    """Rows matching the filters (None or "all" = any). ``kept``: True/False; ``step``: an int."""
    s = samples
    for col, v in (("group", group), ("label", arm), ("seed", seed), ("change", change), ("family", family),
                   ("step", step)):
        if v is not None and v != "all":
            s = s[s[col].astype(str) == str(v)]
    if kept is not None and kept != "all":
        want = kept if isinstance(kept, bool) else kept == "kept"
        s = s[s["kept"].fillna(False).astype(bool) == want]
    return s


def pick_sample(samples, label: str | None = None, seed: int | None = None, step: int | None = None,
                index: int = 0, kept_only: bool = True):
    """One samples.jsonl row for the Fig. 6 heatmap: filters by label/seed/step (``step=None`` = the latest step
    with a usable refinement), then the ``index``-th row, preferring refinements that share a prefix with y. Kept
    refinements are preferred (``kept_only``); when none was kept, a dropped one is shown."""
    s = samples
    if label is not None:
        s = s[s["label"].astype(str) == str(label)]
    if seed is not None:
        s = s[s["seed"] == seed]
    s = s[s["refined_token_ce"].notna() & s["refined_tokens"].notna()] if len(s) else s
    if step is not None:
        s = s[s["step"] == step]
    if kept_only and "kept" in s.columns and s["kept"].fillna(False).astype(bool).any():
        s = s[s["kept"].fillna(False).astype(bool)]  # else fall back to refinements the filter dropped
    if s.empty:
        raise ValueError(f"no refined sample with token CE for label={label} seed={seed} step={step}")
    if step is None:
        s = s[s["step"] == s["step"].max()]
    shared = s.apply(lambda r: 0 < stats.first_divergence(r["response_tokens"] or [], r["refined_tokens"] or []),
                     axis=1)
    s = s.loc[s.index[shared.values].tolist() + s.index[~shared.values].tolist()]
    return s.iloc[min(index, len(s) - 1)]


def first_improved(samples, label: str | None = None):
    """The first logged sample (by run, then step) whose refinement the filter kept and that changes the reward
    (r(y') ≠ r(y)); None if there is none. The walkthrough's default example."""
    s = samples if label is None else samples[samples["label"].astype(str) == str(label)]
    if not len(s):
        return None
    s = s[s["kept"].fillna(False).astype(bool) & s["refined_reward"].notna()]
    s = s[(s["refined_reward"].astype(float) - s["reward"].astype(float)).abs() > 1e-6]
    if s.empty:
        return None
    return s.sort_values(["seed", "step"], kind="stable").iloc[0]


# ---------------------------------------------------------------------------------------------------------------
# one sample as HTML (notebooks: static view and the widget's body)

_CSS = ("font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; line-height: 1.7; "
        "white-space: pre-wrap; word-break: break-all; border: 1px solid #ddd; padding: 6px; margin: 4px 0")


def ce_color(ce: float, vmax: float) -> str:
    """White -> red by CE / vmax (the same scale in the page: ``_JS`` ``color``)."""
    if ce != ce:
        return "#eeeeee"
    a = min(max(ce / vmax, 0.0), 1.0) if vmax > 0 else 0.0
    g = round(255 - 200 * a)
    return f"rgb(255,{g},{g})"


def _tok(t: str) -> str:
    return html.escape(t.replace("\n", "↵\n"))


def _fmt(v, d=3) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if v != v else f"{v:.{d}g}"


def sample_html(row, vmax: float | None = None) -> str:
    """y, y' (CE-coloured, value on hover) and the numbers of one annotated sample, as inline-styled HTML."""
    y, yp = _list(row.get("response_tokens")), _list(row.get("refined_tokens"))
    ce = [float(x) if x is not None else float("nan") for x in _list(row.get("refined_token_ce"))]
    if len(ce) != len(yp):
        ce = [float("nan")] * len(yp)
    vmax = vmax or max([x for x in ce if x == x] + [1e-6])
    k = row.get("first_change", -1)
    dropped, inserted = set(), set()
    for _t, i1, i2, j1, j2 in row.get("diff") or token_diff(y, yp):
        dropped.update(range(i1, i2))
        inserted.update(range(j1, j2))
    ys = "".join(f'<span style="color:#b00;text-decoration:line-through">{_tok(t)}</span>' if i in dropped
                 else f"<span>{_tok(t)}</span>" for i, t in enumerate(y))
    yps = []
    for j, t in enumerate(yp):
        st = f"background:{ce_color(ce[j], vmax)};"
        if j in inserted:
            st += "text-decoration:underline;"
        if j == k:
            st += "outline:1.5px solid #000;"
        yps.append(f'<span style="{st}" title="token {j}: CE {_fmt(ce[j], 4)} nats">{_tok(t)}</span>')
    head = (f"<b>{html.escape(str(row.get('group', '')))}</b> · arm <b>{html.escape(str(row.get('label', '')))}</b>"
            f" · seed {row.get('seed', '')} · step {row.get('step', '')} · {html.escape(str(row.get('task_id', '')))}"
            f" ({html.escape(str(row.get('family', '')))})")
    nums = (f"r(y) = {_fmt(row.get('reward'))}, r(y') = {_fmt(row.get('refined_reward'))}, "
            f"{'kept' if row.get('kept') else 'not kept'} ({html.escape(str(row.get('change', '')))}); first change "
            f"at token {k}; mean CE before it {_fmt(row.get('ce_before'))}, from it on {_fmt(row.get('ce_after'))} "
            f"nats (colour scale 0 – {vmax:.3g})")
    prompt = html.escape(str(row.get("prompt") or ""))
    return (f'<div class="study-explorer"><div>{head}</div><div>{nums}</div>'
            f'<details><summary>problem</summary><div style="{_CSS}">{prompt}</div></details>'
            f'<div>y (policy)</div><div style="{_CSS}">{ys}</div>'
            f'<div>y\' (refiner), coloured by the policy\'s CE; hover a token for its value</div>'
            f'<div style="{_CSS}">{"".join(yps) if yp else "(not refined)"}</div></div>')


def counts(samples):
    """Samples per group, arm and change (a static overview)."""
    if samples.empty:
        return samples
    t = samples.assign(label=samples["label"].astype(str)).pivot_table(
        index=["group", "label"], columns="change", values="step", aggfunc="count", fill_value=0)
    return t.reindex(columns=[c for c in CHANGES if c in t.columns]).reset_index()


# ---------------------------------------------------------------------------------------------------------------
# the one call


def explore(source, runs_dir="runs", groups: Iterable[str] | None = None, seeds=None, static: bool | None = None,
            group=None, arm=None, seed=None, kept="kept", change="all", family="all", step=None, sample: int = 0):
    """The explorer over ``source`` (a profile, or a samples table): the widget, or the static HTML view (end a
    notebook cell with it to show it).

    The keyword arguments set the initial selection (None = the first / the latest step). ``static``: None =
    static under ``study reproduce`` or without ipywidgets, widgets otherwise."""
    s = _as_samples(source, runs_dir, groups, seeds)
    if static is None:
        static = outputs.batch()
        if not static:
            try:
                import ipywidgets  # noqa: F401
            except ImportError:
                static = True
    if static:
        return _static(s, group, arm, seed, kept, change, family, step, sample)
    return _widget(s, group, arm, seed, kept, change, family, step, sample)


def _first(options, want):
    return want if want in options else (options[0] if options else None)


def _static(s, group, arm, seed, kept, change, family, step, sample):
    from IPython.display import HTML

    if s.empty:
        return HTML("<p>no logged samples</p>")
    group = _first(list(dict.fromkeys(s["group"])), group)
    arms = list(dict.fromkeys(s[s["group"] == group]["label"].astype(str)))
    arm = _first(arms, arm if arm is not None else "dynamic")
    pool = select(s, group, arm, seed, kept, change, family)
    if pool.empty:  # the default filters can be empty (nothing kept in a short run): drop them
        pool = select(s, group, arm, seed)
    step = step if step is not None and (pool["step"] == step).any() else pool["step"].max()
    rows = pool[pool["step"] == step]
    row = rows.iloc[min(sample, len(rows) - 1)]
    body = (f"<p>Explorer (static view; run the notebook in JupyterLab for the controls, or open "
            f"<code>explorer.html</code>): {len(s)} samples; showing sample {min(sample, len(rows) - 1)} of "
            f"{len(rows)} at step {step}.</p>" + sample_html(row.to_dict()) + counts(s).to_html(index=False))
    return HTML(body)


def _widget(s, group, arm, seed, kept, change, family, step, sample):
    import ipywidgets as w

    dd = dict(layout=w.Layout(width="auto"), style={"description_width": "initial"})
    groups = list(dict.fromkeys(s["group"])) if len(s) else []
    g_w = w.Dropdown(options=groups, value=_first(groups, group), description="group", **dd)
    a_w = w.Dropdown(description="arm", **dd)
    s_w = w.Dropdown(description="seed", **dd)
    k_w = w.ToggleButtons(options=["all", "kept", "not kept"], value=kept if kept in ("kept", "not kept") else "all",
                          description="filter")
    c_w = w.Dropdown(options=["all"] + CHANGES, value=change if change in CHANGES else "all", description="change",
                     **dd)
    f_w = w.Dropdown(options=["all"] + sorted(set(s["family"])) if len(s) else ["all"], description="family", **dd)
    t_w = w.Dropdown(description="step", **dd)
    i_w = w.IntSlider(min=0, max=0, value=0, description="sample", continuous_update=False)
    out = w.HTML()
    state = {"busy": False}

    def pool(with_step=True):
        return select(s, g_w.value, a_w.value, s_w.value, k_w.value, c_w.value, f_w.value,
                      t_w.value if with_step else None)

    def refresh(*_):
        if state["busy"]:
            return
        state["busy"] = True
        try:
            arms = list(dict.fromkeys(s[s["group"] == g_w.value]["label"].astype(str)))
            a_w.options = arms
            a_w.value = _first(arms, a_w.value if a_w.value in arms else (arm or "dynamic"))
            seeds = ["all"] + sorted({str(x) for x in select(s, g_w.value, a_w.value)["seed"]})
            s_w.options = seeds
            s_w.value = _first(seeds, s_w.value if s_w.value in seeds else (str(seed) if seed is not None else "all"))
            steps = sorted({int(x) for x in pool(False)["step"]})
            t_w.options = steps
            t_w.value = (t_w.value if t_w.value in steps else step if step in steps else (steps[-1] if steps else None))
            rows = pool()
            i_w.max = max(0, len(rows) - 1)
            out.value = (sample_html(rows.iloc[min(i_w.value, len(rows) - 1)].to_dict()) if len(rows)
                         else "<p>no sample matches these filters</p>")
        finally:
            state["busy"] = False

    for x in (g_w, a_w, s_w, k_w, c_w, f_w, t_w, i_w):
        x.observe(refresh, names="value")
    refresh()
    i_w.value = min(sample, i_w.max)
    return w.VBox([w.HBox([g_w, a_w, s_w, t_w]), w.HBox([k_w, c_w, f_w]), i_w, out])


# ---------------------------------------------------------------------------------------------------------------
# the self-contained page


def page_data(samples) -> dict:
    """The page's data: each run's samples once; groups map to (run, arm) pairs (a run can serve two groups)."""
    runs, groups, prompts, rows = {}, {}, {}, []
    if len(samples):
        for g, gs in samples.groupby("group", sort=False):
            pairs = gs[["run", "label", "seed"]].drop_duplicates("run")
            groups[g] = [[r.run, str(r.label), int(r.seed)] for r in pairs.itertuples()]
        first = samples.drop_duplicates(["run", "step", "task_id", "response", "refined"]).copy()
        for r in first.to_dict("records"):
            run = runs.setdefault(r["run"], [])
            tid = str(r.get("task_id"))
            prompts.setdefault(tid, str(r.get("prompt") or ""))
            ce = _list(r.get("refined_token_ce"))
            run.append({
                "step": int(r["step"]), "task": tid, "family": r["family"], "change": r["change"],
                "reward": _json_num(r.get("reward")), "refined_reward": _json_num(r.get("refined_reward")),
                "kept": bool(r.get("kept")), "y": _list(r.get("response_tokens")),
                "yp": _list(r.get("refined_tokens")), "ce": [_json_num(x) for x in ce],
                "k": int(r["first_change"]), "ce_before": _json_num(r["ce_before"]),
                "ce_after": _json_num(r["ce_after"]), "diff": r["diff"],
            })
    return {"groups": groups, "runs": runs, "prompts": prompts}


def _json_num(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


_TEMPLATE = Path(__file__).with_name("explorer.html")


def write_page(source, runs_dir="runs", path: str | Path = "figures/explorer.html", groups=None, seeds=None,
               title: str | None = None) -> Path:
    """Write the explorer as one HTML file (inline CSS, JS and gzip+base64 JSON data); returns its path."""
    import os

    s = _as_samples(source, runs_dir, groups, seeds)
    data = json.dumps(page_data(s), separators=(",", ":"), allow_nan=False)
    blob = base64.b64encode(gzip.compress(data.encode(), mtime=0)).decode()
    if title is None and not hasattr(source, "columns"):
        from study.experiments import load_profile

        title = f"profile {load_profile(source).name}"
    name = title or "samples"
    page = (_TEMPLATE.read_text(encoding="utf-8").replace("__TITLE__", html.escape(name))
            .replace("__DATA__", blob).replace("__N__", str(len(s))))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(page.encode("utf-8"))
    os.replace(tmp, path)
    return path


def describe(row) -> str:
    """One line about a sample: where it is from, and its CE before / from the first change."""
    pre, post, k = stats.ce_split(row)
    return (f"sample: {row['run']} step {row['step']} {row['task_id']}; CE on the copied prefix = {pre:.3f}, "
            f"from the first change on = {post:.3f} (change at token {k})")
