"""study.memory: the per-GPU memory ESTIMATE (parameter counts x bytes per parameter; activations excluded).

The expected numbers are worked out by hand below from the byte model in study/memory.py's docstring (trained:
2 + 2 + 12 B/param, frozen: 2 B/param; ZeRO-2 shards grads + Adam over N, ZeRO-3 also the weights and the frozen
models). Sharding the wrong thing (frozen models under ZeRO-2, weights under ZeRO-2, anything under DDP) changes
at least one of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from study import memory

ROOT = Path(__file__).resolve().parents[1]

QWEN_1_5B = 1_543_714_304  # 1.54B on the model card
LLAMA_3B = 3_212_749_824  # 3.21B
LLAMA_8B = 8_030_261_248  # 8.03B


def test_parameter_counts_from_the_configs_match_the_model_cards():
    assert memory.QWEN25_CODER_1_5B.causal_lm() == QWEN_1_5B
    assert memory.LLAMA32_3B.causal_lm() == LLAMA_3B
    assert memory.LLAMA3_8B.causal_lm() == LLAMA_8B
    assert round(QWEN_1_5B / 1e9, 2) == 1.54 and round(LLAMA_3B / 1e9, 2) == 3.21 and round(LLAMA_8B / 1e9, 2) == 8.03
    # non-embedding parameters, Qwen2.5-Coder-1.5B's card: 1.31B
    assert round((QWEN_1_5B - 151936 * 1536) / 1e9, 2) == 1.31
    # critic = 3B body (tied embeddings: the LM head adds nothing) + a 3072 -> 1 head
    assert memory.LLAMA32_3B.scalar_head() == LLAMA_3B + 3072
    # reward model = 8B without its untied 128256 x 4096 LM head, + a 4096 -> 1 score head
    assert memory.LLAMA3_8B.scalar_head() == LLAMA_8B - 128256 * 4096 + 4096


P = QWEN_1_5B  # DAPO: trained policy P, frozen reference P
T = 2 * LLAMA_3B + 3072  # PPO: trained policy + critic
F = LLAMA_3B + (LLAMA_8B - 128256 * 4096 + 4096)  # PPO dialogue: frozen reference + reward model


@pytest.mark.parametrize("strategy,n,trained,frozen,want", [
    # DAPO: DDP keeps 16 B/param of the policy + 2 of the reference on every GPU, whatever N
    ("DDP", 4, P, P, 18 * P),
    ("DDP", 8, P, P, 18 * P),
    # ZeRO-2, 4 GPUs: weights 2P + (grads 2P + Adam 12P) / 4 + frozen 2P (replicated) = 7.5 P
    ("ZeRO-2", 4, P, P, 7.5 * P),
    ("ZeRO-2", 8, P, P, 2 * P + 14 * P / 8 + 2 * P),
    # ZeRO-3, 8 GPUs: (16P + 2P) / 8
    ("ZeRO-3", 8, P, P, 2.25 * P),
    # PPO, dialogue: DDP 16T + 2F; ZeRO-2 / 8: 2T + 14T/8 + 2F; ZeRO-3 / 4: 16T/4 + 2F/4
    ("DDP", 4, T, F, 16 * T + 2 * F),
    ("ZeRO-2", 8, T, F, 3.75 * T + 2 * F),
    ("ZeRO-3", 4, T, F, 4 * T + 0.5 * F),
])
def test_per_gpu_bytes_by_hand(strategy, n, trained, frozen, want):
    assert memory.per_gpu_bytes(trained, frozen, strategy, n)["total"] == pytest.approx(want, rel=1e-12)


def test_components_shard_as_documented():
    b = {s: memory.per_gpu_bytes(1000, 100, s, 4) for s in memory.STRATEGIES}
    assert (b["DDP"]["weights"], b["DDP"]["grads"], b["DDP"]["optimizer"], b["DDP"]["frozen"]) == (2000, 2000, 12000, 200)
    assert (b["ZeRO-2"]["weights"], b["ZeRO-2"]["grads"], b["ZeRO-2"]["optimizer"], b["ZeRO-2"]["frozen"]) == (2000, 500, 3000, 200)
    assert (b["ZeRO-3"]["weights"], b["ZeRO-3"]["grads"], b["ZeRO-3"]["optimizer"], b["ZeRO-3"]["frozen"]) == (500, 500, 3000, 50)
    with pytest.raises(ValueError):
        memory.per_gpu_bytes(1, 1, "FSDP", 4)


def test_table_rows_and_values():
    df = memory.estimate()
    assert len(df) == 3 * 3 * 2  # setups x strategies x {4, 8}
    ppo = df[df.setup.str.contains("8B reward model")]
    z3_8 = ppo[(ppo.strategy == "ZeRO-3") & (ppo.gpus == 8)].iloc[0]
    assert z3_8.total_GB == pytest.approx((16 * T + 2 * F) / 8 / 1e9)
    dapo_ddp = df[df.setup.str.startswith("DAPO") & (df.strategy == "DDP")]
    assert dapo_ddp.total_GB.nunique() == 1  # DDP does not depend on N


def test_module_prints_the_estimate_table_and_the_readme_carries_it():
    out = subprocess.run([sys.executable, "-m", "study.memory"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "ESTIMATE" in out and "activations" in out
    assert sum(l.startswith("| ") and "GPU" not in l for l in out.splitlines()) == 18
    assert memory.markdown().strip() in (ROOT / "README.md").read_text()
