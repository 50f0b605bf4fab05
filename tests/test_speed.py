"""Issue 8's fast paths (``speed`` config) compute the same thing as the plain paths: the fused L_DAPO + L_DC
forward, the KL taken from the loss forward, the thinned KL log, and the greedy refiner's deduplication."""

from __future__ import annotations

import json

import pytest
import torch

from study.constraint import first_difference_mask
from study.generation import Generation
from study.refiner import Refiner
from study.runs import RunLog
from study.trainers.common import policy_ce_on_refined
from tests.test_dapo import FixedRefiner, _first_batch, _trainer, make, tok  # noqa: F401  (fixture)

torch.set_num_threads(1)

SLOW_PATHS = {"kl_from_loss": False, "fuse_dc_forward": False}


class HalfRefiner(FixedRefiner):
    """Even rows: y' = the first 3 characters of y + "aaaa" (more a's: kept; shares a prefix with y). Odd rows:
    "zzzzzz" (reward 0: dropped). Lengths and keeps mix."""

    def refine(self, problems, responses):
        out = []
        for i, y in enumerate(responses):
            text = y[:3] + "aaaa" if i % 2 == 0 else "zzzzzz"
            ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            out.append(Generation(text=text, token_ids=ids, truncated=False))
        return out


def _loss_and_grads(tr, batch):
    tr.model.zero_grad(set_to_none=True)
    loss = tr._compute_loss(tr.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, dict(tr._upd)


@pytest.mark.parametrize("scope", ["full", "from_first_diff"])
def test_fused_dc_forward_equals_a_separate_forward(tok, tmp_path, scope):
    cfg, comp = make(tok, "dynamic", refiner=HalfRefiner(tok),
                     constraint={"coef": 1.0, "ce_scope": scope})
    tr, _ = _trainer(tmp_path, cfg, comp)
    batch = _first_batch(tr)
    assert batch["refine_keep"].any() and not batch["refine_keep"].all()  # some rows are fused in, some not
    fused = _loss_and_grads(tr, batch)
    tr.cfg.speed.fuse_dc_forward = False
    tr._upd.clear()
    separate = _loss_and_grads(tr, batch)
    assert fused[0] == pytest.approx(separate[0], abs=1e-6)
    assert fused[1].keys() == separate[1].keys()
    for name, g in fused[1].items():
        torch.testing.assert_close(g, separate[1][name], atol=1e-6, rtol=1e-5, msg=name)
    assert fused[2]["ce_sum"] == pytest.approx(separate[2]["ce_sum"], rel=1e-6)
    assert fused[2]["ce_tok"] == separate[2]["ce_tok"]


def test_from_first_diff_ce_sees_the_whole_refinement_as_context(tok, tmp_path):
    """The loss mask starts at the first changed token, but y' before it is still attended to."""
    cfg, comp = make(tok, "dynamic", refiner=HalfRefiner(tok),
                     constraint={"coef": 1.0, "ce_scope": "from_first_diff"}, speed=SLOW_PATHS)
    tr, _ = _trainer(tmp_path, cfg, comp)
    batch = _first_batch(tr)
    keep = batch["refine_keep"].bool()
    attn = batch["refined_attn"][keep]
    loss_mask = first_difference_mask(batch["completion_ids"][keep], batch["refined_ids"][keep], attn)
    assert torch.equal(batch["refined_mask"][keep], loss_mask)
    assert (loss_mask != attn).any()  # some y' share a prefix with y that carries no loss
    with torch.no_grad():
        tr._compute_loss(tr.model, batch)
        want = (policy_ce_on_refined(tr.model, batch["prompt_ids"][keep], batch["prompt_mask"][keep],
                                     batch["refined_ids"][keep], attn) * loss_mask).sum().item()
    assert tr._upd["ce_sum"][-1] == pytest.approx(want, rel=1e-6)


def _metrics(tok, tmp_path, name, **over):
    from study.trainers.dapo import train_dapo

    cfg, comp = make(tok, "dynamic", refiner=HalfRefiner(tok), steps=3, **over)
    run = RunLog(tmp_path / name, cfg.model_dump(mode="json"), 0, cfg.hash())
    train_dapo(cfg, comp, run)
    return [json.loads(x) for x in run.metrics_path.read_text().splitlines()]


def test_fast_paths_log_and_learn_what_the_slow_paths_do(tok, tmp_path):
    fast = _metrics(tok, tmp_path, "fast")
    slow = _metrics(tok, tmp_path, "slow", speed=SLOW_PATHS)
    assert len(fast) == len(slow) == 3
    for f, s in zip(fast, slow):
        for key in ("reward_mean", "kept_frac", "improvement_ratio"):
            assert f[key] == s[key], key
        for key in ("kl", "dynamic_ce", "loss", "policy_loss", "grad_norm"):
            assert f[key] == pytest.approx(s[key], rel=1e-4, abs=1e-6), key
    assert fast[0]["kl"] == pytest.approx(0.0, abs=1e-6) and fast[-1]["kl"] > 1e-6  # the policy moved


def test_kl_every_thins_the_kl_log(tok, tmp_path):
    rows = _metrics(tok, tmp_path, "thin", speed={"kl_every": 2})
    assert [r["kl"] is None for r in rows] == [False, True, False]  # steps 1 and 3 measured, step 2 NaN
    rows = _metrics(tok, tmp_path, "never", speed={"kl_every": 0})
    assert all(r["kl"] is None for r in rows)


def test_a_non_default_speed_section_changes_the_config_hash(tok):
    # (defaults stay out of the hash: tests/test_beyond.py::test_relift_config_defaults_validation_and_hash)
    fast, _ = make(tok, "dynamic", refiner=FixedRefiner(tok))
    thin, _ = make(tok, "dynamic", refiner=FixedRefiner(tok), speed={"kl_every": 5})
    assert fast.hash() != thin.hash()


class CountingRefiner(Refiner):
    def _refine(self, problems, responses):
        self.seen = list(zip(problems, responses))
        return [Generation(text=f"{x}|{y}", token_ids=[len(y)], truncated=False) for x, y in self.seen]


def test_greedy_refiner_refines_each_distinct_pair_once():
    r = CountingRefiner(model=None, tokenizer=None, temperature=0.0)
    xs, ys = ["p", "p", "q", "p", "q"], ["a", "a", "a", "b", "a"]
    out = r.refine(xs, ys)
    assert r.seen == [("p", "a"), ("q", "a"), ("p", "b")]
    assert [g.text for g in out] == [f"{x}|{y}" for x, y in zip(xs, ys)]
    sampled = CountingRefiner(model=None, tokenizer=None, temperature=0.7)
    sampled.refine(xs, ys)
    assert sampled.seen == list(zip(xs, ys))  # sampling draws for every copy
