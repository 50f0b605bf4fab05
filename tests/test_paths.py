"""``study`` finds configs/, runs/, artifacts/, figures/ and notebooks/ from the working directory (or ``--root``),
never from where the package is installed: it works from a copy of the repository and from a non-editable
install (study.paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, copy_repo

from study import paths


def test_root_is_found_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("STUDY_ROOT", raising=False)
    study_dir = tmp_path / "mystudy"
    (study_dir / "configs").mkdir(parents=True)
    (study_dir / "notebooks" / "deep").mkdir(parents=True)
    monkeypatch.chdir(study_dir / "notebooks" / "deep")
    assert paths.root() == study_dir.resolve()          # from a sub-folder (a notebook's working directory)
    assert paths.runs_dir() == study_dir.resolve() / "runs"
    assert paths.resolve("configs/x.yaml") == study_dir.resolve() / "configs" / "x.yaml"
    assert paths.resolve("/abs/x") == Path("/abs/x")
    monkeypatch.chdir(tmp_path)                          # outside any study folder: the working directory
    assert paths.root() == tmp_path.resolve()
    monkeypatch.setenv("STUDY_ROOT", str(study_dir))
    assert paths.root() == study_dir.resolve()
    paths.set_root(tmp_path)                             # --root wins
    try:
        assert paths.root() == tmp_path.resolve()
    finally:
        paths.set_root(None)
    # profiles ship with the package; a root's configs/profiles/<name>.yaml overrides them
    assert paths.profile_path("mini") == paths.PACKAGE_PROFILES / "mini.yaml"
    (study_dir / "configs" / "profiles").mkdir()
    (study_dir / "configs" / "profiles" / "mini.yaml").write_text("profile: mini\ngroups: {}\n")
    assert paths.profile_path("mini") == study_dir.resolve() / "configs" / "profiles" / "mini.yaml"
    assert paths.profile_path("nope") is None


def test_installed_package_works_in_a_copy_and_writes_only_there(tmp_path, smoke_model_dir):
    """The `study` command of this installation, run inside a copy of the repository: the copy's configs are
    read and its runs/ and figures/ written; the installed checkout is not touched."""
    exe = Path(sys.executable).parent / "study"
    if not exe.exists():
        pytest.skip("no `study` console script next to this interpreter (package not installed)")
    copy = copy_repo(tmp_path / "copy")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STUDY_ROOT")}
    env["STUDY_ARTIFACTS"] = str(smoke_model_dir.parents[1])
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "figures").rglob("*")} if (ROOT / "figures").exists() else {}
    runs_before = set((ROOT / "runs").iterdir()) if (ROOT / "runs").exists() else set()
    r = subprocess.run([str(exe), "train", "configs/smoke/dapo.yaml", "--set", "steps=1"], cwd=copy, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (copy / "runs" / "smoke-dapo" / "DONE").exists()
    r = subprocess.run([str(exe), "reproduce", "--profile", "smoke", "--only", "00_reference_model"],
                       cwd=copy / "notebooks", env=env, capture_output=True, text=True)  # from a sub-folder
    assert r.returncode == 0, r.stderr[-2000:]
    assert (copy / "figures" / "smoke" / "MANIFEST.json").exists()
    assert (copy / "figures" / "smoke" / "notebooks" / "00_reference_model.ipynb").exists()
    after = {p: p.stat().st_mtime_ns for p in (ROOT / "figures").rglob("*")} if (ROOT / "figures").exists() else {}
    assert after == before, "the installed checkout's figures/ changed"
    assert (set((ROOT / "runs").iterdir()) if (ROOT / "runs").exists() else set()) == runs_before


def test_non_editable_install_finds_profiles_and_configs(tmp_path):
    """A wheel installed elsewhere: profiles come from the package data, configs/ from the root (--root)."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("refiner_study-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    copy = copy_repo(tmp_path / "copy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STUDY_ROOT")}, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import study; print(study.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site))
    r = subprocess.run([sys.executable, "-m", "study", "--root", str(copy), "train", "configs/smoke/dapo.yaml",
                        "--dry-run"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "runs/smoke-dapo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "study", "--root", str(copy), "reproduce", "--profile", "mini",
                        "--list"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "fig5_dapo" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "study", "train", "configs/smoke/dapo.yaml", "--dry-run"],
                       cwd=elsewhere, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "config file not found" in r.stderr  # no root here: a clear one-line error
