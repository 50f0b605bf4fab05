"""What decides a result's numbers, as short hashes: the code, the environment and the model weights.

    from study import provenance as pv
    pv.code_fingerprint(["study.train", "study.trainers.dapo"])   # the study code a DAPO run executes
    pv.environment()                    # {"torch": "2.13.0+cpu", "transformers": ..., "trl": ...}
    pv.model_identity("models/mini/mini")   # {"sha256": ..., "weights_sha256": ..., "files": [...]}

Run folders, base-model evaluations and executed notebooks are cached under keys built from these
(``study.experiments``, ``study.reproduce``), so a cached result is reused only when the code, the package
versions and the model weights that produced it are the ones of this checkout.

**Code fingerprint.** The ``study`` modules reachable from the entry modules through ``import`` statements (read
with ``ast``, lazy imports inside functions included; the package ``__init__`` files on the way too), each
normalised by dropping docstrings and comments (``ast.unparse``), then hashed together. Editing a docstring or a
comment changes no number and no fingerprint; editing a line of code the trainer can execute changes both. Code
that a run cannot reach (another trainer, the notebooks' plotting) is not in its fingerprint.

**Environment.** The versions of the libraries that compute the numbers: torch, transformers and TRL. Other
versions (Python, accelerate, datasets, ...) are recorded in run folders and the manifest, not keyed.

**Model identity.** The sha256 of a model folder's weight files (``*.safetensors``, ``*.bin``, ``*.gguf``) and of
the files that decide how text becomes tokens and logits (``config.json``, ``generation_config.json``, tokenizer
files). A hub id that is not a local folder is identified by its name (``{"hub_id": ...}``).
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable

PACKAGE_DIR = Path(__file__).resolve().parent
KEYED_PACKAGES = ("torch", "transformers", "trl")
"""Library versions that are part of every run key."""

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt")


def sha256_json(obj, n: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------------- code
def module_file(name: str) -> Path | None:
    """The source file of a ``study`` module (``study.a.b`` -> study/a/b.py or study/a/b/__init__.py)."""
    parts = name.split(".")
    if parts[0] != "study":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(tree: ast.AST) -> set[str]:
    """``study.*`` module names imported anywhere in ``tree`` (``from study.x import y`` also names ``study.x.y``
    in case ``y`` is a submodule)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "study"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "study":
                out.add(node.module)
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(entries: Iterable[str] = (), sources: Iterable[str] = ()) -> list[str]:
    """Sorted ``study`` module names reachable from the modules ``entries`` and the code strings ``sources``
    (a notebook's cells, say)."""
    todo: list[str] = list(entries)
    for src in sources:
        todo += sorted(_imports(ast.parse(src)))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen.add(name)
        todo += _parents(name)
        todo += sorted(_imports(ast.parse(path.read_text(encoding="utf-8"))))
    return sorted(seen)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=512)
def _normalised_source(path: str, mtime_ns: int, size: int) -> str:
    return ast.unparse(_strip_docstrings(ast.parse(Path(path).read_text(encoding="utf-8"))))


def normalised_source(path: Path) -> str:
    """A module's code without docstrings and comments (what a fingerprint hashes)."""
    st = path.stat()
    return _normalised_source(str(path), st.st_mtime_ns, st.st_size)


def code_fingerprint(entries: Iterable[str] = (), sources: Iterable[str] = ()) -> dict:
    """``{"sha256": ..., "modules": {name: sha}}`` over :func:`import_closure`."""
    mods = import_closure(entries, sources)
    per = {m: hashlib.sha256(normalised_source(module_file(m)).encode()).hexdigest()[:12] for m in mods}
    return {"sha256": sha256_json(per), "modules": per}


# ---------------------------------------------------------------------------------------------- environment
def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, str | None]:
    """Versions of :data:`KEYED_PACKAGES` (part of run keys)."""
    return {p: package_version(p) for p in KEYED_PACKAGES}


# ---------------------------------------------------------------------------------------------- models
def _file_sha(path: Path) -> str:
    st = path.stat()
    return _file_sha_cached(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _file_sha_cached(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(path: str | Path | None) -> dict:
    """Identity of a local model folder (module docstring); ``{"missing": ...}`` for a path that is not there."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_dir():
        return {"hub_id": str(path)} if not str(path).startswith(("/", ".", "~")) and str(path).count("/") == 1 \
            else {"missing": str(path)}
    weights = sorted({f for pat in WEIGHT_PATTERNS for f in p.glob(pat)})
    files = weights + [p / f for f in MODEL_FILES if (p / f).is_file()]
    per = {f.name: _file_sha(f) for f in files}
    return {
        "sha256": sha256_json(per),
        "weights_sha256": sha256_json({f.name: per[f.name] for f in weights}),
        "files": sorted(per),
    }
