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
# # 08 · Beyond the paper: static SFT, ReLIFT, self-refinement, CE scope
#
# The paper compares its dynamic constraint only with static KL and no constraint. Here the hybrid RL+SFT
# methods it argues against (Sec. 3.3, related work) run in the same DAPO trainer: **static_sft** (y' = the
# dataset's reference solution, a fixed target), **relift** (ReLIFT: DAPO interleaved with fine-tuning on the
# reference solutions of all-fail questions), **self_refine** (the current policy refines itself), and
# **from_first_diff** (the CE only from the first token where y' departs from y). Mean over seeds; the lower
# row is dynamic minus each alternative, paired by seed.

# %% tags=["parameters"]
profile = "mini"          # smoke | mini | paper, or a profile .yaml path
runs_dir = "runs"         # run folders, relative to the repository root (trained on demand, cached)
figures_dir = "figures"   # relative to the repository root
seeds = None              # None: the profile seeds; a list restricts to those

# %%
from study import experiments as ex, outputs, plots, stats, tables, verdicts
prof = ex.start_notebook(profile)  # repo root as cwd, the profile, one line naming it

# %%
df = ex.load_group("beyond", prof, runs_dir, seeds)
w = stats.windows(df)
fig = plots.fig_panels(df, ["reward_mean", "kl"], ["Reward", "KL(π_θ‖π_ref)"], smooth=w.smooth,
                       diffs=[("dynamic", "static_sft"), ("dynamic", "relift"), ("dynamic", "self_refine")])
outputs.save_figure(fig, "beyond_reward", figures_dir)

# %%
ev = ex.load_eval("beyond", prof, runs_dir, seeds)
outputs.save_table(tables.beyond_summary(df, ev, w.final), "beyond_summary", figures_dir)
tables.note_relift(df)

# %% [markdown]
# **Verdicts** (held-out pass@1, paired by seed). (1) The paper's central claim, a dynamic target beats a static
# one: dynamic − static_sft > 0. (2) Dynamic beats ReLIFT, the hybrid RL+SFT method with offline
# demonstrations. (3) The frozen refiner beats self-refinement. (4) CE scope (a finding, not a claim of the
# paper): Fig. 6 says the copied prefix carries ~0 CE, so from_first_diff should change little; two-sided, with
# the time it saves per step.

# %%
verdicts.record("dynamic_vs_static_sft", stats.paired_eval(ev, "dynamic", "static_sft", arms=stats.labels(df)))
verdicts.record("dynamic_vs_relift", stats.paired_eval(ev, "dynamic", "relift", arms=stats.labels(df)))
verdicts.record("refiner_vs_self", stats.paired_eval(ev, "dynamic", "self_refine", arms=stats.labels(df)))
tables.note_ce_scope(df, w.final)
