"""The dialogue setting (paper Sec. 4.1, Fig. 4's Prompt-Collection panels; issue 6) at toy scale:
``configs/paper/dialogue_ppo_dynamic.yaml`` with the smoke mini model as policy/reference/refiner, a tiny random
sequence classifier as the reward model and our Prompt-Collection fixture, one PPO step through ``study train``."""

from __future__ import annotations

import json

from study.problems import Problem, TestSuite
from study.prompts import REFINE_INSTRUCTIONS, SOLVE_INSTRUCTION
from study.runs import METRIC_COLUMNS
from study.trainers.common import as_row

FIXTURE = "tests/fixtures/prompt-collection-mini.jsonl"


def test_dialogue_rows_carry_the_bare_request():
    """The reward model scores (request, answer): no code instruction in front of a dialogue request."""
    p = Problem(task_id="pc/1", prompt="How do I boil an egg?", tests=TestSuite("asserts", ()))
    assert as_row(p, "dialogue")["prompt"] == [{"role": "user", "content": "How do I boil an egg?"}]
    assert as_row(p)["prompt"][0]["content"].startswith(SOLVE_INSTRUCTION)


def test_dialogue_ppo_dynamic_one_step(smoke_model_dir, tiny_reward_model_dir, tmp_path, monkeypatch):
    import study.refiner
    from study.cli import main

    seen = []
    real = study.refiner.refine_messages

    def spy(problem, response, task="code"):
        seen.append(task)
        return real(problem, response, task)

    monkeypatch.setattr(study.refiner, "refine_messages", spy)
    overrides = [f"model={smoke_model_dir}", f"reward_model={tiny_reward_model_dir}", f"data.path={FIXTURE}",
                 "device=cpu", "dtype=float32", "steps=1", "rollout.num_prompts=3", "rollout.max_prompt_length=256",
                 "rollout.max_completion_length=16", "refiner.max_new_tokens=16", "ppo.mini_batch_size=3",
                 "torch_threads=1"]
    args = ["train", "configs/paper/dialogue_ppo_dynamic.yaml", "--runs-dir", str(tmp_path)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    run = tmp_path / "paper-dialogue-ppo-dynamic"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and set(METRIC_COLUMNS) <= set(rows[0])
    row = rows[0]
    assert row["reward_mean"] is not None and row["pass_rate"] is None  # a reward model has no ceiling
    assert row["refined_frac"] == 1.0  # nothing is at a maximum, so every answer goes to the refiner
    assert seen and set(seen) == {"dialogue"}  # the dialogue refine prompt, not the code one
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["refined"] is not None for s in samples)
    assert REFINE_INSTRUCTIONS["dialogue"] not in samples[0]["refined"]
