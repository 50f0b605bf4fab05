"""Refiner overhead of two source trees, interleaved run by run (for before/after tables on a shared machine).

    python benchmarks/before_after.py --before /tmp/old --after . --pairs 8 --steps 5

Each pair trains, in a rotating order, DAPO and DAPO+dynamic (configs/mini/dapo.yaml, dapo_dynamic.yaml; the
overrides of ``study bench refiner-overhead``) with each tree, every run a fresh ``python -m study train`` process
with ``PYTHONPATH=<tree>``, so background load hits all four arms alike. Prints per tree the median (over pairs) of
each phase's time summed over the run's steps, the per-pair ratio dynamic/DAPO (min / median / max), the learning
metrics of the last step, and the load average before and after. ``--set`` adds overrides to every run,
``--after-set`` / ``--before-set`` to one tree's runs only (a config key the before tree does not know; or the
same tree twice with a switch off in "before": ``--before . --after . --before-set speed.shared_prompt_prefill=false``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = ("rollout", "reward", "refine", "update", "step")
OVERRIDES = ["eval_benchmarks=[]", "checkpoint_every=0", "torch_threads=1"]


def train(tree: Path, config: str, runs: Path, name: str, steps: int, extra: list[str]) -> list[dict]:
    args = [sys.executable, "-m", "study", "train", str(tree / "configs" / "mini" / f"{config}.yaml"),
            "--runs-dir", str(runs)]
    for ov in OVERRIDES + [f"steps={steps}", f"name={name}"] + extra:
        args += ["--set", ov]
    env = {**os.environ, "PYTHONPATH": str(tree), "STUDY_ROOT": str(tree)}  # the tree's committed reference model
    subprocess.run(args, env=env, cwd=runs, check=True, capture_output=True)
    return [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, required=True)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--set", dest="extra", action="append", default=[])
    p.add_argument("--after-set", dest="after_extra", action="append", default=[])
    p.add_argument("--before-set", dest="before_extra", action="append", default=[])
    a = p.parse_args(argv)
    trees = {"before": a.before.resolve(), "after": a.after.resolve()}
    arms = [(t, c) for t in trees for c in ("dapo", "dapo_dynamic")]
    res: dict[tuple, list[dict]] = {arm: [] for arm in arms}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="before-after-") as tmp:
        for i in range(a.pairs):
            order = arms[i % len(arms):] + arms[: i % len(arms)]
            for tree, config in order:
                extra = a.extra + (a.after_extra if tree == "after" else a.before_extra)
                rows = train(trees[tree], config, Path(tmp), f"{tree}-{config}-{i}", a.steps, extra)
                res[(tree, config)].append(rows)
            print(f"pair {i + 1}/{a.pairs} done, load {os.getloadavg()[0]:.2f}", flush=True)
    load1 = os.getloadavg()
    total = {arm: [{ph: sum(float(r.get(f"time_{ph}") or 0) for r in rows) for ph in PHASES} for rows in runs]
             for arm, runs in res.items()}
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {load1[0]:.2f} {load1[1]:.2f}")
    label = {"dapo": "dapo", "dapo_dynamic": "dynamic"}
    print(f"{'median s over pairs (summed over steps)':40s}" + "".join(f"{t + ' ' + label[c]:>18s}" for t, c in arms))
    for ph in PHASES:
        print(f"{'time_' + ph:40s}" + "".join(f"{statistics.median(x[ph] for x in total[arm]):18.2f}" for arm in arms))
    for tree in trees:
        ratios = [d["step"] / b["step"] for b, d in zip(total[(tree, "dapo")], total[(tree, "dapo_dynamic")])]
        last = res[(tree, "dapo_dynamic")][0][-1]
        print(f"{tree:7s} ratio dynamic/dapo min {min(ratios):.3f}  median {statistics.median(ratios):.3f}  "
              f"max {max(ratios):.3f}   last step reward {last.get('reward_mean'):.3f} kept "
              f"{last.get('kept_frac')} dynamic_ce {last.get('dynamic_ce')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
