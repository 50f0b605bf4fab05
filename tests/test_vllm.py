"""vLLM paths: executed only where vLLM and a CUDA device exist (never on our CPU machines or CI)."""

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.vllm, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a CUDA device")]


def test_refiner_vllm_backend_matches_prompt_count(smoke_model_dir):
    from transformers import AutoTokenizer

    from study.refiner import Refiner

    llm = vllm.LLM(str(smoke_model_dir), dtype="float32", gpu_memory_utilization=0.2)
    tok = AutoTokenizer.from_pretrained(smoke_model_dir)
    out = Refiner(llm, tok, backend="vllm", max_new_tokens=16).refine(["Add one."] * 3, ["```python\nx\n```"] * 3)
    assert len(out) == 3 and all(len(g.token_ids) <= 16 for g in out)
