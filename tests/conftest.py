"""Shared pytest fixtures. Helpers add their own below; keep each one cheap or session-scoped."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_model_dir(tmp_path_factory):
    """A trained ``smoke`` mini reference model (HF folder: model, tokenizer with chat template, metrics), built
    once per session under a temp artifacts root (``<root>/mini/smoke``); about 10-30 s on one CPU thread."""
    import torch

    from study.mini import ensure_reference

    threads = torch.get_num_threads()
    try:
        return ensure_reference("smoke", root=tmp_path_factory.mktemp("artifacts") / "mini")
    finally:
        torch.set_num_threads(threads)
