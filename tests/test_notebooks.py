"""The notebooks: jupytext percent scripts with no logic of their own, executed by papermill (through
``study reproduce``) against synthetic runs; executed copies show every figure they save, print nothing on stderr
and hold no machine paths. The walkthrough runs on the real smoke pieces."""

import ast
import json
from pathlib import Path

import jupytext
import nbformat
import pytest

from fixtures.synthetic import write_synthetic_profile
from study import experiments as ex
from study import paths
from study import reproduce
from study.runs import RunLog

NB_DIR = reproduce.notebooks_dir()
FORBIDDEN = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.Try, ast.Lambda)


def test_notebook_sources_are_percent_scripts_without_logic():
    assert sorted(p.stem for p in NB_DIR.glob("*.py")) == sorted(n.name for n in reproduce.NOTEBOOKS)
    assert not list(NB_DIR.glob("*.ipynb")) and not (NB_DIR / "_build.py").exists()
    for spec in reproduce.NOTEBOOKS:
        src = NB_DIR / f"{spec.name}.py"
        assert src.read_text().count("# %%") >= 3 and "format_name: percent" in src.read_text()
        book = jupytext.read(src)
        tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "profile = " in tagged[0].source, spec.name
        assert book.metadata["kernelspec"]["name"] == "python3"
        for cell in book.cells:
            if cell.cell_type != "code":
                continue
            bad = [type(n).__name__ for n in ast.walk(ast.parse(cell.source)) if isinstance(n, FORBIDDEN)]
            assert not bad, f"{spec.name}: logic in a notebook cell ({bad}); move it into study/"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    profile = write_synthetic_profile(root / "w", seeds=(0, 1, 2), steps=10)
    figs = root / "figs"
    names = [n.name for n in reproduce.NOTEBOOKS if n.name != "walkthrough"]
    manifest = reproduce.reproduce(profile, only=names, figures_dir=figs, runs_dir=root / "w" / "runs",
                                   train=False, progress=False)
    return manifest, figs, profile, root / "w" / "runs", root


def test_every_analysis_notebook_runs_and_writes_its_outputs(executed):
    manifest, figs, _, _, _ = executed
    expected = {
        "00_reference_model": {"reference_model", "reference_learning_curve"},
        "01_training_dynamics": {"fig4_training_dynamics"},
        "02_dapo_vs_dynamic": {"fig5a_reward", "table1_pass_at_1"},
        "03_improvement_ratio": {"fig5b_improvement_ratio"},
        "04_token_heatmap": {"fig6_token_heatmap"},
        "05_ablations": {"fig7_lambda", "filter_ablation"},
        "06_qualitative": {"qualitative_refinements"},
        "07_hyperparameters": {"table2_ppo", "table2_dapo", "training_cost"},
        "08_beyond_the_paper": {"beyond_reward", "beyond_summary"},
    }
    for nb, outs in expected.items():
        e = manifest["notebooks"][nb]
        assert {o["name"] for o in e["outputs"]} == outs, nb
        assert e["verdicts"], f"{nb} printed no verdict"
        for o in e["outputs"]:
            assert all((figs / p).stat().st_size > 0 for p in o["paths"])
        executed_nb = nbformat.read(figs / e["executed"], as_version=4)
        assert executed_nb.cells[-1].outputs, f"{nb}: last cell printed nothing"
    v = manifest["notebooks"]["01_training_dynamics"]["verdicts"]
    assert v[0].startswith("dynamic_vs_static_reward: reward_mean, mean of the last 1 steps, dynamic − static "
                           "(paired by seed) = +") and v[0].endswith("reproduced")
    assert "n = 3, MDE80" in v[0]
    t1 = (figs / "tables" / "table1_pass_at_1.md").read_text()
    assert "| initial model | 30.0 | 30.0 |" in t1
    assert json.loads((figs / "MANIFEST.json").read_text())["outputs"]["fig6_token_heatmap"]["notebook"] == "04_token_heatmap"


def _outputs(book):
    return [o for c in book.cells if c.cell_type == "code" for o in c.outputs]


