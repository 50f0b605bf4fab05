# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Ablations: λ and the filter (Fig. 7, App. B)
#
# The dynamic-constraint coefficient λ (reward and within-group reward std; lower row: largest − smallest λ,
# paired by seed) and the filter r(y') > r(y) (reward, kept refinements, refinements worse than y).

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, plots, stats, verdicts
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
lam = ex.load_group("fig7_lambda", prof, runs_dir, seeds)
order = plots.numeric_order(lam["label"])
hi, lo = order[-1], order[0]
w = stats.windows(lam)
outputs.save_figure(plots.fig_lambda(lam, smooth=w.smooth, diffs=[(hi, lo)]), "fig7_lambda", figures_dir)

# %%
flt = ex.load_group("filter_ablation", prof, runs_dir, seeds)
wf = stats.windows(flt)
fig = plots.fig_panels(flt, ["reward_mean", "kept_frac", "worse_ratio"],
                       ["Reward", "Kept refinements", "Refinements worse than y"], smooth=wf.smooth,
                       diffs=[("filter", "no_filter")])
outputs.save_figure(fig, "filter_ablation", figures_dir)

# %% [markdown]
# **Verdicts.** Largest vs smallest λ: a higher early reward (first quarter), a lower final within-group reward
# std and a lower final reward (Fig. 7). The filter gives a higher final reward than no filter; without the
# filter, the share of refinements worse than y grows over training (App. B).

# %%
verdicts.record("lambda_early_reward", stats.paired_final(lam, "reward_mean", hi, lo, w.quarter, where="first"))
verdicts.record("lambda_group_std", stats.paired_final(lam, "group_reward_std", hi, lo, w.final))
verdicts.record("lambda_final_reward", stats.paired_final(lam, "reward_mean", hi, lo, w.final))
verdicts.record("filter_helps", stats.paired_final(flt, "reward_mean", "filter", "no_filter", wf.final))
verdicts.record("worse_refinements_grow", stats.slope(flt, "worse_ratio", "no_filter"))
