"""Issue 8's fast paths (``speed`` config) compute the same thing as the plain paths: the fused L_DAPO + L_DC
forward, the KL taken from the loss forward, the thinned KL log, the greedy refiner's deduplication, and the
rollouts' shared prompt prefill."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import FixedRefiner, HalfRefiner, dapo_trainer, first_batch, make, step_values

from study.generation import Generation, generate_sharing_prompts
from study.refiner import Refiner
from study.runs import RunLog
from study.tokens import token_logps

torch.set_num_threads(1)

SLOW_PATHS = {"kl_from_loss": False, "fuse_dc_forward": False, "shared_prompt_prefill": False, "pack_groups": False}


def test_from_first_diff_ce_sees_the_whole_refinement_as_context(tok, tmp_path):
    """The loss mask starts at the first changed token, but y' before it is still attended to."""
    cfg, comp = make(tok, "dynamic", refiner=HalfRefiner(tok),
                     constraint={"coef": 1.0, "ce_scope": "from_first_diff"}, speed=SLOW_PATHS)
    tr, _ = dapo_trainer(tmp_path, cfg, comp)
    batch = first_batch(tr)
    keep = batch["refine_keep"].bool()
    attn, loss_mask = batch["refined_mask"][keep], batch["dc_mask"][keep]
    cols = torch.arange(attn.shape[1]).unsqueeze(0)
    assert torch.equal(loss_mask, attn * (cols >= batch["first_change"][keep].unsqueeze(1)))
    assert (loss_mask != attn).any()  # some y' share a prefix with y that carries no loss
    with torch.no_grad():
        tr._metrics["train"].clear()
        tr._compute_loss(tr.model, batch)
        want = -(token_logps(tr.model, batch["prompt_ids"][keep], batch["prompt_mask"][keep],
                             batch["refined_ids"][keep], attn)[0] * loss_mask).sum().item()
    assert step_values(tr)["dynamic_ce_sum"] == pytest.approx(want, rel=1e-5)


def _metrics(tok, tmp_path, name, **over):
    from study.trainers.dapo import train_dapo

    cfg, comp = make(tok, "dynamic", refiner=HalfRefiner(tok), steps=3, **over)
    run = RunLog(tmp_path / name, cfg.model_dump(mode="json"), 0, cfg.hash())
    train_dapo(cfg, comp, run)
    return [json.loads(x) for x in run.metrics_path.read_text().splitlines()]


def test_fast_paths_log_and_learn_what_the_slow_paths_do(tok, tmp_path):
    """The packed loss forward (each prompt once, L_DC's y'_≥k in the same rows) and the KL from the loss forward
    (the defaults) against TRL's per-rollout forward, a separate L_DC forward and a separate KL forward, over 3
    training steps."""
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


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("repeats", [[4, 4, 4], [1, 3, 2], [1, 1, 1]])
def test_shared_prompt_prefill_samples_the_tokens_plain_generate_samples(repeats):
    """Each distinct prompt prefilled once, its cache rows copied to its repeats: the same tokens as plain
    ``generate`` under the same seed (sampling at T = 1, left padding of different lengths, runs of different
    lengths; all-distinct prompts take the plain path)."""
    model = _tiny_llama()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 50, (n,), generator=g).tolist() for n in (5, 9, 7)]
    rows = [p for p, r in zip(prompts, repeats) for _ in range(r)]
    from study.tokens import pad_left

    ids, mask = pad_left(rows, 0)
    kw = dict(max_new_tokens=12, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
    torch.manual_seed(7)
    plain = model.generate(input_ids=ids, attention_mask=mask, **kw)
    torch.manual_seed(7)
    shared = generate_sharing_prompts(model, ids, mask, **kw)
    assert torch.equal(plain, shared)
    torch.manual_seed(8)
    assert not torch.equal(plain, generate_sharing_prompts(model, ids, mask, **kw))  # the seed matters: not vacuous
