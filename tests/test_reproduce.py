"""``study reproduce`` bookkeeping on synthetic runs: the run cache, the manifest, resuming, failures.

Training and notebook execution are replaced by fakes here; tests/test_notebooks.py runs the real notebooks."""

import json
import os
from pathlib import Path

import pytest
import yaml

from fixtures.synthetic import write_synthetic_profile, write_synthetic_run
from study import experiments as ex
from study import outputs, reproduce
from study.cli import main
from study.errors import UserError


@pytest.fixture()
def syn(tmp_path):
    profile = write_synthetic_profile(tmp_path / "w", seeds=(0, 1), steps=6)
    return profile, tmp_path / "w" / "runs"


@pytest.fixture()
def fake_training(monkeypatch):
    """Replace study.train.run_training by a writer of synthetic run folders; records the runs it 'trained'."""
    trained = []

    def fake(cfg, runs_dir="runs", resume=False):
        spec = next(s for g in ("fig4_ppo", "fig5_dapo", "fig7_lambda", "filter_ablation")
                    for s in ex.group_specs(g, fake.profile) if s.name == cfg.name)
        trained.append(cfg.name + (" (resumed)" if resume else ""))
        return write_synthetic_run(spec, runs_dir, steps=4)

    import study.train

    monkeypatch.setattr(study.train, "run_training", fake)
    fake.trained = trained
    return fake


def test_ensure_runs_trains_only_missing_or_stale_runs(syn, fake_training, tmp_path):
    profile, _ = syn
    fake_training.profile = profile
    runs = tmp_path / "fresh_runs"
    dirs = ex.ensure_runs("fig5_dapo", profile, runs, progress=False)
    assert [d.name for d in dirs] == ["syn-dapo-s0", "syn-dapo-s1", "syn-dapo_dynamic-s0", "syn-dapo_dynamic-s1",
                                      "syn-dapo_kl-s0", "syn-dapo_kl-s1"]
    assert fake_training.trained == [d.name for d in dirs]
    assert all((d / "DONE").exists() for d in dirs)
    ex.ensure_runs("fig5_dapo", profile, runs, progress=False)
    assert len(fake_training.trained) == 6  # all cached
    (runs / "syn-dapo-s1" / "DONE").unlink()  # an interrupted run is retrained...
    ex.ensure_runs("fig5_dapo", profile, runs, progress=False)
    assert fake_training.trained[6:] == ["syn-dapo-s1"]
    # (resuming from a checkpoint a trainer wrote: tests/test_resume.py)
    # a config change (here: a group override) changes the run key -> every run of the group retrains
    prof = yaml.safe_load(profile.read_text())
    prof["groups"]["fig5_dapo"]["overrides"] = ["optim.learning_rate=2e-6"]
    profile.write_text(yaml.safe_dump(prof))
    ex.ensure_runs("fig5_dapo", profile, runs, progress=False)
    assert len(fake_training.trained) == 13
    ex.ensure_runs("fig5_dapo", profile, runs, force=True, progress=False)
    assert len(fake_training.trained) == 19
    assert not any("resumed" in t for t in fake_training.trained[13:])


def _fake_execute(calls, fail_on=()):
    """Stands in for papermill: 'runs' the notebook by saving one figure and one note through study.outputs."""
    import matplotlib.pyplot as plt

    def fake(src, dst, parameters, log_path, cwd):
        calls.append(src.stem)
        if src.stem in fail_on:
            raise UserError(f"notebook {src.stem} failed in cell 3: ValueError: boom")
        os.environ[outputs.OUTPUT_LOG_ENV] = str(log_path)
        try:
            fig, _ = plt.subplots()
            outputs.save_figure(fig, f"fig_{src.stem}", parameters["figures_dir"])
            outputs.note(f"{src.stem}: +1.0 [0.5, 1.5]")
        finally:
            del os.environ[outputs.OUTPUT_LOG_ENV]
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        Path(dst).write_text("{}")

    return fake


