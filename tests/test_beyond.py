"""Beyond the paper (issue 9): ReLIFT in the DAPO trainer, the static-SFT / self-refinement / from-first-diff
variants, their smoke configs through ``study train``, and notebook 08 through papermill.

The trainer-level tests reuse the tiny random Llama and character tokenizer of ``tests/test_dapo.py``."""

from __future__ import annotations

import json

import pytest
import torch

from study.config import ReLIFTConfig, validate_config
from study.errors import UserError
from study.generation import Generation
from study.runs import METRIC_COLUMNS
from helpers import PROBLEMS, FixedRefiner, dapo_trainer, first_batch, is_target, make, record_rounds

from study.tokens import token_logps

torch.set_num_threads(1)

NEW_SMOKE = ["dapo_static_sft", "dapo_self_refine", "dapo_dynamic_from_first_diff", "dapo_relift"]


# ------------------------------------------------------------------------------------------------- config


def _raw(**over):
    raw = {"name": "t", "model": "x", "trainer": "dapo", "reward": "binary"}
    raw.update(over)
    return raw


def test_relift_config_defaults_validation_and_hash():
    cfg = validate_config(_raw())
    assert cfg.relift == ReLIFTConfig() and not cfg.relift.enabled
    on = validate_config(_raw(relift={"enabled": True, "sft_every": 3, "sft_coef": 0.5, "buffer_size": 8}))
    assert (on.relift.sft_every, on.relift.sft_coef, on.relift.buffer_size) == (3, 0.5, 8)
    assert on.hash() != cfg.hash()
    # off by default: the section is left out of the hash, so runs trained before it existed stay cached
    import hashlib

    d = cfg.model_dump(mode="json")
    for late in ("relift", "speed", "vllm", "report_to", "eval_batch_size", "eval_max_new_tokens"):
        d.pop(late)  # added after the first runs (issues 9, 8, 6, 20, 18); eval_max_new_tokens at its default
    d["constraint"].pop("kl_bias_correction")  # a late field that changes nothing outside DAPO's static mode
    assert cfg.hash() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    for bad, where in [({"relift": {"sft_every": 0}}, "relift.sft_every"),
                       ({"relift": {"sft_coef": -1}}, "relift.sft_coef"),
                       ({"relift": {"buffer_size": 0}}, "relift.buffer_size"),
                       ({"relift": {"every": 2}}, "relift.every: unknown key"),
                       ({"relift": {"enabled": True}, "trainer": "ppo"}, "trainer: dapo"),
                       ({"relift": {"enabled": True}, "reward": "reward_model", "reward_model": "rm"}, "ceiling")]:
        with pytest.raises(UserError, match=where.replace(".", r"\.")):
            validate_config(_raw(**bad))


def test_new_configs_change_one_thing_of_their_baseline():
    """Each new variant is its baseline config (dynamic, or DAPO for ReLIFT) with one section changed."""
    from study.config import load_config
    from study.experiments import flatten

    for tier in ("smoke", "mini"):
        base = {b: flatten(load_config(f"configs/{tier}/{b}.yaml").model_dump(mode="json"))
                for b in ("dapo", "dapo_dynamic")}
        for name, b, key, val in [("dapo_static_sft", "dapo_dynamic", "constraint.target", "dataset"),
                                  ("dapo_self_refine", "dapo_dynamic", "constraint.target", "self"),
                                  ("dapo_dynamic_from_first_diff", "dapo_dynamic", "constraint.ce_scope",
                                   "from_first_diff"),
                                  ("dapo_relift", "dapo", "relift.enabled", True)]:
            new = flatten(load_config(f"configs/{tier}/{name}.yaml").model_dump(mode="json"))
            diff = {k for k in new if new[k] != base[b][k]} - {"name"}
            assert new[key] == val and key in diff, (tier, name)
            assert all(k.split(".")[0] == key.split(".")[0] for k in diff), (tier, name, diff)
        assert load_config(f"configs/{tier}/dapo_static_sft.yaml").constraint.filter  # see the config's comment


