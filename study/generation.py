"""Batched text generation with transformers, shared by evaluation, the refiner and the mini world.

Prompts are chat messages rendered with the tokenizer's chat template. Batches are sorted by prompt length to
limit padding; generation is left-padded; each row stops at EOS or at any of ``stop`` strings (cut off in the
returned text).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generation:
    text: str
    """Decoded completion (special tokens removed, cut at the first stop string)."""
    token_ids: list[int]
    """Completion token ids (up to and including EOS when produced)."""
    truncated: bool
    """True when the completion hit ``max_new_tokens`` without EOS/stop."""


def render_prompts(tokenizer, messages_list: list[list[dict]] | list[str]) -> list[str]:
    """Chat-template each message list (plain strings pass through unchanged)."""
    out = []
    for m in messages_list:
        if isinstance(m, str):
            out.append(m)
        else:
            out.append(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True))
    return out


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[dict]] | list[str],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int = 16,
    stop: list[str] | None = None,
    top_p: float = 1.0,
    progress: bool = False,
    generate_kwargs: dict | None = None,
) -> list[Generation]:
    """Generate one completion per prompt. ``temperature == 0`` means greedy. ``generate_kwargs`` go to
    ``model.generate`` as they are (e.g. ``prompt_lookup_num_tokens``, which transformers allows at batch size 1)."""
    texts = render_prompts(tokenizer, prompts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: list[Generation | None] = [None] * len(texts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = model.generation_config.eos_token_id
    if eos_ids is None:
        eos_ids = tokenizer.eos_token_id
    eos_set = set(eos_ids if isinstance(eos_ids, (list, tuple)) else [eos_ids])
    prev_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    # A model handed over by a trainer is in training mode, often with gradient checkpointing on, which turns the
    # KV cache off and (transformers 5.23) makes greedy decoding emit garbage: decode in eval mode, then restore.
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="generate", unit="batch")
    try:
        for idx in it:
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id)
            if temperature and temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if stop:
                kwargs.update(stop_strings=stop, tokenizer=tokenizer)
            kwargs.update(generate_kwargs or {})
            out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            for row, i in zip(new, idx):
                ids = []
                ended = False
                for t in row:
                    if t in eos_set:
                        ids.append(t)
                        ended = True
                        break
                    ids.append(t)
                # strip right padding that generate adds after a row finished on a stop string
                while ids and not ended and ids[-1] == pad_id and pad_id not in eos_set:
                    ids.pop()
                text = tokenizer.decode(ids, skip_special_tokens=True)
                hit_stop = False
                for s in stop or []:
                    k = text.find(s)
                    if k >= 0:
                        text = text[: k + len(s)]
                        hit_stop = True
                results[i] = Generation(text=text, token_ids=ids, truncated=not (ended or hit_stop))
    finally:
        tokenizer.padding_side = prev_side
        model.train(was_training)
    return results  # type: ignore[return-value]
