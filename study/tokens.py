"""Token primitives, each in one place: pad ids, EOS cuts, padding, and the teacher-forced per-token log-prob.

    pad = pad_id(tokenizer)                                  # pad token, else EOS
    eos = eos_ids(model, tokenizer)                          # the ids that end a response
    ids, ended = cut_at_eos(row, eos)                        # up to and including the first EOS
    prompt_ids, prompt_mask = pad_left(prompts, pad)         # (N, P): prompts end in the same column
    ids, mask = pad_right(responses, pad)                    # (N, T): responses start in the same column
    logps, entropy = token_logps(model, prompt_ids, prompt_mask, ids, mask)   # log π(y_t | x, y_<t), (N, T)
    k = first_change(y_ids, y_mask, y2_ids, y2_mask)         # (N,) length of the common prefix of y and y'
    pk = packed_inputs(prompt_ids, prompt_mask, y_ids, y_mask, pad, y2_ids, y2_mask, k, keep)  # one row per prompt

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


def packed_inputs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, y_ids: torch.Tensor, y_mask: torch.Tensor,
                  pad: int, y2_ids: torch.Tensor | None = None, y2_mask: torch.Tensor | None = None,
                  k: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                  group: bool = True) -> dict[str, torch.Tensor]:
    """Pack rollouts so that one forward gives log π(y_t | x, y_<t) for every row and, for the kept rows,
    log π(y'_t | x, y'_<t); a prompt x is forwarded once for all of its rollouts (``group``; else once per row).

    One packed row per distinct prompt (rows are matched by their prompt tokens, so batch order does not matter):

        x_<P-1 | stream_1 | ... | stream_m | suffix_i ...            (P = |x|)

    * the shared prefix x_<P-1: causal, at positions 0..P-2.
    * stream i = [x_P-1, y_i,0, ..., y_i,|y_i|-2] at positions P-1, P, ...: column j predicts y_i,j. It attends to
      the shared prefix and causally to itself, so every column sees exactly its context in x ⊕ y_i and its
      logits (and their gradients) are those of a forward over x ⊕ y_i alone. x's last token heads each stream:
      it is the one position that predicts a different token in each rollout.
    * suffix i, for a kept row whose y' departs from y (keep_i and |y'_i| > k_i, k = ``first_change``): y'_<k =
      y_<k, so log π(y'_t | x, y'_<t) for t < k is read off stream i (its column t predicts y_t = y'_t). For t ≥ k
      the suffix [a, y'_k, ..., y'_|y'|-2] follows, a = the token of stream i's column k (the one before y'_k) at
      its position, so suffix column j predicts y'_k+j; it attends to the shared prefix, to stream i's columns < k
      and causally to itself, never to y_≥k.

    prompt (N, P) left-padded; y (N, T), y' (N, R) right-padded (masks 1 on real tokens); k, keep (N,); no y2_ids:
    no suffixes. ``group=False`` packs each row alone (x ⊕ y ⊕ its suffix). Returns, with M packed rows of L
    columns (right-padded):

        input_ids, position_ids  (M, L)
        allowed                  (M, L, L) bool, query × key (``attention_mask_4d`` turns it into a 4-D mask)
        shift_labels             (M, L) the token column c predicts (-100: none): TRL's fused head's labels
        y_at                     (N, T) flat index into the (M·L) columns of the one predicting y_t (0 on padding)
        y2_at                    (N, R) the same for y'_t (0 on padding and on rows not kept)
    """
    N, T = y_ids.shape
    R = 0 if y2_ids is None else y2_ids.shape[1]
    dev = prompt_ids.device
    n_y = y_mask.sum(1).tolist()
    n_y2 = y2_mask.sum(1).tolist() if R else [0] * N
    ks = k.tolist() if k is not None else [0] * N
    kept = keep.bool().tolist() if keep is not None else [False] * N
    xs = [prompt_ids[i][prompt_mask[i].bool()].tolist() for i in range(N)]
    ys, y2s = y_ids.tolist(), (y2_ids.tolist() if R else None)
    members: dict = {}
    for i in range(N):
        members.setdefault(tuple(xs[i]) if group else i, []).append(i)
    # each packed row as columns of (token, position, label, segment (0: shared prefix), offset, parent, limit)
    packed, row_of, y_at = [], [0] * N, [[0] * T for _ in range(N)]
    y2_at, y2_set = [[0] * R for _ in range(N)], [[False] * R for _ in range(N)]
    for r, rows in enumerate(members.values()):
        x = xs[rows[0]]
        P = len(x)
        cols = [(x[c], c, -100, 0, c, 0, 0) for c in range(P - 1)]
        first = {}
        for s, i in enumerate(rows, start=1):  # streams
            first[i] = (s, len(cols))
            for j in range(n_y[i]):
                y_at[i][j] = len(cols)
                cols.append((x[-1] if j == 0 else ys[i][j - 1], P - 1 + j, ys[i][j], s, j, s, 0))
        seg = len(rows)
        for i in rows:  # suffixes
            s, start = first[i]
            row_of[i] = r
            if not kept[i]:
                continue
            for t in range(min(ks[i], R)):
                y2_at[i][t], y2_set[i][t] = start + t, True
            if n_y2[i] <= ks[i]:
                continue
            seg, k_i = seg + 1, ks[i]
            for j in range(n_y2[i] - k_i):
                y2_at[i][k_i + j], y2_set[i][k_i + j] = len(cols), True
                tok = (x[-1] if k_i == 0 else ys[i][k_i - 1]) if j == 0 else y2s[i][k_i + j - 1]
                cols.append((tok, P - 1 + k_i + j, y2s[i][k_i + j], seg, j, s, k_i))
        packed.append(cols)
    M, L = len(packed), max(len(c) for c in packed)
    fills = (pad, 0, -100, -1, 0, -1, 0)
    table = torch.tensor([c + [fills] * (L - len(c)) for c in packed], dtype=torch.long, device=dev)  # (M, L, 7)
    input_ids, position_ids, shift_labels, seg, off, par, lim = table.unbind(-1)
    q = lambda v: v.unsqueeze(2)  # noqa: E731  (M, L, 1): the query's value
    kv = lambda v: v.unsqueeze(1)  # noqa: E731  (M, 1, L): the key's value
    same = (q(seg) == kv(seg)) & (kv(off) <= q(off))  # causal within a segment (the shared prefix included)
    prefix = (kv(seg) == 0) & (q(seg) > 0)  # streams and suffixes see the whole shared prefix
    parent = (kv(seg) == q(par)) & (q(seg) != kv(seg)) & (kv(off) < q(lim))  # a suffix: its stream's cols < k
    allowed = (same | prefix | parent) & kv(seg >= 0) & q(seg >= 0)
    allowed |= torch.eye(L, dtype=torch.bool, device=dev).unsqueeze(0)  # every query sees itself (no empty row)
    base = (torch.tensor(row_of, dtype=torch.long, device=dev) * L).unsqueeze(1)
    y_at = (torch.tensor(y_at, dtype=torch.long, device=dev).view(N, T) + base) * y_mask.bool()
    y2_at = (torch.tensor(y2_at, dtype=torch.long, device=dev).view(N, R) + base) * torch.tensor(
        y2_set, dtype=torch.bool, device=dev).view(N, R)
    return {"input_ids": input_ids, "position_ids": position_ids, "allowed": allowed, "shift_labels": shift_labels,
            "y_at": y_at, "y2_at": y2_at}


def attention_mask_4d(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(N, 1, L, L) mask from a boolean query × key ``allowed``: boolean for ``sdpa`` (True = attend), additive
    (0 / the dtype's minimum) for ``eager``. transformers passes a 4-D mask to the attention as it is."""
    if attn_implementation == "sdpa":
        return allowed.unsqueeze(1)
    m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return m.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


CUSTOM_MASK_BACKENDS = ("eager", "sdpa")
"""Attention implementations that take an arbitrary 4-D mask (flash-attention kernels do not)."""
