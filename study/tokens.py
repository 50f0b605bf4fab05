"""Token primitives, each in one place: pad ids, EOS cuts, padding, and the teacher-forced per-token log-prob.

    pad = pad_id(tokenizer)                                  # pad token, else EOS
    eos = eos_ids(model, tokenizer)                          # the ids that end a response
    ids, ended = cut_at_eos(row, eos)                        # up to and including the first EOS
    prompt_ids, prompt_mask = pad_left(prompts, pad)         # (N, P): prompts end in the same column
    ids, mask = pad_right(responses, pad)                    # (N, T): responses start in the same column
    logps, entropy = token_logps(model, prompt_ids, prompt_mask, ids, mask)   # log π(y_t | x, y_<t), (N, T)
    k = first_change(y_ids, y_mask, y2_ids, y2_mask)         # (N,) length of the common prefix of y and y'

Shapes: N rows, P prompt columns (left-padded), T response columns (right-padded). Masks are 1 on real tokens.
Generation (``study.generation``), both trainers and the walkthrough notebook use these.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id; its EOS id when it has no pad token (e.g. Llama tokenizers)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end a response: the model's generation config, else the tokenizer's EOS."""
    e = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if e is None:
        e = tokenizer.eos_token_id
    return set(e if isinstance(e, (list, tuple)) else [e])


def cut_at_eos(ids: Iterable[int], eos: set[int]) -> tuple[list[int], bool]:
    """``ids`` up to and including the first EOS (kept: it is an action); ``ended`` says whether one was found."""
    out = []
    for t in ids:
        out.append(int(t))
        if t in eos:
            return out, True
    return out, False


