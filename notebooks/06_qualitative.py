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
# # 06 · Qualitative refinements (Figs. 8-11, Table 4)
#
# Refinements y' with the largest reward gain over the policy's y, as line diffs; then the share of all
# refinements that improve on y, from the per-step counts the trainers log (samples.jsonl logs kept pairs
# first, so its rows are no sample of what the refiner does).

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those
n_examples = 4

# %%
from study import experiments as ex, outputs, tables
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
samples = ex.load_samples("fig5_dapo", prof, runs_dir, seeds)
table = tables.qualitative_table(samples, k=n_examples, label="dynamic")
outputs.save_table(table, "qualitative_refinements", figures_dir, show=False)
tables.show_refinements(table, samples)

# %%
df = ex.load_group("fig5_dapo", prof, runs_dir, seeds)
tables.note_refinements(df, samples, "dynamic")
