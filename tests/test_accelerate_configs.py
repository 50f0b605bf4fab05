"""configs/accelerate/*.yaml under accelerate 1.15, on CPU: parsed by accelerate, then launched for real.

What is executed (2 gloo processes on this CPU machine, each ``accelerate launch --config_file <cfg>``):
- every file is read by accelerate's own loader (``ClusterConfig.from_yaml_file``, which rejects unknown keys);
- ``ddp.yaml`` (MULTI_GPU) and ``cpu2.yaml`` with ``--num_processes 2``: torch.distributed.run starts 2 processes;
  with ``Accelerator(cpu=True)`` (what ``device: cpu`` does through TRL's ``use_cpu``) each is MULTI_CPU on gloo.
  ``cpu2.yaml`` without ``cpu=True`` gives 2 processes that each think they are alone (DistributedType.NO): the
  caveat its header states;
- ``zero2.yaml`` / ``zero3.yaml`` with ``--num_processes 2``, ``DS_ACCELERATOR=cpu`` (DeepSpeed's CPU accelerator)
  and gloo named explicitly (accelerate 1.15 finds no backend for DeepSpeed without CUDA): a DeepSpeedEngine at
  ZeRO stage 2 / 3, mixed precision bf16 as the configs say;
- ``multinode.yaml`` as two "machines" on one host (machine_rank 0 and 1, main_process_ip 127.0.0.1, one process
  each): the static rendezvous joins them into one gloo group of 2.
In each launch ``tests/accelerate_probe.py`` runs ``accelerator.prepare(model, optimizer)`` on a tiny
``LlamaForCausalLM`` + AdamW and one forward / backward / optimizer step on different inputs per rank; the test
checks the distributed type, world size, ZeRO stage, that ZeRO-3 holds half the parameters per rank and ZeRO-2
half the fp32 optimizer partition, and that the weights after the step are equal on both ranks (synchronised
gradients).

What is NOT executed: no CUDA device, no NCCL, no CUDA kernel and no compiled DeepSpeed op (DeepSpeed ops are
not built, ``DS_BUILD_OPS=0``), no ZeRO-3 ``zero3_init_flag`` partitioning at ``from_pretrained`` time, no study
trainer under DeepSpeed, no offload, no real second machine, and none of the 4-GPU / 8-process settings as such.
The DeepSpeed tests are skipped only where deepspeed cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs" / "accelerate"
PROBE = ROOT / "tests" / "accelerate_probe.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _accelerate() -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch"]


def _launch(cfg: Path, *args: str, env: dict[str, str], out: Path, timeout: int = 300) -> list[dict]:
    cmd = [*_accelerate(), "--config_file", str(cfg), *args, str(PROBE)]
    p = subprocess.run(cmd, cwd=ROOT, env={**env, "PROBE_OUT": str(out)}, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return _probes(out)


def _probes(out: Path) -> list[dict]:
    """One JSON file per process (rank0.json, rank1.json, ...), sorted by rank."""
    rows = [json.loads(f.read_text()) for f in out.glob("rank*.json")]
    return sorted(rows, key=lambda r: r["rank"])


def _synchronised(rows: list[dict]) -> None:
    assert [r["rank"] for r in rows] == [0, 1]
    assert rows[0]["loss"] != rows[1]["loss"]  # each rank saw its own inputs ...
    assert rows[0]["checksum"] == pytest.approx(rows[1]["checksum"], rel=1e-6)  # ... and the update is shared


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "cpu2", "multinode"])
def test_accelerate_reads_the_config(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    c = ClusterConfig.from_yaml_file(str(CFG / f"{name}.yaml"))
    want = {"ddp": DistributedType.MULTI_GPU, "zero2": DistributedType.DEEPSPEED, "zero3": DistributedType.DEEPSPEED,
            "cpu2": DistributedType.MULTI_GPU, "multinode": DistributedType.MULTI_GPU}[name]
    assert c.distributed_type == want
    if name.startswith("zero"):
        assert c.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "multinode":
        assert (c.num_machines, c.num_processes, c.machine_rank, c.rdzv_backend) == (2, 8, 0, "static")
        assert c.main_process_ip and c.main_process_port


@pytest.mark.parametrize("name", ["ddp", "cpu2"])
def test_ddp_configs_prepare_two_gloo_processes(name, tmp_path):
    rows = _launch(CFG / f"{name}.yaml", "--num_processes", "2", env=_env(PROBE_CPU="1"), out=tmp_path)
    for r in rows:
        assert (r["distributed_type"], r["backend"], r["num_processes"]) == ("MULTI_CPU", "gloo", 2)
        assert r["model_class"] == "DistributedDataParallel"
        assert r["mixed_precision"] == ("bf16" if name == "ddp" else "no")
    _synchronised(rows)


def test_cpu2_without_cpu_true_gives_unaware_processes(tmp_path):
    """The caveat in cpu2.yaml's header: 2 processes, each DistributedType.NO, when the program does not ask for
    the CPU on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("with CUDA the same config uses the GPUs")
    p = subprocess.run([*_accelerate(), "--config_file", str(CFG / "cpu2.yaml"), str(PROBE)], cwd=ROOT,
                       env={**_env(), "PROBE_OUT": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    # both processes call themselves rank 0 and write the same file: count their lines on stdout instead
    assert p.stdout.count("PROBE_DONE") == 2
    rows = _probes(tmp_path)
    assert len(rows) == 1 and all(r["distributed_type"] == "NO" and r["num_processes"] == 1 for r in rows)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_configs_prepare_a_deepspeed_engine_on_the_cpu_accelerator(stage, tmp_path):
    pytest.importorskip("deepspeed")
    rows = _launch(CFG / f"zero{stage}.yaml", "--num_processes", "2",
                   env=_env(DS_ACCELERATOR="cpu", DS_BUILD_OPS="0", PROBE_GLOO="1"), out=tmp_path)
    for r in rows:
        assert (r["distributed_type"], r["backend"], r["num_processes"]) == ("DEEPSPEED", "gloo", 2)
        assert (r["model_class"], r["zero_stage"], r["ds_accelerator"]) == ("DeepSpeedEngine", stage, "cpu")
        assert r["mixed_precision"] == "bf16"
        if stage == 3:  # weights sharded over the 2 ranks
            assert r["local_param_frac"] == pytest.approx(0.5, abs=0.01)
        else:  # weights replicated, fp32 optimizer partition sharded
            assert r["local_param_frac"] == 1.0
            assert r["local_optim_frac"] == pytest.approx(0.5, abs=0.01)
    _synchronised(rows)


def test_multinode_config_joins_two_machines_on_one_host(tmp_path):
    """multinode.yaml as given, with only what its comments say to change: the address (loopback here), a port,
    and num_processes 2 (one process per 'machine'); machine_rank passed on the command line."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = (CFG / "multinode.yaml").read_text()
    text = text.replace("num_processes: 8 ", "num_processes: 2 ").replace("main_process_ip: 10.0.0.1 ",
                                                                        "main_process_ip: 127.0.0.1 ")
    text = text.replace("main_process_port: 29500 ", f"main_process_port: {port} ")
    cfg = tmp_path / "multinode.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    procs = [subprocess.Popen([*_accelerate(), "--config_file", str(cfg), "--machine_rank", str(r), str(PROBE)],
                              cwd=ROOT, env={**_env(PROBE_CPU="1"), "PROBE_OUT": str(out)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rows = _probes(out)
    for r in rows:
        assert (r["distributed_type"], r["backend"], r["num_processes"]) == ("MULTI_CPU", "gloo", 2)
    _synchronised(rows)
