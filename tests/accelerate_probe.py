"""Run by tests/test_accelerate_configs.py under ``accelerate launch`` (not a test module itself).

Builds an ``Accelerator`` from what the launcher passes on (the config file's distributed type, DeepSpeed plugin,
mixed precision), prepares a tiny ``LlamaForCausalLM`` and its AdamW with ``accelerator.prepare(model, optimizer)``
as a trainer does, takes one optimizer step on per-rank different inputs, and prints one line per process:
``PROBE {json}`` with the state, the ZeRO stage, the fraction of parameters (ZeRO-3) or fp32 optimizer partition
(ZeRO-2) this rank holds, and a checksum of the full weights after the step (equal on every rank when the
gradients were synchronised).

Environment: ``PROBE_CPU=1`` -> ``Accelerator(cpu=True)`` (what ``device: cpu`` does through TRL's ``use_cpu``);
``PROBE_GLOO=1`` -> ``InitProcessGroupKwargs(backend="gloo")``: on a machine without CUDA, accelerate 1.15 finds no
backend for DeepSpeed and every rank would run alone (num_processes 1).
"""

import json
import os

import torch

torch.set_num_threads(1)
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import DistributedType, InitProcessGroupKwargs  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

handlers = [InitProcessGroupKwargs(backend="gloo")] if os.environ.get("PROBE_GLOO") == "1" else []
acc = Accelerator(cpu=os.environ.get("PROBE_CPU") == "1", kwargs_handlers=handlers)
st = acc.state
ds_on = st.distributed_type == DistributedType.DEEPSPEED
if ds_on:  # what transformers' Trainer fills in from its batch size (the configs leave it unset)
    ds = st.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = 2
    ds["train_batch_size"] = 2 * ds.get("gradient_accumulation_steps", 1) * acc.num_processes
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=32)
model = LlamaForCausalLM(cfg)
n_params = sum(p.numel() for p in model.parameters())
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, opt = acc.prepare(model, opt)
ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1 + acc.process_index)).to(acc.device)
with acc.autocast():
    loss = model(input_ids=ids, labels=ids).loss
acc.backward(loss)
opt.step()
opt.zero_grad()

out = {"rank": acc.process_index, "num_processes": acc.num_processes, "distributed_type": st.distributed_type.value,
       "backend": st.backend, "device": acc.device.type, "mixed_precision": acc.mixed_precision,
       "model_class": type(model).__name__, "loss": float(loss.detach().float()), "n_params": n_params}
params = list(model.parameters())
if ds_on:
    import deepspeed

    stage = model.zero_optimization_stage()
    out["zero_stage"] = stage
    out["ds_accelerator"] = deepspeed.get_accelerator().device_name()
    if stage == 3:
        out["local_param_frac"] = sum(p.ds_tensor.numel() for p in params) / sum(p.ds_numel for p in params)
        with deepspeed.zero.GatheredParameters(params):
            out["checksum"] = float(sum(p.detach().float().sum() for p in params))
    else:
        out["local_param_frac"] = sum(p.numel() for p in params) / n_params
        out["local_optim_frac"] = sum(g.numel() for g in model.optimizer.single_partition_of_fp32_groups) / n_params
        out["checksum"] = float(sum(p.detach().float().sum() for p in params))
else:
    out["checksum"] = float(sum(p.detach().float().sum() for p in params))
# one file per rank: lines that 2 processes print at once into one pipe can interleave
with open(os.path.join(os.environ["PROBE_OUT"], f"rank{acc.process_index}.json"), "w") as f:
    json.dump(out, f)
print("PROBE_DONE", flush=True)
