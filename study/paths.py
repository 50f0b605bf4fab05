"""Where a study's files live. Everything hangs off one *root* folder, never off the package's install location.

    from study import paths
    paths.root()                 # the root (see below)
    paths.runs_dir()             # <root>/runs      run folders (``study train``, ``study reproduce``)
    paths.figures_dir()          # <root>/figures   generated figures, tables, MANIFEST.json
    paths.artifacts_dir()        # <root>/artifacts trained mini reference models, prepared real models
    paths.models_dir()           # <root>/models    committed model weights (the mini reference of the figures)
    paths.resolve("configs/mini/dapo.yaml")   # a root-relative path (absolute paths pass through)

The root is, in order:

1. the ``--root`` option of the ``study`` command (:func:`set_root`);
2. ``$STUDY_ROOT``;
3. the nearest folder at or above the working directory that holds ``configs/`` and ``notebooks/`` (a checkout
   of this repository, so ``study`` behaves the same from any of its sub-folders, e.g. a notebook's);
4. the working directory itself.

Paths written inside configs and profiles (``configs/...``, ``data.path``, model folders) are relative to the
root. Paths given on the command line (``--runs-dir``, ``--figures-dir``) are relative to the working directory,
as usual for command-line arguments. Packaged defaults (the experiment profiles) ship inside the package
(``study/profiles/``), so a non-editable install works; a ``<root>/configs/profiles/<name>.yaml`` overrides them.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_PROFILES = PACKAGE_DIR / "profiles"
"""Profiles shipped as package data (``smoke``, ``mini``, ``mini-full``, ``paper``)."""

_ROOT: Path | None = None


def set_root(path: str | Path | None) -> None:
    """Fix the root for this process (the ``--root`` option); ``None`` goes back to discovery."""
    global _ROOT
    _ROOT = Path(path).expanduser().resolve() if path is not None else None


def is_root(folder: Path) -> bool:
    """A folder laid out like this repository: ``configs/`` and ``notebooks/`` side by side."""
    return (folder / "configs").is_dir() and (folder / "notebooks").is_dir()


def find_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) that :func:`is_root`."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_root(folder):
            return folder
    return None


def root() -> Path:
    """The root folder (module docstring)."""
    if _ROOT is not None:
        return _ROOT
    env = os.environ.get("STUDY_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return find_root() or Path.cwd().resolve()


def resolve(path: str | Path) -> Path:
    """``path`` relative to the root (absolute paths and ``~`` paths pass through)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else root() / p


def runs_dir() -> Path:
    return root() / "runs"


def figures_dir() -> Path:
    return root() / "figures"


def artifacts_dir() -> Path:
    """Trained or prepared models (``$STUDY_ARTIFACTS`` when set, else ``<root>/artifacts``)."""
    env = os.environ.get("STUDY_ARTIFACTS")
    return Path(env).expanduser().resolve() if env else root() / "artifacts"


def models_dir() -> Path:
    """Committed model weights (``<root>/models``)."""
    return root() / "models"


def notebooks_dir() -> Path:
    return root() / "notebooks"


def profile_path(name: str) -> Path | None:
    """``<root>/configs/profiles/<name>.yaml`` if it exists, else the packaged one, else ``None``."""
    for folder in (root() / "configs" / "profiles", PACKAGE_PROFILES):
        p = folder / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def known_profiles() -> list[str]:
    names = {p.stem for p in PACKAGE_PROFILES.glob("*.yaml")}
    names |= {p.stem for p in (root() / "configs" / "profiles").glob("*.yaml")}
    return sorted(names)


def relative(path: str | Path, base: str | Path | None = None) -> str:
    """``path`` relative to ``base`` (default: the root) when inside it, else absolute: what manifests and
    committed notebooks record, so they hold no machine paths."""
    p = Path(path).resolve()
    b = Path(base).resolve() if base is not None else root()
    try:
        return str(p.relative_to(b))
    except ValueError:
        return str(p)
