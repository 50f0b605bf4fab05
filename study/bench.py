"""``study bench``: timings (never in tests). Each benchmark prints a table; the last line is ``ratio <x>``.

    study bench refiner-overhead                       # DAPO vs DAPO+dynamic, A B A B, 3 repeats x 5 steps, mini:mini
    study bench refiner-overhead --repeats 5 --steps 10 --trl   # + plain TRL GRPOTrainer vs our trainer (mode none)
    study bench refiner-overhead --smoke --repeats 1 --steps 1  # seconds, the smoke model (CI / tests)
    study bench refiner-overhead --smollm --model artifacts/models/smollm2 --steps 2 --repeats 1 --set ...  # real LM
    study bench sandbox --workers 2 --repeats 3        # benchmarks/sandbox_throughput.py

Refiner overhead (issue 8; paper: DAPO 17.8 h vs DAPO+dynamic 26.3 h, +48%): the same seed and settings trained
``--steps`` RL steps with ``configs/<world>/dapo.yaml`` (A) and ``dapo_dynamic.yaml`` (B), interleaved A B A B in
one process so background load hits both alike, each through ``study.train.run_training`` with
``eval_benchmarks=[]`` and ``checkpoint_every=0``. Per-phase wall times are read back from each run's
metrics.jsonl (``time_rollout``, ``time_reward``, ``time_refine``, ``time_update``, ``time_step``), summed over the
run's steps, then the median over repeats is printed per phase. The ratio is B/A of the summed step time, per
repeat (min/median/max). The learning metrics of the last step (reward, improvement ratio) are printed too, so an
optimisation can be checked not to change what is learned.

``--trl`` adds a second comparison: TRL's own ``GRPOTrainer`` against our ``DynamicDAPOTrainer`` with the refiner
off and dynamic sampling off (constraint mode none), same GRPOConfig (``study.trainers.dapo.grpo_args``), dataset
and reward; wall time of ``trainer.train()``; ``ratio_trl <ours / TRL>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from study.errors import UserError

PHASES = ("rollout", "reward", "refine", "refine_generate", "refine_score", "update", "step")  # refine = generate + score (+ filter)
LEARNING = ("reward_mean", "pass_rate", "improvement_ratio", "kept_frac", "refined_reward_mean", "dynamic_ce")
SLOW_PATHS = ["speed.pack_groups=false", "speed.fuse_dc_forward=false", "speed.kl_from_loss=false",
              "speed.refiner_copy_decoding=false"]
"""The plain computations the fast paths replace (``speed``): TRL's forward, one row per rollout; L_DC in its own
forward; the KL's policy side in its own forward; plain batched greedy refinement."""
SAME = ("reward_mean", "kept_frac", "improvement_ratio", "refined_frac", "response_length")
CLOSE = ("loss", "policy_loss", "dynamic_ce", "kl", "grad_norm", "entropy")


# ----------------------------------------------------------------------------------------------------------------
# refiner overhead: DAPO vs DAPO + dynamic


PAIRS = {"mini": ("dapo", "dapo_dynamic"), "smoke": ("dapo", "dapo_dynamic"),
         "smollm": ("mbpp_dapo", "mbpp_dapo_dynamic")}
"""configs/<world>/: the DAPO and DAPO+dynamic configs the overhead benchmark compares."""


def bench_configs(world: str, steps: int, model: str | None, seed: int, extra: list[str] | None = None):
    """(dapo, dynamic) TrainConfigs of ``configs/<world>/`` (``PAIRS``), with the benchmark's overrides applied."""
    from study.config import load_config

    root = Path(__file__).resolve().parent.parent / "configs" / world
    overrides = [f"steps={steps}", "eval_benchmarks=[]", "checkpoint_every=0", f"seed={seed}"] + list(extra or [])
    if model:
        overrides.append(f"model={model}")
    a = load_config(root / f"{PAIRS[world][0]}.yaml", overrides)
    b = load_config(root / f"{PAIRS[world][1]}.yaml", overrides)
    da, db = a.model_dump(), b.model_dump()
    diff = sorted(k for k in da if da[k] != db[k] and k not in ("name", "constraint"))
    if diff:
        raise UserError(f"configs/{world}/dapo.yaml and dapo_dynamic.yaml differ beyond name/constraint: {diff}")
    return a, b


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"no metrics.jsonl in {run_dir}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_summary(rows: list[dict]) -> dict[str, float]:
    """Phase times summed over the run's steps, plus the last step's learning metrics."""
    out = {f"time_{p}": sum(float(r.get(f"time_{p}") or 0.0) for r in rows) for p in PHASES}
    last = rows[-1] if rows else {}
    for k in LEARNING:
        v = last.get(k)
        out[k] = float("nan") if v is None else float(v)  # NaN is written as null
    for k in ("n_refined", "refined_distinct"):  # rows sent to the refiner / distinct (x, y) among them
        out[f"sum_{k}"] = sum(float(r.get(k) or 0.0) for r in rows)
    out["steps"] = len(rows)
    return out


