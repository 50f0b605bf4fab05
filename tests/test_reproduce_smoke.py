"""CI executes every notebook of the smoke profile through papermill, end to end on real smoke runs (issue 5)."""

import json

from study.reproduce import NOTEBOOKS, reproduce


def test_reproduce_smoke_profile_end_to_end(tmp_path, smoke_model_dir, monkeypatch):
    monkeypatch.setenv("STUDY_ARTIFACTS", str(smoke_model_dir.parents[1]))
    fig, runs = tmp_path / "figures", tmp_path / "runs"
    manifest = reproduce("smoke", figures_dir=fig, runs_dir=runs, progress=False, jobs=1)
    names = {nb.name for nb in NOTEBOOKS}
    assert set(manifest["notebooks"]) == names
    on_disk = json.loads((fig / "MANIFEST.json").read_text())
    for name, entry in on_disk["notebooks"].items():
        assert entry["status"] == "ok" and (fig / entry["executed"]).exists()
        for out in entry["outputs"]:
            for p in out["paths"]:
                assert (fig / p).exists(), (name, p)
    assert list(fig.glob("*.png")) and list(fig.glob("*.pdf")) and list((fig / "tables").glob("*.md"))
    # a second call reuses every run and notebook
    again = reproduce("smoke", figures_dir=fig, runs_dir=runs, progress=False, jobs=1)
    assert {k: v["finished"] for k, v in again["notebooks"].items()} == \
        {k: v["finished"] for k, v in manifest["notebooks"].items()}
