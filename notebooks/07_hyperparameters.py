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
# # 07 · Hyperparameters (Table 2) and training cost
#
# The hyperparameters of our runs next to the paper's APPS column, and the wall-clock cost of the refiner.

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, tables
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
outputs.save_table(ex.hyperparameter_table("fig4_ppo", prof), "table2_ppo", figures_dir)
outputs.save_table(ex.hyperparameter_table("fig5_dapo", prof), "table2_dapo", figures_dir)

# %%
cost, per_run = ex.cost_table("fig5_dapo", prof, runs_dir, seeds)
outputs.save_table(cost, "training_cost", figures_dir)

# %%
r = tables.time_ratio(ex.load_group("fig5_dapo", prof, runs_dir, seeds), "dynamic", "dapo")
outputs.note(f"training time dynamic / DAPO = {r.estimate:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] over {r.n} seeds "
             "(paired by seed; paper: 26.3 h / 17.8 h = 1.48)", ratio=r.estimate, low=r.ci_low, high=r.ci_high, n=r.n)
