"""CI executes every notebook of the smoke profile through papermill, end to end on real smoke runs (issue 5)."""

import json

import nbformat

from study.reproduce import NOTEBOOKS, reproduce
from study.verdicts import CLAIMS


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
    for name, entry in on_disk["notebooks"].items():  # the real runs' notebooks: figures inline, no stderr
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
    # a second call reuses every run and notebook
    again = reproduce("smoke", figures_dir=fig, runs_dir=runs, progress=False, jobs=1)
    assert {k: v["finished"] for k, v in again["notebooks"].items()} == \
        {k: v["finished"] for k, v in manifest["notebooks"].items()}
