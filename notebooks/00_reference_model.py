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
# # 00 · The reference model
#
# The frozen reference π_ref is the policy's starting point, the static-KL anchor and the online refiner.
# For the mini world it is trained from scratch (`study.mini`); this notebook reports what it can do.

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, plots, tables
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
ref = ex.reference_dir(prof)
metrics = ex.reference_metrics(ref)
head = ex.reference_headline(metrics)
outputs.save_table(tables.reference_table(head), "reference_model", figures_dir)
tables.reference_details(metrics)

# %%
curve = ex.reference_curve(ref)
outputs.save_figure(plots.fig_learning_curve(curve), "reference_learning_curve", figures_dir)

# %% [markdown]
# **Verdict.** The method needs a refiner that keeps correct responses verbatim and fixes wrong ones
# (Sec. 3.2); the study needs a policy whose pass@1 leaves room to improve (design window 15-60%).

# %%
tables.note_reference(head)
