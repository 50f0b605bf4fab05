"""study.explore: annotations, the HTML of one sample, the static view, the widgets, the page's data."""

import base64
import gzip
import json
import re

import pandas as pd
import pytest

from fixtures.synthetic import write_synthetic_profile
from study import explore


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    profile = write_synthetic_profile(root, seeds=(0, 1), steps=4)
    return profile, root / "runs"


def _row(**kw):
    base = {"step": 3, "task_id": "mini/train/cond-0004", "prompt": "p", "response": "ab", "refined": "ax",
            "reward": -0.3, "refined_reward": 1.0, "kept": True, "response_tokens": ["a", "b"],
            "refined_tokens": ["a", "x", "\n"], "refined_token_ce": [0.01, 2.5, 0.7], "label": "dynamic", "seed": 0}
    return {**base, **kw}


def test_family_change_and_annotations():
    assert explore.family("mini/train/cond-0004") == "cond" and explore.family("HumanEval/12") == "HumanEval"
    s = explore.annotate(pd.DataFrame([
        _row(), _row(refined="ab", refined_tokens=["a", "b"], refined_token_ce=[0.0, 0.0], refined_reward=-0.3),
        _row(refined_reward=-0.6, kept=False), _row(refined=None, refined_tokens=None, refined_token_ce=None,
                                                   refined_reward=None, kept=False)]))
    assert s["change"].tolist() == ["improved", "verbatim", "worse", "not refined"]
    a = s.iloc[0]
    assert (a["first_change"], a["ce_before"], a["ce_after"]) == (1, pytest.approx(0.01), pytest.approx(1.6))
    assert a["diff"] == [["replace", 1, 2, 1, 3]] and a["family"] == "cond"


def test_sample_html_colours_tokens_and_shows_ce_on_hover():
    row = explore.annotate(pd.DataFrame([_row()])).iloc[0].to_dict()
    h = explore.sample_html(row)
    assert 'title="token 1: CE 2.5 nats"' in h and 'title="token 0: CE 0.01 nats"' in h
    assert "line-through" in h and "outline" in h  # y's replaced token struck through; the first change boxed
    assert "r(y) = -0.3, r(y') = 1" in h and "first change at token 1" in h
    assert explore.ce_color(2.5, 2.5) == "rgb(255,55,55)" and explore.ce_color(0.0, 2.5) == "rgb(255,255,255)"


def test_static_view_under_study_reproduce(syn, monkeypatch):
    profile, runs = syn
    monkeypatch.setenv("STUDY_BATCH", "1")
    h = explore.explore(profile, runs, group="fig5_dapo", arm="dynamic", seed=1, step=3)
    assert type(h).__name__ == "HTML"
    assert "static view" in h.data and "seed 1 · step 3" in h.data and "arm <b>dynamic</b>" in h.data
    assert "<table" in h.data  # the count overview


def test_widgets_select_and_filter(syn, monkeypatch):
    pytest.importorskip("ipywidgets")
    profile, runs = syn
    monkeypatch.delenv("STUDY_BATCH", raising=False)
    ui = explore.explore(profile, runs, group="filter_ablation", arm="no_filter")
    (g, a, s, t), (k, c, f), i, out = ui.children[0].children, ui.children[1].children, ui.children[2], ui.children[3]
    assert g.value == "filter_ablation" and a.value == "no_filter" and t.value == 4  # latest step by default
    assert "kept (improved)" in out.value
    k.value, c.value, s.value, t.value = "all", "worse", "1", 2
    assert "not kept (worse)" in out.value and "seed 1 · step 2" in out.value
    f.value = "arith"  # the synthetic worse refinements are cond/list problems
    assert out.value == "<p>no sample matches these filters</p>"


def test_page_data_dedupes_runs_shared_by_groups(syn, tmp_path):
    profile, runs = syn
    page = explore.write_page(profile, runs, tmp_path / "e.html")
    blob = re.search(r'<script id="data" type="application/octet-stream">(.*?)</script>', page.read_text(), re.S)
    data = json.loads(gzip.decompress(base64.b64decode(blob.group(1))))
    assert "syn-dapo_dynamic-s0" in data["runs"]
    assert ["syn-dapo_dynamic-s0", "dynamic", 0] in data["groups"]["fig5_dapo"]
    assert ["syn-dapo_dynamic-s0", "filter", 0] in data["groups"]["filter_ablation"]  # one run, two groups
    logged = [json.loads(x) for x in (runs / "syn-dapo_dynamic-s0" / "samples.jsonl").read_text().splitlines()]
    assert len(data["runs"]["syn-dapo_dynamic-s0"]) == len(logged)
    assert [x["ce"] for x in data["runs"]["syn-dapo_dynamic-s0"]] == [r["refined_token_ce"] for r in logged]