def test_manifest_records_outputs_runs_and_resumes(syn, tmp_path, monkeypatch):
    profile, runs = syn
    calls = []
    monkeypatch.setattr(reproduce, "execute_notebook", _fake_execute(calls))
    figs = tmp_path / "figs"
    m = reproduce.reproduce(profile, only=["02_dapo_vs_dynamic,05_ablations"], figures_dir=figs, runs_dir=runs,
                            train=False, progress=False)
    assert calls == ["02_dapo_vs_dynamic", "05_ablations"]
    on_disk = json.loads((figs / "MANIFEST.json").read_text())
    assert on_disk == m and m["profile"] == "synthetic"
    e = m["notebooks"]["02_dapo_vs_dynamic"]
    assert e["status"] == "ok" and e["executed"] == "notebooks/02_dapo_vs_dynamic.ipynb"
    assert [{k: o[k] for k in ("kind", "name", "paths")} for o in e["outputs"]] == [
        {"kind": "figure", "name": "fig_02_dapo_vs_dynamic",
         "paths": ["fig_02_dapo_vs_dynamic.png", "fig_02_dapo_vs_dynamic.pdf"]}]
    assert set(e["outputs"][0]["sha256"]) == {"fig_02_dapo_vs_dynamic.png", "fig_02_dapo_vs_dynamic.pdf"}
    assert e["verdicts"] == ["02_dapo_vs_dynamic: +1.0 [0.5, 1.5]"]
    assert {(r["label"], r["seed"]) for r in e["runs"]} == {("dapo", 0), ("dapo", 1), ("dynamic", 0), ("dynamic", 1),
                                                             ("dapo_kl", 0), ("dapo_kl", 1)}
    specs = ex.group_specs("fig5_dapo", profile)
    assert {r["config_hash"] for r in e["runs"]} == {s.config_hash for s in specs}
    assert e["git_commit"] and e["wall_time_s"] >= 0
    out = m["outputs"]["fig_05_ablations"]
    assert out["notebook"] == "05_ablations" and out["seeds"] == [0, 1] and len(out["config_hashes"]) == 2 + 4  # λ: 2x1 seed, filter: 2x2

    # resume: nothing changed -> nothing re-executed
    reproduce.reproduce(profile, figures_dir=figs, runs_dir=runs, train=False, progress=False,
                        only=["02_dapo_vs_dynamic", "05_ablations"])
    assert len(calls) == 2
    # a deleted output or a retrained run re-executes only the notebooks concerned
    (figs / "fig_05_ablations.pdf").unlink()
    reproduce.reproduce(profile, figures_dir=figs, runs_dir=runs, train=False, progress=False,
                        only=["02_dapo_vs_dynamic", "05_ablations"])
    assert calls[2:] == ["05_ablations"]
    write_synthetic_run(specs[0], runs, steps=6)
    os.utime(runs / specs[0].name / "DONE", ns=(1, 10**18))
    reproduce.reproduce(profile, figures_dir=figs, runs_dir=runs, train=False, progress=False,
                        only=["02_dapo_vs_dynamic", "05_ablations"])
    assert calls[3:] == ["02_dapo_vs_dynamic"]
    reproduce.reproduce(profile, figures_dir=figs, runs_dir=runs, train=False, progress=False, force=True,
                        only=["05_ablations"])
    assert calls[4:] == ["05_ablations"]


