"""Prompt-Collection-v0.1 (RLHFlow; the paper's dialogue prompts) from a local JSONL export.

Record fields (the dataset card): ``dataset`` (which source collection), ``context`` (the rendered conversation
as one string), ``context_messages`` (a list of ``{"role", "content"}`` chat messages), ``id``. The problem's
prompt is the content of the last user message of ``context_messages`` (the conversation before it is kept in
``meta["messages"]``); records without ``context_messages`` fall back to ``prompt`` or ``context``. Dialogue has
no hidden tests: ``tests`` is an empty asserts suite and rewards come from a reward model.
"""

from __future__ import annotations

import os
from pathlib import Path

from study.data import read_jsonl, require_file
from study.errors import UserError
from study.problems import Problem, TestSuite


def _messages(rec: dict, path: Path, lineno: int) -> list[dict]:
    msgs = rec.get("context_messages")
    if msgs is None:
        text = rec.get("prompt", rec.get("context"))
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}:{lineno}: record has no context_messages, prompt or context")
        return [{"role": "user", "content": text}]
    if not isinstance(msgs, list) or not msgs:
        raise UserError(f"{path}:{lineno}: context_messages must be a non-empty list of chat messages")
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise UserError(f"{path}:{lineno}: each context message needs string 'role' and 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def load_prompt_collection(path: str | os.PathLike, limit: int | None = None) -> list[Problem]:
    """Dialogue prompts as Problems with ``source='prompt_collection'`` and no tests."""
    path = require_file(path, "prompt_collection")
    problems = []
    for lineno, rec in read_jsonl(path):
        if limit is not None and len(problems) >= limit:
            break
        msgs = _messages(rec, path, lineno)
        users = [m for m in msgs if m["role"] == "user"]
        if not users:
            raise UserError(f"{path}:{lineno}: context_messages has no user message")
        rid = rec.get("id", f"{path.stem}-{lineno}")
        problems.append(Problem(
            task_id=f"prompt_collection/{rid}",
            prompt=users[-1]["content"],
            tests=TestSuite("asserts", ()),
            source="prompt_collection",
            meta={"dataset": rec.get("dataset", ""), "messages": msgs},
        ))
    return problems