def test_executed_notebooks_show_every_saved_figure_and_table(executed):
    manifest, figs, _, _, _ = executed
    for nb, e in manifest["notebooks"].items():
        outs = _outputs(nbformat.read(figs / e["executed"], as_version=4))
        images = sum("image/png" in o.get("data", {}) for o in outs)
        saved = sum(o["kind"] == "figure" for o in e["outputs"])
        assert images == saved, f"{nb}: {images} inline images for {saved} saved figures"
        tables = sum("text/markdown" in o.get("data", {}) for o in outs)
        assert tables >= sum(o["kind"] == "table" for o in e["outputs"] if o["name"] != "qualitative_refinements"), nb
    e04 = nbformat.read(figs / manifest["notebooks"]["04_token_heatmap"]["executed"], as_version=4)
    assert any("static view" in o.get("data", {}).get("text/html", "") for o in _outputs(e04))  # the explorer


def test_executed_notebooks_have_no_stderr_and_no_machine_paths(executed):
    manifest, figs, profile, runs, root = executed
    for nb, e in manifest["notebooks"].items():
        book = nbformat.read(figs / e["executed"], as_version=4)
        noise = [o.get("text", "")[:200] for o in _outputs(book) if o.get("name") == "stderr"]
        assert not noise, f"{nb} wrote to stderr: {noise}"
        assert book.metadata["papermill"]["input_path"] == f"notebooks/{nb}.py"
        text = json.dumps(book)
        for given in (str(root),):  # the parameters of this test point into its tmp dir; nothing else may
            text = text.replace(given, "<tmp>")
        for machine in (str(paths.root()), "/site-packages/", "/tmp/", "/home/", "/root/"):
            assert machine not in text, f"{nb} holds a machine path ({machine})"


def test_parameters_are_repository_relative():
    prof = ex.load_profile("smoke")
    p = reproduce.notebook_parameters(prof, paths.root() / "runs", paths.root() / "figures" / "smoke")
    assert p == {"profile": "smoke", "runs_dir": "runs", "figures_dir": "figures/smoke"}
    outside = reproduce.notebook_parameters(prof, Path("/data/runs"), Path("/data/figs"))
    assert outside["runs_dir"] == "/data/runs"  # outside the repository: kept as given


def test_verdict_table_lists_every_claim(executed):
    import pandas as pd

    from study.verdicts import CLAIMS

    _, figs, _, _, _ = executed
    t = pd.read_csv(figs / "tables" / "verdicts.csv")
    assert t["claim"].tolist() == list(CLAIMS)
    assert list(t.columns[:8]) == ["claim", "statistic", "estimate", "ci_low", "ci_high", "n", "mde80", "verdict"]
    got = dict(zip(t["claim"], t["verdict"]))
    assert got["dynamic_vs_static_reward"] == "reproduced" and got["dynamic_vs_dapo_kl"] != "not run"
    assert (t["verdict"] != "not run").all()  # the synthetic profile has every arm
    results = (figs / "RESULTS.md").read_text()
    assert "[explorer.html](explorer.html)" in results and "| dapo_learns |" in results
    assert "applies Holm's correction" in results  # the per-notebook lines are the uncorrected ones: said so
    assert (figs / "explorer.html").stat().st_size > 1000


def test_heatmap_notebook_parameters_pick_the_sample(executed, tmp_path):
    import papermill as pm

    _, _, profile, runs, _ = executed
    out = tmp_path / "04.ipynb"
    pm.execute_notebook(reproduce.load_source(NB_DIR / "04_token_heatmap.py"), str(out), kernel_name="python3",
                        cwd=str(NB_DIR), progress_bar=False,
                        parameters={"profile": str(profile), "runs_dir": str(runs), "figures_dir": str(tmp_path / "f"),
                                    "seed": 1, "step": 3})
    text = "".join(o.get("text", "") for o in _outputs(nbformat.read(out, as_version=4)))
    assert "sample: syn-dapo_dynamic-s1 step 3 " in text and "CE on the copied prefix" in text
    assert (tmp_path / "f" / "fig6_token_heatmap.png").exists()


def _mini_world_ready() -> bool:
    try:
        from study.data import load_problems  # noqa: F401
        from study.mini import ensure_reference  # noqa: F401
    except ImportError:
        return False
    return True


