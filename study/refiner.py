"""The online refiner (paper Sec. 3.2, Fig. 2): the frozen reference model, prompted to return a minimally
corrected version of the policy's response (verbatim where it is already right).

    refiner = Refiner(ref_model, tokenizer, task="code")
    refined = refiner.refine(problems, responses)      # list[Generation]: text + token ids

The refiner decodes greedily by default. Backends: transformers ``generate`` (CPU/GPU, ``study.generation``)
and vLLM when installed (``backend="vllm"``, an ``vllm.LLM`` passed as ``model``). With ``copy_decoding`` (the
trainers' default, ``speed.refiner_copy_decoding``), greedy decoding verifies drafts taken from each row's own
candidate y instead of decoding one token per forward (``study.generation.greedy_with_drafts``): the same tokens,
a few forwards per refinement, since a refinement mostly copies y.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.generation import DraftStats, Generation, _finish, generate, greedy_with_drafts, render_prompts
from study.prompts import Task, refine_messages
from study.tokens import CUSTOM_MASK_BACKENDS, eos_ids, pad_id


@dataclass
class Refiner:
    model: object
    """The frozen reference model π_ref (a ``PreTrainedModel``, or a ``vllm.LLM`` with ``backend='vllm'``)."""
    tokenizer: object
    """Its tokenizer (with a chat template)."""
    task: Task = "code"
    """Which refine prompt template to use."""
    max_new_tokens: int = 256
    """Longest refined response."""
    temperature: float = 0.0
    """0 = greedy."""
    batch_size: int = 32
    """Refinements per generation batch."""
    backend: str = "transformers"
    """``transformers`` or ``vllm``."""
    copy_decoding: bool = False
    """Greedy only: verify drafts from each row's candidate y (token-identical to plain greedy decoding)."""
    draft_len: int = 16
    """Draft tokens verified per row and forward (``copy_decoding``)."""
    share_prefix: bool = True
    """``copy_decoding``: prefill the refine prompts' common prefix (instruction + problem) once per group."""

    def prompts(self, problems: list[str], responses: list[str]) -> list[list[dict]]:
        return [refine_messages(p, r, self.task) for p, r in zip(problems, responses)]

    def refine(self, problems: list[str], responses: list[str]) -> list[Generation]:
        """One refined response y' per (x, y). Empty input -> empty output.

        Greedy decoding (temperature 0) is a function of its input, so each distinct (x, y) is refined once and
        the result shared by its copies (a small policy often samples the same response several times in a
        group; issue 8). Sampled refinement (temperature > 0) draws independently for every copy."""
        if not problems:
            return []
        pairs = list(zip(problems, responses))
        if self.temperature == 0:
            distinct = list(dict.fromkeys(pairs))
            if len(distinct) < len(pairs):
                out = dict(zip(distinct, self._refine([x for x, _ in distinct], [y for _, y in distinct])))
                return [out[p] for p in pairs]
        return self._refine(problems, responses)

    def _refine(self, problems: list[str], responses: list[str]) -> list[Generation]:
        msgs = self.prompts(problems, responses)
        if self.backend == "vllm":
            return _refine_vllm(self.model, self.tokenizer, msgs, self.max_new_tokens, self.temperature)
        if (self.copy_decoding and self.temperature == 0
                and getattr(self.model.config, "_attn_implementation", None) in CUSTOM_MASK_BACKENDS):
            return self._refine_with_drafts(msgs, responses, problems)
        return generate(
            self.model,
            self.tokenizer,
            msgs,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            batch_size=self.batch_size,
        )


    def _refine_with_drafts(self, msgs: list[list[dict]], responses: list[str], problems: list[str] | None = None,
                            stats: DraftStats | None = None) -> list[Generation]:
        """Greedy refinements with y + EOS as each row's draft; batches keep a problem's rows together (their
        prompts share a prefix: ``problems`` labels the groups)."""
        tok, model = self.tokenizer, self.model
        problems = problems if problems is not None else list(range(len(msgs)))
        texts = render_prompts(tok, msgs)
        eos = eos_ids(model, tok)
        end = tok.eos_token_id if tok.eos_token_id in eos else min(eos)
        drafts = [tok(y, add_special_tokens=False)["input_ids"] + [end] for y in responses]
        order = sorted(range(len(texts)), key=lambda i: texts[i])
        out: list[Generation | None] = [None] * len(texts)
        was_training = model.training
        model.eval()
        try:
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                prompts = [tok(texts[i], add_special_tokens=False)["input_ids"] for i in idx]
                rows = greedy_with_drafts(model, prompts, [drafts[i] for i in idx], eos, pad_id(tok),
                                          self.max_new_tokens, draft_len=self.draft_len,
                                          share_prefix=self.share_prefix, groups=[problems[i] for i in idx],
                                          stats=stats)
                for i, ids in zip(idx, rows):
                    out[i] = _finish(tok, ids, eos, pad_id(tok), None)
        finally:
            model.train(was_training)
        return out  # type: ignore[return-value]


def _refine_vllm(llm, tokenizer, msgs, max_new_tokens, temperature) -> list[Generation]:  # pragma: no cover - GPU
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature)
    outs = llm.chat(msgs, params, use_tqdm=False)
    res = []
    for o in outs:
        c = o.outputs[0]
        res.append(Generation(text=c.text, token_ids=list(c.token_ids), truncated=c.finish_reason == "length"))
    return res