def train_once(cfg, runs_dir: Path, rows_out: list | None = None) -> dict[str, float]:
    from study.train import run_training

    run_dir = run_training(cfg, runs_dir)
    rows = read_metrics(run_dir)
    if rows_out is not None:
        rows_out.extend(rows)
    return run_summary(rows)


def learning_diff(fast: list[dict], slow: list[dict]) -> dict[str, float]:
    """Per metric, the largest |fast - slow| over the steps (SAME: exact equality expected; CLOSE: float round-off).
    NaN/None on both sides counts as equal."""
    out = {}
    for k in SAME + CLOSE:
        d = 0.0
        for f, s in zip(fast, slow):
            a, b = f.get(k), s.get(k)
            if a is None and b is None:
                continue
            d = max(d, float("inf") if a is None or b is None else abs(float(a) - float(b)))
        out[k] = d
    return out


def _nanmedian(xs) -> float:
    vals = [x for x in xs if x == x]
    return statistics.median(vals) if vals else float("nan")


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def refiner_overhead(repeats: int = 3, steps: int = 5, world: str = "mini", model: str | None = None,
                     seed: int = 0, extra: list[str] | None = None, check_slow: bool = True, print_fn=print) -> dict:
    """Interleaved A (DAPO) / B (DAPO+dynamic) runs; prints the table and ``ratio <B/A>``; returns the numbers.

    ``check_slow``: one more dynamic run with the plain computations (``SLOW_PATHS``), compared step by step with
    the first fast dynamic run: rewards, keeps and refinement counts must be equal, losses equal to float round-off
    (what is learned does not depend on the fast paths)."""
    if repeats < 1 or steps < 1:
        raise UserError("--repeats and --steps must be >= 1")
    cfg_a, cfg_b = bench_configs(world, steps, model, seed, extra)
    results: dict[str, list[dict]] = {"dapo": [], "dynamic": []}
    fast_rows: list[dict] = []
    slow_rows: list[dict] = []
    slow = None
    with tempfile.TemporaryDirectory(prefix="bench-refiner-") as tmp:
        for rep in range(repeats):
            for label, cfg in (("dapo", cfg_a), ("dynamic", cfg_b)):
                cfg_r = cfg.model_copy(update={"name": f"{label}-r{rep}"})
                results[label].append(train_once(cfg_r, Path(tmp), fast_rows if (label, rep) == ("dynamic", 0)
                                                 else None))
        if check_slow:
            _, cfg_s = bench_configs(world, steps, model, seed, list(extra or []) + SLOW_PATHS)
            slow = train_once(cfg_s.model_copy(update={"name": "dynamic-slow"}), Path(tmp), slow_rows)
    ratios = [b["time_step"] / a["time_step"] for a, b in zip(results["dapo"], results["dynamic"])]
    print_fn(f"{cfg_b.model}  repeats={repeats} steps={steps}  B={cfg_b.rollout.num_prompts}x"
             f"{cfg_b.rollout.num_generations}  refiner max_new_tokens={cfg_b.refiner.max_new_tokens}")
    head = f"{'phase (s, summed over steps, median over repeats)':52s} {'dapo':>9s} {'dynamic':>9s}"
    print_fn(head + (f" {'dyn slow':>9s}" if slow else ""))
    for p in PHASES:
        a = statistics.median(r[f"time_{p}"] for r in results["dapo"])
        b = statistics.median(r[f"time_{p}"] for r in results["dynamic"])
        print_fn(f"{'time_' + p:52s} {a:9.2f} {b:9.2f}" + (f" {slow[f'time_{p}']:9.2f}" if slow else ""))
    for k in LEARNING:
        a = _nanmedian([r[k] for r in results["dapo"]])
        b = _nanmedian([r[k] for r in results["dynamic"]])
        print_fn(f"{'last step ' + k + ' (median)':52s} {a:9.3f} {b:9.3f}" + (f" {slow[k]:9.3f}" if slow else ""))
    sent = statistics.median(r["sum_n_refined"] for r in results["dynamic"])
    distinct = statistics.median(r["sum_refined_distinct"] for r in results["dynamic"])
    print_fn(f"rollouts sent to the refiner / distinct (x, y) decoded, all steps (median): {sent:.0f} / {distinct:.0f}")
    share = statistics.median(r["time_refine"] / r["time_step"] for r in results["dynamic"])
    print_fn(f"refine share of dynamic step time (median): {share:.3f}")
    diff = None
    if slow:
        diff = learning_diff(fast_rows, slow_rows)
        same = all(diff[k] == 0 for k in SAME) and all(diff[k] <= 1e-4 for k in CLOSE)
        print_fn(f"fast vs slow paths over {steps} steps, max |difference|: "
                 + "  ".join(f"{k} {v:.1e}" for k, v in diff.items()))
        print_fn(f"learning unchanged by the fast paths: {'yes' if same else 'NO'}")
    lo, med, hi = _stats(ratios)
    print_fn(f"dynamic/dapo step time over repeats: min {lo:.3f}  median {med:.3f}  max {hi:.3f}")
    print_fn(f"ratio {med:.3f}")
    return {"results": results, "ratios": ratios, "ratio": med, "refine_share": share, "slow": slow,
            "learning_diff": diff}


