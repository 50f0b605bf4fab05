"""The vLLM switches (issue 6) where vLLM is absent (our CPU machines, CI): the config maps onto TRL's
``use_vllm``, training refuses with one line and writes nothing, ``--dry-run`` says so. The vLLM code paths
themselves run only in ``tests/test_vllm.py``, which needs vLLM and CUDA."""

from __future__ import annotations

import importlib.util

import pytest

from study.cli import main
from study.config import load_config
from study.errors import UserError

NO_VLLM = importlib.util.find_spec("vllm") is None


def test_vllm_section_maps_onto_trl_grpo_config(tmp_path):
    from study.trainers.dapo import grpo_args

    cfg = load_config("configs/paper/apps_dynamic.yaml",
                      ["vllm.rollouts=true", "vllm.mode=server", "vllm.server_base_url=http://gpu0:8000",
                       "vllm.gpu_memory_utilization=0.5", "device=cpu", "dtype=float32"])
    args = grpo_args(cfg, tmp_path, "cpu")
    assert args.use_vllm and args.vllm_mode == "server" and args.vllm_server_base_url == "http://gpu0:8000"
    assert args.vllm_gpu_memory_utilization == 0.5
    assert not grpo_args(load_config("configs/paper/apps_dynamic.yaml", ["dtype=float32"]), tmp_path, "cpu").use_vllm


def test_vllm_rollouts_are_dapo_only():
    with pytest.raises(UserError, match="vllm.rollouts needs trainer: dapo"):
        load_config("configs/smoke/ppo_dynamic.yaml", ["vllm.rollouts=true"])


def test_default_vllm_section_keeps_the_config_hash():
    plain = load_config("configs/smoke/dapo_dynamic.yaml")
    assert plain.hash() == load_config("configs/smoke/dapo_dynamic.yaml", ["vllm.mode=colocate"]).hash()
    assert plain.hash() != load_config("configs/smoke/dapo_dynamic.yaml", ["vllm.refiner=true"]).hash()


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_train_without_vllm_stops_with_one_line_and_writes_nothing(tmp_path, capsys):
    rc = main(["train", "configs/smoke/dapo_dynamic.yaml", "--runs-dir", str(tmp_path), "--set", "vllm.refiner=true"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not installed" in err[0]
    assert not any(tmp_path.iterdir())
    assert main(["train", "configs/smoke/dapo_dynamic.yaml", "--dry-run", "--set", "vllm.rollouts=true"]) == 0
    out = capsys.readouterr().out
    assert "rollouts=vllm (colocate)" in out and "vLLM is not installed here" in out
