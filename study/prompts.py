"""Prompt templates: the *solve* prompt the policy sees and the *refine* prompt the online refiner sees.

Every template is a list of chat messages, rendered with the model's own chat template, so the mini model
(trained with the same templates) and real instruct models are prompted the same way.

The refine instruction follows the paper's Appendix A.3 description: reproduce the response verbatim if it is
correct, otherwise apply the smallest correction, keeping correct parts unchanged.
"""

from __future__ import annotations

from typing import Literal

Task = Literal["code", "dialogue"]

SOLVE_INSTRUCTION = (
    "Solve the following programming problem in Python. "
    "Answer with the complete solution in a single ```python code block."
)

REFINE_INSTRUCTIONS: dict[str, str] = {
    "code": (
        "You are given a programming problem and a candidate Python solution. "
        "If the candidate is correct, reproduce it exactly, character for character. "
        "If it is wrong, fix it with the smallest possible change: keep every correct line verbatim and only "
        "edit what is wrong. Answer with the complete solution in a single ```python code block."
    ),
    "dialogue": (
        "You are given a user's request and a candidate answer. If the answer is already helpful, correct, "
        "complete and well-formed, reproduce it exactly. Otherwise fix it with the smallest possible change "
        "(complete a truncated sentence, remove repetition or incoherent text, correct errors), keeping every "
        "good part verbatim. Answer with the improved answer only."
    ),
}


def solve_messages(problem: str, task: Task = "code") -> list[dict[str, str]]:
    """Chat messages asking the policy to solve ``problem``."""
    content = f"{SOLVE_INSTRUCTION}\n\n{problem}" if task == "code" else problem
    return [{"role": "user", "content": content}]


def refine_messages(problem: str, response: str, task: Task = "code") -> list[dict[str, str]]:
    """Chat messages asking the reference model to refine ``response`` to ``problem`` (paper Fig. 2)."""
    tag = "Problem" if task == "code" else "Request"
    cand = "Candidate solution" if task == "code" else "Candidate answer"
    content = f"{REFINE_INSTRUCTIONS[task]}\n\n### {tag}\n{problem}\n\n### {cand}\n{response}"
    return [{"role": "user", "content": content}]


def parse_refine_messages(messages: list[dict[str, str]], task: Task = "code") -> tuple[str, str]:
    """Inverse of :func:`refine_messages`: recover (problem, response). Used to check templates round-trip."""
    content = messages[-1]["content"]
    tag = "Problem" if task == "code" else "Request"
    cand = "Candidate solution" if task == "code" else "Candidate answer"
    head = f"{REFINE_INSTRUCTIONS[task]}\n\n### {tag}\n"
    if not content.startswith(head):
        raise ValueError("not a refine prompt of this task")
    body = content[len(head):]
    problem, sep, response = body.partition(f"\n\n### {cand}\n")
    if not sep:
        raise ValueError("refine prompt has no candidate section")
    return problem, response


def code_block(code: str) -> str:
    """The answer format both prompts ask for."""
    return f"```python\n{code.rstrip()}\n```"
