"""Test builders in one place: a character-level chat tokenizer, a tiny random Llama, and the small DAPO world the
trainer tests share (problems, rewards, deterministic refiners, a config + components builder).

    tok = char_tokenizer()                      # (the ``tok`` fixture in conftest.py is one per session)
    model = tiny_llama(tok, seed=0)
    cfg, comp = make(tok, "dynamic", refiner=FixedRefiner(tok), constraint={"coef": 1.0})
    tr, run = dapo_trainer(tmp_path, cfg, comp); batch = first_batch(tr)
    copy_repo(tmp_path / "repo")                # this working tree's files, as a fresh clone would hold them
"""

from __future__ import annotations

import shutil
import string
import subprocess
from pathlib import Path

import torch

from study.config import validate_config
from study.generation import Generation
from study.problems import Problem, TestSuite
from study.runs import RunLog
from study.train import Components

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def char_tokenizer():
    """One token per printable character, plus <pad>, <|end|> (EOS) and the chat role markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|end|>", "<|user|>", "<|assistant|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    t = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    t.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    t.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<|end|>",
                                   additional_special_tokens=specials[2:])
    fast.chat_template = CHAT
    return fast


def tiny_llama(tok, seed: int = 0, layers: int = 2, hidden: int = 32, attn_implementation: str | None = None):
    """A randomly initialised ``LlamaForCausalLM`` over ``tok``'s vocabulary (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    if attn_implementation:
        cfg._attn_implementation = attn_implementation
    m = LlamaForCausalLM(cfg)
    m.generation_config.eos_token_id = tok.eos_token_id
    m.generation_config.pad_token_id = tok.pad_token_id
    return m


# ------------------------------------------------------------------------------------------- the DAPO test world

PROBLEMS = [Problem(task_id=f"t{i}", prompt=f"say {c}", tests=TestSuite("asserts", (f"x == {c!r}",)),
                    reference=f"print({c!r})") for i, c in enumerate("abcdefgh")]
TARGET = "aaaa"


def text_of(c):
    return c[0]["content"] if isinstance(c, list) else c


def frac_a(prompts=None, completions=None, **kw):
    """Share of 'a' characters (x4, capped at 1): graded, so most groups have distinct rewards."""
    return [min(1.0, 4 * text_of(c).count("a") / max(len(text_of(c)), 1)) for c in completions]


def is_target(prompts=None, completions=None, **kw):
    """1 for exactly TARGET, else 0: a random policy scores 0 everywhere (advantages all zero)."""
    return [1.0 if text_of(c).strip() == TARGET else 0.0 for c in completions]


def _gen(tok, text):
    return Generation(text=text, token_ids=tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
                      truncated=False)


class FixedRefiner:
    """A refiner that always answers ``text`` (TARGET by default), with the tokenizer's EOS."""

    def __init__(self, tok, text=TARGET):
        self.tok, self.text = tok, text
        self.calls = 0

    def refine(self, problems, responses):
        self.calls += len(problems)
        return [_gen(self.tok, self.text) for _ in problems]


class HalfRefiner(FixedRefiner):
    """Even rows: y' = the first 3 characters of y + "aaaa" (more a's: kept; shares a prefix with y). Odd rows:
    "zzzzzz" (reward 0: dropped). Lengths and keeps mix."""

    def refine(self, problems, responses):
        return [_gen(self.tok, y[:3] + "aaaa" if i % 2 == 0 else "zzzzzz") for i, y in enumerate(responses)]


class EditRefiner(FixedRefiner):
    """Edits of y of every kind, by row: a mid-response replacement, an edit at token 0, y' longer than y (an
    insertion), a deletion, y' = y (no change), a truncation; under ``frac_a`` most of them score higher."""

    EDITS = (lambda y: y[:2] + "a" + y[3:], lambda y: "a" + y[1:], lambda y: y[:2] + "aaaa" + y[2:],
             lambda y: y[:1] + y[3:] + "a", lambda y: y, lambda y: y[:2] + "a")

    def refine(self, problems, responses):
        return [_gen(self.tok, self.EDITS[i % len(self.EDITS)](y)) for i, y in enumerate(responses)]


def make(tok, mode="dynamic", reward=frac_a, refiner=None, steps=2, **over):
    """(TrainConfig, Components) of a tiny DAPO run: 2 prompts x 4 samples of up to 8 tokens, policy = reference."""
    policy = tiny_llama(tok)
    ref = tiny_llama(tok)
    ref.load_state_dict(policy.state_dict())
    ref.eval().requires_grad_(False)
    if refiner is None and mode == "dynamic":
        from study.refiner import Refiner

        refiner = Refiner(ref, tok, max_new_tokens=8, batch_size=16)
    raw = dict(name="t", model="x", steps=steps, reward="binary", samples_per_step=2,
               rollout=dict(num_prompts=2, num_generations=4, max_completion_length=8),
               optim=dict(learning_rate=1e-3), constraint=dict(mode=mode), refiner=dict(max_new_tokens=8))
    for k, v in over.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    cfg = validate_config(raw)
    return cfg, Components(policy, ref, tok, PROBLEMS, reward, 1.0, refiner, "cpu")


def dapo_trainer(tmp_path, cfg, comp):
    """The configured trainer in training mode, ready for its hooks to be called directly."""
    from study.trainers.dapo import build_trainer

    run = RunLog(tmp_path / cfg.constraint.mode, cfg.model_dump(mode="json"), 0, cfg.hash())
    tr = build_trainer(cfg, comp, run)
    tr.model.train()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the pieces directly
    return tr, run


def first_batch(tr):
    """One RL step's batch, as ``_generate_and_score_completions`` returns it."""
    inputs = next(iter(tr.get_train_dataloader()))
    return tr._generate_and_score_completions(inputs)


def step_values(tr) -> dict[str, float]:
    """The per-step values the trainer logged since TRL last flushed its metrics (``step/`` prefix dropped), mean
    over micro-batches."""
    from study.trainers.dapo import STEP

    return {k[len(STEP):]: sum(v) / len(v) for k, v in tr._metrics["train"].items() if k.startswith(STEP) and v}


ROOT = Path(__file__).resolve().parents[1]


def copy_repo(dst: Path) -> Path:
    """The files of this checkout that git tracks or would (not the ignored runs/, artifacts/, .venv/), as they are
    now, without the history: what a fresh clone of this working tree holds."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def record_rounds(tr) -> list[list]:
    """Make ``tr`` record the sampling rounds of every step (dropped groups included): returns the list it
    appends each step's list of ``Round``s to."""
    seen: list[list] = []
    sample_rounds = tr._sample_rounds

    def spy(inputs):
        rounds = sample_rounds(inputs)
        seen.append(rounds)
        return rounds

    tr._sample_rounds = spy
    return seen
