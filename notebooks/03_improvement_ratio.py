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
# # 03 · Improvement ratio (Fig. 5b)
#
# The share of all sampled rollouts whose refinement earns a higher reward than the rollout itself. The paper:
# it decays as the policy improves (the constraint is self-annealing).

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, plots, stats, verdicts
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
df = ex.load_group("fig5_dapo", prof, runs_dir, seeds)
w = stats.windows(df)
fig = plots.fig_panels(df, ["improvement_ratio"], ["Improvement ratio"], labels=["dynamic"], smooth=w.smooth)
outputs.save_figure(fig, "fig5b_improvement_ratio", figures_dir)

# %%
verdicts.record("improvement_ratio_decays", stats.slope(df, "improvement_ratio", "dynamic"))
below = stats.share_below(df, "improvement_ratio", "dynamic", 0.10)
outputs.note(f"share of steps with improvement ratio < 10%: {below:.2f}", share_below_10pct=below)