def _walk_profile(tmp_path):
    import yaml

    (tmp_path / "dyn.yaml").write_text(yaml.safe_dump({
        "name": "walk-dyn", "trainer": "dapo", "model": "mini:smoke",
        "data": {"source": "mini", "mini_profile": "smoke", "limit": 4}, "constraint": {"mode": "dynamic"},
        "rollout": {"num_generations": 4, "max_completion_length": 32}, "refiner": {"max_new_tokens": 32}}))
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({"profile": "walk", "groups": {
        "fig5_dapo": {"configs": {"dynamic": "dyn.yaml"}, "seeds": [0]}}}))
    return tmp_path / "profile.yaml"


def _walk(tmp_path, profile, **params):
    import papermill as pm

    out = tmp_path / "walk.ipynb"
    pm.execute_notebook(reproduce.load_source(NB_DIR / "walkthrough.py"), str(out), kernel_name="python3",
                        cwd=str(NB_DIR), progress_bar=False,
                        parameters={"profile": str(profile), "figures_dir": str(tmp_path / "figs"), **params})
    return nbformat.read(out, as_version=4)


@pytest.mark.slow
@pytest.mark.skipif(not _mini_world_ready(), reason="mini world not available")
def test_walkthrough_takes_its_example_from_run_data(tmp_path, smoke_model_dir, monkeypatch):
    """The method step by step with the real pieces (smoke mini reference): the example is the logged sample whose
    kept refinement changes the reward; a gradient step on L_DC raises the refinement's likelihood."""
    from study.data import load_problems

    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parents[1]))
    profile = _walk_profile(tmp_path)
    spec = ex.group_specs("fig5_dapo", profile)[0]
    run = RunLog(spec.run_dir(tmp_path / "runs"), spec.cfg.model_dump(mode="json"), 0, spec.config_hash,
                 identity=spec.identity())
    problem = load_problems("mini", split="train", limit=4, mini_profile="smoke")[2]
    common = {"task_id": problem.task_id, "prompt": problem.prompt, "response": "def f(:", "refined": "x",
              "response_tokens": ["def"], "refined_tokens": ["x"], "refined_token_ce": [1.0]}
    run.log_samples([{**common, "step": 1, "reward": -1.0, "refined_reward": -1.0, "kept": False},
                     {**common, "step": 3, "reward": -1.0, "refined_reward": -0.3, "kept": True}])
    run.mark_done()
    book = _walk(tmp_path, profile, runs_dir=str(tmp_path / "runs"))
    text = "".join(o.get("text", "") for o in _outputs(book))
    assert f"run {spec.name}, step 3: its logged response y" in text and problem.task_id in text
    assert "log π(y' | x) changed by +" in text
    table = (tmp_path / "figs" / "tables" / "walkthrough_tokens.csv").read_text()
    assert "Ġ" not in table and "Ċ" not in table  # decoded tokens, not byte-level BPE symbols
    assert not [o for o in _outputs(book) if o.get("name") == "stderr"]


@pytest.mark.slow
@pytest.mark.skipif(not _mini_world_ready(), reason="mini world not available")
def test_walkthrough_searches_without_runs(tmp_path, smoke_model_dir, monkeypatch):
    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parents[1]))
    book = _walk(tmp_path, _walk_profile(tmp_path), runs_dir=str(tmp_path / "no-runs"), max_problems=4)
    text = "".join(o.get("text", "") for o in _outputs(book))
    assert "search: " in text and "log π(y' | x) changed by" in text


@pytest.mark.slow
@pytest.mark.skipif(not (_mini_world_ready() and (paths.root() / "configs/smoke/dapo_dynamic.yaml").exists()),
                    reason="smoke configs / mini world not available")
def test_real_smoke_runs_feed_the_notebooks(tmp_path):
    """The real trainers' run folders (smoke DAPO, 2 seeds) through the notebooks that read metrics, samples
    and token CE: the formats the notebooks assume are the ones the trainers write."""
    names = ["02_dapo_vs_dynamic", "03_improvement_ratio", "04_token_heatmap", "06_qualitative"]
    m = reproduce.reproduce("smoke", only=names, figures_dir=tmp_path / "figs", runs_dir=tmp_path / "runs",
                            progress=False)
    assert set(m["notebooks"]) == set(names)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "smoke-dapo-dynamic-s0", "smoke-dapo-dynamic-s1", "smoke-dapo-s0", "smoke-dapo-s1"]
    assert (tmp_path / "figs" / "fig6_token_heatmap.png").exists()
    assert all(e["verdicts"] for e in m["notebooks"].values())
