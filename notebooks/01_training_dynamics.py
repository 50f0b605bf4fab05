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
# # 01 · Training dynamics (Fig. 4)
#
# PPO with no constraint, the static KL constraint and the dynamic constraint: reward, KL(π_θ‖π_ref) and the
# dynamic constraint's cross-entropy, mean over seeds (bands: see `study.plots`; KL and CE are bounded below by
# 0 and get a percentile band over seeds). The lower row is the paired difference between arms (same seeds,
# so the same prompts), the comparison the verdicts make.

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, plots, stats, verdicts
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
df = ex.load_group("fig4_ppo", prof, runs_dir, seeds)
w = stats.windows(df)
fig = plots.fig_training_dynamics(df, smooth=w.smooth, diffs=[("dynamic", "static"), ("dynamic", "none")])
outputs.save_figure(fig, "fig4_training_dynamics", figures_dir)

# %% [markdown]
# **Verdicts** (paired by seed; `study.verdicts.CLAIMS` has each claim's direction and margin).
# (1) Dynamic ends with a higher reward than static and than no constraint (mean of the last T/10 steps).
# (2) Without a constraint the reward collapses: its drift (last window − the window after warm-up) is below
# static's. (3) The static KL plateaus while the dynamic KL keeps growing: second-half KL slope, dynamic − static
# > 0. (4) The dynamic constraint's CE stays stable: its second-half slope lies within ±0.05 nats per 100 steps.

# %%
verdicts.record("dynamic_vs_static_reward", stats.paired_final(df, "reward_mean", "dynamic", "static", w.final))
verdicts.record("dynamic_vs_none_reward", stats.paired_final(df, "reward_mean", "dynamic", "none", w.final))
verdicts.record("none_collapses", stats.paired_drift(df, "reward_mean", "none", "static", w.final))
verdicts.record("static_kl_plateau", stats.paired_slope(df, "kl", "dynamic", "static", (w.steps / 2, w.steps)))
verdicts.record("ce_low_stable", stats.slope(df, "dynamic_ce", "dynamic", (w.steps / 2, w.steps)))
