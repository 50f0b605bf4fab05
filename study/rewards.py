"""Rewards (paper App. A.2): CodeRL's tiers with an adaptive partial-pass term, 0/1 pass, or a reward model.

    reward_fn, max_reward = build_reward(cfg)                   # what study.train hands to the trainer
    rewards = reward_fn(prompts=..., completions=..., tests=[suite.to_json(), ...], entry_point=[...])
    rewards, verdicts = score_completions(completions, tests_json, entry_points, code_prefixes)

Reward callables follow TRL's convention: ``fn(prompts, completions, **dataset_columns) -> list[float]``;
completions may be strings or conversational message lists (``[{"role": "assistant", "content": ...}]``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from study.code import extract_code, with_prefix
from study.errors import UserError
from study.problems import TestSuite
from study.sandbox import Limits, Verdict, run_batch

COMPILE_ERROR, RUNTIME_ERROR, FAILED, PASSED = -1.0, -0.6, -0.3, 1.0


def coderl_reward(verdict: Verdict) -> float:
    """CodeRL's reward (Le et al. 2022, paper Eq. 7) with the adaptive partial-pass term (Eq. 8).

    Tiers: ``compile_error`` -> -1; ``runtime_error`` or ``timeout`` -> -0.6; ``passed`` -> +1. A program that
    runs but fails some tests (``failed``) gets the adaptive term, proportional to its test pass rate::

        r = -0.3 + 1.3 * passed / total

    so 0 tests passed gives CodeRL's -0.3 (failed unit test), and the line reaches +1 exactly where every test
    passes: the reward is continuous with the tiers and strictly increasing in the pass rate. (Eq. 8 is not
    legible in our copy of the paper; this is our stated choice.) A case that raises (not an assertion) makes
    the whole program a ``runtime_error``, as in CodeRL.
    """
    s = verdict.status
    if s == "passed":
        return PASSED
    if s == "compile_error":
        return COMPILE_ERROR
    if s in ("runtime_error", "timeout"):
        return RUNTIME_ERROR
    if s == "failed":
        rate = verdict.passed / verdict.total if verdict.total else 0.0
        return FAILED + (PASSED - FAILED) * rate
    raise ValueError(f"unknown verdict status {s!r}")


def binary_reward(verdict: Verdict) -> float:
    """1 if every test passes, else 0."""
    return 1.0 if verdict.status == "passed" else 0.0


REWARD_KINDS: dict[str, tuple[Callable[[Verdict], float], float]] = {
    "coderl": (coderl_reward, PASSED),
    "binary": (binary_reward, 1.0),
}


def completion_text(completion: Any) -> str:
    """A TRL completion as text: a string, or the assistant contents of a conversational message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict)
                       and m.get("role", "assistant") == "assistant")
    raise TypeError(f"completion of type {type(completion).__name__} is neither text nor chat messages")


def _column(values, n: int) -> list:
    if values is None or isinstance(values, str):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"reward column has {len(values)} values for {n} completions")
    return values


def score_completions(completions: Sequence[Any], tests: Sequence[str | dict | TestSuite],
                      entry_points: Sequence[str | None] | str | None = None,
                      code_prefixes: Sequence[str | None] | str | None = None, kind: str = "coderl",
                      limits: Limits | None = None, workers: int | None = None,
                      progress: bool = False) -> tuple[list[float], list[Verdict]]:
    """Extract each completion's program, run the batch in the sandbox, and score it: (rewards, verdicts)."""
    if kind not in REWARD_KINDS:
        raise UserError(f"reward kind must be one of {sorted(REWARD_KINDS)}, got {kind!r}")
    n = len(completions)
    suites = [t if isinstance(t, TestSuite) else TestSuite.from_json(t) for t in _column(tests, n)]
    eps, prefixes = _column(entry_points, n), _column(code_prefixes, n)
    programs = [with_prefix(extract_code(completion_text(c), ep or None), pre)
                for c, ep, pre in zip(completions, eps, prefixes)]
    verdicts = run_batch(programs, suites, limits, workers=workers, progress=progress)
    fn = REWARD_KINDS[kind][0]
    return [fn(v) for v in verdicts], verdicts


class CodeReward:
    """TRL reward function over sandbox verdicts. ``last_verdicts`` keeps the latest batch's verdicts so a trainer
    can log pass rates without running the programs twice."""

    def __init__(self, kind: str = "coderl", limits: Limits | None = None, workers: int | None = None) -> None:
        if kind not in REWARD_KINDS:
            raise UserError(f"reward kind must be one of {sorted(REWARD_KINDS)}, got {kind!r}")
        self.kind, self.limits, self.workers = kind, limits, workers
        self.max_reward = REWARD_KINDS[kind][1]
        self.__name__ = f"{kind}_reward"
        self.last_verdicts: list[Verdict] = []

    def __call__(self, prompts=None, completions=None, tests=None, entry_point=None, code_prefix=None,
                 completion_ids=None, **kwargs) -> list[float]:
        if completions is None or tests is None:
            raise ValueError("code reward needs `completions` and the dataset's `tests` column")
        rewards, self.last_verdicts = score_completions(completions, tests, entry_point, code_prefix,
                                                        kind=self.kind, limits=self.limits, workers=self.workers)
        return rewards


def code_reward(prompts=None, completions=None, tests=None, entry_point=None, code_prefix=None,
                completion_ids=None, **kwargs) -> list[float]:
    """TRL reward function: CodeRL reward of each completion on its ``tests`` (``TestSuite.to_json()`` strings)."""
    return CodeReward("coderl")(prompts, completions, tests, entry_point, code_prefix, completion_ids, **kwargs)


code_reward.__name__ = "coderl_reward"


class RewardModelReward:
    """A sequence-classifier reward model scoring (prompt, completion) pairs (dialogue). Logit 0 is the reward."""

    def __init__(self, path: str, device: str | None = None, batch_size: int = 8, max_length: int = 1024) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        except (OSError, ValueError) as exc:
            raise UserError(f"reward_model: cannot load {path}: {str(exc).splitlines()[0]}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).requires_grad_(False)
        self.batch_size, self.max_length = batch_size, max_length
        self.__name__ = "reward_model"

    def _text(self, prompt: Any, completion: Any) -> str:
        comp = completion_text(completion)
        if isinstance(prompt, (list, tuple)):
            if getattr(self.tokenizer, "chat_template", None):
                msgs = list(prompt) + [{"role": "assistant", "content": comp}]
                return self.tokenizer.apply_chat_template(msgs, tokenize=False)
            prompt = "\n".join(str(m.get("content", "")) for m in prompt)
        return (prompt or "") + comp

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        import torch

        prompts = _column(prompts, len(completions)) if prompts is not None else [""] * len(completions)
        texts = [self._text(p, c) for p, c in zip(prompts, completions)]
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                     truncation=True, max_length=self.max_length).to(self.device)
                logits = self.model(**enc).logits
                out.extend(logits[:, 0].float().tolist())
        return out


def build_reward(cfg) -> tuple[Callable, float | None]:
    """The reward callable named by ``cfg.reward`` and its ceiling (``None``: unbounded, nothing is skipped)."""
    if cfg.reward in REWARD_KINDS:
        fn = CodeReward(cfg.reward)
        return fn, fn.max_reward
    if cfg.reward == "reward_model":
        if not cfg.reward_model:
            raise UserError("reward: reward_model needs reward_model: PATH")
        return RewardModelReward(cfg.reward_model), None
    raise UserError(f"reward: unknown kind {cfg.reward!r}")
