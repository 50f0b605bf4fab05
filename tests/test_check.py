"""``study reproduce --check`` and the run cache on real smoke runs: the committed outputs are current until the
code that makes them changes; then ``--check`` names exactly the outputs concerned and ``study reproduce``
retrains exactly the runs concerned (issue 16)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from study.provenance import import_closure
from study.reproduce import NOTEBOOKS, notebook_code, notebook_source
from study.verdicts import CLAIMS


def _study(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=work, env={**env, "PYTHONPATH": str(work)},
                          capture_output=True, text=True)


def _done_stamps(runs: Path) -> dict[str, int]:
    return {d.name: (d / "DONE").stat().st_mtime_ns for d in runs.iterdir() if (d / "DONE").exists()}


def test_smoke_reproduce_wrote_every_notebook_and_a_complete_manifest(smoke_study):
    m = json.loads((smoke_study.figures / "MANIFEST.json").read_text())
    assert set(m["notebooks"]) == {nb.name for nb in NOTEBOOKS}
    for name, e in m["notebooks"].items():
        assert e["status"] == "ok" and (smoke_study.figures / e["executed"]).exists()
        for out in e["outputs"]:
            for p in out["paths"]:
                assert (smoke_study.figures / p).exists(), (name, p)
    assert m["environment"]["packages"]["torch"] and m["environment"]["packages"]["transformers"]
    assert m["reference"]["weights_sha256"] and m["reference"]["path"]
    assert set(m["training_code"]) == {"dapo", "ppo"}
    fig = smoke_study.figures
    assert list(fig.glob("*.png")) and list(fig.glob("*.pdf")) and list((fig / "tables").glob("*.md"))
    for name, entry in m["notebooks"].items():  # the real runs' notebooks: figures inline, no stderr
        outs = [o for c in nbformat.read(fig / entry["executed"], as_version=4).cells if c.cell_type == "code"
                for o in c.outputs]
        assert sum("image/png" in o.get("data", {}) for o in outs) == sum(o["kind"] == "figure" for o in entry["outputs"])
        assert not [o.get("text", "")[:300] for o in outs if o.get("name") == "stderr"], name
        bars = [o["data"].get("text/plain", "")[:80] for o in outs
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert not bars, f"{name}: progress bars or widgets in an unattended run: {bars}"
    verdicts = (fig / "tables" / "verdicts.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in verdicts[1:]] == list(CLAIMS)
    assert (fig / "explorer.html").stat().st_size > 10_000
    runs = [r for e in m["notebooks"].values() for r in e["runs"]]
    assert runs and all(r["run_key"] for r in runs)
    for r in runs:
        prov = json.loads((smoke_study.runs / r["run"] / "provenance.json").read_text())
        assert prov["run_key"] == r["run_key"]
        assert prov["models"]["model"]["weights_sha256"] == m["reference"]["weights_sha256"]


def test_check_then_edit_a_trainer_then_retrain_only_what_depends_on_it(smoke_study, tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(smoke_study.root, work, symlinks=True)
    env, figs, runs = smoke_study.env, work / "figures" / "smoke", work / "runs"

    r = _study(work, env, "reproduce", "--profile", "smoke", "--check")
    assert r.returncode == 0, r.stdout
    assert "every output is current" in r.stdout

    # a docstring or comment changes no number: still current
    ppo = work / "study" / "trainers" / "ppo.py"
    src = ppo.read_text()
    ppo.write_text(src.replace('"""PPO with a critic and GAE', '"""(reworded) PPO with a critic and GAE', 1)
                   + "\n# a comment\n")
    assert _study(work, env, "reproduce", "--profile", "smoke", "--check").returncode == 0

    # a code change in the PPO trainer: the outputs made from PPO runs are stale, the DAPO ones are not
    ppo.write_text(src + "\n\nCHECK_PROBE = 1  # code the PPO trainer imports\n")
    r = _study(work, env, "reproduce", "--profile", "smoke", "--check")
    assert r.returncode == 1, r.stdout
    stale = [line for line in r.stdout.splitlines() if line.startswith("stale:")]
    assert any("ppo training code changed" in line and "study.trainers.ppo" in line for line in stale), stale
    named = {nb.name for nb in NOTEBOOKS if any(line.startswith(f"stale: {nb.name} ") for line in stale)}
    # the notebooks that read PPO runs (01, 07), and those whose own code imports the PPO trainer (the
    # walkthrough samples its rollout with study.trainers.ppo.sample_rollout)
    ppo_notebooks = {nb.name for nb in NOTEBOOKS if "fig4_ppo" in nb.groups
                     or "study.trainers.ppo" in import_closure([], [notebook_code(notebook_source(nb.name))])}
    assert {"01_training_dynamics", "07_hyperparameters"} <= ppo_notebooks
    assert named == ppo_notebooks, stale
    assert not any("dapo training code" in line for line in stale)

    before = _done_stamps(runs)
    finished = {k: e["finished"] for k, e in json.loads((figs / "MANIFEST.json").read_text())["notebooks"].items()}
    r = _study(work, env, "reproduce", "--profile", "smoke")
    assert r.returncode == 0, r.stderr[-3000:]
    after = _done_stamps(runs)
    retrained = {n for n in after if after[n] != before.get(n)}
    assert retrained == {n for n in before if n.startswith("smoke-ppo-")}, retrained
    again = {k: e["finished"] for k, e in json.loads((figs / "MANIFEST.json").read_text())["notebooks"].items()}
    assert {k for k in again if again[k] != finished[k]} == ppo_notebooks  # the others were reused
    assert _study(work, env, "reproduce", "--profile", "smoke", "--check").returncode == 0

    # a figure edited by hand, and a missing table, are named too
    png = next(figs.glob("fig5a_reward.png"))
    png.write_bytes(png.read_bytes() + b"\0")
    table = next((figs / "tables").glob("*.csv"))
    table.unlink()
    r = _study(work, env, "reproduce", "--profile", "smoke", "--check")
    assert r.returncode == 1
    assert "fig5a_reward.png differs from what the notebook wrote" in r.stdout
    assert f"{table.name} is missing" in r.stdout


def test_check_names_a_reference_other_than_the_figures_one(smoke_study, tmp_path):
    """A retrained (or otherwise different) reference model makes every output stale, and --check says why."""
    work = tmp_path / "repo"
    shutil.copytree(smoke_study.root, work, symlinks=True, ignore=shutil.ignore_patterns("runs"))
    ref = tmp_path / "other-artifacts" / "mini" / "smoke"
    shutil.copytree(Path(env_ref := smoke_study.env["STUDY_ARTIFACTS"]) / "mini" / "smoke", ref)
    weights = ref / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # one weight changed: another model
    env = {**smoke_study.env, "STUDY_ARTIFACTS": str(ref.parents[1])}
    assert env_ref != env["STUDY_ARTIFACTS"]
    r = _study(work, env, "reproduce", "--profile", "smoke", "--check")
    assert r.returncode == 1
    assert "reference model: this checkout's" in r.stdout and "differs within noise" in r.stdout
    assert sum(line.startswith("stale: ") and "stale fingerprint" in line for line in r.stdout.splitlines()) \
        == len(NOTEBOOKS)
