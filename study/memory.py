"""Per-GPU memory ESTIMATE for the paper's runs, computed from parameter counts (not a measurement).

    python -m study.memory            # prints the Markdown table the README carries

What is counted, per GPU, in GB (10^9 bytes). Nothing here has been measured on a GPU.

Byte model (mixed-precision training as in the ZeRO paper, Rajbhandari et al. 2020, Sec. 3: 2 + 2 + K bytes per
parameter with K = 12 for Adam):
- a **trained** model (the policy; PPO's critic too): bf16 weights 2 B/param, bf16 gradients 2 B/param, fp32 Adam
  states 12 B/param (fp32 master weights 4 + first moment m 4 + second moment v 4): 16 B/param in all;
- a **frozen** model (reference / refiner, reward model): bf16 weights only, 2 B/param.

Sharding over N GPUs:
- **DDP**: every GPU holds everything (trained and frozen models replicated);
- **ZeRO-2**: gradients and optimizer states of the trained models are sharded over N (``(2 + 12) / N``); their bf16
  weights and the frozen models are replicated;
- **ZeRO-3**: the trained models' weights are sharded too (``16 / N``), and so are the frozen models (``2 / N``).

Not counted, so real use is higher: activations (they scale with batch x sequence length, 1,024 + 1,024 tokens
here; gradient checkpointing changes them a lot), the KV cache of generation (rollouts and refinements), logits
(vocabulary 151,936 or 128,256 per token), temporary all-gather buffers of ZeRO-3, the CUDA context and allocator
fragmentation, and a vLLM engine (``vllm.refiner`` would add another copy of the reference).

Assumptions to keep in mind:
- PyTorch's AdamW on weights loaded in bf16 (``dtype: bfloat16`` under DDP) keeps m and v in bf16 and no fp32
  master copy (8 B/param trained, not 16); DeepSpeed's bf16 mode keeps the fp32 master and fp32 states (16). The
  table uses 16 B/param everywhere: the larger of the two for DDP.
- Sharding the frozen models under ZeRO-3 is what ZeRO-3 allows (``zero3_init_flag: true`` partitions models as
  ``from_pretrained`` loads them); whether a given trainer gets it is not checked here: the PPO trainer shards
  its actor + critic under ZeRO-3 but keeps the frozen reference (and reward model) whole on every rank, so its
  ZeRO-3 frozen-weights column is a lower bound of what it uses.
- The refiner is the frozen reference itself (one copy), as in ``study.train`` (``Refiner(ref_model, ...)``).

Parameter counts are computed from each model's published ``config.json`` (architecture constants below; the
package does not download them) and agree with the model cards: Qwen2.5-Coder-1.5B "1.54B" (1,543,714,304),
Llama-3.2-3B "3.21B" (3,212,749,824), Llama-3-8B "8.03B" (8,030,261,248).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9

# bytes per parameter
BF16 = 2
TRAINED_WEIGHTS = BF16  # bf16 weights
TRAINED_GRADS = BF16  # bf16 gradients
ADAM_STATES = 12  # fp32 master weights + m + v
FROZEN_WEIGHTS = BF16


@dataclass(frozen=True)
class Arch:
    """The config.json fields that fix a decoder's parameter count (Llama/Qwen2 layout: RMSNorm, SwiGLU MLP)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False

    def body(self) -> int:
        """Parameters of the transformer body: embeddings, decoder layers, final norm (no LM head)."""
        d, kv = self.hidden, self.hidden // self.heads * self.kv_heads
        attn = d * d + 2 * d * kv + d * d + ((d + 2 * kv) if self.qkv_bias else 0)
        mlp = 3 * d * self.intermediate
        layer = attn + mlp + 2 * d  # two RMSNorm weights
        return self.vocab * d + self.layers * layer + d

    def causal_lm(self) -> int:
        """...ForCausalLM: the body plus an LM head (no new parameters when tied to the embeddings)."""
        return self.body() + (0 if self.tied_embeddings else self.vocab * self.hidden)

    def scalar_head(self) -> int:
        """The body plus a hidden -> 1 linear head without bias: a critic (``study.trainers.ppo.ValueModel``) or
        a sequence-classifier reward model (``LlamaForSequenceClassification.score``)."""
        return self.body() + self.hidden


# huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct/blob/main/config.json (model card: 1.54B parameters)
QWEN25_CODER_1_5B = Arch(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936,
                         tied_embeddings=True, qkv_bias=True)
# huggingface.co/meta-llama/Llama-3.2-3B-Instruct/blob/main/config.json (model card: 3.21B parameters)
LLAMA32_3B = Arch(hidden=3072, intermediate=8192, layers=28, heads=24, kv_heads=8, vocab=128256,
                  tied_embeddings=True)
# huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json (model card: 8.03B parameters); the reward model
# OpenRLHF/Llama-3-8b-rm-mixture is this body with a scalar head instead of the (untied) LM head.
LLAMA3_8B = Arch(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256,
                 tied_embeddings=False)

# The setups (configs/paper/ names): name -> (trained models, frozen models), each a list of (role, parameter count).
# DAPO: Qwen2.5-Coder-1.5B-Instruct; PPO: Llama-3.2-3B-Instruct (dialogue: + OpenRLHF/Llama-3-8b-rm-mixture).
SETUPS: dict[str, tuple[list[tuple[str, int]], list[tuple[str, int]]]] = {
    "DAPO 1.5B (apps_dapo, apps_dynamic)": (
        [("policy", QWEN25_CODER_1_5B.causal_lm())],
        [("reference = refiner", QWEN25_CODER_1_5B.causal_lm())],
    ),
    "PPO 3B + 8B reward model (dialogue_ppo_*)": (
        [("policy", LLAMA32_3B.causal_lm()), ("critic", LLAMA32_3B.scalar_head())],
        [("reference = refiner", LLAMA32_3B.causal_lm()), ("reward model", LLAMA3_8B.scalar_head())],
    ),
    "PPO 3B, code reward (apps_ppo_*)": (
        [("policy", LLAMA32_3B.causal_lm()), ("critic", LLAMA32_3B.scalar_head())],
        [("reference = refiner", LLAMA32_3B.causal_lm())],
    ),
}
STRATEGIES = ("DDP", "ZeRO-2", "ZeRO-3")


def per_gpu_bytes(trained: int, frozen: int, strategy: str, n_gpus: int) -> dict[str, float]:
    """Bytes per GPU for ``trained`` and ``frozen`` parameter totals (see the module docstring's byte model)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if n_gpus < 1:
        raise ValueError("n_gpus must be >= 1")
    n = n_gpus
    weights = trained * TRAINED_WEIGHTS / (n if strategy == "ZeRO-3" else 1)
    grads = trained * TRAINED_GRADS / (1 if strategy == "DDP" else n)
    optim = trained * ADAM_STATES / (1 if strategy == "DDP" else n)
    frz = frozen * FROZEN_WEIGHTS / (n if strategy == "ZeRO-3" else 1)
    return {"weights": weights, "grads": grads, "optimizer": optim, "frozen": frz,
            "total": weights + grads + optim + frz}


def estimate(gpus: tuple[int, ...] = (4, 8)) -> "pandas.DataFrame":  # noqa: F821
    """One row per (setup, strategy, GPU count): per-GPU GB of trained weights, gradients, optimizer states,
    frozen weights and their total. An ESTIMATE from parameter counts; activations etc. excluded."""
    import pandas as pd

    rows = []
    for setup, (trained, frozen) in SETUPS.items():
        t, f = sum(p for _, p in trained), sum(p for _, p in frozen)
        for strategy in STRATEGIES:
            for n in gpus:
                b = per_gpu_bytes(t, f, strategy, n)
                rows.append({"setup": setup, "strategy": strategy, "gpus": n,
                             "trained_params_B": t / 1e9, "frozen_params_B": f / 1e9,
                             **{f"{k}_GB": v / GB for k, v in b.items()}})
    return pd.DataFrame(rows)


def markdown(df=None) -> str:
    """The table as Markdown (what the README carries)."""
    df = estimate() if df is None else df
    lines = ["| setup | strategy | GPUs | trained weights | grads | Adam states | frozen weights | **total per GPU** |",
             "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples(index=False):
        lines.append(f"| {r.setup} | {r.strategy} | {r.gpus} | {r.weights_GB:.1f} | {r.grads_GB:.1f} | "
                     f"{r.optimizer_GB:.1f} | {r.frozen_GB:.1f} | **{r.total_GB:.1f}** |")
    counts = "; ".join(f"{role} {p / 1e9:.3f}B" for _, (tr, fr) in SETUPS.items() for role, p in tr + fr)
    return ("Per-GPU memory ESTIMATE in GB (10^9 bytes) from parameter counts, activations / KV cache / buffers "
            "excluded (`python -m study.memory`; byte model in `study/memory.py`): trained models 16 B/param "
            "(bf16 weights + bf16 grads + fp32 Adam master, m, v), frozen models 2 B/param (bf16).\n\n"
            + "\n".join(lines) + "\n")


if __name__ == "__main__":
    print(markdown())
