"""The ``smollm-mbpp`` profile (issue 6) on the real SmolLM2-135M-Instruct, offline: ``study train
configs/smollm/mbpp_dapo_dynamic.yaml`` shrunk to one small RL step (the real refiner prompt, the sandboxed CodeRL
reward on MBPP's training split, the filter, L_DC) and a 2-problem MBPP evaluation. About a minute on a CPU."""

from __future__ import annotations

import json

import pytest

from study.runs import METRIC_COLUMNS

SHRINK = ["steps=1", "rollout.num_prompts=2", "rollout.num_generations=2", "rollout.max_completion_length=48",
          "refiner.max_new_tokens=48", "data.limit=8", "eval_benchmarks=[mbpp]", "eval_limit=2", "torch_threads=2",
          "samples_per_step=2"]


@pytest.mark.slow
def test_smollm_mbpp_dynamic_smoke_run(smollm2_dir, tmp_path):
    from study.cli import main

    args = ["train", "configs/smollm/mbpp_dapo_dynamic.yaml", "--runs-dir", str(tmp_path),
            "--set", f"model={smollm2_dir}"]
    for s in SHRINK:
        args += ["--set", s]
    assert main(args) == 0
    run = tmp_path / "smollm-mbpp-dapo-dynamic"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and set(METRIC_COLUMNS) <= set(rows[0])
    row = rows[0]
    assert -1.0 <= row["reward_mean"] <= 1.0 and row["response_length"] > 0
    assert row["kl"] == pytest.approx(0.0, abs=1e-4)  # π_θ = π_ref before the first update
    assert row["refined_frac"] is not None and row["time_refine"] > 0  # the real refiner prompt ran
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["response"] is not None for s in samples)
    summary = json.loads((run / "eval" / "mbpp" / "summary.json").read_text())
    assert summary["n_problems"] == 2 and 0.0 <= summary["pass@1"] <= 1.0
    assert (run / "DONE").exists()