# ----------------------------------------------------------------------------------------------------------------
# plain TRL GRPOTrainer vs our DynamicDAPOTrainer (refiner off, dynamic sampling off)


def _trl_trainer(cfg, tmp: Path, plain: bool):
    from transformers.trainer_callback import ProgressCallback
    from trl import GRPOTrainer
    from trl.rewards import get_soft_overlong_punishment

    from study.runs import RunLog
    from study.train import build_components, seed_everything
    from study.trainers.dapo import build_dataset, build_trainer, grpo_args

    seed_everything(cfg.seed)
    comp = build_components(cfg)
    out = tmp / ("trl" if plain else "ours")
    if not plain:
        run = RunLog(out, cfg.model_dump(mode="json"), cfg.seed, cfg.hash())
        trainer = build_trainer(cfg, comp, run)
    else:
        reward_funcs = [comp.reward_fn]
        if cfg.dapo.overlong_buffer > 0:
            reward_funcs.append(get_soft_overlong_punishment(cfg.rollout.max_completion_length,
                                                             cfg.dapo.overlong_buffer))
        trainer = GRPOTrainer(model=comp.policy, reward_funcs=reward_funcs,
                              args=grpo_args(cfg, out / "checkpoints", comp.device),
                              train_dataset=build_dataset(comp.problems, comp.tokenizer,
                                                          cfg.rollout.max_prompt_length),
                              processing_class=comp.tokenizer)
        trainer.remove_callback(ProgressCallback)
    trainer.args.save_strategy = "no"
    # time spent in no-grad log-prob forwards: in ours (mode none, one micro-batch) these are the KL(π_θ‖π_ref)
    # logging forwards (policy + reference) that TRL does not run; the loss forward runs with grad
    trainer._bench_nograd_s = 0.0
    inner = trainer._get_per_token_logps_and_entropies

    def timed(*a, **kw):
        import torch

        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            if not torch.is_grad_enabled():
                trainer._bench_nograd_s += time.perf_counter() - t0

    trainer._get_per_token_logps_and_entropies = timed
    return trainer


