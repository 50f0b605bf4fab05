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
# # 04 · Token-level cross-entropy (Fig. 6)
#
# One refinement y' of a rollout y, each token of y' coloured by the policy's CE at that step. The paper: CE is
# near zero on the part y' copies from y and rises after the first change. Below the figure, the explorer
# browses every logged sample of every run (in JupyterLab: widgets; in an executed notebook: a static view;
# in a browser: `explorer.html` next to the figures).

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those
label = "dynamic"         # which variant's samples
seed = None               # None: any seed
step = None               # None: the latest step with a kept refinement
sample = 0                # index among the matching samples

# %%
from study import experiments as ex, explore, outputs, plots, stats, verdicts
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
samples = ex.load_samples("fig5_dapo", prof, runs_dir, seeds)
row = explore.pick_sample(samples, label=label, seed=seed, step=step, index=sample)
print(explore.describe(row))
fig = plots.token_heatmap(row, title=f"{row['run']} step {row['step']} {row['task_id']}")
outputs.save_figure(fig, "fig6_token_heatmap", figures_dir)

# %%
explore.explore(prof, runs_dir, group="fig5_dapo", arm=label, seed=seed, step=step, sample=sample)

# %%
verdicts.record("ce_after_first_change", stats.ce_after_first_change(samples, label))