def _pad(seqs: Sequence[Sequence[int]], value: int, left: bool, min_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max([len(s) for s in seqs] + [min_len])
    ids = torch.full((len(seqs), L), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            cols = slice(L - len(s), L) if left else slice(0, len(s))
            ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask


def pad_left(seqs: Sequence[Sequence[int]], pad: int, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists (prompts): (ids, mask), both (N, max(len, min_len))."""
    return _pad(seqs, pad, True, min_len)


def pad_right(seqs: Sequence[Sequence[int]], pad: int, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists (responses): (ids, mask), both (N, max(len, min_len))."""
    return _pad(seqs, pad, False, min_len)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token CE ``-log softmax(logits)[label]`` (N, T); ``logits`` (N, T, V) already aligned with ``labels``."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")


def token_logps(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                temperature: float = 1.0, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher-forced ``log π(ids_t | x, ids_<t)`` (N, T) at ``temperature``, and the per-token entropy if asked.

    prompt_ids/prompt_mask: (N, P) left-padded x; ids/mask: (N, T) right-padded response (y or y'). Only the last
    T + 1 positions' logits are materialised (``logits_to_keep``). 0 where ``mask`` is 0. Differentiable; the
    untempered CE of Eq. 6 is ``-token_logps(...)[0]`` at temperature 1.
    """
    T = ids.shape[1]
    input_ids = torch.cat([prompt_ids, ids], dim=1)
    attention_mask = torch.cat([prompt_mask, mask], dim=1)
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=T + 1).logits
    except TypeError:  # a model class without ``logits_to_keep``
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, -(T + 1) : -1].float()  # position t predicts token t
    if temperature != 1.0:
        logits = logits / temperature
    m = mask.to(logits.dtype)
    if not with_entropy:
        return -token_cross_entropy(logits, ids) * m, None
    logp_all = F.log_softmax(logits, dim=-1)
    logps = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logps * m, entropy * m


def first_change(y_ids: torch.Tensor, y_mask: torch.Tensor, y2_ids: torch.Tensor, y2_mask: torch.Tensor) -> torch.Tensor:
    """k_i: the length of the common token prefix of y_i and y'_i (right-padded rows), so y'_i,<k = y_i,<k and, where
    k_i < |y'_i|, y'_i,k is the first changed token. k_i = |y'_i| when y'_i is y_i or a prefix of it. Padding never
    counts as a match (a pad id equal to EOS cannot fake one)."""
    L = min(y_ids.shape[1], y2_ids.shape[1])
    same = (y_ids[:, :L] == y2_ids[:, :L]) & y_mask[:, :L].bool() & y2_mask[:, :L].bool()
    return torch.cumprod(same.long(), dim=1).sum(dim=1)


def prefix_shared_inputs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, y_ids: torch.Tensor,
                         y_mask: torch.Tensor, y2_ids: torch.Tensor, y2_mask: torch.Tensor, k: torch.Tensor,
                         keep: torch.Tensor, pad: int) -> dict[str, torch.Tensor]:
    """One packed row per rollout: x ⊕ y, then the part of y' that y does not already give, so a single forward
    yields log π(y_t | x, y_<t) for every t and log π(y'_t | x, y'_<t) for every kept row.

    Since y'_<k = y_<k (k = ``first_change``), log π(y'_t | x, y'_<t) for t < k is the log-prob of y_t in x ⊕ y.
    For t ≥ k a kept row appends s = [a, y'_k, ..., y'_{|y'|-2}] (|y'| - k tokens): the anchor a is a copy of the
    token before y'_k (y_{k-1}, or the last prompt token when k = 0) at that token's position, so it predicts y'_k;
    s attends to x ⊕ y_<k-1 and causally to itself, never to y_≥k-1 (a stands in for y_{k-1}). Positions are those
    of the same tokens in a forward over x ⊕ y', so the logits (and gradients) are those of that forward.

    prompt (N, P) left-padded; y (N, T), y' (N, R) right-padded; k, keep (N,). Returns, with L = P + T + S
    (S = the longest s; 0 when no kept row changes anything):

        input_ids, position_ids  (N, L)
        allowed                  (N, L, L) bool, query × key (``attention_mask_4d`` turns it into a 4-D mask)
        shift_labels             (N, L) the token column c predicts (-100: none), i.e. TRL's fused head's labels
        y_cols                   (T,)  the column predicting y_t (P - 1 + t)
        y2_cols                  (N, R) the column predicting y'_t (P - 1 + t for t < k, else P + T + t - k)
    """
    N, P = prompt_ids.shape
    T, R = y_ids.shape[1], y2_ids.shape[1]
    dev = prompt_ids.device
    n2 = y2_mask.sum(1)
    S_row = torch.where(keep.bool() & (n2 > k), n2 - k, torch.zeros_like(k))  # suffix length per row
    S = int(S_row.max().item()) if N else 0
    L = P + T + S
    cols = torch.arange(L, device=dev)
    j = torch.arange(S, device=dev).unsqueeze(0)  # suffix offset
    in_s = j < S_row.unsqueeze(1)  # (N, S) real suffix tokens
    # suffix tokens: the anchor, then y'_k .. y'_{|y'|-2}
    main_ids = torch.cat([prompt_ids, y_ids], 1)
    anchor_col = P + k - 1  # the column of the token the anchor copies
    src = torch.where(j == 0, anchor_col.unsqueeze(1) - P - T, k.unsqueeze(1) + j - 1)  # into y' (or main, < 0)
    y2_tok = y2_ids.gather(1, src.clamp(0, R - 1))
    anchor_tok = main_ids.gather(1, anchor_col.clamp(0, P + T - 1).unsqueeze(1)).expand(N, S)
    s_ids = torch.where(j == 0, anchor_tok, y2_tok).masked_fill(~in_s, pad)
    input_ids = torch.cat([main_ids, s_ids], 1)
    position_ids = torch.cat([cols[: P + T].expand(N, -1), anchor_col.unsqueeze(1) + j], 1)
    # labels: column c predicts the next token of its stream
    shift_labels = torch.full((N, L), -100, dtype=torch.long, device=dev)
    shift_labels[:, P - 1 : P + T - 1] = y_ids.masked_fill(y_mask == 0, -100)
    s_lab = y2_ids.gather(1, (k.unsqueeze(1) + j).clamp(0, R - 1))
    shift_labels[:, P + T :] = s_lab.masked_fill(~in_s, -100)
    # attention: main rows causal over real tokens; suffix rows over x ⊕ y before the anchor's column, then causal
    valid = torch.cat([prompt_mask.bool(), y_mask.bool(), in_s], 1)  # (N, L) keys
    causal = cols.unsqueeze(1) >= cols.unsqueeze(0)  # (L, L) query >= key
    allowed = causal.unsqueeze(0) & valid.unsqueeze(1)
    if S:
        q_s = slice(P + T, L)
        before_anchor = cols[: P + T].unsqueeze(0) < anchor_col.unsqueeze(1)  # (N, P+T)
        allowed[:, q_s, : P + T] = (before_anchor & valid[:, : P + T]).unsqueeze(1).expand(N, S, P + T).clone()
        allowed[:, q_s, : P + T] &= in_s.unsqueeze(2)
    allowed |= torch.eye(L, dtype=torch.bool, device=dev).unsqueeze(0)  # every query sees itself (no empty row)
    t = torch.arange(R, device=dev).unsqueeze(0)
    y2_cols = torch.where(t < k.unsqueeze(1), P - 1 + t, P + T + t - k.unsqueeze(1)).clamp(0, L - 1)
    return {"input_ids": input_ids, "position_ids": position_ids, "allowed": allowed, "shift_labels": shift_labels,
            "y_cols": torch.arange(P - 1, P + T - 1, device=dev), "y2_cols": y2_cols}


def attention_mask_4d(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(N, 1, L, L) mask from a boolean query × key ``allowed``: boolean for ``sdpa`` (True = attend), additive
    (0 / the dtype's minimum) for ``eager``. transformers passes a 4-D mask to the attention as it is."""
    if attn_implementation == "sdpa":
        return allowed.unsqueeze(1)
    m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return m.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


CUSTOM_MASK_BACKENDS = ("eager", "sdpa")
"""Attention implementations that take an arbitrary 4-D mask (flash-attention kernels do not)."""
