"""The notebooks: in sync with notebooks/_build.py, committed clean, and executed by papermill (through
``study reproduce``) against synthetic runs. The walkthrough runs on the real smoke pieces when they exist."""

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

from study import experiments as ex
from study import reproduce

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"


def _load_build():
    spec = importlib.util.spec_from_file_location("nb_build", NB_DIR / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebooks_match_build_script_and_are_clean():
    build = _load_build()
    assert set(build.NOTEBOOKS) == {n.name for n in reproduce.NOTEBOOKS}
    for name, want in build.NOTEBOOKS.items():
        have = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
        assert [c.source for c in have.cells] == [c.source for c in want.cells], \
            f"{name}.ipynb is stale: run python notebooks/_build.py"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in have.cells if c.cell_type == "code")
        tagged = [c for c in have.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "profile = " in tagged[0].source
        assert have.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    profile = ex.write_synthetic_profile(root / "w", seeds=(0, 1, 2), steps=10)
    figs = root / "figs"
    names = [n.name for n in reproduce.NOTEBOOKS if n.name != "walkthrough"]
    manifest = reproduce.reproduce(profile, only=names, figures_dir=figs, runs_dir=root / "w" / "runs",
                                   train=False, progress=False)
    return manifest, figs, profile, root / "w" / "runs"


def test_every_analysis_notebook_runs_and_writes_its_outputs(executed):
    manifest, figs, _, _ = executed
    expected = {
        "00_reference_model": {"reference_model", "reference_learning_curve"},
        "01_training_dynamics": {"fig4_training_dynamics"},
        "02_dapo_vs_dynamic": {"fig5a_reward", "table1_pass_at_1"},
        "03_improvement_ratio": {"fig5b_improvement_ratio"},
        "04_token_heatmap": {"fig6_token_heatmap"},
        "05_ablations": {"fig7_lambda", "filter_ablation"},
        "06_qualitative": {"qualitative_refinements"},
        "07_hyperparameters": {"table2_ppo", "table2_dapo", "training_cost"},
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
    assert v[0].startswith("final reward dynamic − static = +") and v[0].endswith("claim reproduced")
    assert "over 3 seeds" in v[0]
    t1 = (figs / "tables" / "table1_pass_at_1.md").read_text()
    assert "| initial model | 30.0 | 30.0 |" in t1
    assert json.loads((figs / "MANIFEST.json").read_text())["outputs"]["fig6_token_heatmap"]["notebook"] == "04_token_heatmap"


def test_heatmap_notebook_parameters_pick_the_sample(executed, tmp_path):
    import papermill as pm

    _, _, profile, runs = executed
    out = tmp_path / "04.ipynb"
    pm.execute_notebook(str(NB_DIR / "04_token_heatmap.ipynb"), str(out), kernel_name="python3", cwd=str(NB_DIR),
                        progress_bar=False, parameters={"profile": str(profile), "runs_dir": str(runs),
                                                         "figures_dir": str(tmp_path / "f"), "seed": 1, "step": 3})
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "sample: syn-dapo_dynamic-s1 step 3 " in text and "this sample: CE on the copied prefix" in text
    assert (tmp_path / "f" / "fig6_token_heatmap.png").exists()


def _mini_world_ready() -> bool:
    try:
        from study.data import load_problems  # noqa: F401
        from study.mini import ensure_reference  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _mini_world_ready(), reason="mini world not available")
def test_walkthrough_runs_on_the_smoke_reference(tmp_path):
    """The method step by step with the real pieces (smoke mini reference, trained on first use, ~10 s)."""
    import papermill as pm
    import yaml

    (tmp_path / "dyn.yaml").write_text(yaml.safe_dump({
        "name": "walk-dyn", "trainer": "dapo", "model": "mini:smoke", "data": {"source": "mini", "mini_profile": "smoke", "limit": 4},
        "constraint": {"mode": "dynamic"}, "rollout": {"num_generations": 4, "max_completion_length": 32},
        "refiner": {"max_new_tokens": 32}}))
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({"profile": "walk", "groups": {
        "fig5_dapo": {"configs": {"dynamic": "dyn.yaml"}, "seeds": [0]}}}))
    out = tmp_path / "walk.ipynb"
    pm.execute_notebook(str(NB_DIR / "walkthrough.ipynb"), str(out), kernel_name="python3", cwd=str(NB_DIR),
                        progress_bar=False, parameters={"profile": str(tmp_path / "profile.yaml"),
                                                         "figures_dir": str(tmp_path / "figs")})
    nb = nbformat.read(out, as_version=4)
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "log π(y' | x) changed by +" in last  # a gradient step on L_DC raises the refinement's likelihood
    assert (tmp_path / "figs" / "tables" / "walkthrough_tokens.csv").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (_mini_world_ready() and (ROOT / "configs/smoke/dapo_dynamic.yaml").exists()),
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
