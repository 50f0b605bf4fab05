"""The online refiner (paper Sec. 3.2, Fig. 2): the frozen reference model, prompted to return a minimally
corrected version of the policy's response (verbatim where it is already right).

    refiner = Refiner(ref_model, tokenizer, task="code")
    refined = refiner.refine(problems, responses)      # list[Generation]: text + token ids

The refiner decodes greedily by default. Backends: transformers ``generate`` (CPU/GPU, ``study.generation``)
and vLLM when installed (``backend="vllm"``, an ``vllm.LLM`` passed as ``model``).
"""

from __future__ import annotations

from dataclasses import dataclass

from study.generation import Generation, generate
from study.prompts import Task, refine_messages


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
        return generate(
            self.model,
            self.tokenizer,
            msgs,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            batch_size=self.batch_size,
        )


def _refine_vllm(llm, tokenizer, msgs, max_new_tokens, temperature) -> list[Generation]:  # pragma: no cover - GPU
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature)
    outs = llm.chat(msgs, params, use_tqdm=False)
    res = []
    for o in outs:
        c = o.outputs[0]
        res.append(Generation(text=c.text, token_ids=list(c.token_ids), truncated=c.finish_reason == "length"))
    return res
