"""Batched text generation with transformers, shared by evaluation, the refiner and the mini world.

Prompts are chat messages rendered with the tokenizer's chat template. Batches are sorted by prompt length to
limit padding; generation is left-padded; each row stops at EOS or at any of ``stop`` strings (cut off in the
returned text).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from study.tokens import cut_at_eos, eos_ids, pad_id


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
    pad = pad_id(tokenizer)
    eos = eos_ids(model, tokenizer)
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
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad)
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
                results[i] = _finish(tokenizer, row, eos, pad, stop)
    finally:
        tokenizer.padding_side = prev_side
        model.train(was_training)
    return results  # type: ignore[return-value]


@torch.no_grad()
def generate_sharing_prompts(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, share: bool = True,
                             **kwargs) -> torch.Tensor:
    """``model.generate(input_ids, attention_mask, **kwargs)``, each distinct prompt prefilled once.

    Consecutive rows that repeat a prompt (GRPO's G samples of one prompt) share its KV cache: ``prompt[:-1]`` of
    the distinct rows goes through one forward into a ``DynamicCache`` (positions as ``generate`` sets them), the
    cache rows are copied to the repeats, and ``generate`` continues from the last prompt token. Token-identical
    to plain ``generate`` under the same RNG state (tests/test_speed.py); the prefill costs D rows instead of N.

    input_ids, attention_mask: (N, P), left-padded. Returns (N, P + new tokens), as ``generate`` does.
    ``share=False`` is plain ``generate`` (the ``speed.shared_prompt_prefill`` switch).
    """
    from transformers import DynamicCache

    same = ((input_ids[1:] == input_ids[:-1]) & (attention_mask[1:] == attention_mask[:-1])).all(dim=1)
    first = torch.cat([same.new_ones(1), ~same])  # (N,) the row opens a run of one prompt
    if not share or first.all() or input_ids.size(1) < 2:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    owner = first.long().cumsum(0) - 1  # (N,) row -> its distinct prompt
    d_ids, d_mask = input_ids[first], attention_mask[first]  # (D, P)
    position_ids = (d_mask.long().cumsum(-1) - 1).masked_fill(d_mask == 0, 1)  # as generate computes them
    cache = DynamicCache(config=model.config)
    model(input_ids=d_ids[:, :-1], attention_mask=d_mask[:, :-1], position_ids=position_ids[:, :-1], cache=cache,
          use_cache=True)
    cache.reorder_cache(owner)  # (D, ...) -> (N, ...)
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache, **kwargs)


def _finish(tokenizer, row: list[int], eos: set[int], pad: int, stop: list[str] | None) -> Generation:
    """A decoded row as a ``Generation``: cut at the first EOS, right padding after a stop string stripped, the text
    cut after the first stop string."""
    ids, ended = cut_at_eos(row, eos)
    while ids and not ended and ids[-1] == pad and pad not in eos:  # generate pads rows that ended on a stop string
        ids.pop()
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hit_stop = False
    for s in stop or []:
        k = text.find(s)
        if k >= 0:
            text = text[: k + len(s)]
            hit_stop = True
    return Generation(text=text, token_ids=ids, truncated=not (ended or hit_stop))


# ----------------------------------------------------------------------------------------------------------------
# greedy decoding with per-row drafts (the refiner: each row's draft is its own candidate y)


@dataclass
class DraftStats:
    """What a drafted decode cost: forwards run (prefill included) and tokens emitted."""

    forwards: int = 0
    row_forwards: int = 0
    """Forwards times the rows in them (a row's share of a batched forward)."""
    tokens: int = 0
    drafted: int = 0
    """Draft tokens proposed."""
    accepted: int = 0
    """Draft tokens that greedy decoding agreed with."""

    @property
    def tokens_per_row_forward(self) -> float:
        """Tokens a row gains per forward it is in (1 for plain decoding; the prefix prefill counts as one)."""
        return self.tokens / self.row_forwards if self.row_forwards else float("nan")


def _common_prefix(seqs: list[list[int]], cap: int) -> list[int]:
    """The longest common prefix of ``seqs``, at most ``cap`` tokens."""
    first = seqs[0]
    n = next((j for j in range(min(cap, len(first))) if any(len(s) <= j or s[j] != first[j] for s in seqs)),
             min(cap, len(first)))
    return first[: max(n, 0)]


def _anchor(draft: list[int], emitted: list[int], expected: int, ngram: int) -> int | None:
    """Where the draft continues after ``emitted`` (prompt lookup): the position right after an occurrence of the
    last n emitted tokens (n = ngram .. 1, longest first), the occurrence nearest to ``expected``; None if none."""
    for n in range(min(ngram, len(emitted)), 0, -1):
        key = emitted[-n:]
        hits = [j + n for j in range(len(draft) - n + 1) if draft[j : j + n] == key]
        if hits:
            return min(hits, key=lambda j: (abs(j - expected), -j))
    return None


@torch.no_grad()
def greedy_with_drafts(model, prompts: list[list[int]], drafts: list[list[int]], eos: set[int], pad: int,
                       max_new_tokens: int, draft_len: int = 16, ngram: int = 3, share_prefix: bool = True,
                       groups: list | None = None, retry_len: int = 4,
                       stats: DraftStats | None = None) -> list[list[int]]:
    """Greedy decoding of every prompt, token-identical to plain greedy decoding (up to float round-off in the
    logits), that verifies drafted tokens instead of decoding them one forward at a time.

    Each row's draft is its own list (the refiner passes the candidate y + EOS, which a refinement mostly copies).
    Every step runs ONE batched forward over, per row, its last emitted token followed by up to ``draft_len``
    draft tokens, with a KV cache; a row keeps the drafted tokens greedy decoding agrees with plus the next greedy
    token (so it advances 1 to draft_len + 1 tokens; rows advance by different amounts), and the cache slots of its
    rejected tokens are masked out from then on. After a rejection the draft is re-anchored where the last
    ``ngram`` emitted tokens occur in it (prompt lookup), so copying resumes after an edit, an insertion or a
    deletion; the row then proposes only ``retry_len`` tokens until a draft is accepted whole again. The prefill
    verifies the first draft tokens too. ``share_prefix``: the rows' common prompt prefix (the refine instruction)
    is prefilled once, then each group's (``groups``: a label per row, e.g. the problem: a group's refine prompts
    share instruction + problem), then each row's rest; the cache rows are copied. Finished rows leave the batch
    once a quarter of it has finished (each removal copies the cache).

    prompts/drafts: token lists, one per row. Returns the emitted tokens per row, up to and including the first
    EOS, at most ``max_new_tokens``. ``stats`` (optional) accumulates forwards and tokens.
    """
    from transformers import DynamicCache

    from study.tokens import CUSTOM_MASK_BACKENDS, attention_mask_4d

    impl = model.config._attn_implementation
    if impl not in CUSTOM_MASK_BACKENDS:
        raise ValueError(f"drafted decoding needs a custom 4-D attention mask; {impl!r} takes none")
    stats = stats if stats is not None else DraftStats()
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    N = len(prompts)
    out: list[list[int]] = [[] for _ in range(N)]
    if N == 0:
        return out
    cache = DynamicCache(config=model.config)
    valid = torch.zeros((1 if share_prefix and N > 1 else N, 0), dtype=torch.bool, device=dev)  # cache slots in use

    def select_rows(idx: list[int]) -> None:
        """The cache (and slot mask) rows ``idx`` of the current ones, in that order (repeats allowed)."""
        nonlocal valid
        t = torch.tensor(idx, device=dev)
        cache.batch_select_indices(t)
        valid = valid[t]

    def forward(blocks: list[list[int]], starts: list[int], keep_last: int | None = None):
        """One forward over ``blocks`` (row i's new tokens at positions starts[i]..., right-aligned: row i starts
        at column W - len(blocks[i])) on top of the cache. Returns the greedy token after every column of the last
        ``keep_last`` columns (all by default) and W."""
        nonlocal valid
        W = max(max(len(b) for b in blocks), 1)
        ids = torch.full((len(blocks), W), pad, dtype=torch.long)
        pos = torch.zeros((len(blocks), W), dtype=torch.long)
        real = torch.zeros((len(blocks), W), dtype=torch.bool)
        for i, (b, s) in enumerate(zip(blocks, starts)):
            if b:
                ids[i, W - len(b):] = torch.tensor(b)
                pos[i, W - len(b):] = torch.arange(s, s + len(b))
                real[i, W - len(b):] = True
        ids, pos, real = ids.to(dev), pos.to(dev), real.to(dev)
        causal = torch.tril(torch.ones(W, W, dtype=torch.bool, device=dev))
        allowed = torch.cat([valid.unsqueeze(1).expand(-1, W, -1), causal & real.unsqueeze(1)], dim=2)
        S = valid.shape[1]
        allowed[:, torch.arange(W), S + torch.arange(W)] = True  # every query sees itself
        logits = model(input_ids=ids, attention_mask=attention_mask_4d(allowed, impl, dtype), position_ids=pos,
                       cache=cache, use_cache=True, logits_to_keep=keep_last or 0).logits
        stats.forwards += 1
        stats.row_forwards += sum(1 for b in blocks if b)
        valid = torch.cat([valid, real], dim=1)
        return logits.argmax(-1).tolist(), W

    # ---- prefill: shared prefixes once (all rows', then each group's), then each row's rest + its first draft
    base = [0] * N  # tokens of row r already in the cache
    if share_prefix and N > 1:
        groups = groups if groups is not None else list(range(N))
        members: dict[int, list[int]] = {}
        for r, g in enumerate(groups):
            members.setdefault(g, []).append(r)
        cap = min(len(p) for p in prompts) - 1  # every row keeps >= 1 token for its own block
        head = _common_prefix([prompts[r] for r in range(N)], cap)
        if head:  # stage 1: one row
            forward([head], [0], keep_last=1)
            base = [len(head)] * N
        owners = list(members.values())
        ext = [_common_prefix([prompts[r] for r in rows], min(len(prompts[r]) for r in rows) - 1)[len(head):]
               for rows in owners]
        if any(len(rows) > 1 and e for rows, e in zip(owners, ext)):  # stage 2: one row per group
            if head:
                select_rows([0] * len(owners))
            else:
                valid = torch.zeros((len(owners), 0), dtype=torch.bool, device=dev)
            forward(ext, [len(head)] * len(owners), keep_last=1)
            for rows, e in zip(owners, ext):
                for r in rows:
                    base[r] = len(head) + len(e)
            row_of = {r: g for g, rows in enumerate(owners) for r in rows}
            select_rows([row_of[r] for r in range(N)])
        elif head:
            select_rows([0] * N)
    if valid.shape[0] != N:  # nothing was shared
        valid = torch.zeros((N, 0), dtype=torch.bool, device=dev)

    # ---- decode: verify each row's draft, keep what greedy decoding agrees with, re-anchor, repeat
    ptr = [0] * N  # where each row's draft continues
    span = [draft_len] * N  # how many draft tokens a row proposes next
    active = list(range(N))  # the cache's rows, in order; None once finished and not yet removed
    D = [drafts[r][:draft_len] for r in range(N)]  # what each row proposes now
    blocks = [prompts[r][base[r]:] + D[r] for r in range(N)]
    starts = list(base)
    K = 1 + max(len(d) for d in D)  # columns whose greedy tokens matter: the last prompt token and the drafts
    while True:
        g, _ = forward(blocks, starts, keep_last=K)
        for i, r in enumerate(active):
            if r is None:
                continue
            o = K - len(D[r]) - 1  # kept column predicting the first new token
            a = 0
            while a < len(D[r]) and g[i][o + a] == D[r][a]:
                a += 1
            stats.drafted += len(D[r])
            stats.accepted += a
            valid[i, valid.shape[1] - len(D[r]) + a :] = False  # the rejected draft tokens' cache slots
            for t in g[i][o : o + a + 1]:
                if len(out[r]) >= max_new_tokens:
                    break
                out[r].append(t)
                if t in eos:
                    break
            if out[r][-1] in eos or len(out[r]) >= max_new_tokens:
                active[i] = None
                continue
            expected = ptr[r] + a + 1
            if a == len(D[r]) and ptr[r] + a < len(drafts[r]) and drafts[r][ptr[r] + a] == out[r][-1]:
                ptr[r] = ptr[r] + a + 1  # still copying
                span[r] = draft_len
            else:  # off the draft: re-anchor, and draft little until a draft is accepted whole again
                j = _anchor(drafts[r], out[r], expected, ngram)
                ptr[r] = j if j is not None else len(drafts[r])
                span[r] = draft_len if a == len(D[r]) else retry_len
        alive = [i for i, r in enumerate(active) if r is not None]
        if not alive:
            break
        if len(alive) < len(active) and 4 * (len(active) - len(alive)) >= len(active):
            select_rows(alive)  # drop finished rows (a copy of the cache: not after every row)
            active = [active[i] for i in alive]
        blocks, starts = [], []
        for r in active:
            if r is None:  # finished, still in the cache: an empty block
                blocks.append([])
                starts.append(0)
                continue
            D[r] = drafts[r][ptr[r] : ptr[r] + min(span[r], max_new_tokens - len(out[r]) - 1)]
            blocks.append([out[r][-1]] + D[r])
            starts.append(len(prompts[r]) + len(out[r]) - 1)  # the position of the last emitted token
        K = max(len(b) for b in blocks)
    stats.tokens += sum(len(o) for o in out)
    return out