# ------------------------------------------------------------------------------------------------- ReLIFT


def _by_task(prompts=None, completions=None, task_id=None, **kw):
    """t0, t1 always pass; t4..t7 always fail; t2, t3 pass on odd-length responses (mixed groups)."""
    out = []
    for t, c in zip(task_id, completions):
        i, text = int(t[1:]), c[0]["content"] if isinstance(c, list) else c
        out.append(1.0 if i < 2 else 0.0 if i >= 4 else float(len(text) % 2))
    return out


def test_relift_buffer_collects_exactly_the_all_fail_groups(tok, tmp_path):
    cfg, comp = make(tok, "none", reward=_by_task, rollout={"num_prompts": 4},
                     dapo={"max_sampling_rounds": 3}, relift={"enabled": True, "sft_every": 100, "buffer_size": 64})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    seen = record_rounds(tr)  # every sampling round of every step, also the groups dynamic sampling dropped
    expected: set[str] = set()
    for _ in range(3):
        batch = first_batch(tr)
        G = tr.G
        for rnd in seen[-1]:
            for g in range(len(rnd.task_reward) // G):
                if max(rnd.task_reward[g * G : (g + 1) * G]) < 1.0:
                    expected.add(rnd.rows[g * G]["task_id"])
        assert set(tr.buffer) == expected
    assert expected and not expected & {"t0", "t1"}
    assert {"t4", "t5", "t6", "t7"} & expected  # always-failing questions were sampled and buffered
    row = tr.buffer[next(iter(tr.buffer))]
    assert row["reference"] == next(p.reference for p in PROBLEMS if p.task_id == row["task_id"])
    assert "sft_ids" not in batch  # sft_every=100: never fired

    # the buffer is capped, oldest first out
    cfg2, comp2 = make(tok, "none", reward=_by_task, rollout={"num_prompts": 4},
                       relift={"enabled": True, "sft_every": 100, "buffer_size": 1})
    tr2, _ = dapo_trainer(tmp_path / "cap", cfg2, comp2)
    for _ in range(2):
        first_batch(tr2)
        assert len(tr2.buffer) <= 1


def test_relift_sft_fires_every_k_steps_and_lowers_reference_ce(tok, tmp_path):
    # every reward is 0 (all groups fail, advantages 0): the SFT term is the only thing that moves θ
    cfg, comp = make(tok, "none", reward=is_target, steps=4, dapo={"dynamic_sampling": False},
                     optim={"learning_rate": 1e-2}, relift={"enabled": True, "sft_every": 2, "sft_coef": 1.0})
    tr, run = dapo_trainer(tmp_path, cfg, comp)
    pairs = tr.sft_batch([p.to_row() | {"prompt": tr.train_dataset[0]["prompt"]} for p in PROBLEMS[:1]])

    def ref_ce():
        with torch.no_grad():
            p_ids, p_mask, r_ids, r_mask = pairs
            return (-token_logps(comp.policy, p_ids, p_mask, r_ids, r_mask)[0].sum() / r_mask.sum()).item()

    # the SFT target is the reference in the answer format, plus EOS
    from study.prompts import code_block

    want = tok(code_block(PROBLEMS[0].reference), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert pairs[2][0][pairs[3][0].bool()].tolist() == want
    before = ref_ce()
    tr.train()
    after = ref_ce()
    m = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in m] == [1, 2, 3, 4]
    groups = cfg.rollout.num_prompts
    assert [r["relift_hard_groups"] for r in m] == [groups] * 4  # every group fails
    fired = [r["relift_sft_items"] > 0 for r in m]
    assert fired == [False, True, False, True]
    assert all((r["relift_sft_ce"] is not None and r["relift_sft_ce"] > 0) == f for r, f in zip(m, fired))
    # the buffer is cleared after each SFT step: step 3 holds only its own questions again
    assert m[2]["relift_buffer"] <= groups and m[1]["relift_sft_items"] == m[1]["relift_buffer"]
    assert all(r["loss"] == pytest.approx(r["policy_loss"], abs=1e-6) for r, f in zip(m, fired) if not f)
    assert m[1]["loss"] > m[1]["policy_loss"] + 0.1  # L = L_DAPO + sft_coef · CE on the firing step
    assert after < before - 0.05
    assert m[3]["relift_sft_ce"] < m[1]["relift_sft_ce"]  # the second SFT step starts from a lower CE


# ------------------------------------------------------------------------------------------------- variants


class EchoRefiner:
    """y' = y verbatim (the refiner's answer for a response it cannot improve)."""

    def __init__(self, tok):
        self.tok = tok

    def refine(self, problems, responses):
        return [Generation(text=r, token_ids=self.tok(r, add_special_tokens=False)["input_ids"]
                           + [self.tok.eos_token_id], truncated=False) for r in responses]


def test_from_first_diff_scope_puts_no_loss_on_the_copied_prefix(tok, tmp_path):
    masks = {}
    for scope in ("full", "from_first_diff"):
        cfg, comp = make(tok, "dynamic", refiner=EchoRefiner(tok), dapo={"dynamic_sampling": False},
                         constraint={"filter": False, "ce_scope": scope})
        torch.manual_seed(0)
        tr, _ = dapo_trainer(tmp_path / scope, cfg, comp)
        batch = first_batch(tr)
        masks[scope] = (batch["dc_mask"], batch["completion_ids"], batch["completion_mask"], batch["refine_keep"])
    full, comp_ids, comp_mask, keep = masks["full"]
    ffd = masks["from_first_diff"][0]
    assert torch.equal(masks["from_first_diff"][1], comp_ids)  # same seed, same rollouts
    eos = tok.eos_token_id
    exact = 0
    for i in range(full.shape[0]):
        if not keep[i]:
            continue
        y = comp_ids[i, : int(comp_mask[i].sum())].tolist()
        y_noeos = y[:-1] if y and y[-1] == eos else y
        if tok(tok.decode(y_noeos, skip_special_tokens=True), add_special_tokens=False)["input_ids"] != y_noeos:
            continue  # decoding dropped special tokens: y' is not a verbatim copy at the token level
        exact += 1
        assert full[i].sum() == len(y_noeos) + 1  # the whole y' (+ EOS) in the paper's scope
        assert ffd[i].sum() == (0 if y and y[-1] == eos else 1)  # only what differs: nothing, or the added EOS
    assert exact > 0


def test_static_sft_target_is_the_reference_and_always_kept_below_the_ceiling(tok, tmp_path):
    def passes_reference(prompts=None, completions=None, reference=None, **kw):
        from study.prompts import code_block

        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [1.0 if t == code_block(r) else 0.0 for t, r in zip(texts, reference)]

    cfg, comp = make(tok, "dynamic", reward=passes_reference, refiner=FixedRefiner(tok),
                     dapo={"dynamic_sampling": False}, constraint={"target": "dataset"})
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(tr)
    assert comp.refiner.calls == 0  # y' came from the dataset, not the refiner
    assert batch["refine_keep"].all()  # every rollout fails, every reference passes: the filter keeps all
    prompt0 = tok.decode(batch["prompt_ids"][0], skip_special_tokens=True)
    row0 = next(p.to_row() for p in PROBLEMS if p.prompt in prompt0)
    from study.prompts import code_block

    want = tok(code_block(row0["reference"]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert batch["refined_ids"][0][batch["refined_mask"][0].bool()].tolist() == want


# ------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke_beyond(smoke_model_dir, tmp_path_factory):
    """The four new smoke configs through ``study train`` (seed 0, as the smoke profile names them), then notebook 08
    through ``study.reproduce`` on the smoke profile (which trains the DAPO and dynamic runs it also needs)."""
    import os

    from study.cli import main
    from study.reproduce import reproduce

    root = tmp_path_factory.mktemp("beyond")
    old = os.environ.get("STUDY_ARTIFACTS")
    os.environ["STUDY_ARTIFACTS"] = str(smoke_model_dir.parents[1])
    try:
        rcs = {c: main(["train", f"configs/smoke/{c}.yaml", "--seed", "0", "--runs-dir", str(root / "runs")])
               for c in NEW_SMOKE}
        manifest = reproduce("smoke", only=["08_beyond_the_paper"], figures_dir=root / "figs", runs_dir=root / "runs",
                             progress=False, jobs=1)
    finally:
        if old is None:
            os.environ.pop("STUDY_ARTIFACTS", None)
        else:
            os.environ["STUDY_ARTIFACTS"] = old
    return rcs, manifest, root


def _rows(root, name):
    return [json.loads(x) for x in (root / "runs" / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("config", NEW_SMOKE)
def test_new_smoke_config_trains_end_to_end(smoke_beyond, config):
    rcs, _, root = smoke_beyond
    assert rcs[config] == 0
    name = f"smoke-{config.replace('_', '-')}-s0"
    rows = _rows(root, name)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(set(METRIC_COLUMNS) <= set(r) for r in rows)
    assert (root / "runs" / name / "DONE").exists()
    if config == "dapo_relift":
        assert all({"relift_buffer", "relift_sft_ce", "relift_sft_items"} <= set(r) for r in rows)
        assert rows[0]["relift_sft_items"] == 0  # sft_every: 2
    else:
        assert all(r["refined_frac"] is not None for r in rows)
        assert "relift_buffer" not in rows[0]
    if config == "dapo_static_sft":  # the reference always passes: kept whenever refined (below the ceiling)
        assert all(r["kept_frac"] == pytest.approx(r["refined_frac"]) for r in rows)


def test_notebook_08_runs_on_the_smoke_profile(smoke_beyond):
    _, manifest, root = smoke_beyond
    e = manifest["notebooks"]["08_beyond_the_paper"]
    assert e["status"] == "ok" and {o["name"] for o in e["outputs"]} == {"beyond_reward", "beyond_summary"}
    assert any(v.startswith("dynamic_vs_static_sft: held-out pass@1 (points), dynamic − static_sft") for v in e["verdicts"])
    assert any(v.startswith("final reward full − from_first_diff CE scope = ") for v in e["verdicts"])
    assert {r["label"] for r in e["runs"]} == {"dapo", "dynamic", "static_sft", "self_refine", "from_first_diff",
                                                "relift"}
    table = (root / "figs" / "tables" / "beyond_summary.md").read_text()
    assert "relift" in table and "static_sft" in table


def test_notebook_08_on_synthetic_runs_gives_intervals(tmp_path):
    from fixtures.synthetic import write_synthetic_profile
    from study.reproduce import reproduce

    profile = write_synthetic_profile(tmp_path / "w", seeds=(0, 1, 2), steps=10)
    manifest = reproduce(profile, only=["08_beyond_the_paper"], figures_dir=tmp_path / "f",
                         runs_dir=tmp_path / "w" / "runs", train=False, progress=False)
    v = manifest["notebooks"]["08_beyond_the_paper"]["verdicts"]
    claims = [x for x in v if x.startswith("dynamic_vs_static_sft: held-out pass@1 (points), dynamic − static_sft")]
    assert claims and "n = 3" in claims[0] and "[" in claims[0]
    assert any(x.startswith("dynamic_vs_relift: held-out pass@1") for x in v)  # eval summaries are read
    assert any(x.startswith("final reward full − from_first_diff CE scope") for x in v)
    md = (tmp_path / "f" / "tables" / "beyond_summary.md").read_text()
    assert "held-out pass@1" in md and "n/a" not in md.split("\n")[2]
