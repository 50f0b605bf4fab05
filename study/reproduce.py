"""``study reproduce``: train the runs a profile needs, execute every notebook with papermill, write figures.

    study reproduce --profile mini                         # -> figures/ (the committed figures)
    study reproduce --profile smoke                        # -> figures/smoke/ (minutes; checks the pipeline)
    study reproduce --profile mini --only 02_dapo_vs_dynamic,04_token_heatmap --force
    study reproduce --profile paper --runs-dir /data/runs --figures-dir /data/figures

    study reproduce --check                                # trains nothing: is figures/ what this checkout makes?

Steps:
1. Train each missing run of the experiment groups the selected notebooks need (``study.experiments``: a run
   is reused when its folder has ``DONE`` and the same **run key**: config, code fingerprint, library versions,
   starting weights; an interrupted run with a checkpoint is resumed).
2. Execute each notebook: its source ``notebooks/<name>.py`` (a jupytext percent script) is converted with
   jupytext and run by papermill (kernel ``python3``, working directory = the root) with parameters ``profile``,
   ``runs_dir``, ``figures_dir`` (root-relative where they lie under the root, so committed notebooks hold no
   machine paths). The executed copy goes to ``<figures_dir>/notebooks/<name>.ipynb`` (written to a temp file,
   renamed on success). Figures land in ``<figures_dir>/<name>.png/.pdf``, tables in
   ``<figures_dir>/tables/<name>.csv/.md``; the executed notebook shows each of them inline.
3. Update ``<figures_dir>/MANIFEST.json``: the package versions and the reference model's weights hash; per
   notebook its outputs (with their sha256), verdicts and claim rows, the runs it read (config hash, seed, run
   key), git commit, wall time, and its **fingerprint**: the notebook source, the ``study`` code it imports
   (``study.provenance``), the profile's reference, the reference model's identity and the run keys of its runs.
4. Assemble ``<figures_dir>/tables/verdicts.csv/.md`` (``study.verdicts``: one row per claim of the paper),
   ``<figures_dir>/explorer.html`` (``study.explore``: every logged sample of every run) and ``RESULTS.md``.

Resumable: a notebook whose fingerprint matches the manifest and whose outputs all exist is skipped (``--force``
re-executes). A failing notebook prints one line and exits 2; outputs of notebooks that finished stay in place.

``--check`` recomputes every fingerprint from this checkout (no training, no execution, no run folders needed)
and exits 1 naming each output the checkout would not reproduce: a changed notebook, code, run key or reference,
a missing or modified file, or a manifest commit that is not in this checkout's history.

Default figures folder: ``<root>/figures/`` for the mini profile (the figures committed with the repository) and
``<root>/figures/<profile>/`` for any other profile, so a smoke check never overwrites the committed figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from study import paths
from study import provenance as pv
from study import verdicts as verdicts_mod
from study.errors import UserError
from study.experiments import load_profile, reference_dir, run_manifest


@dataclass(frozen=True)
class NotebookSpec:
    name: str
    """File stem of its source ``notebooks/<name>.py``."""
    groups: tuple[str, ...]
    """Experiment groups whose runs it reads (trained before it runs)."""
    what: str
    """The paper artefacts it regenerates."""


NOTEBOOKS: list[NotebookSpec] = [
    NotebookSpec("00_reference_model", (), "the reference model: pass@1, verbatim rate, learning curve"),
    NotebookSpec("01_training_dynamics", ("fig4_ppo",), "Fig. 4: PPO none/static/dynamic reward, KL, CE"),
    NotebookSpec("02_dapo_vs_dynamic", ("fig5_dapo",), "Fig. 5(a) reward curves, Table 1 pass@1 with gains"),
    NotebookSpec("03_improvement_ratio", ("fig5_dapo",), "Fig. 5(b) improvement ratio"),
    NotebookSpec("04_token_heatmap", ("fig5_dapo",), "Fig. 6 token-level CE heatmap"),
    NotebookSpec("05_ablations", ("fig7_lambda", "filter_ablation"), "Fig. 7 λ sweep, App. B filter ablation"),
    NotebookSpec("06_qualitative", ("fig5_dapo",), "Figs. 8-11 / Table 4 qualitative refinements"),
    NotebookSpec("07_hyperparameters", ("fig4_ppo", "fig5_dapo"), "Table 2 hyperparameters, training-time cost"),
    NotebookSpec("08_beyond_the_paper", ("beyond",), "beyond the paper: static SFT, ReLIFT, self-refinement, CE scope"),
    NotebookSpec("walkthrough", ("fig5_dapo",), "the method step by step on one problem (example from the run data)"),
]
BY_NAME = {n.name: n for n in NOTEBOOKS}


def default_figures_dir(profile_name: str, configured: str | None = None) -> Path:
    if configured:
        return paths.resolve(configured)
    return paths.figures_dir() if profile_name == "mini" else paths.figures_dir() / profile_name


def notebooks_dir() -> Path:
    """Where the notebook sources (jupytext percent scripts ``<name>.py``) live: ``<root>/notebooks``."""
    return paths.notebooks_dir()


def notebook_source(name: str) -> Path:
    """The source file of notebook ``name``."""
    return notebooks_dir() / f"{name}.py"


def notebook_code(src: Path) -> str:
    """The Python code of a notebook source (code cells; IPython magics and shell lines dropped)."""
    if src.suffix == ".ipynb":
        cells = json.loads(src.read_text(encoding="utf-8")).get("cells", [])
        code = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code")
    else:
        code = src.read_text(encoding="utf-8")
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))


def select(only: list[str] | None, source: str = "--only") -> list[NotebookSpec]:
    """The notebooks named in ``only`` (comma-separated items; all when empty); ``source`` names where the list came
    from in the error for an unknown name (``--only`` or a profile's ``notebooks:``)."""
    if not only:
        return list(NOTEBOOKS)
    names = [x.strip().removesuffix(".ipynb").removesuffix(".py") for item in only for x in item.split(",") if x.strip()]
    bad = [n for n in names if n not in BY_NAME]
    if bad:
        raise UserError(f"{source}: unknown notebook(s) {', '.join(bad)} (known: {', '.join(BY_NAME)})")
    return [n for n in NOTEBOOKS if n.name in names]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint_parts(nb: NotebookSpec, profile, runs: list[dict], src: Path, reference: dict) -> dict:
    """What the notebook's outputs depend on, part by part (each a short hash or a list of run keys): its source,
    the ``study`` code it imports, the profile's reference entry and the reference model's identity, and the run
    key of every run it reads (which covers the run's config, seed, training code, library versions and weights)."""
    return {
        "notebook": _sha(src.read_bytes()),
        "code": pv.code_fingerprint(sources=[notebook_code(src)])["sha256"],
        "profile_reference": pv.sha256_json(profile.reference),
        "reference": reference.get("sha256") or reference,
        "runs": sorted([r["run"], r["run_key"]] for r in runs),
    }


def fingerprint(parts: dict) -> str:
    return pv.sha256_json(parts)


def read_manifest(figures_dir: Path) -> dict:
    p = figures_dir / "MANIFEST.json"
    if p.exists():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def write_manifest(figures_dir: Path, manifest: dict) -> None:
    from study.runs import atomic_write_text

    figures_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(figures_dir / "MANIFEST.json", json.dumps(manifest, indent=2, sort_keys=False))


def runs_stamp(runs: list[dict], runs_dir: Path) -> str:
    """Which training event made each run folder (its ``DONE`` marker's content and time): a run retrained under
    the same key (``--force``; on a GPU, not bit-identical) re-executes its notebooks. Not part of the
    fingerprint, which must be computable without run folders (``--check``)."""
    done = {r["run"]: runs_dir / r["run"] / "DONE" for r in runs}
    return pv.sha256_json(sorted((r, [_sha(d.read_bytes()), d.stat().st_mtime_ns] if d.exists() else None)
                                 for r, d in done.items()))


def is_fresh(entry: dict | None, fp: str, figures_dir: Path, stamp: str | None = None) -> bool:
    """The manifest entry was made from the same inputs (and, with ``stamp``, the same run folders) and every
    file it lists still exists."""
    if not entry or entry.get("fingerprint") != fp or entry.get("status") != "ok":
        return False
    if stamp is not None and entry.get("runs_stamp") != stamp:
        return False
    files = [p for o in entry.get("outputs", []) for p in o.get("paths", [])] + [entry.get("executed", "")]
    return all(p and (figures_dir / p).exists() for p in files)


def _rel(path: str | Path, base: Path) -> str:
    """``path`` relative to ``base`` when inside it (manifests stay valid when the folder moves)."""
    return paths.relative(path, base)


def reference_identity(prof, resolve: bool = True) -> dict:
    """Root-relative path and identity (``study.provenance.model_identity``) of the profile's reference model."""
    try:
        ref = reference_dir(prof, resolve=resolve)
    except UserError:
        return {}
    if ref is None:
        return {"missing": str(prof.reference)}
    return {"path": paths.relative(ref), **pv.model_identity(ref)}


def environment_record() -> dict:
    """Package versions, Python and platform, as written into the manifest."""
    import platform

    from study.runs import package_versions

    return {"packages": package_versions(), "platform": platform.platform()}


def git_head(root: Path) -> str | None:
    from study.runs import git_commit

    return git_commit(root)


def outputs_index(manifest: dict) -> dict:
    """Flat view: output name -> notebook, profile, paths, config hashes, seeds, git commit, wall time."""
    out = {}
    for nb_name, e in manifest.get("notebooks", {}).items():
        for o in e.get("outputs", []):
            out[o["name"]] = {
                "kind": o["kind"], "notebook": nb_name, "profile": e.get("profile"), "paths": o["paths"],
                "config_hashes": sorted({r["config_hash"] for r in e.get("runs", [])}),
                "seeds": sorted({r["seed"] for r in e.get("runs", [])}),
                "git_commit": e.get("git_commit"), "wall_time_s": e.get("wall_time_s"),
            }
    return out


def load_source(src: Path):
    """The notebook of a jupytext percent script (``# %%`` cells; a cell tagged ``parameters``)."""
    import jupytext

    nb = jupytext.read(src)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return nb


def notebook_parameters(profile, runs_dir: Path, figures_dir: Path) -> dict:
    """papermill's parameters: paths relative to the root where they lie inside it (the kernel runs there), and a
    profile that ``study.paths.profile_path`` finds by its name, so executed notebooks hold no machine paths."""
    by_name = paths.profile_path(profile.name)
    named = by_name is not None and by_name.resolve() == Path(profile.path).resolve()
    return {"profile": profile.name if named else paths.relative(profile.path),
            "runs_dir": paths.relative(runs_dir), "figures_dir": paths.relative(figures_dir)}


def execute_notebook(src: Path, dst: Path, parameters: dict, log_path: Path, cwd: Path) -> None:
    """jupytext ``src`` (a percent script) -> papermill -> ``dst`` (temp file renamed on success; on failure the
    partial copy is kept next to it as ``<name>.failed.ipynb``). ``log_path`` collects the notebook's saved
    outputs and verdicts. The kernel runs unattended: progress bars off (``TQDM_DISABLE``,
    ``HF_HUB_DISABLE_PROGRESS_BARS``), static explorer views (``STUDY_BATCH``)."""
    import nbformat
    import papermill as pm

    from study import outputs

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{os.getpid()}.ipynb")
    failed = dst.with_name(f"{dst.stem}.failed.ipynb")
    env = {outputs.OUTPUT_LOG_ENV: str(log_path), outputs.BATCH_ENV: "1", "TQDM_DISABLE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # transformers' own bars (loading weights) follow the hub's switch
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(load_source(src), str(tmp), parameters=parameters, kernel_name="python3",
                            cwd=str(cwd), progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as exc:
        if tmp.exists():
            os.replace(tmp, failed)
        lines = str(exc.evalue).strip().splitlines()
        raise UserError(f"notebook {src.stem} failed in cell {exc.exec_count}: {exc.ename}: "
                        f"{lines[-1] if lines else ''} (executed copy: {failed})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    book = nbformat.read(tmp, as_version=4)  # papermill records its temp paths: keep repository-relative ones
    book.metadata.setdefault("papermill", {}).update(input_path=paths.relative(src), output_path=dst.name)
    nbformat.write(book, tmp)
    os.replace(tmp, dst)
    failed.unlink(missing_ok=True)


def _read_log(path: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(saved outputs, notes, claim rows) a notebook logged."""
    outputs, notes, claims = [], [], []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            {"verdict": notes, "claim": claims}.get(e.get("kind"), outputs).append(e)
    return outputs, notes, claims


class _env:
    """Set environment variables for a ``with`` block (the notebook kernel inherits them)."""

    def __init__(self, **values: str):
        self.values, self.old = values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.old[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reproduce(profile: str = "mini", only: list[str] | None = None, force: bool = False,
              figures_dir: str | Path | None = None, runs_dir: str | Path | None = None, train: bool = True,
              progress: bool = True, jobs: int = 1, launcher: str | None = None) -> dict:
    """Library entry of ``study reproduce``; returns the manifest. ``launcher`` (else the profile's) starts each
    training run as its own launch, e.g. ``accelerate launch --config_file configs/accelerate/zero2.yaml``."""
    from tqdm.auto import tqdm

    from study import experiments as ex

    prof = load_profile(profile)
    nbs = select(only) if only else select(prof.notebooks, f"{paths.relative(prof.path)}: notebooks")
    fig_dir = Path(figures_dir) if figures_dir else default_figures_dir(prof.name, prof.figures_dir)
    fig_dir = fig_dir.resolve()
    runs_dir = (Path(runs_dir) if runs_dir is not None else paths.runs_dir()).resolve()
    root = paths.root()

    # 1. runs
    groups = list(dict.fromkeys(g for nb in nbs for g in nb.groups))
    for g in groups:
        if g not in prof.groups:
            raise UserError(f"profile '{prof.name}' has no experiment group '{g}' needed by "
                            f"{', '.join(nb.name for nb in nbs if g in nb.groups)}")
    if train:  # every group's missing runs in one pool (groups share runs, e.g. the λ=0.1 run)
        specs = [s for g in groups for s in ex.group_specs(g, prof)]
        ex.train_specs(specs, runs_dir, force=force, progress=progress, jobs=jobs,
                       launcher=launcher or prof.launcher)
    else:
        for g in groups:
            ex.check_runs(g, prof, runs_dir)

    # 2. notebooks
    manifest = read_manifest(fig_dir)
    manifest.setdefault("notebooks", {})
    if not only:  # the profile's whole set: entries of notebooks it no longer runs would be stale forever
        for name in [n for n in manifest["notebooks"] if n not in {nb.name for nb in nbs}]:
            del manifest["notebooks"][name]
    manifest["profile"] = prof.name
    reference = reference_identity(prof)
    commit = git_head(root)
    for nb in tqdm(nbs, desc="notebooks", unit="nb", disable=not progress):
        src = notebook_source(nb.name)
        if not src.exists():
            raise UserError(f"notebook not found: {src}")
        runs = [r for g in nb.groups for r in run_manifest(g, prof)]
        parts = fingerprint_parts(nb, prof, runs, src, reference)
        fp = fingerprint(parts)
        stamp = runs_stamp(runs, runs_dir)
        entry = manifest["notebooks"].get(nb.name)
        if not force and is_fresh(entry, fp, fig_dir, stamp):
            continue
        dst = fig_dir / "notebooks" / f"{nb.name}.ipynb"
        params = notebook_parameters(prof, runs_dir, fig_dir)
        with tempfile.TemporaryDirectory() as td, _env(STUDY_ROOT=str(root)):
            log = Path(td) / "outputs.jsonl"
            t0 = time.time()
            execute_notebook(src, dst, params, log, cwd=root)
            wall = time.time() - t0
            outputs, verdicts, claims = _read_log(log)
        for o in outputs:  # the kernel ran in the root: relative paths are root-relative
            o["paths"] = [str(root / p) for p in o["paths"]]
        manifest["notebooks"][nb.name] = {
            "status": "ok",
            "what": nb.what,
            "profile": prof.name,
            "executed": _rel(dst, fig_dir),
            "outputs": [{"kind": o["kind"], "name": o["name"], "paths": [_rel(p, fig_dir) for p in o["paths"]],
                         "sha256": {_rel(p, fig_dir): file_sha256(Path(p)) for p in o["paths"]}}
                        for o in outputs],
            "verdicts": [v["text"] for v in verdicts] + [verdicts_mod.line_of(c) for c in claims],
            "claims": [{k: v for k, v in c.items() if k != "kind"} for c in claims],
            "runs": runs,
            "git_commit": commit,
            "wall_time_s": round(wall, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fingerprint": fp,
            "fingerprint_parts": parts,
            "runs_stamp": stamp,
        }
        manifest["outputs"] = outputs_index(manifest)
        _stamp(manifest, reference, commit)
        write_manifest(fig_dir, manifest)  # after every notebook: a later failure keeps what finished
    manifest["outputs"] = outputs_index(manifest)
    _stamp(manifest, reference, commit)
    write_manifest(fig_dir, manifest)
    write_analysis(prof, runs_dir, fig_dir, manifest)
    write_results(fig_dir, manifest)
    return manifest


def write_analysis(prof, runs_dir: Path, fig_dir: Path, manifest: dict) -> None:
    """What is assembled over all notebooks: ``tables/verdicts.csv/.md`` from every notebook's claim rows (a claim
    no notebook recorded: ``not run``) and ``explorer.html`` over every logged sample of every trained run."""
    from study import explore

    rows = [dict(c, notebook=name) for name, e in manifest.get("notebooks", {}).items() for c in e.get("claims", [])]
    verdicts_mod.write(fig_dir, rows)
    explore.write_page(prof, runs_dir, fig_dir / "explorer.html")


def _stamp(manifest: dict, reference: dict, commit: str | None) -> None:
    """Top-level provenance of the manifest: package versions, the reference weights, the code fingerprint of
    each trainer, the commit of the last update."""
    from study.train import TRAINERS

    manifest["environment"] = environment_record()
    manifest["reference"] = reference
    manifest["training_code"] = {t: pv.code_fingerprint(["study.train", m.split(":")[0]])
                                 for t, m in TRAINERS.items()}
    manifest["git_commit"] = commit


# ---------------------------------------------------------------------------------------------------------------
# --check


def _is_ancestor(commit: str, root: Path) -> bool | None:
    """Is ``commit`` (possibly ``-dirty``) in the history of ``root``'s HEAD? ``None`` where git cannot tell."""
    sha = commit.removesuffix("-dirty")
    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", sha, "HEAD"], cwd=root, capture_output=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(r.returncode)


def _changed_modules(old: dict, new: dict) -> list[str]:
    a, b = old.get("modules", {}), new.get("modules", {})
    return sorted(m for m in set(a) | set(b) if a.get(m) != b.get(m))


def check(profile: str = "mini", figures_dir: str | Path | None = None) -> list[str]:
    """Why the outputs in ``<figures_dir>/MANIFEST.json`` would not be reproduced by this checkout: one line per
    problem, empty when every output is current. Trains, executes and reads no run folders."""
    from study.train import TRAINERS

    prof = load_profile(profile)
    fig_dir = (Path(figures_dir) if figures_dir else default_figures_dir(prof.name, prof.figures_dir)).resolve()
    manifest = read_manifest(fig_dir)
    if not manifest.get("notebooks"):
        return [f"{paths.relative(fig_dir / 'MANIFEST.json')}: missing or empty (run `study reproduce --profile "
                f"{prof.name}`)"]
    problems: list[str] = []
    reference = reference_identity(prof, resolve=False)
    old_ref = manifest.get("reference", {})
    if old_ref.get("sha256") != reference.get("sha256"):
        problems.append(f"reference model: this checkout's ({reference.get('path') or reference}, sha256 "
                        f"{str(reference.get('sha256'))[:12]}) is not the one the figures were made with (sha256 "
                        f"{str(old_ref.get('sha256'))[:12]}); every number downstream of a retrained reference "
                        "differs within noise")
    for t, m in TRAINERS.items():
        old = manifest.get("training_code", {}).get(t)
        new = pv.code_fingerprint(["study.train", m.split(":")[0]])
        if old and old.get("sha256") != new["sha256"]:
            problems.append(f"{t} training code changed since the figures were made: "
                            f"{', '.join(_changed_modules(old, new))}")
    root = paths.root()
    for nb in select(prof.notebooks, f"{paths.relative(prof.path)}: notebooks"):
        entry = manifest["notebooks"].get(nb.name)
        src = notebook_source(nb.name)
        if entry is None:
            if src.exists():
                problems.append(f"{nb.name}: not in the manifest")
            continue
        label = f"{nb.name} ({', '.join(o['name'] for o in entry.get('outputs', [])) or 'no outputs'})"
        if not src.exists():
            problems.append(f"{label}: notebook source {paths.relative(src)} is gone")
            continue
        runs = [r for g in nb.groups if g in prof.groups for r in run_manifest(g, prof, resolve=False)]
        parts = fingerprint_parts(nb, prof, runs, src, reference)
        if fingerprint(parts) != entry.get("fingerprint"):
            old = entry.get("fingerprint_parts", {})
            why = [k for k in parts if k != "runs" and parts[k] != old.get(k)]
            old_runs = dict(map(tuple, old.get("runs", [])))
            stale = [r for r, k in parts["runs"] if old_runs.get(r) != k]
            if stale:
                why.append(f"run key of {', '.join(stale[:4])}{' ...' if len(stale) > 4 else ''}")
            problems.append(f"{label}: stale fingerprint ({'; '.join(why) or 'format'} changed)")
        for o in entry.get("outputs", []):
            for rel, sha in (o.get("sha256") or {p: None for p in o["paths"]}).items():
                f = fig_dir / rel
                if not f.exists():
                    problems.append(f"{label}: {paths.relative(f)} is missing")
                elif sha is not None and file_sha256(f) != sha:
                    problems.append(f"{label}: {paths.relative(f)} differs from what the notebook wrote")
        if not (fig_dir / entry.get("executed", "")).is_file():
            problems.append(f"{label}: executed notebook {entry.get('executed')} is missing")
        commit = entry.get("git_commit")
        if commit and _is_ancestor(commit, root) is False:
            problems.append(f"{label}: made at commit {commit[:12]}, which is not in this checkout's history")
    return problems


def results_markdown(manifest: dict, verdict_table: str = "") -> str:
    """Gallery + computed verdicts of a manifest, as Markdown (``<figures_dir>/RESULTS.md``)."""
    lines = [f"# Results: profile `{manifest.get('profile')}`", "",
             "Generated by `study reproduce` from `MANIFEST.json`; every number below is a notebook's computed "
             "verdict over the runs listed in the manifest.", "",
             "The verdict table is the result: it applies Holm's correction over the family of claims. The lines "
             "under each notebook classify each claim on its own (its raw 95% interval), so a line there can read "
             "'reproduced' where the table reads 'inconclusive'.", "",
             "Browse every logged refinement, token by token with the policy's CE: [explorer.html](explorer.html) "
             "(one self-contained page; open it in a browser).", ""]
    if verdict_table:
        lines += ["## Verdicts (`tables/verdicts.csv`)", "", verdict_table, ""]
    for name, e in manifest.get("notebooks", {}).items():
        lines += [f"## {name}: {e.get('what', '')}", "",
                  f"commit `{e.get('git_commit')}`, {len(e.get('runs', []))} runs, notebook wall time "
                  f"{e.get('wall_time_s')} s, executed copy `{e.get('executed')}`", ""]
        for o in e.get("outputs", []):
            png = [p for p in o["paths"] if p.endswith(".png")]
            md = [p for p in o["paths"] if p.endswith(".md")]
            if png:
                lines.append(f"![{o['name']}]({png[0]})")
            elif md:
                lines.append(f"- table `{o['name']}`: [{md[0]}]({md[0]})")
        lines.append("")
        lines += [f"- {v}" for v in e.get("verdicts", [])] + [""]
    return "\n".join(lines)


def write_results(fig_dir: Path, manifest: dict) -> None:
    tmp = fig_dir / ".RESULTS.md.tmp"
    table = fig_dir / "tables" / "verdicts.md"
    tmp.write_text(results_markdown(manifest, table.read_text(encoding="utf-8") if table.exists() else ""),
                   encoding="utf-8")
    os.replace(tmp, fig_dir / "RESULTS.md")
    if fig_dir.resolve() == paths.figures_dir().resolve() and table.exists():
        write_readme_verdicts(paths.root() / "README.md", table.read_text(encoding="utf-8"), manifest)


README_BEGIN = "<!-- verdicts:begin: generated by `study reproduce --profile mini` from figures/tables/verdicts.md -->"
README_END = "<!-- verdicts:end -->"


def write_readme_verdicts(readme: Path, table_md: str, manifest: dict) -> bool:
    """Replace the README's verdict table (between ``README_BEGIN`` and ``README_END``) with ``table_md``, stamped
    with the manifest's commit and profile. Only the main profile's committed figures write it; a README without
    both markers is left alone. Returns whether the file was rewritten."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        return False
    stamp = (f"Profile `{manifest.get('profile')}`, manifest commit `{str(manifest.get('git_commit'))[:12]}` "
             f"([figures/tables/verdicts.csv](figures/tables/verdicts.csv)).")
    new = text[:i + len(README_BEGIN)] + "\n" + stamp + "\n\n" + table_md.strip() + "\n" + text[j:]
    if new != text:
        tmp = readme.with_name(".README.md.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, readme)
    return True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="mini",
                   help="smoke | mini | paper, or a profile .yaml (default: mini)")
    p.add_argument("--only", action="append", metavar="NAMES",
                   help="comma-separated notebook names to run (default: all); see --list")
    p.add_argument("--force", action="store_true", help="retrain runs and re-execute notebooks even if cached")
    p.add_argument("--figures-dir", help="output folder (default: figures/ for mini, figures/<profile>/ otherwise)")
    p.add_argument("--runs-dir", default=None, help="parent folder of run folders (default: <root>/runs)")
    p.add_argument("--no-train", action="store_true", help="do not train; fail if a needed run is missing")
    p.add_argument("--check", action="store_true",
                   help="train and execute nothing: exit 1 naming each output in MANIFEST.json that this checkout "
                        "would not reproduce")
    p.add_argument("--jobs", type=int, default=None,
                   help="training runs at once, one process and one torch thread each (default: CPU count)")
    p.add_argument("--launcher", metavar="CMD",
                   help="start each training run as `CMD -m study train ...`, e.g. \"accelerate launch --config_file "
                        "configs/accelerate/ddp.yaml\" (default: the profile's `launcher:`, else in-process)")
    p.add_argument("--list", action="store_true", help="list the notebooks and the groups they need, then exit")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for nb in NOTEBOOKS:
            print(f"{nb.name:22s} {','.join(nb.groups) or '-':28s} {nb.what}")
        return 0
    prof = load_profile(args.profile)
    fig_dir = Path(args.figures_dir) if args.figures_dir else default_figures_dir(prof.name, prof.figures_dir)
    if args.check:
        problems = check(prof, fig_dir)
        for line in problems:
            print(f"stale: {line}")
        print(f"{paths.relative(fig_dir / 'MANIFEST.json')}: "
              + (f"{len(problems)} problem(s); run `study reproduce --profile {prof.name}`" if problems
                 else "every output is current"))
        return 1 if problems else 0
    manifest = reproduce(prof, args.only, args.force, fig_dir, args.runs_dir, train=not args.no_train,
                         jobs=args.jobs or os.cpu_count() or 1, launcher=args.launcher)
    print(f"wrote {fig_dir / 'MANIFEST.json'}")
    for name, e in manifest["notebooks"].items():
        for v in e.get("verdicts", []):
            print(f"  {name}: {v}")
    return 0