def test_failing_notebook_exits_2_with_one_line_and_keeps_finished_outputs(syn, tmp_path, monkeypatch, capsys):
    profile, runs = syn
    calls = []
    monkeypatch.setattr(reproduce, "execute_notebook", _fake_execute(calls, fail_on={"03_improvement_ratio"}))
    figs = tmp_path / "figs"
    rc = main(["reproduce", "--profile", str(profile), "--runs-dir", str(runs), "--figures-dir", str(figs),
               "--no-train", "--only", "02_dapo_vs_dynamic,03_improvement_ratio,04_token_heatmap"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == ("study reproduce: error: notebook 03_improvement_ratio failed in cell 3: ValueError: boom")
    assert calls == ["02_dapo_vs_dynamic", "03_improvement_ratio"]  # stops at the failure
    m = json.loads((figs / "MANIFEST.json").read_text())
    assert list(m["notebooks"]) == ["02_dapo_vs_dynamic"] and (figs / "fig_02_dapo_vs_dynamic.png").exists()


def test_missing_runs_without_training_is_a_user_error(syn, tmp_path, capsys):
    profile, _ = syn
    rc = main(["reproduce", "--profile", str(profile), "--runs-dir", str(tmp_path / "empty"),
               "--figures-dir", str(tmp_path / "f"), "--no-train", "--only", "03_improvement_ratio"])
    assert rc == 2
    assert "runs missing or stale" in capsys.readouterr().err


def test_cli_arguments_and_defaults(capsys):
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "04_token_heatmap" in listing and "fig5_dapo" in listing
    assert main(["reproduce", "--only", "99_nope", "--no-train"]) == 2
    assert "unknown notebook(s) 99_nope" in capsys.readouterr().err
    assert main(["reproduce", "--profile", "nope"]) == 2
    from study import paths

    assert reproduce.default_figures_dir("mini") == paths.root() / "figures"
    assert reproduce.default_figures_dir("smoke") == paths.root() / "figures" / "smoke"
    assert [n.name for n in reproduce.select(None)][0] == "00_reference_model"


def test_shipped_profiles_are_well_formed():
    for name in ("smoke", "mini", "mini-fig5", "mini-full", "paper"):
        prof = ex.load_profile(name)
        nbs = reproduce.select(prof.notebooks)
        needed = {g for nb in nbs for g in nb.groups}
        assert needed <= set(prof.groups), name
        for g, spec in prof.groups.items():
            assert spec["configs"] and spec["seeds"], (name, g)
    # the main job leaves only notebook 08 (beyond the paper) to mini-full, which runs everything
    assert {n.name for n in reproduce.NOTEBOOKS} - set(ex.load_profile("mini").notebooks) == {"08_beyond_the_paper"}
    assert ex.load_profile("mini-full").notebooks is None
    assert len(ex.load_profile("mini").groups["fig5_dapo"]["seeds"]) >= 3
    assert len(ex.load_profile("mini-full").groups["fig5_dapo"]["seeds"]) >= 10
    # mini-fig5: the main job's Fig. 5 arms and configs with more seeds (the main job's 3 among them, reused)
    fig5, main5 = ex.load_profile("mini-fig5").groups["fig5_dapo"], ex.load_profile("mini").groups["fig5_dapo"]
    assert fig5["configs"] == main5["configs"] and set(main5["seeds"]) < set(fig5["seeds"])
    for prof, want in (("mini", {"0.5": 0.5, "2.0": 2.0}), ("mini-full", {"0.1": 0.1, "0.5": 0.5, "2.0": 2.0})):
        assert {s.label: s.cfg.constraint.coef for s in ex.group_specs("fig7_lambda", prof)} == want


def test_profile_notebooks_key_selects_runs_and_checks(syn, tmp_path, monkeypatch):
    """A profile's ``notebooks:`` list is what reproduce runs without --only, what --check holds it to, and the
    manifest drops entries of notebooks the profile no longer runs."""
    profile, runs = syn
    raw = yaml.safe_load(Path(profile).read_text())
    raw["notebooks"] = ["02_dapo_vs_dynamic"]
    only02 = Path(profile).with_name("only02.yaml")
    only02.write_text(yaml.safe_dump(raw))
    calls = []
    monkeypatch.setattr(reproduce, "execute_notebook", _fake_execute(calls))
    figs = tmp_path / "figs"
    reproduce.reproduce(profile, only=["03_improvement_ratio"], figures_dir=figs, runs_dir=runs, train=False,
                        progress=False)
    reproduce.reproduce(only02, figures_dir=figs, runs_dir=runs, train=False, progress=False)
    assert calls == ["03_improvement_ratio", "02_dapo_vs_dynamic"]
    m = json.loads((figs / "MANIFEST.json").read_text())
    assert list(m["notebooks"]) == ["02_dapo_vs_dynamic"]
    assert reproduce.check(only02, figures_dir=figs) == []
    assert any("03_improvement_ratio: not in the manifest" in p for p in reproduce.check(profile, figures_dir=figs))
    raw["notebooks"] = "02_dapo_vs_dynamic"
    only02.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="notebooks must be a list"):
        ex.load_profile(only02)


def test_parallel_training_starts_the_longest_runs_first():
    """With --jobs > 1 the mini job's 80-step DAPO runs start before its 25-step PPO runs (stable within a size)."""
    prof = ex.load_profile("mini")
    specs = [s for g in ("fig4_ppo", "fig5_dapo") for s in ex.group_specs(g, prof)]
    order = ex.longest_first(specs)
    assert [s.cfg.trainer for s in order] == ["dapo"] * 6 + ["ppo"] * 6
    assert [s.name for s in order[:6]] == [s.name for s in specs if s.cfg.trainer == "dapo"]
    assert ex.rollouts_planned(order[0]) == 80 * 8 * 8 and ex.rollouts_planned(order[-1]) == 25 * 16 * 2


def test_per_label_overrides_keep_run_folders_apart():
    specs = ex.group_specs("fig7_lambda", "paper")
    assert [s.label for s in specs] == ["0.01", "0.1", "1.0"]
    assert [s.cfg.constraint.coef for s in specs] == [0.01, 0.1, 1.0]
    assert len({s.name for s in specs}) == 3 and len({s.config_hash for s in specs}) == 3
    nf = {s.label: s for s in ex.group_specs("filter_ablation", "paper")}
    assert nf["filter"].cfg.constraint.filter and not nf["no_filter"].cfg.constraint.filter


def test_readme_verdict_table_is_spliced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    assert not reproduce.write_readme_verdicts(readme, "| a |", {})  # no README: nothing written
    readme.write_text("intro\n\nno markers here\n")
    assert not reproduce.write_readme_verdicts(readme, "| a |", {}) and "| a |" not in readme.read_text()
    readme.write_text(f"intro\n{reproduce.README_BEGIN}\nold table\n{reproduce.README_END}\nafter\n")
    m = {"profile": "mini", "git_commit": "0123456789abcdef"}
    assert reproduce.write_readme_verdicts(readme, "| claim |\n|---|\n| dapo_learns |\n", m)
    text = readme.read_text()
    assert "old table" not in text and "| dapo_learns |" in text and "`0123456789ab`" in text
    assert text.startswith("intro\n") and text.endswith(f"{reproduce.README_END}\nafter\n")
    once = text
    reproduce.write_readme_verdicts(readme, "| claim |\n|---|\n| dapo_learns |\n", m)
    assert readme.read_text() == once  # idempotent


def test_an_unknown_notebook_in_a_profile_is_named_as_the_profile_s(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("profile: p\ngroups: {}\nnotebooks: [00_reference_model, 99_nope]\n")
    with pytest.raises(UserError, match=r"p\.yaml: notebooks: unknown notebook\(s\) 99_nope"):
        reproduce.reproduce(str(prof), train=False, figures_dir=tmp_path / "figs", progress=False)
    with pytest.raises(UserError, match=r"^--only: unknown notebook\(s\) 99_nope"):
        reproduce.select(["99_nope"])
