"""Generate the notebooks from the cell sources below (edit here, then run ``python notebooks/_build.py``).

Every notebook is thin: a tagged ``parameters`` cell (papermill injects profile / runs_dir / figures_dir),
a few calls into ``study``, a figure or table, and a last cell that prints a computed verdict on the paper's
claim. Shared logic lives in ``study.experiments`` and ``study.plots``. The committed notebooks are clean
(no outputs); ``study reproduce`` writes executed copies under ``<figures_dir>/notebooks/``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMS = '''profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those
'''

SETUP = '''import json
import pandas as pd
from IPython.display import HTML, Markdown, display
from study import experiments as ex, plots
ex.use_repo_root()  # relative paths (runs/, figures/, artifacts/) as on the command line
prof = ex.load_profile(profile)
print(f"profile {prof.name}: {prof.description}")
'''


def nb(title: str, intro: str, cells: list[str | tuple[str, str]], params: str = PARAMS, setup: str = SETUP):
    """cells: code strings, or ("md", text) for markdown."""
    out = [new_markdown_cell(f"# {title}\n\n{intro}")]
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    out += [p, new_code_cell(setup)]
    for c in cells:
        if isinstance(c, tuple):
            out.append(new_markdown_cell(c[1]))
        else:
            out.append(new_code_cell(c))
    book = new_notebook(cells=out)
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    return book


NOTEBOOKS = {}

NOTEBOOKS["00_reference_model"] = nb(
    "00 · The reference model",
    "The frozen reference π_ref is the policy's starting point, the static-KL anchor and the online refiner. "
    "For the mini world it is trained from scratch (`study.mini`); this notebook reports what it can do.",
    [
        '''ref = ex.reference_dir(prof)
metrics = ex.reference_metrics(ref)
head = ex.reference_headline(metrics)
table = pd.DataFrame([{"metric": k, "value": v} for k, v in head.items()])
plots.save_table(table, "reference_model", figures_dir)
details = pd.DataFrame([{"metric": k, "value": v} for k, v in ex.flatten(metrics).items() if not k.startswith("recipe.")])
display(Markdown(plots.to_markdown(table)))
details''',
        '''curve = ex.reference_curve(ref)
if len(curve):
    fig = plots.fig_learning_curve(curve[[c for c in curve.columns if c in ("step", "loss", "lr")]])
    plots.save_figure(fig, "reference_learning_curve", figures_dir)''',
        ("md", "**Verdict.** The method needs a refiner that keeps correct responses verbatim and fixes wrong ones "
               "(Sec. 3.2); the study needs a policy whose pass@1 leaves room to improve (design window 15-60%)."),
        '''p1, verb, imp = head["pass@1"], head["verbatim rate (own correct samples)"], head["improvement ratio at step 0 (own failing samples)"]
plots.record_verdict(f"reference pass@1 = {p1:.3f} (window 0.15-0.60: {'inside' if 0.15 <= p1 <= 0.60 else 'outside'}); "
                     f"verbatim rate on its own correct samples = {verb:.3f} (aim: 0.90); improvement ratio at step 0 = {imp:.3f}",
                     pass_at_1=p1, verbatim=verb, improved=imp)''',
    ],
)

NOTEBOOKS["01_training_dynamics"] = nb(
    "01 · Training dynamics (Fig. 4)",
    "PPO with no constraint, the static KL constraint and the dynamic constraint: reward, KL(π_θ‖π_ref) and the "
    "dynamic constraint's cross-entropy. Mean over seeds with a 95% t-band.",
    [
        '''df = ex.load_group("fig4_ppo", prof, runs_dir, seeds)
smooth = max(1, int(df["step"].max()) // 20)
fig = plots.fig_training_dynamics(df, smooth=smooth)
plots.save_figure(fig, "fig4_training_dynamics", figures_dir)''',
        ("md", "**Verdicts.** (1) dynamic ends with a higher reward than static and than no constraint; (2) the "
               "static KL plateaus while the dynamic KL keeps growing (second-half KL slope, dynamic − static > 0); "
               "(3) without a constraint the reward falls from its peak (final − peak < 0); (4) the dynamic "
               "constraint's CE stays low and flat (reported, no test)."),
        '''T = int(df["step"].max()); k = max(1, T // 10)
plots.verdict_line("final reward dynamic − static", plots.compare_final(df, "reward_mean", "dynamic", "static", k))
plots.verdict_line("final reward dynamic − w/o constraint", plots.compare_final(df, "reward_mean", "dynamic", "none", k))
plots.verdict_line("2nd-half KL slope (per 100 steps) dynamic − static",
                   plots.compare_slopes(df, "kl", "dynamic", "static", (T / 2, T)))
plots.verdict_line("w/o constraint: final − peak reward", plots.drop_from_peak(df, "reward_mean", "none", k, smooth), "<")
ce = plots.slope(df, "dynamic_ce", "dynamic", (T / 2, T))
ce_final = ex.final_values(df[df["label"].astype(str) == "dynamic"], "dynamic_ce", k)["dynamic_ce"].mean()
plots.record_verdict(f"dynamic CE: final = {ce_final:.3f}, "
                     f"2nd-half slope per 100 steps = {plots.fmt_interval(ce)} (paper: low and stable)", **ce.asdict())''',
    ],
)

NOTEBOOKS["02_dapo_vs_dynamic"] = nb(
    "02 · DAPO vs Dynamic (Fig. 5a, Table 1)",
    "DAPO with and without the dynamic constraint: training reward, then pass@1 of the trained policies with the "
    "relative gain over the initial model.",
    [
        '''df = ex.load_group("fig5_dapo", prof, runs_dir, seeds)
fig = plots.fig_panels(df, ["reward_mean"], ["Reward"], smooth=max(1, int(df["step"].max()) // 20))
plots.save_figure(fig, "fig5a_reward", figures_dir)''',
        '''ev = ex.load_eval("fig5_dapo", prof, runs_dir, seeds)
base = ex.base_eval("fig5_dapo", prof, runs_dir)
table1 = plots.relative_gain_table(ev, base, order=["dapo", "dynamic"])
plots.save_table(table1, "table1_pass_at_1", figures_dir)
display(Markdown(plots.to_markdown(table1)))''',
        ("md", "**Verdicts.** Dynamic reaches a higher final reward than DAPO, and a higher average pass@1."),
        '''k = max(1, int(df["step"].max()) // 10)
plots.verdict_line("final reward dynamic − DAPO", plots.compare_final(df, "reward_mean", "dynamic", "dapo", k))
if len(ev):
    plots.verdict_line("avg pass@1 (points) dynamic − DAPO", plots.compare_eval(ev, "dynamic", "dapo"))''',
    ],
)

NOTEBOOKS["03_improvement_ratio"] = nb(
    "03 · Improvement ratio (Fig. 5b)",
    "The share of rollouts whose refinement earns a higher reward than the rollout itself. The paper: it decays "
    "as the policy improves (the constraint is self-annealing).",
    [
        '''df = ex.load_group("fig5_dapo", prof, runs_dir, seeds)
dyn = df[df["label"].astype(str) == "dynamic"]
fig = plots.fig_panels(dyn, ["improvement_ratio"], ["Improvement ratio"], smooth=max(1, int(df["step"].max()) // 20))
plots.save_figure(fig, "fig5b_improvement_ratio", figures_dir)''',
        '''plots.verdict_line("improvement-ratio slope per 100 steps (dynamic)", plots.slope(df, "improvement_ratio", "dynamic"), "<")
below = float((plots.aggregate(dyn, "improvement_ratio")["mean"] < 0.10).mean())
plots.record_verdict(f"share of steps with improvement ratio < 10%: {below:.2f}", share_below_10pct=below)''',
    ],
)

NOTEBOOKS["04_token_heatmap"] = nb(
    "04 · Token-level cross-entropy (Fig. 6)",
    "One refinement y' of a rollout y, each token of y' colored by the policy's CE at that step. The paper: CE is "
    "near zero on the part y' copies from y and rises after the first change.",
    [
        '''samples = ex.load_samples("fig5_dapo", prof, runs_dir, seeds)
row = plots.pick_sample(samples, label=label, seed=seed, step=step, index=sample)
print(f"sample: {row['run']} step {row['step']} {row['task_id']}")
fig = plots.token_heatmap(row, title=f"{row['run']} step {row['step']} {row['task_id']}")
plots.save_figure(fig, "fig6_token_heatmap", figures_dir)''',
        '''if interactive:  # a selector when run by hand (never under papermill: interactive=False there)
    try:
        import ipywidgets as w
        import matplotlib.pyplot as plt
        pool = samples[samples["refined_token_ce"].notna() & samples["label"].astype(str).eq(label)].reset_index(drop=True)
        def show(i=0):
            plots.token_heatmap(pool.iloc[i]); plt.show()
        w.interact(show, i=w.IntSlider(0, 0, max(0, len(pool) - 1)))
    except ImportError:
        print("pip install ipywidgets for the sample selector")''',
        '''pre, post, k = plots.ce_split(row)
print(f"this sample: CE on the copied prefix = {pre:.3f}, from the first change on = {post:.3f} (change at token {k})")
plots.verdict_line("mean CE after − before the first change (all kept refinements)",
                   plots.ce_prefix_vs_suffix(samples, label=label))''',
    ],
    params=PARAMS + '''label = "dynamic"         # which variant's samples
seed = None               # None: any seed
step = None               # None: the latest step with a kept refinement
sample = 0                # index among the matching samples
interactive = False       # True: show an ipywidgets selector (run by hand)
''',
)

NOTEBOOKS["05_ablations"] = nb(
    "05 · Ablations: λ and the filter (Fig. 7, App. B)",
    "The dynamic-constraint coefficient λ (reward and within-group reward std) and the filter r(y') > r(y).",
    [
        '''lam = ex.load_group("fig7_lambda", prof, runs_dir, seeds)
order = plots.numeric_order(lam["label"])
smooth = max(1, int(lam["step"].max()) // 20)
fig = plots.fig_panels(lam, ["reward_mean", "group_reward_std"], ["Reward", "Group reward std"], labels=order, smooth=smooth)
plots.save_figure(fig, "fig7_lambda", figures_dir)''',
        '''flt = ex.load_group("filter_ablation", prof, runs_dir, seeds)
fig = plots.fig_panels(flt, ["reward_mean", "kept_frac"], ["Reward", "Kept refinements"], smooth=smooth)
plots.save_figure(fig, "filter_ablation", figures_dir)''',
        ("md", "**Verdicts.** Largest vs smallest λ: faster early reward (first quarter) but lower final group "
               "reward std; the filter gives a higher final reward than no filter."),
        '''T = int(lam["step"].max()); q = max(1, T // 4); k = max(1, T // 10)
hi, lo = order[-1], order[0]
plots.verdict_line(f"early reward λ={hi} − λ={lo}", plots.compare_final(lam, "reward_mean", hi, lo, q, where="first"))
plots.verdict_line(f"final group reward std λ={hi} − λ={lo}", plots.compare_final(lam, "group_reward_std", hi, lo, k), "<")
plots.verdict_line("final reward filter − no filter", plots.compare_final(flt, "reward_mean", "filter", "no_filter", k))''',
    ],
)

NOTEBOOKS["06_qualitative"] = nb(
    "06 · Qualitative refinements (Figs. 8-11, Table 4)",
    "Refinements y' with the largest reward gain over the policy's y, as line diffs.",
    [
        '''samples = ex.load_samples("fig5_dapo", prof, runs_dir, seeds)
table = plots.qualitative_table(samples, k=n_examples, label="dynamic")
plots.save_table(table, "qualitative_refinements", figures_dir)
for _, r in table.iterrows():
    display(Markdown(f"**{r['task_id']}** (step {r['step']}): reward {r['reward']:.3g} → {r['refined_reward']:.3g}"))
    src = samples[(samples["run"] == r["run"]) & (samples["step"] == r["step"]) & (samples["task_id"] == r["task_id"])].iloc[0]
    display(HTML(plots.diff_html(src["response"], src["refined"])))''',
        '''dyn = samples[(samples["label"].astype(str) == "dynamic") & samples["refined"].notna()]
improved = float((dyn["refined_reward"].astype(float) > dyn["reward"].astype(float)).mean()) if len(dyn) else float("nan")
sims = [plots.similarity(a, b) for a, b in zip(dyn["response"], dyn["refined"])]
med = float(pd.Series(sims).median()) if sims else float("nan")
plots.record_verdict(f"refined samples with r(y') > r(y): {improved:.2f} of {len(dyn)}; "
                     f"median similarity y→y' = {med:.2f} (paper: minimal edits, close to 1)",
                     improved_share=improved, median_similarity=med, n=len(dyn))''',
    ],
    params=PARAMS + 'n_examples = 4\n',
)

NOTEBOOKS["07_hyperparameters"] = nb(
    "07 · Hyperparameters (Table 2) and training cost",
    "The hyperparameters of our runs next to the paper's APPS column, and the wall-clock cost of the refiner.",
    [
        '''for group, name in [("fig4_ppo", "table2_ppo"), ("fig5_dapo", "table2_dapo")]:
    if group in prof.groups:
        t = ex.hyperparameter_table(group, prof)
        plots.save_table(t, name, figures_dir)
        display(Markdown(plots.to_markdown(t)))''',
        '''cost, per_run = ex.cost_table("fig5_dapo", prof, runs_dir, seeds)
plots.save_table(cost, "training_cost", figures_dir)
display(Markdown(plots.to_markdown(cost)))''',
        '''d = per_run.pivot(index="seed", columns="label", values="time_step")
ratios = (d["dynamic"] / d["dapo"]).dropna().tolist()
m, lo, hi = ex.t_interval(ratios)
plots.record_verdict(f"training time dynamic / DAPO = {m:.2f} [{lo:.2f}, {hi:.2f}] over {len(ratios)} seeds "
                     f"(paper: 26.3 h / 17.8 h = 1.48)", ratio=m, low=lo, high=hi, n=len(ratios))''',
    ],
)

NOTEBOOKS["08_beyond_the_paper"] = nb(
    "08 · Beyond the paper: static SFT, ReLIFT, self-refinement, CE scope",
    "The paper compares its dynamic constraint only with static KL and no constraint. Here the hybrid RL+SFT "
    "methods it argues against (Sec. 3.3, related work) run in the same DAPO trainer: **static_sft** (y' = the "
    "dataset's reference solution, a fixed target), **relift** (ReLIFT: DAPO interleaved with fine-tuning on the "
    "reference solutions of all-fail questions), **self_refine** (the current policy refines itself), and "
    "**from_first_diff** (the CE only from the first token where y' departs from y). Mean over seeds, 95% t-bands "
    "and t-intervals.",
    [
        '''df = ex.load_group("beyond", prof, runs_dir, seeds)
T = int(df["step"].max()); k = max(1, T // 10); smooth = max(1, T // 20)
fig = plots.fig_panels(df, ["reward_mean", "kl"], ["Reward", "KL(π_θ‖π_ref)"], smooth=smooth)
plots.save_figure(fig, "beyond_reward", figures_dir)''',
        '''ev = ex.load_eval("beyond", prof, runs_dir, seeds)
per = df.assign(label=df["label"].astype(str)).groupby(["label", "seed"])
cols = {"final train reward": per["reward_mean"].apply(lambda s: s.dropna().tail(k).mean()),
        "held-out pass@1 (%)": 100 * ev.groupby(["label", "seed"])["pass@1"].mean() if len(ev) else None,
        "final KL": per["kl"].apply(lambda s: s.dropna().tail(k).mean()),
        "wall time (s)": per["time_step"].sum(min_count=1)}
rows = []
for lab in df["label"].cat.categories:
    row = {"variant": lab, "seeds": int(df[df["label"] == lab]["seed"].nunique())}
    for name, s in cols.items():
        vals = s.xs(lab, level="label").tolist() if s is not None and lab in s.index.get_level_values(0) else []
        m, lo, hi = ex.t_interval(vals)
        row[name] = "n/a" if m != m else f"{m:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if lo == lo else "")
    rows.append(row)
table = pd.DataFrame(rows)
plots.save_table(table, "beyond_summary", figures_dir)
display(Markdown(plots.to_markdown(table)))
if "relift" in set(df["label"].astype(str)) and "relift_sft_ce" in df:
    rl = df[df["label"].astype(str) == "relift"]
    print(f"ReLIFT: {int((rl['relift_sft_items'].fillna(0) > 0).sum())} SFT steps over {rl['seed'].nunique()} seed(s), "
          f"mean buffered questions per SFT step = {rl.loc[rl['relift_sft_items'] > 0, 'relift_sft_items'].mean():.1f}")''',
        ("md", "**Verdicts.** (1) The paper's central claim, a dynamic target beats a static one: dynamic − static_sft "
               "> 0 (final train reward; held-out pass@1 when the runs were evaluated). (2) Dynamic beats ReLIFT, the "
               "hybrid RL+SFT method with offline demonstrations. (3) The frozen refiner beats self-refinement. "
               "(4) CE scope: the paper uses the full refined response; Fig. 6 says the copied prefix carries ~0 CE, "
               "so from_first_diff should change little (two-sided; a positive value favours full), and the time it "
               "saves per step is reported."),
        '''labels = set(df["label"].astype(str))
def claim(text, a, b):
    if {a, b} <= labels:
        plots.verdict_line(f"final reward {text}", plots.compare_final(df, "reward_mean", a, b, k))
        if len(ev) and {a, b} <= set(ev["label"]):
            plots.verdict_line(f"held-out pass@1 (points) {text}", plots.compare_eval(ev, a, b))
claim("dynamic − static_sft", "dynamic", "static_sft")
claim("dynamic − relift", "dynamic", "relift")
claim("refiner − self-refinement", "dynamic", "self_refine")
if {"dynamic", "from_first_diff"} <= labels:
    v = plots.compare_final(df, "reward_mean", "dynamic", "from_first_diff", k)
    t = per["time_step"].mean().unstack("label")
    saved = (1 - t["from_first_diff"] / t["dynamic"]).dropna().tolist()
    m, lo, hi = ex.t_interval(saved)
    effect = "no detectable difference" if not (v.low > 0 or v.high < 0) else ("full better" if v.low > 0 else "from_first_diff better")
    plots.record_verdict(f"final reward full − from_first_diff scope = {plots.fmt_interval(v)} over {v.n} seed(s): {effect}; "
                         f"time per step saved by from_first_diff = {100 * m:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                         f"(paired by seed)", **v.asdict(), time_saved=m, time_saved_low=lo, time_saved_high=hi)''',
    ],
)

WALK_PARAMS = '''profile = "mini"          # the walkthrough uses the pieces of this profile's dynamic DAPO config
runs_dir = "runs"         # (not used: the walkthrough trains nothing)
figures_dir = "figures"   # the per-token table is saved to <figures_dir>/tables/walkthrough_tokens
group = "fig5_dapo"
label = "dynamic"
problem_index = 0         # which training problem
seed = 0
lam = 0.1                 # λ of Eq. 6
learning_rate = 1e-3      # one plain SGD step on λ·L_DC (large, to make its effect visible)
'''

WALK_SETUP = '''import pandas as pd
import torch
from study import experiments as ex, plots
from study.constraint import dynamic_constraint_loss, token_cross_entropy
from study.filter import keep_improved
from study.generation import generate
from study.prompts import solve_messages
from study.train import build_components, seed_everything
ex.use_repo_root()
torch.set_num_threads(1)
spec = next(s for s in ex.group_specs(group, profile) if s.label == label)
cfg = spec.cfg.model_copy(update={"device": "cpu"})
seed_everything(seed)
c = build_components(cfg)        # exactly what a trainer receives: policy, reference, refiner, reward, problems
problem = c.problems[problem_index]
print(problem.task_id); print(problem.prompt)
'''

NOTEBOOKS["walkthrough"] = nb(
    "Walkthrough: the dynamic constraint on one problem",
    "Rollout y → reward r(y) → refinement y' by the frozen reference → filter r(y') > r(y) → per-token CE of the "
    "policy on y' → one gradient step on λ·L_DC, and what it does to log π(y' | x).",
    [
        ("md", "**1. Rollouts.** The policy (at step 0: the reference weights) samples a group of G responses."),
        '''G = cfg.rollout.num_generations
gens = generate(c.policy, c.tokenizer, [solve_messages(problem.prompt)] * G, temperature=cfg.rollout.temperature,
                max_new_tokens=cfg.rollout.max_completion_length)
ys = [g.text for g in gens]
print(ys[0])''',
        ("md", "**2. Rewards** (CodeRL tiers, App. A.2) from the sandboxed tests, and DAPO's group-relative advantages."),
        '''row = problem.to_row()
def rewards(texts):
    return [float(r) for r in c.reward_fn(prompts=[problem.prompt] * len(texts), completions=texts,
                                           **{k: [v] * len(texts) for k, v in row.items()})]
r_y = torch.tensor(rewards(ys))
adv = (r_y - r_y.mean()) / (r_y.std() + 1e-4)
pd.DataFrame({"r(x, y)": r_y.numpy(), "advantage": adv.numpy()})''',
        ("md", "**3. Refinement.** Responses below the maximum reward go to the frozen reference model, prompted "
               "to copy a right answer and otherwise fix it minimally (Fig. 2, App. A.3)."),
        '''todo = [i for i, r in enumerate(r_y.tolist()) if c.max_reward is None or r < c.max_reward]
refined = dict(zip(todo, c.refiner.refine([problem.prompt] * len(todo), [ys[i] for i in todo])))
r_ref = [None] * G
for i, r in zip(todo, rewards([refined[i].text for i in todo]) if todo else []):
    r_ref[i] = r
pd.DataFrame({"r(x, y)": r_y.numpy(), "r(x, y')": r_ref})''',
        ("md", "**4. Filter** (Eq. 6): y' enters the loss only if r(y') > r(y)."),
        '''keep = keep_improved(r_y.tolist(), r_ref, enabled=cfg.constraint.filter)
print("kept:", keep, " improvement ratio:", sum(keep) / G)
# the walkthrough follows one refinement: the first kept one, else the first refined one
i = next((j for j, k in enumerate(keep) if k), todo[0] if todo else None)
assert i is not None, "every response already has the maximum reward: nothing to refine (try another problem_index)"
y, y_ref = ys[i], refined[i]
print("y  :", y); print("y' :", y_ref.text)''',
        ("md", "**5. Per-token CE** of the policy on y' given x (teacher forcing), the quantity of Fig. 6."),
        '''def refined_logps(model):
    prompt = c.tokenizer.apply_chat_template(solve_messages(problem.prompt), tokenize=False, add_generation_prompt=True)
    p_ids = c.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    y_ids = torch.tensor([y_ref.token_ids])  # the refiner's own tokens, as the trainer uses them
    ids = torch.cat([p_ids, y_ids], 1)
    logits = model(ids).logits[:, p_ids.shape[1] - 1 : -1]
    return -token_cross_entropy(logits, y_ids)[0], y_ids[0]
before, y_ids = refined_logps(c.policy)
ce = -before
tokens = c.tokenizer.convert_ids_to_tokens(y_ids.tolist())
print(f"L_DC on this refinement = {ce.mean().item():.4f} nats/token over {len(tokens)} tokens")''',
        ("md", "**6. One gradient step** on λ·L_DC alone, and its effect on each refined token's log-probability."),
        '''loss = lam * dynamic_constraint_loss(ce.unsqueeze(0), torch.ones_like(ce).unsqueeze(0), torch.tensor([True]))
opt = torch.optim.SGD(c.policy.parameters(), lr=learning_rate)
opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    after, _ = refined_logps(c.policy)
tab = pd.DataFrame({"token": tokens, "CE before": ce.detach().numpy(), "Δ log π": (after - before).detach().numpy()})
plots.save_table(tab, "walkthrough_tokens", figures_dir)
tab.head(40)''',
        '''gain = float((after - before.detach()).sum())
print(f"log π(y' | x) changed by {gain:+.4f} nats after one step on λ·L_DC (expected > 0: "
      f"{'yes' if gain > 0 else 'no'})")''',
    ],
    params=WALK_PARAMS,
    setup=WALK_SETUP,
)


def build(out_dir: Path = HERE) -> list[Path]:
    paths = []
    for name, book in NOTEBOOKS.items():
        p = out_dir / f"{name}.ipynb"
        for i, cell in enumerate(book.cells):  # stable cell ids: rebuilding changes only what was edited
            cell["id"] = f"{name[:48]}-{i}"
        nbformat.validate(book)
        nbformat.write(book, p)
        paths.append(p)
    return paths


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
