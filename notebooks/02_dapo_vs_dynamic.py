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
# # 02 · DAPO vs Dynamic (Fig. 5a, Table 1)
#
# DAPO with and without the dynamic constraint (and, where the profile has it, DAPO with a static KL, Table 2's
# DAPO column): training reward with the paired difference dynamic − DAPO, then held-out pass@1 of the trained
# policies with the relative gain over the initial model.

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, plots, stats, tables, verdicts
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
df = ex.load_group("fig5_dapo", prof, runs_dir, seeds)
w = stats.windows(df)
fig = plots.fig_panels(df, ["reward_mean"], ["Reward"], smooth=w.smooth, diffs=[("dynamic", "dapo")])
outputs.save_figure(fig, "fig5a_reward", figures_dir)

# %%
ev = ex.load_eval("fig5_dapo", prof, runs_dir, seeds)
base = ex.base_eval("fig5_dapo", prof, runs_dir)
outputs.save_table(tables.relative_gain_table(ev, base, order=stats.labels(df)), "table1_pass_at_1", figures_dir)

# %% [markdown]
# **Verdicts.** DAPO learns: its held-out pass@1 minus the initial model's on the same problems (interval over
# seeds). Dynamic beats DAPO in held-out pass@1 and in final training reward (paired by seed), and beats DAPO
# with a static KL in held-out pass@1.

# %%
verdicts.record("dapo_learns", stats.versus_base(ev, base, "dapo"))
verdicts.record("dynamic_vs_dapo_pass1", stats.paired_eval(ev, "dynamic", "dapo", arms=stats.labels(df)))
verdicts.record("dynamic_vs_dapo_reward", stats.paired_final(df, "reward_mean", "dynamic", "dapo", w.final))
verdicts.record("dynamic_vs_dapo_kl", stats.paired_eval(ev, "dynamic", "dapo_kl", arms=stats.labels(df)))
