"""Copy-aware batched greedy decoding (``study.generation.greedy_with_drafts``, issue 17): each row drafts from its
own candidate y, rows verify in one batched forward per step, and the output is token-identical to plain greedy
decoding: on real mini refinements (edits, insertions, deletions, verbatim copies) and on hand-broken drafts."""

from __future__ import annotations

import difflib

import pytest
import torch
from helpers import tiny_llama

from study.generation import DraftStats, generate, greedy_with_drafts, render_prompts
from study.prompts import solve_messages
from study.refiner import Refiner
from study.tokens import eos_ids, pad_id

torch.set_num_threads(1)


def test_any_draft_gives_the_greedy_tokens(tok):
    """Right, wrong, shifted, empty and too-long drafts all give plain greedy's output (a random tiny model)."""
    model = tiny_llama(tok, seed=1).eval()
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [enc("<|user|>say " + w + "<|end|><|assistant|>") for w in ("abc", "hello there", "x", "qq", "z z")]
    greedy = generate(model, tok, [tok.decode(p) for p in prompts], max_new_tokens=12, batch_size=8)
    want = [g.token_ids for g in greedy]
    for make_draft in (lambda w: w,  # the answer itself
                       lambda w: w[:3] + [5] + w[3:],  # an insertion
                       lambda w: w[:2] + w[4:],  # a deletion
                       lambda w: [w[0], 7, 7] + w[3:],  # a replacement
                       lambda w: [],  # nothing to copy
                       lambda w: w[5:] + w[:5] + w,  # shifted, repeated
                       lambda w: [9] * 40):  # wrong throughout
        for share in (False, True):
            stats = DraftStats()
            got = greedy_with_drafts(model, prompts, [make_draft(w) for w in want], eos_ids(model, tok),
                                     pad_id(tok), 12, draft_len=4, share_prefix=share, stats=stats)
            assert got == want
            assert stats.tokens == sum(len(w) for w in want)
    stats = DraftStats()
    greedy_with_drafts(model, prompts, want, eos_ids(model, tok), pad_id(tok), 12, draft_len=16, share_prefix=False,
                       stats=stats)
    assert stats.forwards == 1  # the right draft is verified in the prefill: one forward in all
    assert stats.accepted == stats.drafted == sum(len(w) for w in want)


def _refine_prompts(lm, tok, n_problems=4, group=8):
    from study.data import load_problems

    probs = load_problems("mini", split="train", limit=n_problems, mini_profile="mini")
    torch.manual_seed(0)
    roll = generate(lm, tok, [solve_messages(p.prompt) for p in probs for _ in range(group)], max_new_tokens=128,
                    temperature=1.0, batch_size=n_problems * group)
    pairs = list(dict.fromkeys(zip([p.prompt for p in probs for _ in range(group)], [g.text for g in roll])))
    return [x for x, _ in pairs], [y for _, y in pairs]


def test_real_mini_refinements_are_token_identical(mini_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(mini_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(mini_model_dir)
    xs, ys = _refine_prompts(lm, tok)
    plain = Refiner(lm, tok, max_new_tokens=128, batch_size=64)
    want = plain._refine(xs, ys)
    msgs = plain.prompts(xs, ys)
    for share in (False, True):
        copy = Refiner(lm, tok, max_new_tokens=128, batch_size=64, copy_decoding=True, share_prefix=share)
        stats = DraftStats()
        got = copy._refine_with_drafts(msgs, ys, stats=stats)
        assert [g.token_ids for g in got] == [g.token_ids for g in want]
        assert [g.text for g in got] == [g.text for g in want]
        assert stats.tokens_per_row_forward > 2  # drafts were accepted
    # the refinements hold every kind of edit of y, and verbatim copies
    kinds = set()
    for y, g in zip(ys, want):
        d = tok(y, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ops = {o[0] for o in difflib.SequenceMatcher(a=d, b=g.token_ids, autojunk=False).get_opcodes()}
        kinds |= ops - {"equal"} if ops != {"equal"} else {"copy"}
    assert kinds >= {"copy", "replace", "insert", "delete"}, kinds
    # through the public entry point (dedup + drafts), the same
    assert [g.token_ids for g in copy.refine(xs, ys)] == [g.token_ids for g in want]


def test_prefix_sharing_groups_rows_and_keeps_outputs(mini_model_dir):
    """Rows of one problem share the instruction + problem prefix; a batch mixing problems still decodes exactly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(mini_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(mini_model_dir)
    xs, ys = _refine_prompts(lm, tok, n_problems=2, group=4)
    r = Refiner(lm, tok, max_new_tokens=64)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in render_prompts(tok, r.prompts(xs, ys))]
    drafts = [tok(y, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for y in ys]
    runs = [greedy_with_drafts(lm, prompts, drafts, eos_ids(lm, tok), pad_id(tok), 64, share_prefix=s)
            for s in (False, True)]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="custom 4-D attention mask"):
        lm.config._attn_implementation = "flash_attention_2"
        greedy_with_drafts(lm, prompts, drafts, eos_ids(lm, tok), pad_id(tok), 8)
