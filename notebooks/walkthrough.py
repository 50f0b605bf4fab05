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
# # Walkthrough: the dynamic constraint on one problem
#
# Rollout y → reward r(y) → refinement y' by the frozen reference → filter r(y') > r(y) → per-token CE of the
# policy on y' → one gradient step on λ·L_DC, and what it does to log π(y' | x). Every step calls the function
# the trainers call. The example is taken from run data: the first logged sample of the dynamic DAPO runs whose
# refinement the filter kept and that changes the reward (so the refiner fixes something and the filter keeps
# it); without runs, the first training problem where that happens at step 0.

# %% tags=["parameters"]
profile = "mini"          # the walkthrough uses the pieces of this profile's dynamic DAPO config
runs_dir = "runs"         # where the logged samples of the example come from
figures_dir = "figures"   # the per-token table is saved to <figures_dir>/tables/walkthrough_tokens
group = "fig5_dapo"
label = "dynamic"
example = "run"           # "run": from the logged samples; "search": sample the initial policy problem by problem
max_problems = 20         # "search": how many training problems to try
seed = 0
lam = 0.1                 # λ of Eq. 6
learning_rate = 0.1       # one plain SGD step on λ·L_DC (large, to make its effect visible in one step)

# %%
import pandas as pd
import torch
from study import experiments as ex, explore, outputs, stats, walkthrough
from study.constraint import dynamic_constraint_loss
from study.train import build_components, seed_everything
from study.tokens import token_logps
from study.trainers.common import as_row, refine_and_filter, refiner_fn, sample_rows, score
ex.use_repo_root()
torch.set_num_threads(1)
cfg = walkthrough.config(group, profile, label)   # the arm's config, on the CPU
seed_everything(seed)
c = build_components(cfg)        # exactly what a trainer receives: policy, reference, refiner, reward, problems

# %% [markdown]
# **0. The example** and **1. rollouts**: a group of G responses to one problem, y ~ π_θ(·|x) (at step 0 the
# policy is the reference).

# %%
example_ = walkthrough.pick_example(c, cfg, profile, runs_dir, group, label, mode=example, max_problems=max_problems)
problem, roll = example_.problem, example_.rollout
print(example_.source)
print(problem.task_id)
print(problem.prompt)

# %% [markdown]
# **2. Rewards** (CodeRL tiers, App. A.2) from the sandboxed tests, and DAPO's group-relative advantages.

# %%
rows = [as_row(p, cfg.refiner.task) for p in roll.problems]
r_y = score(c.reward_fn, rows, roll.texts, roll.token_ids)
r = torch.tensor(r_y)
pd.DataFrame({"y": roll.texts, "r(x, y)": r_y, "advantage": ((r - r.mean()) / (r.std() + 1e-4)).tolist()})

# %% [markdown]
# **3. Refinement and 4. the filter** (Sec. 3.2-3.3, Eq. 6): responses below the maximum reward go to the frozen
# reference, prompted to copy a right answer and otherwise fix it minimally (Fig. 2, App. A.3); y' enters the
# loss only if r(y') > r(y).

# %%
res = refine_and_filter(rows, roll.texts, r_y, refiner_fn(c.refiner), c.reward_fn, c.tokenizer,
                        max_reward=c.max_reward, filter_enabled=cfg.constraint.filter,
                        skip_max_reward=cfg.refiner.skip_max_reward)
i = walkthrough.follow(res, example_.index)
print(f"improvement ratio {res.improvement_ratio:.3f}; following rollout {i} (kept: {bool(res.keep[i])})")
pd.DataFrame({"r(x, y)": r_y, "refined": res.refined, "r(x, y')": res.rewards, "kept": res.keep.tolist()})

# %% [markdown]
# **5. Per-token CE** of the policy on y' given x (teacher forcing, the trainers' `study.tokens.token_logps`), the
# quantity of Fig. 6, and L_DC of Eq. 6 on the followed refinement. The explorer shows the whole group: y and y'
# with the diff marked, each token of y' coloured by its CE (hover for the value).

# %%
ce = -token_logps(c.policy, roll.prompt_ids, roll.prompt_mask, res.refined_ids, res.refined_mask)[0]
l_dc = dynamic_constraint_loss(ce[i : i + 1], res.refined_mask[i : i + 1], torch.tensor([True]))
print(f"L_DC on the followed refinement = {l_dc.item():.4f} nats/token over {len(res.token_ids[i])} tokens")
group_samples = pd.DataFrame(sample_rows(0, rows, roll.texts, roll.token_ids, r_y, res, ce.detach(), c.tokenizer,
                                         cfg.rollout.num_generations)).assign(label=label, run="walkthrough")
explore.explore(group_samples, kept="all")

# %% [markdown]
# **6. One gradient step** on λ·L_DC alone, and its effect on each refined token's log-probability.

# %%
opt = torch.optim.SGD(c.policy.parameters(), lr=learning_rate)
opt.zero_grad()
(lam * l_dc).backward()
opt.step()
with torch.no_grad():
    ce_after = -token_logps(c.policy, roll.prompt_ids[i : i + 1], roll.prompt_mask[i : i + 1],
                            res.refined_ids[i : i + 1], res.refined_mask[i : i + 1])[0]
n = len(res.token_ids[i])
k = stats.first_divergence(list(roll.token_ids[i]), list(res.token_ids[i]))
tab = walkthrough.token_table(c.tokenizer, res.token_ids[i], ce[i, :n].tolist(), ce_after[0, :n].tolist(), k)
outputs.save_table(tab, "walkthrough_tokens", figures_dir)

# %% [markdown]
# **What to look for.** The CE is low on the prefix y' copies from y and concentrates from the first change on;
# the step raises log π(y' | x), most where the CE was high.

# %%
pre, post = walkthrough.ce_before_after(tab)
print(f"first change at token {k} of {n}; mean CE before it {pre:.3f}, from it on {post:.3f} nats")
print(f"log π(y' | x) changed by {tab['Δ log π'].sum():+.4f} nats after one step on λ·L_DC (expected > 0)")
