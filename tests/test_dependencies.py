"""Every module the project imports comes from a dependency that pyproject.toml declares (issue 16).

A package that merely happens to be installed (the machine's Python ships scipy; numpy comes in through pandas)
makes tests pass here and fail in a user's fresh virtual environment. The imports are read with ``ast`` from
study/, notebooks/, benchmarks/ and tests/, mapped to distributions with
``importlib.metadata.packages_distributions()``, and checked against pyproject.toml:

- a main dependency may be imported anywhere;
- a ``dev``-extra dependency (pytest, jupyterlab, ...) only in tests/ and benchmarks/, or guarded;
- any other extra (``gpu``: vLLM, DeepSpeed) only where the code degrades gracefully without it: inside a
  ``try`` that catches ImportError, behind ``pytest.importorskip``, or in a ``# pragma: no cover`` GPU path.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRS = ("study", "notebooks", "benchmarks", "tests")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return norm(re.split(r"[\s<>=!~;\[(@]", req.strip(), maxsplit=1)[0])


def declared() -> dict[str, str]:
    """distribution -> "main" or the extra that declares it."""
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for extra, reqs in proj.get("optional-dependencies", {}).items():
        out.update({_req_name(r): extra for r in reqs})
    out.update({_req_name(r): "main" for r in proj["dependencies"]})
    return out


def sources(root: Path):
    for d in DIRS:
        for f in sorted((root / d).rglob("*.py")):
            yield f, f.read_text(encoding="utf-8")
        for f in sorted((root / d).rglob("*.ipynb")):
            cells = json.loads(f.read_text(encoding="utf-8")).get("cells", [])
            code = "\n".join("".join(c["source"]) for c in cells if c.get("cell_type") == "code")
            yield f, "\n".join(l for l in code.splitlines() if not l.lstrip().startswith(("%", "!")))


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports that degrade gracefully: inside a try catching ImportError/ModuleNotFoundError,
    or in a function marked ``# pragma: no cover`` (GPU-only paths)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            names = set()
            for h in node.handlers:
                t = h.type
                for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(e, ast.Name):
                        names.add(e.id)
            if names & {"ImportError", "ModuleNotFoundError", "Exception"}:
                lines |= {n.lineno for b in node.body for n in ast.walk(b) if hasattr(n, "lineno")}
    return lines


def _no_cover_functions(src: str, tree: ast.AST) -> set[int]:
    text = src.splitlines()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "pragma: no cover" in text[node.lineno - 1]:
            lines |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def imports(root: Path):
    local = {p.stem for d in DIRS for p in (root / d).rglob("*.py")} | {"study", "tests", "conftest"}
    local |= {p.parent.name for d in DIRS for p in (root / d).rglob("__init__.py")}  # test helper packages
    for f, src in sources(root):
        tree = ast.parse(src)
        ok_lines = _guarded(tree) | _no_cover_functions(src, tree)
        if "importorskip" in src:
            ok_lines |= {n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                         and getattr(n.func, "attr", "") == "importorskip"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                mods = [node.args[0].value]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top.startswith("_"):
                    continue
                yield f.relative_to(root), node.lineno, top, node.lineno in ok_lines


def undeclared(root: Path, decl: dict[str, str]) -> list[str]:
    dist_of = metadata.packages_distributions()
    bad = []
    for f, line, top, guarded in imports(root):
        dists = {norm(d) for d in dist_of.get(top, [])} or {norm(top)}  # not installed here: its own name
        where = {decl[d] for d in dists if d in decl}
        if "main" in where:
            continue
        if "dev" in where and (f.parts[0] in ("tests", "benchmarks") or guarded):
            continue
        if where and guarded:
            continue
        why = (f"only in the extra(s) {sorted(where)}, imported without a fallback" if where
               else "not declared in pyproject.toml")
        bad.append(f"{f}:{line}: import {top}: {why}")
    return bad


def test_every_import_is_declared_in_pyproject():
    bad = undeclared(ROOT, declared())
    assert not bad, "\n".join(bad)


def test_the_check_sees_undeclared_and_unguarded_imports(tmp_path):
    """The check is not vacuous: on a small tree, an undeclared import, an extra's import without a fallback
    and a dev tool imported by the package are reported; declared and guarded ones are not."""
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "probe.py").write_text(
        "import scipy\nimport yaml\nimport vllm\ntry:\n    import vllm\nexcept ImportError:\n    vllm = None\n"
        "import pytest\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_probe.py").write_text("import pytest\n")
    bad = undeclared(tmp_path, {"pyyaml": "main", "vllm": "gpu", "pytest": "dev"})
    assert bad == ["study/probe.py:1: import scipy: not declared in pyproject.toml",
                   "study/probe.py:3: import vllm: only in the extra(s) ['gpu'], imported without a fallback",
                   "study/probe.py:8: import pytest: only in the extra(s) ['dev'], imported without a fallback"]


def test_the_lock_pins_every_declared_dependency():
    """requirements/cpu.txt (the README's install) pins every main and dev dependency: a dependency added to
    pyproject.toml without re-locking would install at whatever version is newest."""
    lock = (ROOT / "requirements" / "cpu.txt").read_text().splitlines()
    pinned = {norm(line.split("==")[0]) for line in lock if "==" in line and not line.startswith((" ", "#"))}
    missing = sorted(d for d, where in declared().items() if where in ("main", "dev") and d not in pinned)
    assert not missing, f"not in requirements/cpu.txt (re-run the uv pip compile command in README): {missing}"