def trl_overhead(repeats: int = 3, steps: int = 5, world: str = "mini", model: str | None = None, seed: int = 0,
                 extra: list[str] | None = None, print_fn=print) -> dict:
    """Wall time of ``train()`` for TRL's GRPOTrainer and ours (mode none, no dynamic sampling), interleaved."""
    cfg, _ = bench_configs(world, steps, model, seed, ["dapo.dynamic_sampling=false"] + list(extra or []))
    walls: dict[str, list[float]] = {"trl": [], "ours": []}
    nograd: dict[str, list[float]] = {"trl": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        for rep in range(repeats):
            for label in ("trl", "ours"):
                trainer = _trl_trainer(cfg, Path(tmp) / f"r{rep}", plain=label == "trl")
                t0 = time.perf_counter()
                trainer.train()
                walls[label].append(time.perf_counter() - t0)
                nograd[label].append(trainer._bench_nograd_s)
    ratios = [o / t for t, o in zip(walls["trl"], walls["ours"])]
    print_fn(f"{'train() wall (s), mode none, no dynamic sampling':52s} {'min':>9s} {'median':>9s} {'max':>9s}")
    for label, name in (("trl", "TRL GRPOTrainer"), ("ours", "DynamicDAPOTrainer")):
        lo, med, hi = _stats(walls[label])
        print_fn(f"{name:52s} {lo:9.2f} {med:9.2f} {hi:9.2f}")
    for label, name in (("trl", "  of which no-grad log-prob forwards (TRL)"),
                        ("ours", "  of which no-grad log-prob forwards (ours: KL logging)")):
        lo, med, hi = _stats(nograd[label])
        print_fn(f"{name:52s} {lo:9.2f} {med:9.2f} {hi:9.2f}")
    lo, med, hi = _stats(ratios)
    print_fn(f"ours/TRL over repeats: min {lo:.3f}  median {med:.3f}  max {hi:.3f}")
    print_fn(f"ratio_trl {med:.3f}")
    return {"walls": walls, "nograd": nograd, "ratios": ratios, "ratio": med}


# ----------------------------------------------------------------------------------------------------------------
# the refiner's decoding: batched greedy vs one row at a time vs prompt-lookup (draft = the prompt's own n-grams)


def refiner_decoding(repeats: int = 3, world: str = "mini", model: str | None = None, num_prompts: int = 4,
                     group: int = 8, lookup: int = 10, max_new_tokens: int = 128, seed: int = 0, draft_len: int = 16,
                     print_fn=print) -> dict:
    """Decode one step's refinements five ways, interleaved, on the same prompts: our batched greedy
    ``generate``; greedy one row at a time; transformers' prompt-lookup decoding (``prompt_lookup_num_tokens``,
    which drafts continuations from n-grams of the prompt, i.e. of the candidate y the refiner mostly copies; batch
    size 1 only); and our batched copy-aware decoding (``study.generation.greedy_with_drafts``: drafts from each
    row's y, one batched verify forward per step), without and with the shared-prefix prefill. The refine prompts come from a rollout of the model itself (``num_prompts`` training problems x
    ``group`` samples at temperature 1, distinct pairs only). Reports seconds, forwards per mode, tokens per forward
    (1.0 for plain decoding; above 1 = drafted tokens accepted) and whether the outputs are token-identical."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from study.data import load_problems
    from study.generation import DraftStats, generate
    from study.prompts import solve_messages
    from study.refiner import Refiner
    from study.train import resolve_model_path

    if repeats < 1:
        raise UserError("--repeats must be >= 1")
    path = resolve_model_path(model or f"mini:{world}")
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    probs = load_problems("mini", split="train", limit=num_prompts, mini_profile=world)
    torch.manual_seed(seed)
    rollout = generate(lm, tok, [solve_messages(p.prompt) for p in probs for _ in range(group)],
                       max_new_tokens=max_new_tokens, temperature=1.0, batch_size=num_prompts * group)
    xs = [p.prompt for p in probs for _ in range(group)]
    pairs = list(dict.fromkeys(zip(xs, [g.text for g in rollout])))
    ys = [y for _, y in pairs]
    msgs = Refiner(lm, tok).prompts([x for x, _ in pairs], ys)
    modes = {
        "batched greedy (ours)": dict(batch_size=len(msgs)),
        "one row at a time, greedy": dict(batch_size=1),
        f"one row at a time, prompt lookup k={lookup}": dict(batch_size=1,
                                                             generate_kwargs={"prompt_lookup_num_tokens": lookup}),
        f"batched, drafts from y (k={draft_len})": dict(copy=Refiner(lm, tok, max_new_tokens=max_new_tokens,
                                                                     batch_size=len(msgs), copy_decoding=True,
                                                                     draft_len=draft_len, share_prefix=False)),
        f"batched, drafts from y (k={draft_len}) + shared prefix": dict(
            copy=Refiner(lm, tok, max_new_tokens=max_new_tokens, batch_size=len(msgs), copy_decoding=True,
                         draft_len=draft_len, share_prefix=True)),
    }
    calls = [0]
    hook = lm.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    times: dict[str, list[float]] = {k: [] for k in modes}
    outs: dict[str, list[list[int]]] = {}
    forwards: dict[str, int] = {}
    per_row: dict[str, float] = {}
    try:
        for _ in range(repeats):
            for name, kw in modes.items():
                calls[0] = 0
                t0 = time.perf_counter()
                if "copy" in kw:
                    stats = DraftStats()
                    gens = kw["copy"]._refine_with_drafts(msgs, ys, [x for x, _ in pairs], stats=stats)
                    per_row[name] = stats.tokens_per_row_forward
                else:
                    gens = generate(lm, tok, msgs, max_new_tokens=max_new_tokens, temperature=0.0, **kw)
                times[name].append(time.perf_counter() - t0)
                outs[name] = [g.token_ids for g in gens]
                forwards[name] = calls[0]
    finally:
        hook.remove()
    base = next(iter(modes))
    tokens = sum(len(x) for x in outs[base])
    print_fn(f"{len(msgs)} refine prompts ({len(xs)} rollouts, distinct pairs), {tokens} refined tokens, "
             f"repeats={repeats}")
    print_fn("tok/fwd: tokens a row gains per forward it takes part in (1.00 for plain decoding)")
    print_fn(f"{'mode':52s} {'min s':>7s} {'median':>7s} {'max':>7s} {'x ours':>7s} {'fwd':>6s} {'tok/fwd':>8s} "
             f"{'same':>5s}")
    med_base = statistics.median(times[base])
    for name in modes:
        lo, med, hi = _stats(times[name])
        same = sum(a == b for a, b in zip(outs[name], outs[base]))
        per_fwd = per_row.get(name, tokens / forwards[name] if name != base else float("nan"))
        print_fn(f"{name:52s} {lo:7.3f} {med:7.3f} {hi:7.3f} {med / med_base:7.2f} {forwards[name]:6d} "
                 f"{per_fwd:8.2f} {same:>2d}/{len(msgs)}")
    return {"times": times, "forwards": forwards, "tokens": tokens, "n": len(msgs), "tokens_per_row_forward": per_row,
            "same": {k: sum(a == b for a, b in zip(outs[k], outs[base])) for k in modes}}


# ----------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    r = sub.add_parser("refiner-overhead", help="DAPO vs DAPO+dynamic step time (and --trl: TRL vs ours)")
    r.add_argument("--repeats", type=int, default=3, help="A/B pairs (default 3)")
    r.add_argument("--steps", type=int, default=5, help="RL steps per run (default 5)")
    r.add_argument("--model", default=None, help="model spec for both runs (default: the configs', mini:mini)")
    r.add_argument("--smoke", action="store_true", help="configs/smoke/ and the smoke model (seconds)")
    r.add_argument("--smollm", action="store_true", help="configs/smollm/mbpp_dapo{,_dynamic}.yaml (give --model "
                   "artifacts/models/smollm2 and shrink with --set; slow on a CPU)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for both runs (repeatable), e.g. refiner.max_new_tokens=64")
    r.add_argument("--trl", action="store_true", help="also TRL GRPOTrainer vs DynamicDAPOTrainer (mode none)")
    r.add_argument("--trl-only", action="store_true", help="only the TRL comparison")
    r.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    r.add_argument("--no-slow", action="store_true", help="skip the fast-vs-slow learning check (one more run)")
    d = sub.add_parser("refiner-decoding", help="the refiner's decoding: batched vs per row vs prompt lookup")
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--smoke", action="store_true", help="the smoke model and problems (seconds)")
    d.add_argument("--model", default=None, help="model spec (default mini:mini, or mini:smoke with --smoke)")
    d.add_argument("--lookup", type=int, default=10, help="prompt_lookup_num_tokens (default 10)")
    d.add_argument("--draft-len", type=int, default=16, help="draft tokens per row and forward (default 16)")
    d.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    s = sub.add_parser("sandbox", help="sandbox throughput on HumanEval (benchmarks/sandbox_throughput.py)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--timeout", type=float, default=3.0)


def run(args: argparse.Namespace) -> int:
    if args.bench == "sandbox":
        import runpy
        import sys

        script = Path(__file__).resolve().parent.parent / "benchmarks" / "sandbox_throughput.py"
        if not script.exists():
            raise UserError(f"not found: {script} (run from a source checkout)")
        argv = sys.argv
        sys.argv = [str(script), "--workers", str(args.workers), "--repeats", str(args.repeats),
                    "--timeout", str(args.timeout)]
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = argv
        return 0
    if args.bench == "refiner-decoding":
        import torch

        torch.set_num_threads(args.threads)
        refiner_decoding(args.repeats, "smoke" if args.smoke else "mini", args.model, lookup=args.lookup,
                         draft_len=args.draft_len)
        return 0
    if args.bench != "refiner-overhead":
        raise UserError("choose a benchmark: refiner-overhead | refiner-decoding | sandbox")
    import torch

    torch.set_num_threads(args.threads)
    world = "smoke" if args.smoke else "smollm" if args.smollm else "mini"
    model = args.model
    extra = list(args.overrides) + [f"torch_threads={args.threads}"]
    res = None
    if not args.trl_only:
        res = refiner_overhead(args.repeats, args.steps, world, model, args.seed, extra, check_slow=not args.no_slow)
    if args.trl or args.trl_only:
        trl_overhead(args.repeats, args.steps, world, model, args.seed, extra)
        if res is not None:
            print(f"ratio {res['ratio']:.3f}")  # the last line stays the dynamic/DAPO ratio
    return 0
